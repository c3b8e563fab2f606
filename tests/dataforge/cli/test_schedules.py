"""`dataforge schedules`: every verb through click's runner on a real database, and the pure
planning rules of dataforge.scheduler.service.

Most tests run on the embedded default (SQLite); the PostgreSQL + Redis test runs the write
verbs and run-now against production-shaped settings. Refusals check the exit code, that the
message names what to fix, and that the table is exactly as it was.
"""

from __future__ import annotations

import base64
import json
import os
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import select

from dataforge.catalog.params import ParamSpec, TaskParams, check_kwargs
from dataforge.catalog.registry import TaskCatalog
from dataforge.db import Database
from dataforge.errors import ScheduleError, UnknownTaskError
from dataforge.models import ScheduledTask, TaskExecution, utcnow
from dataforge.protocol import DUE_AT_HEADER, HARD_LIMIT_GRACE_SECONDS, MAX_RETRIES_HEADER, SCHEDULE_ID_HEADER
from dataforge.scheduler.errors import ScheduleCannotRunError, ScheduleStateError
from dataforge.scheduler.service import (
    ScheduleEdit,
    parse_at,
    plan_add,
    plan_edit,
    plan_resume,
)
from dataforge.settings import Settings
from dataforge.tools.processes import CeleryProcess, beat_command, worker_command
from tests.dataforge.cli.support import OTHER_TASK, TASK, add, invoke, ok_json, refused, set_columns, snapshot


def dt(text: str) -> datetime:
    return datetime.fromisoformat(text)


# --- pure rules ----------------------------------------------------------------------------------

CATALOG = TaskCatalog({
    "t.open": TaskParams(),
    "t.strict": TaskParams(params=(ParamSpec("days", required=True), ParamSpec("dry_run")), declared=True),
    "t.kw": TaskParams(params=(ParamSpec("days"),), declared=True, open_ended=True),
})
NOW = datetime(2030, 6, 1, 12, 0, 0)


def test_params_from_registry_reads_names_dicts_and_var_keyword() -> None:
    assert TaskParams.from_registry([]) == TaskParams()  # the design's "params": [] declares nothing
    assert TaskParams.from_registry(None) == TaskParams()
    names = TaskParams.from_registry(["days", "dry_run"])
    assert names.declared and [p.name for p in names.params] == ["days", "dry_run"]
    dicts = TaskParams.from_registry([
        {"name": "days", "required": True, "kind": "keyword"},
        {"name": "kwargs", "kind": "var_keyword"},
    ])
    assert dicts.params == (ParamSpec("days", required=True),) and dicts.open_ended
    assert TaskParams.from_registry([{"no": "name"}]) == TaskParams()  # unreadable: claim nothing


def test_check_kwargs_refuses_unknown_missing_and_reserved_keys() -> None:
    check_kwargs("t.strict", {"days": 3}, CATALOG.tasks["t.strict"])
    check_kwargs("t.open", {"anything": 1}, CATALOG.tasks["t.open"])
    check_kwargs("t.kw", {"days": 1, "extra": 2}, CATALOG.tasks["t.kw"])
    with pytest.raises(ScheduleError, match="takes no parameter.*colour.*declares: days, dry_run"):
        check_kwargs("t.strict", {"days": 1, "colour": "red"}, CATALOG.tasks["t.strict"])
    with pytest.raises(ScheduleError, match="requires parameter.*days"):
        check_kwargs("t.strict", {"dry_run": True}, CATALOG.tasks["t.strict"])
    for key in ("scheduled_task_id", "_lock_key"):
        with pytest.raises(ScheduleError, match=f"{key}.*reserved"):
            check_kwargs("t.open", {key: 1}, CATALOG.tasks["t.open"])


