"""0008_schedule_policies: seven columns and the triggers that watch the policies; a downgrade
that keeps every value (in legacy_values) and an upgrade that puts them back.

Tested by the SQL it emits (offline), by up/down round trips on SQLite and PostgreSQL, and by
what the rows look like on the way down to the rollback revision (0002_expand), where 0003's
downgrade must still find its own records.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

from sqlalchemy import inspect, text

from dataforge.db import is_sqlite
from dataforge.models import triggers as ddl
from migrations.schedule_triggers import POSTGRESQL_TRIGGERS, SQLITE_TRIGGERS
from tests.migrations.support import build_legacy_db, downgrade, engine_for, offline_sql, rows, schema_snapshot, upgrade

REVISION = "0008_schedule_policies"
BEFORE = "0006_executions_hot_close"
POLICY_COLUMNS = [
    "overlap_policy", "catchup_window_seconds", "jitter_seconds",
    "missed_count", "skipped_count", "expired_count", "lost_count",
]  # fmt: skip
ADDED = [
    "ALTER TABLE scheduled_tasks ADD COLUMN overlap_policy VARCHAR(16) DEFAULT 'skip' NOT NULL",
    "ALTER TABLE scheduled_tasks ADD COLUMN catchup_window_seconds INTEGER",
    "ALTER TABLE scheduled_tasks ADD COLUMN jitter_seconds INTEGER DEFAULT 0 NOT NULL",
    "ALTER TABLE scheduled_tasks ADD COLUMN missed_count INTEGER DEFAULT 0 NOT NULL",
    "ALTER TABLE scheduled_tasks ADD COLUMN skipped_count INTEGER DEFAULT 0 NOT NULL",
    "ALTER TABLE scheduled_tasks ADD COLUMN expired_count INTEGER DEFAULT 0 NOT NULL",
    "ALTER TABLE scheduled_tasks ADD COLUMN lost_count INTEGER DEFAULT 0 NOT NULL",
]


def _statements(script: str) -> list[str]:
    """The script's statements (comments and blank lines out), split where Alembic ends them."""
    body = "\n".join(line for line in script.splitlines() if line.strip() and not line.startswith("--"))
    out, current = [], []
    for line in body.splitlines():
        current.append(line)
        if line.rstrip().endswith(";") and not _inside_function("\n".join(current)):
            out.append("\n".join(current).rstrip().rstrip(";").strip())
            current = []
    return out


def _inside_function(text_so_far: str) -> bool:
    return text_so_far.count("$fn$") % 2 == 1 or (
        "CREATE TRIGGER" in text_so_far and "BEGIN" in text_so_far and not text_so_far.rstrip().endswith("END;")
    )


def _same(statement: str, expected: str) -> bool:
    return " ".join(statement.split()) == " ".join(expected.split())


def _columns(url: str) -> list[str]:
    engine = engine_for(url)
    names = [c["name"] for c in inspect(engine).get_columns("scheduled_tasks")]
    engine.dispose()
    return names


def _exec(url: str, *statements: str, **params: Any) -> None:
    engine = engine_for(url)
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement), params)
    engine.dispose()


def _by_id(url: str) -> dict[int, dict[str, Any]]:
    return {r["id"]: r for r in rows(url, ("scheduled_tasks",))["scheduled_tasks"]}


def test_offline_sql_adds_seven_columns_and_replaces_the_triggers(db_url: str) -> None:
    up = _statements(offline_sql(db_url, f"{BEFORE}:{REVISION}"))
    assert up[0] == "BEGIN" and up[-1] == "COMMIT"
    assert up[-2].startswith(f"UPDATE alembic_version SET version_num='{REVISION}'")
    assert [s for s in up if s.startswith("ALTER TABLE")] == ADDED
    # The triggers go first (nothing fires while rows are rewritten) and come back as 0008's.
    first_add = up.index(ADDED[0])
    assert all(s.startswith("DROP") for s in up[1:first_add])
    policy = ddl.POSTGRESQL_TRIGGERS if not is_sqlite(db_url) else ddl.SQLITE_TRIGGERS
    installed = up[-2 - len(policy):-2]
    assert all(_same(s, e) for s, e in zip(installed, policy, strict=True)), installed
    restore = [s for s in up if s.startswith("UPDATE scheduled_tasks")]
    assert len(restore) == 1 and "schedule_policies" in restore[0]

    down = _statements(offline_sql(db_url, f"{REVISION}:{BEFORE}", down=True))
    dropped = [s for s in down if s.startswith("ALTER TABLE")]
    assert dropped == [f"ALTER TABLE scheduled_tasks DROP COLUMN {name}" for name in reversed(POLICY_COLUMNS)]
    old = POSTGRESQL_TRIGGERS if not is_sqlite(db_url) else SQLITE_TRIGGERS
    reinstalled = down[-2 - len(old):-2]
    assert all(_same(s, e) for s, e in zip(reinstalled, old, strict=True)), reinstalled


