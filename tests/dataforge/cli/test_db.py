"""``dataforge db``: the preflight and the upgrade report the same rows; exit codes; offline scripts; optional drop."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import text

from dataforge.cli.main import cli
from migrations.report import REASONS, STOPPED
from tests.migrations.support import (
    BLOCKING_ROWS,
    HOSTILE_NAME,
    PYTHON_LITERAL_SHAPES,
    QUIRK_SCHEDULES,
    T0,
    any_db_url,  # noqa: F401 (the fixture db_url)
    build_legacy_db,
    engine_for,
    literal_schedules,
    rows,
    schema_snapshot,
)


def run(url: str, *args: str, extra_env: dict[str, str] | None = None) -> Result:
    env = {"DATAFORGE_DATABASE_URL": url, "DATAFORGE_LEGACY_TASKS": "0", **(extra_env or {})}
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def _json(result: Result) -> Any:
    return json.loads(result.stdout)


def test_check_changes_nothing_and_the_upgrade_refuses_the_same_rows(db_url: str) -> None:
    build_legacy_db(db_url, [*QUIRK_SCHEDULES, *BLOCKING_ROWS])
    schema, data = schema_snapshot(db_url), rows(db_url)
    check = run(db_url, "db", "check", "--json")
    assert check.exit_code == 1
    report = _json(check)
    assert report["blocking"] is True and report["stops_rows"] is True
    groups = report["groups"]
    assert [r["id"] for r in groups["blocked_unrecognised_handler_path"]["rows"]] == [40]
    assert [r["id"] for r in groups["blocked_no_task_name_or_handler_path"]["rows"]] == [41]
    assert [r["id"] for r in groups["invalid_cron"]["rows"]] == [16]
    assert [r["id"] for r in groups["unknown_timezone"]["rows"]] == [17]
    assert [r["id"] for r in groups[STOPPED]["rows"]] == [16, 17, 40, 41]
    assert groups["executions_attempts_numbered"]["count"] == 3
    assert schema_snapshot(db_url) == schema and rows(db_url) == data

    refused = run(db_url, "db", "upgrade", "--json")
    assert refused.exit_code == 1
    refusal = _json(refused)
    assert refusal["refused"] is True and refusal["revision"] == "0003_data"
    assert refusal["report"]["groups"] == groups  # the same report, row for row
    assert schema_snapshot(db_url) == schema and rows(db_url) == data

    # Pausing the unmappable rows is allowed, but they stop running: the preflight says so.
    paused = run(db_url, "db", "check", "--on-unmappable", "pause", "--json")
    assert paused.exit_code == 1
    stopped = _json(paused)["groups"][STOPPED]["rows"]
    assert {r["id"]: r["reasons"] for r in stopped} == {
        16: ["task_name_from_handler_path", "invalid_cron"],
        17: ["task_name_from_handler_path", "unknown_timezone"],
        40: ["paused_unrecognised_handler_path"],
        41: ["paused_no_task_name_or_handler_path"],
    }
    done = run(db_url, "db", "upgrade", "--on-unmappable", "pause")
    assert done.exit_code == 0, done.output
    assert "database at 0008_schedule_policies" in done.stdout
    assert f"[STOP] {STOPPED} (4)" in done.stdout  # the upgrade's report says the same
    current = _json(run(db_url, "db", "current", "--json"))
    assert current["current"] == current["head"] == "0008_schedule_policies"
    after = _json(run(db_url, "db", "check", "--json"))
    assert after["blocking"] is False and "already applied" in " ".join(after["notes"])


def _row(row_id: int, name: str, **columns: Any) -> tuple[Any, ...]:
    values = {
        "task_type": "interval", "task_name": None, "handler_path": "scripts:sync_accounts", "interval_seconds": 60,
        "cron_expression": None, "run_at": None, "timezone": "UTC", "handler_kwargs": "{}", "status": "active",
        **columns,
    }  # fmt: skip
    return (row_id, name, values["task_type"], values["task_name"], values["handler_path"], values["interval_seconds"],
            values["cron_expression"], values["run_at"], values["timezone"], values["handler_kwargs"], values["status"],
            None, None, 0, T0, T0)  # fmt: skip


def test_check_answers_0_only_when_every_active_row_keeps_running(db_url: str) -> None:
    """The four Python-literal shapes convert and keep running: 0. One active row the upgrade
    would leave flagged (kwargs without a JSON form): 1, naming the row and why."""
    build_legacy_db(db_url, [r for r in literal_schedules() if r[0] in PYTHON_LITERAL_SHAPES], [])
    fine = run(db_url, "db", "check", "--json")
    assert fine.exit_code == 0, fine.output
    assert _json(fine)["stops_rows"] is False
    assert [r["id"] for r in _json(fine)["groups"]["kwargs_python_repr"]["rows"]] == sorted(PYTHON_LITERAL_SHAPES)
    engine = engine_for(db_url)
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE scheduled_tasks SET handler_kwargs = :kw WHERE id = 50"), {"kw": "{'tags': {'a', 'b'}}"}
        )
    engine.dispose()
    stops = run(db_url, "db", "check")
    assert stops.exit_code == 1
    assert "id=50 literal_50: kwargs_unconvertible: handler_kwargs=\"{'tags': {'a', 'b'}}\": a set at ['tags']" in (
        stops.stdout
    )
    assert "active rows would stop running" in stops.stderr


def test_a_row_with_every_problem_is_reported_with_every_reason(db_url: str) -> None:
    bad = _row(
        70, "everything_wrong", task_type="cron", interval_seconds=None, cron_expression="61 * * * *",
        timezone="Mars/Olympus", handler_kwargs="{'ids': {1, 2}}",
    )  # fmt: skip
    build_legacy_db(db_url, [bad, _row(71, "fine")], [])
    check = run(db_url, "db", "check", "--json")
    assert check.exit_code == 1
    groups = _json(check)["groups"]
    (stopped,) = groups[STOPPED]["rows"]
    assert stopped["id"] == 70
    assert stopped["reasons"] == ["task_name_from_handler_path", "kwargs_unconvertible", "unknown_timezone",
                                  "invalid_cron"]  # fmt: skip
    for code in ("kwargs_unconvertible", "unknown_timezone", "invalid_cron"):
        assert [r["id"] for r in groups[code]["rows"]] == [70], code
    assert "61 * * * *" in groups["invalid_cron"]["rows"][0]["detail"]
    upgraded = run(db_url, "db", "upgrade", "--json")
    assert upgraded.exit_code == 0, upgraded.output
    (report,) = [r for r in _json(upgraded)["reports"] if r["title"].startswith("DataForge data migration")]
    assert report["groups"][STOPPED]["rows"] == groups[STOPPED]["rows"]


def test_exit_codes_of_the_environment_and_of_bad_input(db_url: str, tmp_path: Path) -> None:
    down = "postgresql://postgres@127.0.0.1:1/nowhere"
    for args in (("db", "check"), ("db", "current"), ("db", "upgrade"), ("db", "sql", "--legacy-db", down)):
        result = run(down, *args)
        assert result.exit_code == 3, (args, result.output)
        assert "127.0.0.1:1" in result.stderr and "Traceback" not in result.output, args
    engine = engine_for(db_url)
    engine.connect().close()  # an empty database (SQLite: the file exists)
    engine.dispose()
    empty = run(db_url, "db", "sql", "--legacy-db", db_url)
    assert empty.exit_code == 3 and "not a legacy database" in empty.stderr
    build_legacy_db(db_url)
    assert run(db_url, "db", "upgrade", "-x", f"legacy_db={db_url}").exit_code == 2
    assert run(db_url, "db", "upgrade", "no_such_revision").exit_code == 2
    other = f"sqlite:///{tmp_path / 'other.db'}" if "postgresql" in db_url else "postgresql://postgres@127.0.0.1/x"
    mixed = run(db_url, "db", "sql", "-x", f"url={other}", "--legacy-db", db_url)
    assert mixed.exit_code == 2 and "this script is for" in mixed.stderr


def test_check_on_sqlite_does_not_touch_the_file(tmp_path: Path) -> None:
    """The preflight opens SQLite read-only: not even the journal mode changes."""
    url = f"sqlite:///{tmp_path / 'legacy.db'}"
    build_legacy_db(url, [*QUIRK_SCHEDULES, *literal_schedules()])
    path = tmp_path / "legacy.db"
    before = path.read_bytes()
    assert run(url, "db", "check").exit_code == 1
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["legacy.db"]


def test_check_on_an_empty_database_and_bad_options(db_url: str) -> None:
    result = run(db_url, "db", "check")
    assert result.exit_code == 0 and "creates the schema" in result.stdout
    bad = run(db_url, "db", "check", "-x", "on_unmappable=ignore")
    assert bad.exit_code == 2 and "expected refuse or pause" in bad.stderr
    assert run(db_url, "db", "upgrade", "-x", "nonsense=1").exit_code == 2


def test_sql_prints_a_reviewable_script_without_touching_the_database(db_url: str) -> None:
    build_legacy_db(db_url, [*QUIRK_SCHEDULES, *literal_schedules()])
    before = schema_snapshot(db_url), rows(db_url)
    result = run(db_url, "db", "sql", "--legacy-db", db_url)
    assert result.exit_code == 0, result.output
    assert "CREATE TEMPORARY TABLE df_migration_rows" in result.stdout
    assert "CREATE TABLE scheduled_tasks (" not in result.stdout
    assert "rows converted by Python" in result.stdout
    assert (schema_snapshot(db_url), rows(db_url)) == before
    # Without the rows the script still renders (no database needed), with what it cannot do.
    blind = run("sqlite:////nonexistent/dir/x.db", "db", "sql", "-x", "legacy_tables=adopt")
    assert blind.exit_code == 0 and "rendered without" in blind.stdout
    down = run(db_url, "db", "sql", "--downgrade", "head:0002_expand")
    assert down.exit_code == 0 and "0003_data -> 0002_expand" in down.stdout


def _set_switch(url: str, on: bool) -> None:
    engine = engine_for(url)
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE dataforge_flags SET enabled = {'true' if on else 'false'}"))
    engine.dispose()


def test_optional_drop_of_handler_path_refuses_while_the_switch_is_on_and_is_lossless(db_url: str) -> None:
    build_legacy_db(db_url)
    assert run(db_url, "db", "upgrade").exit_code == 0
    before = rows(db_url, ("scheduled_tasks",))["scheduled_tasks"]
    assert run(db_url, "legacy", "enable").exit_code == 0
    refused = run(db_url, "db", "upgrade", "--optional", "0007_drop_handler_path")
    assert refused.exit_code == 1 and "legacy switch is on" in refused.stderr
    assert run(db_url, "legacy", "disable").exit_code == 0
    env_on = run(db_url, "db", "upgrade", "0007_drop_handler_path", extra_env={"DATAFORGE_LEGACY_TASKS": "1"})
    assert env_on.exit_code == 1
    dropped = run(db_url, "db", "upgrade", "0007_drop_handler_path")
    assert dropped.exit_code == 0, dropped.output
    after = rows(db_url, ("scheduled_tasks",))["scheduled_tasks"]
    assert "handler_path" not in after[0]
    # Plain `db upgrade` on a database at the optional revision keeps it there.
    assert run(db_url, "db", "upgrade").exit_code == 0
    assert _json(run(db_url, "db", "current", "--json"))["current"] == "0007_drop_handler_path"
    assert run(db_url, "db", "downgrade", "0008_schedule_policies").exit_code == 0
    restored = rows(db_url, ("scheduled_tasks",))["scheduled_tasks"]
    key = ("id", "handler_path", "legacy_values", "task_name", "handler_kwargs")
    assert [{k: r[k] for k in key} for r in restored] == [{k: r[k] for k in key} for r in before]


def test_a_database_stamped_with_the_former_optional_id_is_told_how_to_move(db_url: str) -> None:
    """The optional drop was 0006_drop_handler_path (after 0005) before 0006_executions_hot_close;
    a database that ran it has the drop and still the (status, started_at) index."""
    from migrations.preflight import RENAMED_REVISIONS

    build_legacy_db(db_url)
    assert run(db_url, "db", "upgrade").exit_code == 0
    assert run(db_url, "db", "upgrade", "0007_drop_handler_path").exit_code == 0
    schema, data = schema_snapshot(db_url), rows(db_url)
    engine = engine_for(db_url)
    with engine.begin() as conn:  # what the former revision left behind
        conn.execute(text("CREATE INDEX ix_task_executions_status_started_at ON task_executions (status, started_at)"))
        conn.execute(text("UPDATE alembic_version SET version_num = '0006_drop_handler_path'"))
    fix = RENAMED_REVISIONS["0006_drop_handler_path"]
    for args in (("db", "upgrade"), ("db", "downgrade", "0002_expand"), ("db", "check")):
        refused = run(db_url, *args)
        assert refused.exit_code == 3 and fix in refused.stderr, args  # the schema state: environment
    assert fix in _json(run(db_url, "db", "current", "--json"))["state"]

    with engine.begin() as conn:  # the documented fix, in one transaction
        for statement in fix.split(";"):
            if statement.strip():
                conn.execute(text(statement))
    engine.dispose()
    assert schema_snapshot(db_url) == schema and rows(db_url) == data
    assert _json(run(db_url, "db", "current", "--json"))["current"] == "0007_drop_handler_path"
    assert run(db_url, "db", "downgrade", "0008_schedule_policies").exit_code == 0


@pytest.mark.parametrize("verb", ["status", "enable"])
def test_legacy_verbs_explain_an_unmigrated_database(verb: str, db_url: str) -> None:
    build_legacy_db(db_url)
    result = run(db_url, "legacy", verb)
    assert result.exit_code == 3  # the schema is outdated: the environment, not the input
    assert "dataforge db upgrade" in result.stderr


def test_the_downgrade_to_the_legacy_schema_lists_what_it_cannot_express_one_line_per_row(db_url: str) -> None:
    """``done`` schedules, the new execution statuses and the execution details the legacy
    schema has no column for are reported by ``db downgrade 0001_legacy_baseline``, never
    silently changed; a name holding line breaks stays on its own line (escaped)."""
    once = _row(80, HOSTILE_NAME, task_type="once", interval_seconds=None, run_at="2030-01-01 00:00:00")
    build_legacy_db(db_url, [*QUIRK_SCHEDULES, once])
    assert run(db_url, "db", "upgrade").exit_code == 0
    engine = engine_for(db_url)
    with engine.begin() as conn:
        # What the new runtime writes: beat marks a once row that ran done; the worker records
        # retries, skipped, lost and expired runs, with the worker's name and the traceback.
        conn.execute(text("UPDATE scheduled_tasks SET status = 'done' WHERE id IN (21, 80)"))
        conn.execute(
            text(
                "INSERT INTO task_executions (id, scheduled_task_id, celery_task_id, attempt, task_name, status, "
                "worker, traceback) VALUES (:id, 21, :cid, :attempt, 'dataforge.once_job', :status, :worker, :tb)"
            ),
            [
                {"id": 101, "cid": "n-1", "attempt": 0, "status": "retry", "worker": "w1@h", "tb": "Traceback ..."},
                {"id": 102, "cid": "n-1", "attempt": 1, "status": "success", "worker": "w1@h", "tb": None},
                {"id": 103, "cid": "n-2", "attempt": 0, "status": "skipped", "worker": None, "tb": None},
                {"id": 104, "cid": "n-3", "attempt": 0, "status": "lost", "worker": None, "tb": "Traceback ..."},
                {"id": 105, "cid": "n-4", "attempt": 0, "status": "expired", "worker": None, "tb": None},
            ],
        )
    engine.dispose()
    down = run(db_url, "db", "downgrade", "0001_legacy_baseline")
    assert down.exit_code == 0, down.output
    lines = down.stdout.splitlines()
    hostile = HOSTILE_NAME.replace("\n", "\\n").replace("\r", "\\r").replace("\u2028", "\\u2028")

    def group(code: str, count: int) -> str:
        return f"  [INFO] {code} ({count}): {REASONS[code].summary}"

    at = lines.index("0002_expand downgrade: what the legacy schema cannot express")
    assert lines[at + 1 : at + 10] == [
        group("execution_details_dropped", 3),  # 101, 102 (worker), 104 (traceback)
        group("execution_status_unknown_to_legacy", 4),
        "      id=101: status='retry'",
        "      id=103: status='skipped'",
        "      id=104: status='lost'",
        "      id=105: status='expired'",
        group("status_unknown_to_legacy", 2),
        "      id=21 once_repr: status='done'",
        f"      id=80 {hostile}: status='done'",
    ]
    # The name cannot forge report lines: each of its breaks is escaped in place.
    assert not any(line.startswith(("-- x", "DROP TABLE", "end")) for line in lines)
    assert not {"\r", "\u2028"} & set(down.stdout)
    assert lines[-1] == "database at 0001_legacy_baseline"
    # Kept as they are: the rows and their statuses, in the legacy tables.
    data = rows(db_url)
    assert {r["id"]: r["status"] for r in data["scheduled_tasks"] if r["id"] in (21, 80)} == {21: "done", 80: "done"}
    assert [(r["id"], r["status"]) for r in data["task_executions"] if r["id"] > 100] == [
        (101, "retry"), (102, "success"), (103, "skipped"), (104, "lost"), (105, "expired"),
    ]  # fmt: skip
    assert "worker" not in data["task_executions"][0] and "attempt" not in data["task_executions"][0]


def test_row_data_cannot_forge_report_lines(db_url: str) -> None:
    """Names and values are printed on one line each: a line break in a name, or in a value
    that reaches the report unquoted (the cron parser's message repeats the expression),
    is escaped, so the preflight's output has exactly one line per row."""
    forged = "61 * * * *\n  [BLOCK] blocked_unrecognised_handler_path (1): forged"
    bad = _row(90, "two\nlines\r\u2028three", task_type="cron", interval_seconds=None, cron_expression=forged)
    build_legacy_db(db_url, [bad], [])
    check = run(db_url, "db", "check")
    assert check.exit_code == 1
    lines = check.stdout.splitlines()
    assert [line.split(":", 1)[0] for line in lines if line.lstrip().startswith("[")] == [
        f"  [STOP] {STOPPED} (1)", "  [FLAG] invalid_cron (1)", "  [CHANGE] task_name_from_handler_path (1)",
    ]  # fmt: skip
    mentions = [line for line in lines if "forged" in line or "lines" in line]
    assert len(mentions) == 3 and all(line.startswith("      id=90 two\\nlines\\r\\u2028three: ") for line in mentions)
    assert "\\n  [BLOCK] blocked_unrecognised_handler_path (1): forged" in mentions[1]
    assert not {"\r", "\u2028"} & set(check.stdout)


def test_after_rollback_a_the_preflight_reports_and_blocks_on_the_same_rows(db_url: str) -> None:
    """Forward again after rollback A (docs/rollback.md): down to 0002_expand restores task_name
    and status, the rows the first upgrade paused with ``--on-unmappable pause`` included, so
    ``db check`` blocks on them again and repeats every row it stopped or flagged. Only what
    0002 keeps done is not repeated: the kwargs stay JSON there, the retries stay numbered."""
    build_legacy_db(db_url, [*QUIRK_SCHEDULES, *BLOCKING_ROWS, *literal_schedules()])
    first = run(db_url, "db", "check", "--json")
    assert first.exit_code == 1
    assert run(db_url, "db", "upgrade", "--on-unmappable", "pause").exit_code == 0
    assert run(db_url, "db", "downgrade", "0002_expand").exit_code == 0
    status = {r["id"]: r["status"] for r in rows(db_url, ("scheduled_tasks",))["scheduled_tasks"]}
    assert (status[40], status[41]) == ("active", "active")
    again = run(db_url, "db", "check", "--json")
    assert again.exit_code == 1
    before, after = _json(first), _json(again)
    assert after["blocking"] is True and after["stops_rows"] is True
    kept_done = {"kwargs_empty", "kwargs_python_repr", "kwargs_reserved_keys", "executions_attempts_numbered"}
    assert set(before["groups"]) - set(after["groups"]) == kept_done
    for code, group in before["groups"].items():
        if code not in kept_done:
            assert after["groups"][code] == group, code  # the same rows, the same details
    assert [r["id"] for r in after["groups"]["blocked_unrecognised_handler_path"]["rows"]] == [40]
    assert [r["id"] for r in after["groups"]["blocked_no_task_name_or_handler_path"]["rows"]] == [41]
    # And the upgrade agrees: it refuses on those rows again until the policy is given again.
    refused = run(db_url, "db", "upgrade", "--json")
    assert refused.exit_code == 1
    assert _json(refused)["report"]["groups"] == after["groups"]
    assert run(db_url, "db", "upgrade", "--on-unmappable", "pause").exit_code == 0