def test_parse_at_reads_offsets_and_the_rows_time_zone() -> None:
    assert parse_at("2030-01-15T09:30+01:00", "UTC") == datetime(2030, 1, 15, 8, 30)
    assert parse_at("2030-01-15T09:30Z", "Asia/Tokyo") == datetime(2030, 1, 15, 9, 30)
    assert parse_at("2030-01-15 09:30", "Asia/Tokyo") == datetime(2030, 1, 15, 0, 30)
    with pytest.raises(ScheduleError, match="ISO 8601"):
        parse_at("next tuesday", "UTC")
    with pytest.raises(ScheduleError) as info:
        parse_at("2030-01-15 09:30", "Mars/Olympus")
    assert info.value.field == "timezone"


def test_plan_add_validates_everything_and_sets_the_first_due_time() -> None:
    row = plan_add(ScheduleEdit(name="a", task_name="t.strict", cron_expression="30 9 * * *",
                                timezone="Europe/Berlin", handler_kwargs='{"days": 2}'), CATALOG, NOW)
    # 09:30 in Berlin in June (CEST, UTC+2) is 07:30 UTC; NOW is 12:00 UTC, so tomorrow.
    assert row["next_run_at"] == datetime(2030, 6, 2, 7, 30)
    assert row["task_type"] == "cron" and row["handler_kwargs"] == '{"days": 2}'
    assert row["invalid_reason"] is None and row["status"] == "active"
    interval = plan_add(ScheduleEdit(name="b", task_name="t.open", interval_seconds=60), CATALOG, NOW)
    assert interval["next_run_at"] == NOW  # beat's rule: a new interval row is due now
    refusals: list[tuple[ScheduleEdit, str]] = [
        (ScheduleEdit(name="c", task_name="t.nope", interval_seconds=60), "task_name"),
        (ScheduleEdit(name="c", task_name="t.open"), "task_type"),
        (ScheduleEdit(name="c", task_name="t.open", interval_seconds=5, cron_expression="* * * * *"), "task_type"),
        (ScheduleEdit(name="c", task_name="t.open", cron_expression="61 * * * *"), "cron_expression"),
        (ScheduleEdit(name="c", task_name="t.open", cron_expression="0 * * * *", timezone="Nowhere/City"),
         "timezone"),
        (ScheduleEdit(name="c", task_name="t.open", run_at="2030-06-01T11:00"), "run_at"),  # past
        (ScheduleEdit(name="c", task_name="t.open", interval_seconds=5, handler_kwargs="[1]"), "handler_kwargs"),
        (ScheduleEdit(name="c", task_name="t.strict", interval_seconds=5), "handler_kwargs"),
        (ScheduleEdit(name=" ", task_name="t.open", interval_seconds=5), "name"),
    ]
    for edit, field in refusals:
        with pytest.raises((ScheduleError, UnknownTaskError)) as info:
            plan_add(edit, CATALOG, NOW)
        got = info.value.field if isinstance(info.value, ScheduleError) else "task_name"
        assert got == field, (edit, info.value)


def _current(**over: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": 7, "name": "n", "task_name": "t.open", "task_type": "interval", "interval_seconds": 600,
        "cron_expression": None, "run_at": None, "timezone": "UTC", "handler_kwargs": "{}", "status": "active",
        "timeout_seconds": None, "max_retries": 0, "missed_run_policy": None, "description": None,
        "last_run_at": datetime(2030, 6, 1, 11, 55), "next_run_at": datetime(2030, 6, 1, 12, 5),
        "invalid_reason": None, "invalid_at": None,
    }
    row.update(over)
    return row