def test_round_trip_on_legacy_data_leaves_the_schema_and_every_row_as_they_were(db_url: str) -> None:
    build_legacy_db(db_url)
    upgrade(db_url, BEFORE)
    schema, data = schema_snapshot(db_url), rows(db_url)
    upgrade(db_url, REVISION)
    assert _columns(db_url)[-7:] == POLICY_COLUMNS
    at_head = _by_id(db_url)
    assert {(r["overlap_policy"], r["jitter_seconds"], r["missed_count"], r["lost_count"]) for r in at_head.values()} \
        == {("skip", 0, 0, 0)}
    downgrade(db_url, BEFORE)
    assert schema_snapshot(db_url) == schema  # sqlite_master text / pg_dump, triggers included
    assert rows(db_url) == data


def _storage(url: str) -> dict[str, int]:
    """Where ``scheduled_tasks`` and its indexes keep their rows: a table rewrite gives new
    storage (PostgreSQL: new files, ``pg_relation_filenode``; SQLite: a rebuild creates a new
    table, at a new ``rootpage``)."""
    engine = engine_for(url)
    with engine.connect() as conn:
        if is_sqlite(url):
            found = conn.execute(
                text("SELECT name, rootpage FROM sqlite_master WHERE tbl_name = 'scheduled_tasks' AND rootpage > 0")
            )
        else:
            found = conn.execute(
                text(
                    "SELECT c.relname, pg_relation_filenode(c.oid) FROM pg_class c "
                    "WHERE c.oid = 'scheduled_tasks'::regclass "
                    "OR c.oid IN (SELECT indexrelid FROM pg_index WHERE indrelid = 'scheduled_tasks'::regclass) "
                    "OR c.oid = (SELECT reltoastrelid FROM pg_class WHERE oid = 'scheduled_tasks'::regclass)"
                )
            )
        storage = {str(name): int(where) for name, where in found}
    engine.dispose()
    return storage


def test_adding_the_columns_rewrites_no_table(db_url: str) -> None:
    """``ADD COLUMN`` with constant defaults is a catalogue change on both databases: on a large
    table a rewrite would hold its lock for as long as copying every row takes."""
    build_legacy_db(db_url)
    upgrade(db_url, BEFORE)
    before = _storage(db_url)
    assert "scheduled_tasks" in before and len(before) > 1  # the table and at least its unique index
    upgrade(db_url, REVISION)
    assert _columns(db_url)[-7:] == POLICY_COLUMNS
    assert _storage(db_url) == before


def _set_values(url: str) -> dict[int, dict[str, Any]]:
    """Non-default values on three kinds of row: one the data step migrated (its legacy_values
    is 0003's record), one created after it (NULL legacy_values, no handler_path), one flagged."""
    _exec(
        url,
        "INSERT INTO scheduled_tasks (name, task_type, task_name, interval_seconds, timezone, handler_kwargs, "
        "status, max_retries, run_count, success_count, failure_count, created_at, updated_at) VALUES "
        "('created_later', 'interval', 'dataforge.created_later', 60, 'UTC', '{}', 'active', 0, 0, 0, 0, "
        "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
        "UPDATE scheduled_tasks SET overlap_policy = 'buffer_one', catchup_window_seconds = 3600, "
        "jitter_seconds = 30, missed_count = 4, lost_count = 1 WHERE id = 1",
        "UPDATE scheduled_tasks SET overlap_policy = 'cancel_previous', skipped_count = 7, expired_count = 2 "
        "WHERE name = 'created_later'",
        "UPDATE scheduled_tasks SET missed_count = 9 WHERE id = 15",  # not_object: flagged by the data step
    )
    return _by_id(url)


