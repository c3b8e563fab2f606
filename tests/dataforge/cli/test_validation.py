"""The validation cases of the CLI contract, by name, on SQLite and on PostgreSQL (``settings``
runs each test on both).

Each refusal must exit 2, name the option at fault, and leave the table exactly as it was;
what PostgreSQL would refuse with a driver error, SQLite must refuse too (it would store it).
The service layer is checked directly as well, since the HTTP API calls it without click.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text

from dataforge.catalog.registry import TaskCatalog, catalog_from_app
from dataforge.celery_app import create_app
from dataforge.db import Database
from dataforge.errors import ScheduleError
from dataforge.models import utcnow
from dataforge.scheduler.service import ScheduleEdit, plan_add
from dataforge.settings import Settings
from tests.dataforge.cli.support import TASK, add, invoke, ok_json, refused, set_columns, snapshot, strict_json

NOW = utcnow()


@pytest.fixture(scope="module")
def catalog() -> TaskCatalog:
    app = create_app(Settings.from_env({}))
    try:
        return catalog_from_app(app)
    finally:
        app.runtime.close()


def _add(*extra: str) -> list[str]:
    return ["schedules", "add", "new", "--task", TASK, *extra]


def _raw(settings: Settings, sql: str, **params: Any) -> None:
    db = Database(settings.database_url)
    try:
        with db.engine.begin() as conn:
            conn.execute(text(sql), params)
    finally:
        db.dispose()


# --- integer ranges ------------------------------------------------------------------------------


def test_interval_beyond_postgres_integer_is_refused(settings: Settings, catalog: TaskCatalog) -> None:
    refused(settings, _add("--interval", "2147483648"), "--interval", "2147483647")
    assert ok_json(settings, *_add("--interval", "2147483647"))["interval_seconds"] == 2147483647  # the boundary
    with pytest.raises(ScheduleError) as info:  # the HTTP API's path, without click
        plan_add(ScheduleEdit(name="api", task_name=TASK, interval_seconds=2**31), catalog, NOW)
    assert info.value.field == "interval_seconds"


def test_max_retries_beyond_postgres_integer_is_refused(settings: Settings, catalog: TaskCatalog) -> None:
    refused(settings, _add("--interval", "60", "--max-retries", "100000000000"), "--max-retries")
    with pytest.raises(ScheduleError) as info:
        plan_add(ScheduleEdit(name="api", task_name=TASK, interval_seconds=60, max_retries=10**11), catalog, NOW)
    assert info.value.field == "max_retries"
    with pytest.raises(ScheduleError) as negative:
        plan_add(ScheduleEdit(name="api", task_name=TASK, interval_seconds=60, max_retries=-1), catalog, NOW)
    assert negative.value.field == "max_retries"


def test_timeout_beyond_postgres_integer_is_refused(settings: Settings, catalog: TaskCatalog) -> None:
    refused(settings, _add("--interval", "60", "--timeout", "2147483648"), "--timeout")
    with pytest.raises(ScheduleError) as info:
        plan_add(ScheduleEdit(name="api", task_name=TASK, interval_seconds=60, timeout_seconds=2**40), catalog, NOW)
    assert info.value.field == "timeout_seconds"


def test_limit_beyond_postgres_integer_is_refused(settings: Settings) -> None:
    refused(settings, ["schedules", "list", "--limit", "99999999999"], "--limit")
    add(settings, "h")
    refused(settings, ["schedules", "history", "h", "--limit", "99999999999"], "--limit")


# --- string lengths --------------------------------------------------------------------------------


def test_a_long_name_is_refused_with_the_limit(settings: Settings) -> None:
    refused(settings, ["schedules", "add", "n" * 129, "--task", TASK, "--interval", "60"],
            "NAME", "129 characters; at most 128 fit")
    assert ok_json(settings, "schedules", "add", "n" * 128, "--task", TASK, "--interval", "60")["name"] == "n" * 128
    first = snapshot(settings)[0]["id"]
    refused(settings, ["schedules", "edit", str(first), "--name", "m" * 129], "at most 128")


def test_long_cron_timezone_and_task_names_are_refused(settings: Settings) -> None:
    refused(settings, _add("--cron", "0 3 * * *" + " " * 200), "--cron", "at most 128")
    refused(settings, _add("--cron", "0 3 * * *", "--timezone", "Europe/" + "x" * 64), "--timezone", "at most 64")
    refused(settings, ["schedules", "add", "new", "--task", "t" * 256, "--interval", "60"], "--task", "at most 255")


def test_nul_characters_are_refused_in_every_text(settings: Settings) -> None:
    refused(settings, ["schedules", "add", "a\x00b", "--task", TASK, "--interval", "60"], "NUL")
    refused(settings, _add("--interval", "60", "--description", "x\x00y"), "--description", "NUL")
    add(settings, "ok")
    refused(settings, ["schedules", "edit", "ok", "--description", "\x00"], "NUL")
    refused(settings, ["schedules", "show", "o\x00k"], "no schedule")


def test_undecodable_bytes_are_refused(settings: Settings) -> None:
    """A name with bytes that are not UTF-8 arrives as lone surrogates (surrogateescape)."""
    undecodable = b"caf\xe9".decode("utf-8", "surrogateescape")
    result = refused(settings, ["schedules", "add", undecodable, "--task", TASK, "--interval", "60"],
                     "not valid Unicode")
    assert "\\udce9" in result.output  # shown escaped, printable


# --- strict JSON kwargs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ('{"days": NaN}', "NaN is not a JSON number"),
        ('{"days": Infinity}', "Infinity is not a JSON number"),
        ('{"days": -Infinity}', "-Infinity is not a JSON number"),
        ('{"days": 1e999}', "overflows to infinity"),
        ('{"days": 1, "days": 2}', 'duplicate key "days"'),
        ('{"days": 99999999999999999999}', "64 bits"),
        ('{"days": "\\ud800"}', "not valid Unicode"),
        ("{'days': 7}", "not valid JSON"),
        ("[7]", "not array"),
        ("null", "not null"),
        ("", "not valid JSON"),
    ],
)
def test_kwargs_must_be_strict_json(settings: Settings, kwargs: str, reason: str) -> None:
    refused(settings, _add("--interval", "60", "--kwargs", kwargs), "--kwargs", reason)


def test_deeply_nested_kwargs_are_refused_without_a_traceback(settings: Settings) -> None:
    deep = '{"days": ' + "[" * 5000 + "]" * 5000 + "}"
    result = refused(settings, _add("--interval", "60", "--kwargs", deep), "--kwargs", "nested deeper than 32")
    assert "Traceback" not in result.output and "RecursionError" not in result.output
    at_limit = '{"dry_run": ' + "[" * 31 + "]" * 31 + "}"
    assert ok_json(settings, *_add("--interval", "60", "--kwargs", at_limit))["kwargs"]["dry_run"]
    over = '{"dry_run": ' + "[" * 32 + "]" * 32 + "}"
    refused(settings, ["schedules", "edit", "new", "--kwargs", over], "nested deeper than 32")


def test_huge_kwargs_are_refused(settings: Settings) -> None:
    big = '{"days": "' + "x" * 70000 + '"}'
    refused(settings, _add("--interval", "60", "--kwargs", big), "--kwargs", "at most 65536 bytes")


def test_errors_echo_kwargs_as_json_never_a_python_repr(settings: Settings) -> None:
    add(settings, "echo")
    result = refused(settings, ["schedules", "edit", "echo", "--kwargs", '{"dayz": 3}'], "--kwargs")
    assert '{"dayz": 3}' in result.output and "{'dayz': 3}" not in result.output
    json_result = invoke(settings, "schedules", "edit", "echo", "--kwargs", '{"dayz": 3}', "--json")
    error = strict_json(json_result.stdout)["error"]
    assert error["field"] == "--kwargs" and '{"dayz": 3}' in error["message"]


def test_a_missing_timing_names_the_options_to_give(settings: Settings) -> None:
    result = refused(settings, ["schedules", "add", "t", "--task", TASK], "--interval SECONDS, --cron EXPR or --at")
    assert "None" not in result.output


def test_list_json_stays_strict_when_raw_sql_stored_nan(settings: Settings) -> None:
    row = add(settings, "raw")
    set_columns(settings, row["id"], handler_kwargs='{"days": NaN}')
    listed = ok_json(settings, "schedules", "list")  # strict_json: would fail on a bare NaN
    assert listed[0]["kwargs"] is None and listed[0]["handler_kwargs"] == '{"days": NaN}'
    assert ok_json(settings, "schedules", "show", "raw")["kwargs"] is None


# --- a row's stored state never blocks an edit that does not touch it ---------------------------


def test_stored_bad_kwargs_never_leave_a_schedule_stuck(settings: Settings) -> None:
    s = settings
    row = add(s, "stuck")
    rid = row["id"]
    _raw(s, "UPDATE scheduled_tasks SET handler_kwargs = :k WHERE id = :i", k='{"days": NaN}', i=rid)

    edited = invoke(s, "schedules", "edit", "stuck", "--description", "still here")
    assert edited.exit_code == 0, edited.output
    assert "still cannot run" in edited.stderr and f"schedules edit {rid} --kwargs" in edited.stderr
    after = {r["id"]: r for r in snapshot(s)}[rid]
    assert after["description"] == "still here" and after["handler_kwargs"] == '{"days": NaN}'

    assert ok_json(s, "schedules", "pause", "stuck")["status"] == "paused"
    refused(s, ["schedules", "resume", "stuck"], "cannot resume", "--kwargs", "NaN", f"schedules edit {rid} --kwargs")
    refused(s, ["schedules", "run-now", "stuck"], "cannot run", f"schedules edit {rid} --kwargs")
    # Other edits of the paused row work; the kwargs edit fixes it; then resume works.
    assert ok_json(s, "schedules", "edit", "stuck", "--interval", "120")["interval_seconds"] == 120
    assert ok_json(s, "schedules", "edit", "stuck", "--kwargs", '{"days": 2}')["kwargs"] == {"days": 2}
    resumed = ok_json(s, "schedules", "resume", "stuck")
    assert resumed["status"] == "active" and resumed["invalid_reason"] is None


def test_a_removed_task_does_not_block_other_edits(settings: Settings) -> None:
    row = add(settings, "orphan")
    set_columns(settings, row["id"], task_name="dataforge.removed_by_a_deploy")
    # Beat's flag comes in a write of its own (an edit of the definition clears it).
    set_columns(settings, row["id"], invalid_reason="not registered")
    edited = invoke(settings, "schedules", "edit", "orphan", "--description", "still wanted")
    assert edited.exit_code == 0 and f"schedules edit {row['id']} --task" in edited.stderr
    # The flag stays: the row still cannot run. Fixing the task clears it.
    assert snapshot(settings)[0]["invalid_reason"] == "not registered"
    assert ok_json(settings, "schedules", "edit", "orphan", "--task", TASK)["invalid_reason"] is None


def test_a_new_task_is_checked_against_the_stored_kwargs(settings: Settings) -> None:
    add(settings, "k", "--kwargs", '{"days": 3}')
    refused(settings, ["schedules", "edit", "k", "--task", "dataforge.example_sync_accounts"], "--kwargs", "days")


# --- idempotent verbs ------------------------------------------------------------------------------


def test_pause_resume_and_noop_edit_say_so_and_write_nothing(settings: Settings) -> None:
    s = settings
    add(s, "idem")
    before = snapshot(s)
    noop = invoke(s, "schedules", "edit", "idem", "--interval", "3600", "--task", TASK, "--kwargs", "{}")
    assert noop.exit_code == 0 and "unchanged" in noop.output and "edited" not in noop.output
    assert snapshot(s) == before
    assert invoke(s, "schedules", "pause", "idem").exit_code == 0
    before = snapshot(s)
    again = invoke(s, "schedules", "pause", "idem")
    assert again.exit_code == 0 and "is already paused" in again.output
    assert snapshot(s) == before  # not even updated_at moved
    assert invoke(s, "schedules", "resume", "idem").exit_code == 0
    before = snapshot(s)
    again = invoke(s, "schedules", "resume", "idem")
    assert again.exit_code == 0 and "is already active" in again.output
    assert snapshot(s) == before


def test_paused_rows_show_no_next_run(settings: Settings) -> None:
    s = settings
    row = add(s, "sleeper", "--paused")
    set_columns(s, row["id"], next_run_at=utcnow() + timedelta(hours=1))
    listing = invoke(s, "schedules", "list")
    line = next(line for line in listing.output.splitlines() if "sleeper" in line)
    assert "paused" in line and str(utcnow().year) not in line.split("paused", 1)[1].split("│")[1]
    shown = invoke(s, "schedules", "show", "sleeper")
    next_line = next(line for line in shown.output.splitlines() if "next_run_at" in line)
    assert next_line.split("next_run_at", 1)[1].strip(" │") == "-"
    paused = invoke(s, "schedules", "pause", "sleeper")
    assert "next run" not in paused.output