def test_plan_edit_keeps_the_due_time_unless_the_timing_changes() -> None:
    assert plan_edit(_current(), ScheduleEdit(handler_kwargs='{"x": 1}'), CATALOG, NOW).changes == {
        "handler_kwargs": '{"x": 1}'
    }
    # New interval: the grid continues from last_run_at, first point after now.
    changes = plan_edit(_current(), ScheduleEdit(interval_seconds=120), CATALOG, NOW).changes
    assert changes == {"interval_seconds": 120, "next_run_at": datetime(2030, 6, 1, 12, 1)}
    # A switch to cron clears the interval; a paused row keeps its due time for resume.
    paused = plan_edit(_current(status="paused"), ScheduleEdit(cron_expression="0 13 * * *"), CATALOG, NOW).changes
    assert paused == {"task_type": "cron", "interval_seconds": None, "cron_expression": "0 13 * * *"}
    # A flagged row that is fixed is healthy again.
    fixed = plan_edit(_current(task_name="t.gone", invalid_reason="unregistered", invalid_at=NOW),
                      ScheduleEdit(task_name="t.open"), CATALOG, NOW).changes
    assert fixed == {"task_name": "t.open", "invalid_reason": None, "invalid_at": None}
    # A done once row given a new time runs again.
    done = _current(task_type="once", interval_seconds=None, run_at=datetime(2030, 5, 1), status="done",
                    next_run_at=None)
    again = plan_edit(done, ScheduleEdit(run_at="2030-07-01T00:00"), CATALOG, NOW).changes
    assert again == {"run_at": datetime(2030, 7, 1), "status": "active", "next_run_at": datetime(2030, 7, 1)}
    # A stored fault the edit does not touch does not block it; it comes back as a problem.
    kept = plan_edit(_current(task_name=None), ScheduleEdit(description="x"), CATALOG, NOW)
    assert kept.changes == {"description": "x"}
    assert [p.field for p in kept.problems if isinstance(p, ScheduleError)] == ["task_name"]


def test_plan_resume_realigns_without_replaying_the_backlog() -> None:
    old = _current(status="paused", last_run_at=datetime(2030, 5, 1, 0, 0), next_run_at=datetime(2030, 5, 1, 0, 10))
    changes = plan_resume(old, CATALOG, NOW).changes
    assert changes == {"status": "active", "next_run_at": datetime(2030, 6, 1, 12, 10)}
    assert plan_resume(_current(), CATALOG, NOW).changes == {}  # already active: nothing to do
    with pytest.raises(ScheduleStateError, match="edit 7 --at"):
        plan_resume(_current(status="done"), CATALOG, NOW)
    with pytest.raises(ScheduleCannotRunError) as info:
        plan_resume(_current(status="paused", task_name="t.gone"), CATALOG, NOW)
    assert info.value.field == "task_name" and isinstance(info.value.cause, UnknownTaskError)


# --- the verbs on SQLite -------------------------------------------------------------------------


def test_add_interval_cron_and_once(embedded_settings: Settings) -> None:
    s = embedded_settings
    before = utcnow().replace(microsecond=0)
    row = add(s, "cleanup-hourly", "--kwargs", '{"days": 3}', "--timeout", "30", "--max-retries", "2",
              "--description", "hourly cleanup", "--missed-runs", "skip")
    assert row["task_name"] == TASK and row["task_type"] == "interval" and row["interval_seconds"] == 3600
    assert json.loads(row["handler_kwargs"]) == {"days": 3} and row["timeout_seconds"] == 30
    assert row["max_retries"] == 2 and row["missed_run_policy"] == "skip" and row["status"] == "active"
    assert before <= dt(row["next_run_at"]) <= utcnow()  # a new interval row is due now
    cron = add(s, "nightly", "--cron", "0 3 * * *", "--timezone", "America/New_York", "--task", OTHER_TASK)
    due = dt(cron["next_run_at"])
    assert due > before and due - before <= timedelta(days=1)
    assert (due.hour, due.minute) in {(7, 0), (8, 0)}  # 03:00 New York is 07:00 or 08:00 UTC
    once = add(s, "once", "--at", "2099-01-01T10:00:00+02:00", "--paused")
    assert once["run_at"] == "2099-01-01T08:00:00" and once["status"] == "paused"
    stored = snapshot(s)
    assert [r["name"] for r in stored] == ["cleanup-hourly", "nightly", "once"]
    assert stored[1]["timezone"] == "America/New_York" and stored[1]["next_run_at"] == due
    text = invoke(s, "schedules", "add", "plain", "--task", TASK, "--interval", "60")
    assert text.exit_code == 0 and "added schedule 4 plain" in text.output


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--task", "dataforge.nope", "--interval", "60"], ["'dataforge.nope' is not registered", "--task"]),
        (["--task", TASK], ["--interval / --cron / --at"]),
        (["--task", TASK, "--interval", "60", "--cron", "* * * * *"], ["only one of"]),
        (["--task", TASK, "--cron", "0 25 * * *"], ["--cron", "0 25 * * *"]),
        (["--task", TASK, "--cron", "0 3 * *"], ["--cron", "expected 5 fields"]),
        (["--task", TASK, "--cron", "0 3 * * *", "--timezone", "Europe/Atlantis"], ["--timezone", "unknown time zone"]),
        (["--task", TASK, "--at", "yesterday"], ["--at", "ISO 8601"]),
        (["--task", TASK, "--at", "2001-01-01T00:00"], ["--at", "in the past"]),
        (["--task", TASK, "--interval", "0"], ["--interval"]),
        (["--task", TASK, "--interval", "60", "--kwargs", "{'days': 7}"], ["--kwargs", "not valid JSON"]),
        (["--task", TASK, "--interval", "60", "--kwargs", "[7]"], ["--kwargs", "JSON object"]),
        (["--task", TASK, "--interval", "60", "--kwargs", '{"weeks": 1}'], ["weeks", "declares: days, dry_run"]),
        (["--task", TASK, "--interval", "60", "--kwargs", '{"scheduled_task_id": 1}'], ["reserved"]),
        (["--task", TASK, "--interval", "60", "--missed-runs", "twice"], ["--missed-runs"]),
        (["--task", TASK, "--interval", "60", "--timeout", "-1"], ["--timeout"]),
    ],
)
def test_add_refuses_bad_input_and_writes_nothing(embedded_settings: Settings, args: list[str],
                                                  needles: list[str]) -> None:
    add(embedded_settings, "existing")
    refused(embedded_settings, ["schedules", "add", "new", *args], *needles)