def test_downgrade_keeps_every_value_and_the_upgrade_puts_them_back(db_url: str) -> None:
    build_legacy_db(db_url)
    upgrade(db_url, REVISION)
    at_head = _set_values(db_url)
    new_id = next(i for i, r in at_head.items() if r["name"] == "created_later")
    assert at_head[15]["invalid_reason"] is not None

    downgrade(db_url, BEFORE)
    low = _by_id(db_url)
    assert not set(POLICY_COLUMNS) & set(low[1])
    migrated = json.loads(low[1]["legacy_values"])
    # 0003's own record is still there, at the top, for its downgrade to read...
    assert set(json.loads(at_head[1]["legacy_values"])) <= set(migrated)
    saved = migrated["schedule_policies"]
    assert {k: saved[k] for k in ("overlap_policy", "catchup_window_seconds", "jitter_seconds", "missed_count",
                                  "lost_count")} == {
        "overlap_policy": "buffer_one", "catchup_window_seconds": 3600, "jitter_seconds": 30, "missed_count": 4,
        "lost_count": 1,
    }
    assert saved["legacy_values"] == at_head[1]["legacy_values"]  # the exact text, for the way back
    # ...and the row created after the data step got the handler_path 0003's downgrade would give it.
    assert low[new_id]["handler_path"] == "scripts:created_later"
    record = json.loads(low[new_id]["legacy_values"])["schedule_policies"]
    assert record["handler_path_written"] == "scripts:created_later"
    # Rows with nothing to keep are untouched; the flag was not cleared by a trigger.
    assert low[2]["legacy_values"] == at_head[2]["legacy_values"]
    assert low[15]["invalid_reason"] == at_head[15]["invalid_reason"]

    upgrade(db_url, REVISION)
    assert _by_id(db_url) == at_head


def test_on_the_way_to_the_rollback_revision_0003_still_restores_its_rows(db_url: str, tmp_path: Path) -> None:
    """The rollback runs at 0002_expand: 0003's downgrade must restore task_name/status and
    give created rows a handler_path exactly as it does when there was nothing to keep."""
    plain = f"sqlite:///{tmp_path / 'plain.db'}" if is_sqlite(db_url) else None
    build_legacy_db(db_url)
    upgrade(db_url)
    _set_values(db_url)
    downgrade(db_url, "0002_expand")
    kept = _by_id(db_url)

    if plain is None:
        return _compare_with_plain_postgres(db_url, kept)
    build_legacy_db(plain)
    upgrade(plain)
    _exec(plain, "INSERT INTO scheduled_tasks (name, task_type, task_name, interval_seconds, timezone, handler_kwargs, "
          "status, max_retries, run_count, success_count, failure_count, created_at, updated_at) VALUES "
          "('created_later', 'interval', 'dataforge.created_later', 60, 'UTC', '{}', 'active', 0, 0, 0, 0, "
          "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)")
    downgrade(plain, "0002_expand")
    _same_rollback(kept, _by_id(plain))


def _compare_with_plain_postgres(db_url: str, kept: dict[int, dict[str, Any]]) -> None:
    from tests.support.services import fresh_postgres_database

    with fresh_postgres_database() as plain:
        build_legacy_db(plain)
        upgrade(plain)
        _exec(plain, "INSERT INTO scheduled_tasks (name, task_type, task_name, interval_seconds, timezone, "
              "handler_kwargs, status, max_retries, run_count, success_count, failure_count, created_at, updated_at) "
              "VALUES ('created_later', 'interval', 'dataforge.created_later', 60, 'UTC', '{}', 'active', 0, 0, 0, 0, "
              "now(), now())")
        downgrade(plain, "0002_expand")
        _same_rollback(kept, _by_id(plain))


def _same_rollback(kept: dict[int, dict[str, Any]], plain: dict[int, dict[str, Any]]) -> None:
    """Every column 0003 restores is what it is without 0008's values; legacy_values may only
    differ by the dropped key (0003 reduced both to its handler_kwargs entry)."""
    assert set(kept) == set(plain)
    for row_id, row in kept.items():
        for column in ("task_name", "status", "handler_path", "handler_kwargs", "invalid_reason"):
            assert row[column] == plain[row_id][column], (row_id, column)
        assert "schedule_policies" not in (row["legacy_values"] or "")


def _apply(url: str, script: str, tmp_path: Path) -> None:
    """As a DBA would: sqlite3, or ``psql -v ON_ERROR_STOP=1 -f``."""
    if is_sqlite(url):
        conn = sqlite3.connect(url.split("sqlite:///", 1)[1], isolation_level=None)
        try:
            conn.executescript(script)
        finally:
            conn.close()
        return
    path = tmp_path / "revision.sql"
    path.write_text(script, encoding="utf-8")
    subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(path), url], check=True, capture_output=True)


def test_offline_scripts_do_what_the_online_run_does(db_url: str, tmp_path: Path) -> None:
    build_legacy_db(db_url)
    upgrade(db_url, REVISION)
    _set_values(db_url)
    up, down = offline_sql(db_url, f"{BEFORE}:{REVISION}"), offline_sql(db_url, f"{REVISION}:{BEFORE}", down=True)
    at_head, head_schema = rows(db_url), schema_snapshot(db_url)
    downgrade(db_url, BEFORE)
    online_low, low_schema = rows(db_url), schema_snapshot(db_url)
    upgrade(db_url, REVISION)

    _apply(db_url, down, tmp_path)
    assert rows(db_url) == online_low and schema_snapshot(db_url) == low_schema
    _apply(db_url, up, tmp_path)
    assert rows(db_url) == at_head
    if not is_sqlite(db_url):  # SQLite keeps DDL text as sent: the offline ADD COLUMN text differs
        assert schema_snapshot(db_url) == head_schema


