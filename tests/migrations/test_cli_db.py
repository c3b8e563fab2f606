"""``dataforge db``: the preflight and the upgrade refuse on the same rows; exit codes; optional drop."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import text

from dataforge.cli.main import cli
from tests.migrations.support import (
    BLOCKING_ROWS,
    QUIRK_SCHEDULES,
    build_legacy_db,
    engine_for,
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
    assert report["blocking"] is True
    groups = report["groups"]
    assert [r["id"] for r in groups["blocked_unrecognised_handler_path"]["rows"]] == [40]
    assert [r["id"] for r in groups["blocked_no_task_name_or_handler_path"]["rows"]] == [41]
    assert [r["id"] for r in groups["invalid_cron"]["rows"]] == [16]
    assert [r["id"] for r in groups["unknown_timezone"]["rows"]] == [17]
    assert groups["executions_attempts_numbered"]["count"] == 3
    assert schema_snapshot(db_url) == schema and rows(db_url) == data

    refused = run(db_url, "db", "upgrade", "--json")
    assert refused.exit_code == 1
    refusal = _json(refused)
    assert refusal["refused"] is True and refusal["revision"] == "0003_data"
    assert refusal["report"]["groups"] == groups  # the same report, row for row
    assert schema_snapshot(db_url) == schema and rows(db_url) == data

    assert run(db_url, "db", "check", "--on-unmappable", "pause").exit_code == 0
    done = run(db_url, "db", "upgrade", "--on-unmappable", "pause")
    assert done.exit_code == 0, done.output
    assert "database at 0008_schedule_policies" in done.stdout
    current = _json(run(db_url, "db", "current", "--json"))
    assert current["current"] == current["head"] == "0008_schedule_policies"
    after = _json(run(db_url, "db", "check", "--json"))
    assert after["blocking"] is False and "already applied" in " ".join(after["notes"])


def test_check_on_an_empty_database_and_bad_options(db_url: str) -> None:
    result = run(db_url, "db", "check")
    assert result.exit_code == 0 and "creates the schema" in result.stdout
    bad = run(db_url, "db", "check", "-x", "on_unmappable=ignore")
    assert bad.exit_code == 2 and "expected refuse or pause" in bad.stderr
    assert run(db_url, "db", "upgrade", "-x", "nonsense=1").exit_code == 2


def test_sql_prints_a_reviewable_script_without_touching_the_database(db_url: str) -> None:
    build_legacy_db(db_url)
    before = schema_snapshot(db_url)
    result = run(db_url, "db", "sql", "--legacy-db")
    assert result.exit_code == 0
    assert "CREATE TEMPORARY TABLE df_migration_rows" in result.stdout
    assert "CREATE TABLE scheduled_tasks (" not in result.stdout
    assert schema_snapshot(db_url) == before
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
    from dataforge.cli.db import _RENAMED_REVISIONS

    build_legacy_db(db_url)
    assert run(db_url, "db", "upgrade").exit_code == 0
    assert run(db_url, "db", "upgrade", "0007_drop_handler_path").exit_code == 0
    schema, data = schema_snapshot(db_url), rows(db_url)
    engine = engine_for(db_url)
    with engine.begin() as conn:  # what the former revision left behind
        conn.execute(text("CREATE INDEX ix_task_executions_status_started_at ON task_executions (status, started_at)"))
        conn.execute(text("UPDATE alembic_version SET version_num = '0006_drop_handler_path'"))
    fix = _RENAMED_REVISIONS["0006_drop_handler_path"]
    for args in (("db", "upgrade"), ("db", "downgrade", "0002_expand")):
        refused = run(db_url, *args)
        assert refused.exit_code == 2 and fix in refused.stderr, args
    assert fix in _json(run(db_url, "db", "current", "--json"))["state"]
    assert run(db_url, "db", "check").exit_code == 0

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
    assert result.exit_code == 2
    assert "dataforge db upgrade" in result.stderr