def test_add_refuses_a_duplicate_name(embedded_settings: Settings) -> None:
    add(embedded_settings, "dup")
    refused(embedded_settings, ["schedules", "add", "dup", "--task", TASK, "--interval", "5"], "exists")


def test_list_filters_and_json(embedded_settings: Settings) -> None:
    s = embedded_settings
    a = add(s, "alpha")
    b = add(s, "beta", "--task", OTHER_TASK, "--paused")
    c = add(s, "gamma", "--cron", "*/5 * * * *")
    set_columns(s, c["id"], invalid_reason="task 'x' is not registered", invalid_at=utcnow())
    everything = ok_json(s, "schedules", "list")
    assert [r["name"] for r in everything] == ["alpha", "beta", "gamma"]
    assert everything[0]["schedule"] == "every 3600s" and everything[2]["schedule"] == "cron */5 * * * * (UTC)"
    assert set(ScheduledTask.__table__.columns.keys()) <= set(everything[0])
    assert [r["id"] for r in ok_json(s, "schedules", "list", "--status", "paused")] == [b["id"]]
    assert [r["id"] for r in ok_json(s, "schedules", "list", "--status", "paused", "--status", "active")] == [
        a["id"], b["id"], c["id"]]
    assert [r["id"] for r in ok_json(s, "schedules", "list", "--task", OTHER_TASK)] == [b["id"]]
    assert [r["id"] for r in ok_json(s, "schedules", "list", "--invalid")] == [c["id"]]
    assert [r["id"] for r in ok_json(s, "schedules", "list", "--limit", "2")] == [a["id"], b["id"]]
    table = invoke(s, "schedules", "list")
    assert table.exit_code == 0
    assert "3 schedule(s)" in table.output and "alpha" in table.output and "paused" in table.output
    refused(s, ["schedules", "list", "--status", "sleeping"], "--status")