def test_the_triggers_watch_the_policies_and_ignore_the_counters(db_url: str) -> None:
    upgrade(db_url)
    _exec(
        db_url,
        "INSERT INTO scheduled_tasks (name, task_type, task_name, interval_seconds, timezone, handler_kwargs, status, "
        "max_retries, run_count, success_count, failure_count, created_at, updated_at, next_run_at, invalid_reason) "
        "VALUES ('t', 'interval', 'x', 60, 'UTC', '{}', 'active', 0, 0, 0, 0, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, "
        "'2030-01-01 00:00:00', 'flagged')",
    )

    def state() -> tuple[Any, Any]:
        row = next(iter(_by_id(db_url).values()))
        return row["next_run_at"], row["invalid_reason"]

    _exec(db_url, "UPDATE scheduled_tasks SET missed_count = 3, skipped_count = 2, expired_count = 1, lost_count = 5")
    assert state()[1] == "flagged", "a counter update is not an edit"
    _exec(db_url, "UPDATE scheduled_tasks SET overlap_policy = 'allow'")
    next_run, flag = state()
    assert flag is None and next_run is not None, "an edit of a policy revives the row, keeps its due time"
    _exec(db_url, "UPDATE scheduled_tasks SET invalid_reason = 'flagged'")
    _exec(db_url, "UPDATE scheduled_tasks SET catchup_window_seconds = 600")
    assert state()[1] is None
    _exec(db_url, "UPDATE scheduled_tasks SET jitter_seconds = 30")
    assert state()[0] is None, "a jitter edit realigns the due time (beat recomputes it)"


def test_a_database_that_ran_0007_before_0008_existed_is_told_how_to_catch_up(db_url: str) -> None:
    """0007_drop_handler_path followed 0006 until 0008 came after it. A database that ran it
    then has no policy columns; `dataforge db` says so, and the documented fix brings it to the
    state of a database that took the new way."""
    from click.testing import CliRunner

    from dataforge.cli.db import _BEFORE_0008_FIX
    from dataforge.cli.main import cli
    from migrations.schedule_triggers import POSTGRESQL_DROP, SQLITE_DROP, without_handler_path

    def run(*args: str) -> Any:
        env = {"DATAFORGE_DATABASE_URL": db_url, "DATAFORGE_LEGACY_TASKS": "0"}
        return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)

    build_legacy_db(db_url)
    upgrade(db_url)
    upgrade(db_url, "0007_drop_handler_path", optional=True)
    expected = _by_id(db_url)
    # What the former chain left: no 0008 columns, 0005's triggers without handler_path.
    old = POSTGRESQL_TRIGGERS if not is_sqlite(db_url) else SQLITE_TRIGGERS
    drop = POSTGRESQL_DROP if not is_sqlite(db_url) else SQLITE_DROP
    _exec(db_url, *drop, *(f"ALTER TABLE scheduled_tasks DROP COLUMN {name}" for name in POLICY_COLUMNS),
          *without_handler_path(old))

    current = run("db", "current")
    assert "ran 0007_drop_handler_path before 0008_schedule_policies" in current.output
    refused = run("db", "upgrade")
    assert refused.exit_code == 3 and _BEFORE_0008_FIX in refused.output  # the schema state: environment
    fix, _, then = _BEFORE_0008_FIX.partition("; then ")
    _exec(db_url, *(statement for statement in fix.split(";") if statement.strip()))
    assert run("db", "upgrade", then.strip("`").split()[-1]).exit_code == 0
    assert _by_id(db_url) == expected
    engine = engine_for(db_url)
    with engine.connect() as conn:
        assert ddl.triggers_installed(conn)
    engine.dispose()
    assert run("db", "downgrade", REVISION).exit_code == 0  # and back down the new way
    assert "handler_path" in _columns(db_url)


def test_the_frozen_table_shapes_have_the_columns_from_0008_on(db_url: str) -> None:
    """The SQLite rebuilds of later revisions (0007) copy from these shapes: a shape without
    0008's columns would drop them."""
    from migrations.legacy_schema import sqlite_tables

    assert not set(POLICY_COLUMNS) & set(sqlite_tables("hot_close")[0].c.keys())
    for stage in ("policies", "dropped"):
        columns = list(sqlite_tables(stage)[0].c.keys())
        assert columns[-7:] == POLICY_COLUMNS, stage
        assert ("handler_path" in columns) is (stage == "policies")
    upgrade(db_url, REVISION)
    assert _columns(db_url) == list(sqlite_tables("policies")[0].c.keys())