def test_show_by_id_and_name(embedded_settings: Settings) -> None:
    s = embedded_settings
    row = add(s, "shown", "--kwargs", '{"days": 1}')
    set_columns(s, row["id"], invalid_reason="bad cron", run_count=4, success_count=3, failure_count=1)
    by_id = ok_json(s, "schedules", "show", str(row["id"]))
    by_name = ok_json(s, "schedules", "show", "shown")
    assert by_id == by_name
    assert by_id["invalid_reason"] == "bad cron" and by_id["run_count"] == 4 and by_id["kwargs"] == {"days": 1}
    assert {"next_run_at", "last_run_at", "success_count", "failure_count", "last_error"} <= set(by_id)
    table = invoke(s, "schedules", "show", "shown")
    assert table.exit_code == 0 and "invalid_reason" in table.output and "bad cron" in table.output
    refused(s, ["schedules", "show", "missing"], "no schedule with id or name 'missing'")
    refused(s, ["schedules", "show", "999"], "'999'")


def test_an_all_digit_name_is_found_when_no_id_matches(embedded_settings: Settings) -> None:
    row = add(embedded_settings, "2024")
    assert ok_json(embedded_settings, "schedules", "show", "2024")["id"] == row["id"]
    assert ok_json(embedded_settings, "schedules", "show", str(row["id"]))["name"] == "2024"


def test_edit_changes_only_what_is_given(embedded_settings: Settings) -> None:
    s = embedded_settings
    row = add(s, "ed", "--timeout", "30")
    due = dt(row["next_run_at"]) + timedelta(minutes=10)
    set_columns(s, row["id"], next_run_at=due, last_run_at=due - timedelta(hours=1))
    edited = ok_json(s, "schedules", "edit", "ed", "--kwargs", '{"dry_run": false}', "--description", "d",
                     "--no-timeout", "--max-retries", "4")
    assert edited["kwargs"] == {"dry_run": False} and edited["description"] == "d"
    assert edited["timeout_seconds"] is None and edited["max_retries"] == 4
    assert dt(edited["next_run_at"]) == due  # no timing change: the due time stays
    # 840 s does not divide the hour: the new grid misses the old due time (had it hit it, the
    # change trigger would take the equal value for "not set" and leave the due time to beat).
    renamed = ok_json(s, "schedules", "edit", str(row["id"]), "--name", "ed2", "--interval", "840")
    assert renamed["name"] == "ed2" and renamed["interval_seconds"] == 840
    # The grid continues from last_run_at in 840 s steps: the first point after now.
    new_due = dt(renamed["next_run_at"])
    assert new_due > utcnow() - timedelta(seconds=1) and (new_due - (due - timedelta(hours=1))).seconds % 840 == 0
    to_cron = ok_json(s, "schedules", "edit", "ed2", "--cron", "15 4 * * *", "--timezone", "Asia/Tokyo")
    assert to_cron["task_type"] == "cron" and to_cron["interval_seconds"] is None
    assert (dt(to_cron["next_run_at"]).hour, dt(to_cron["next_run_at"]).minute) == (19, 15)
    text = invoke(s, "schedules", "edit", "ed2", "--task", OTHER_TASK, "--kwargs", "{}")
    assert text.exit_code == 0 and "edited schedule" in text.output and OTHER_TASK in text.output


def test_edit_refusals_leave_the_row_as_it_was(embedded_settings: Settings) -> None:
    s = embedded_settings
    add(s, "keep")
    add(s, "other")
    base = ["schedules", "edit", "keep"]
    refused(s, [*base, "--task", "dataforge.unknown"], "not registered")
    refused(s, [*base, "--cron", "every day"], "--cron")
    refused(s, [*base, "--kwargs", '{"days": 1, "nope": 2}'], "nope")
    refused(s, [*base, "--timezone", "Moon/Base"], "--timezone")
    refused(s, [*base, "--name", "other"], "another schedule has this name")
    refused(s, [*base, "--timeout", "5", "--no-timeout"], "not both")
    refused(s, ["schedules", "edit", "ghost", "--description", "x"], "no schedule")


def test_edit_revives_a_flagged_row(embedded_settings: Settings) -> None:
    s = embedded_settings
    row = add(s, "flagged")
    set_columns(s, row["id"], task_name="dataforge.removed")
    # Beat's flag comes in a write of its own (an edit of the definition clears it).
    set_columns(s, row["id"], invalid_reason="task not registered", invalid_at=utcnow())
    assert ok_json(s, "schedules", "list", "--invalid")[0]["name"] == "flagged"
    fixed = ok_json(s, "schedules", "edit", "flagged", "--task", TASK)
    assert fixed["task_name"] == TASK and fixed["invalid_reason"] is None and fixed["invalid_at"] is None


def test_pause_and_resume(embedded_settings: Settings) -> None:
    s = embedded_settings
    row = add(s, "pr", "--interval", "600")
    paused = ok_json(s, "schedules", "pause", "pr")
    assert paused["status"] == "paused"
    assert ok_json(s, "schedules", "pause", "pr")["status"] == "paused"  # idempotent
    # While paused, a month of runs was missed.
    last = utcnow() - timedelta(days=30)
    set_columns(s, row["id"], last_run_at=last, next_run_at=last + timedelta(seconds=600))
    resumed = ok_json(s, "schedules", "resume", "pr")
    due = dt(resumed["next_run_at"])
    assert resumed["status"] == "active"
    assert utcnow() - timedelta(seconds=1) < due <= utcnow() + timedelta(seconds=600)  # no backlog replay
    assert (due - last.replace(microsecond=0)).total_seconds() % 600 == 0  # same grid
    again = invoke(s, "schedules", "resume", "pr")  # idempotent: exit 0, says so, writes nothing
    assert again.exit_code == 0 and "is already active" in again.output
    set_columns(s, row["id"], status="done")
    refused(s, ["schedules", "resume", "pr"], "--at")
    refused(s, ["schedules", "pause", "pr"], "only an active schedule")
    set_columns(s, row["id"], status="paused", task_name="dataforge.removed")
    refused(s, ["schedules", "resume", "pr"], "not registered", f"schedules edit {row['id']} --task")
    text = invoke(s, "schedules", "pause", "ghost")
    assert text.exit_code == 2


def _executions(settings: Settings, schedule_id: int) -> None:
    start = datetime(2030, 1, 1, 10, 0, 0)
    rows = [
        TaskExecution(scheduled_task_id=schedule_id, celery_task_id=f"id-{i}", task_name=TASK, status=status,
                      attempt=attempt, started_at=start + timedelta(minutes=i),
                      finished_at=start + timedelta(minutes=i, seconds=2), duration_ms=1500 + i,
                      worker="celery@host:123", error=error)
        for i, (status, attempt, error) in enumerate([
            ("success", 0, None),
            ("retry", 0, "ConnectionError: reset\nmore"),
            ("failure", 1, "ValueError: bad input\ntraceback line"),
            ("skipped", 0, None),
        ])
    ]
    db = Database(settings.database_url)
    try:
        with db.session() as session:
            session.add_all(rows)
            session.add(TaskExecution(scheduled_task_id=None, celery_task_id="other", status="success"))
    finally:
        db.dispose()


def test_history(embedded_settings: Settings) -> None:
    s = embedded_settings
    row = add(s, "hist")
    _executions(s, row["id"])
    out = ok_json(s, "schedules", "history", "hist")
    runs = out["executions"]
    assert out["schedule"]["id"] == row["id"]
    assert [r["celery_task_id"] for r in runs] == ["id-3", "id-2", "id-1", "id-0"]  # newest first
    assert runs[1]["status"] == "failure" and runs[1]["attempt"] == 1 and runs[1]["duration_ms"] == 1502
    assert runs[1]["worker"] == "celery@host:123" and runs[1]["error"].startswith("ValueError")
    assert [r["celery_task_id"] for r in ok_json(s, "schedules", "history", "hist", "--limit", "2")["executions"]] \
        == ["id-3", "id-2"]
    failed = ok_json(s, "schedules", "history", str(row["id"]), "--state", "failure")["executions"]
    assert [r["celery_task_id"] for r in failed] == ["id-2"]
    table = invoke(s, "schedules", "history", "hist")
    assert table.exit_code == 0
    assert "4 execution(s)" in table.output and "ValueError: bad input" in table.output
    assert "traceback line" not in table.output and "1.502s" in table.output
    refused(s, ["schedules", "history", "hist", "--state", "exploded"], "--state")
    refused(s, ["schedules", "history", "hist", "--limit", "0"], "--limit")
    refused(s, ["schedules", "history", "nope"], "no schedule")


def test_delete_keeps_the_history_and_needs_yes_off_a_terminal(embedded_settings: Settings) -> None:
    s = embedded_settings
    row = add(s, "doomed")
    keep = add(s, "kept")
    _executions(s, row["id"])
    # Not a terminal and no --yes: refused, nothing deleted.
    refused(s, ["schedules", "delete", "doomed"], "--yes", "schedules pause")

    gone = ok_json(s, "schedules", "delete", "doomed", "--yes")
    assert gone["id"] == row["id"] and gone["name"] == "doomed"
    assert [r["id"] for r in snapshot(s)] == [keep["id"]]
    db = Database(s.database_url)
    try:
        with db.session() as session:
            runs = session.scalars(select(TaskExecution).where(TaskExecution.celery_task_id.like("id-%"))).all()
            assert len(runs) == 4 and {r.scheduled_task_id for r in runs} == {None}
    finally:
        db.dispose()
    refused(s, ["schedules", "delete", "doomed", "--yes"], "no schedule")


def test_a_database_without_the_schema_is_a_clear_error(tmp_path: Any) -> None:
    bare = Settings.from_env({}, cwd=tmp_path)
    result = invoke(bare, "schedules", "list")
    assert result.exit_code == 3 and "dataforge db upgrade" in result.stderr


# --- run-now -------------------------------------------------------------------------------------


def _finished_runs(settings: Settings, schedule_id: int, timeout: float) -> list[Any]:
    """History of ``schedule_id`` once its newest execution has finished (polled, bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        runs: list[Any] = ok_json(settings, "schedules", "history", str(schedule_id))["executions"]
        if runs and runs[0]["status"] != "running":
            return runs
        if time.monotonic() > deadline:
            raise AssertionError(f"no finished execution of schedule {schedule_id} within {timeout}s: {runs}")
        time.sleep(0.2)


@pytest.mark.slow
def test_cli_written_rows_run_in_real_beat_and_worker(embedded_settings: Settings, tmp_path: Path) -> None:
    """Embedded defaults end to end. A row added by the CLI is dispatched by beat at the due
    time the CLI computed; run-now of a paused row runs once through the worker and leaves the
    row paused with its due time; both show up in history."""
    s = embedded_settings
    auto = add(s, "auto", "--interval", "3600", "--kwargs", '{"days": 1}')
    manual = add(s, "manual", "--interval", "86400", "--kwargs", '{"days": 2}', "--paused")
    sent = ok_json(s, "schedules", "run-now", "manual")
    assert sent["schedule_id"] == manual["id"] and sent["task_name"] == TASK and sent["kwargs"] == {"days": 2}
    env = {**os.environ, **s.as_env()}
    with (
        CeleryProcess("worker", worker_command(concurrency=1), env=env, cwd=tmp_path) as worker,
        CeleryProcess("beat", beat_command(), env=env, cwd=tmp_path) as beat,
    ):
        worker.wait_ready(timeout=90)
        beat.wait_ready(timeout=90)
        worker.wait_for(rf"{TASK}\[{sent['celery_task_id']}\] succeeded", timeout=90)
        worker.wait_for(rf"{TASK}\[[^\]]+\] succeeded", timeout=90, count=2)
        manual_runs = _finished_runs(s, manual["id"], timeout=30)
        auto_runs = _finished_runs(s, auto["id"], timeout=30)
    assert [(r["celery_task_id"], r["status"], r["attempt"]) for r in manual_runs] == [
        (sent["celery_task_id"], "success", 0)]
    assert json.loads(manual_runs[0]["result"])["cutoff"]  # the job ran with the schedule's kwargs
    assert [(r["status"], r["attempt"]) for r in auto_runs] == [("success", 0)]
    rows = {r["name"]: r for r in snapshot(s)}
    # Beat sent the CLI's due time and advanced the row by one interval from it.
    assert rows["auto"]["next_run_at"] == dt(auto["next_run_at"]) + timedelta(seconds=3600)
    assert rows["auto"]["success_count"] == 1 and rows["auto"]["invalid_reason"] is None
    assert rows["manual"]["status"] == "paused" and rows["manual"]["next_run_at"] == dt(manual["next_run_at"])
    text = invoke(s, "schedules", "run-now", str(manual["id"]))
    assert text.exit_code == 0 and f"schedules history {manual['id']}" in text.output


def test_run_now_refuses_what_a_worker_would_discard(embedded_settings: Settings) -> None:
    s = embedded_settings
    row = add(s, "gone")
    set_columns(s, row["id"], task_name="dataforge.removed")
    fix = f"schedules edit {row['id']}"
    refused(s, ["schedules", "run-now", "gone"], "not registered", f"{fix} --task")
    set_columns(s, row["id"], task_name=TASK, handler_kwargs='{"weeks": 1}')
    refused(s, ["schedules", "run-now", "gone"], '{"weeks": 1}', f"{fix} --kwargs")
    set_columns(s, row["id"], handler_kwargs="{}", task_type="cron", cron_expression="99 * * * *")
    refused(s, ["schedules", "run-now", "gone"], "'99 * * * *'", f"{fix} --cron")
    refused(s, ["schedules", "run-now", "nothing"], "no schedule")


def test_run_now_with_the_broker_down_is_a_clear_error(embedded_settings: Settings) -> None:
    add(embedded_settings, "nobroker")
    down = embedded_settings.with_(broker_url="redis://:secret@127.0.0.1:1/0")
    result = refused(down, ["schedules", "run-now", "nobroker"], "could not send to the broker", code=3)
    assert "secret" not in result.output


# --- PostgreSQL + Redis ------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.redis
def test_verbs_on_postgres_and_run_now_message_shape(server_settings: Settings) -> None:
    s = server_settings
    row = add(s, "pg", "--cron", "0 */2 * * *", "--timezone", "Europe/Berlin", "--kwargs", '{"days": 5}',
              "--timeout", "40", "--max-retries", "3")
    assert dt(row["next_run_at"]).minute == 0 and row["timezone"] == "Europe/Berlin"
    refused(s, ["schedules", "add", "pg2", "--task", TASK, "--cron", "0 3 * * *", "--timezone", "X/Y"], "--timezone")
    refused(s, ["schedules", "edit", "pg", "--kwargs", '{"nope": 1}'], "nope")
    edited = ok_json(s, "schedules", "edit", "pg", "--interval", "120")
    assert edited["task_type"] == "interval" and edited["cron_expression"] is None
    assert ok_json(s, "schedules", "pause", "pg")["status"] == "paused"
    assert ok_json(s, "schedules", "resume", "pg")["status"] == "active"
    assert [r["name"] for r in ok_json(s, "schedules", "list", "--status", "active")] == ["pg"]
    _executions(s, row["id"])
    assert len(ok_json(s, "schedules", "history", "pg")["executions"]) == 4

    sent = ok_json(s, "schedules", "run-now", "pg")
    client = redis.Redis.from_url(s.broker_url)
    try:
        queued = [json.loads(m) for m in client.lrange("celery", 0, -1)]
    finally:
        client.close()
    assert len(queued) == 1
    message = queued[0]
    headers = message["headers"]
    assert headers["task"] == TASK and headers["id"] == sent["celery_task_id"]
    assert headers[MAX_RETRIES_HEADER] == 3 and headers[SCHEDULE_ID_HEADER] == row["id"]
    assert headers["timelimit"] == [40 + HARD_LIMIT_GRACE_SECONDS, 40]  # beat's limits: hard = soft + grace
    assert DUE_AT_HEADER not in headers  # a manual run is not a scheduled run of some due time
    _args, kwargs, _embed = json.loads(base64.b64decode(message["body"]))
    assert kwargs == {"days": 5, "scheduled_task_id": row["id"]}
