"""0006_executions_hot_close: (status, started_at) goes, and comes back exactly on downgrade.

Why the revision exists: the worker closes every run with an UPDATE of ``status`` (and
finished_at, result...); while ``status`` was indexed PostgreSQL could never make that a HOT
update. The last test shows the difference on PostgreSQL itself.
"""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from dataforge.db import is_sqlite
from migrations.legacy_schema import sqlite_tables
from tests.migrations.support import build_legacy_db, downgrade, engine_for, offline_sql, rows, schema_snapshot, upgrade

REVISION = "0006_executions_hot_close"
BEFORE = "0005_change_triggers"
IX_STATUS = "ix_task_executions_status_started_at"
IX_SCHEDULE = "ix_task_executions_scheduled_task_id_started_at"


def _indexes(url: str) -> set[str]:
    engine = engine_for(url)
    # PostgreSQL also lists the unique constraint's own index; only plain indexes here.
    found = inspect(engine).get_indexes("task_executions")
    names = {str(ix["name"]) for ix in found if not ix.get("duplicates_constraint")}
    engine.dispose()
    return names


def _statements(script: str) -> list[str]:
    """The script's statements, comments and blank lines left out."""
    body = "\n".join(line for line in script.splitlines() if line.strip() and not line.startswith("--"))
    return [s.strip() for s in body.split(";") if s.strip()]


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


def test_offline_sql_is_one_drop_and_one_create(db_url: str) -> None:
    up = _statements(offline_sql(db_url, f"{BEFORE}:{REVISION}"))
    assert up == [
        "BEGIN",
        f"DROP INDEX {IX_STATUS}",
        f"UPDATE alembic_version SET version_num='{REVISION}' WHERE alembic_version.version_num = '{BEFORE}'",
        "COMMIT",
    ]
    down = _statements(offline_sql(db_url, f"{REVISION}:{BEFORE}", down=True))
    assert down == [
        "BEGIN",
        # Exactly what 0002_expand created (tests below compare sqlite_master / pg_dump).
        f"CREATE INDEX {IX_STATUS} ON task_executions (status, started_at)",
        f"UPDATE alembic_version SET version_num='{BEFORE}' WHERE alembic_version.version_num = '{REVISION}'",
        "COMMIT",
    ]


def test_round_trip_drops_the_index_and_restores_it_exactly(db_url: str) -> None:
    build_legacy_db(db_url)
    upgrade(db_url, BEFORE)
    assert {IX_STATUS, IX_SCHEDULE} <= _indexes(db_url)
    schema, data = schema_snapshot(db_url), rows(db_url)

    upgrade(db_url, REVISION)
    assert IX_STATUS not in _indexes(db_url)
    assert IX_SCHEDULE in _indexes(db_url)  # history and counters keep theirs
    assert rows(db_url) == data  # an index change only
    assert schema_snapshot(db_url) != schema

    downgrade(db_url, BEFORE)
    assert IX_STATUS in _indexes(db_url)
    assert schema_snapshot(db_url) == schema  # same DDL text / pg_dump as 0002 made it
    assert rows(db_url) == data


def test_offline_scripts_do_what_the_online_run_does(db_url: str, tmp_path: Path) -> None:
    build_legacy_db(db_url)
    upgrade(db_url, BEFORE)
    schema = schema_snapshot(db_url)
    up, down = offline_sql(db_url, f"{BEFORE}:{REVISION}"), offline_sql(db_url, f"{REVISION}:{BEFORE}", down=True)
    upgrade(db_url, REVISION)
    online_head = schema_snapshot(db_url)
    downgrade(db_url, BEFORE)

    _apply(db_url, up, tmp_path)
    assert IX_STATUS not in _indexes(db_url)
    assert schema_snapshot(db_url) == online_head
    _apply(db_url, down, tmp_path)
    assert schema_snapshot(db_url) == schema


def test_frozen_table_shapes_follow_the_revision(db_url: str) -> None:
    """migrations/legacy_schema.py's shapes (copy_from of SQLite rebuilds) name the indexes the
    database has at each stage: ``contract`` at 0005, ``hot_close`` at 0006."""
    upgrade(db_url, BEFORE)
    assert _indexes(db_url) == {ix.name for ix in sqlite_tables("contract")[1].indexes}
    upgrade(db_url, REVISION)
    assert _indexes(db_url) == {ix.name for ix in sqlite_tables("hot_close")[1].indexes}
    assert IX_STATUS not in {ix.name for ix in sqlite_tables("dropped")[1].indexes}


_OPEN = (
    "INSERT INTO task_executions (celery_task_id, attempt, status, started_at) "
    "VALUES (:tid, 0, 'running', now())"
)  # fmt: skip
_CLOSE = (
    "UPDATE task_executions SET status = 'success', finished_at = now(), duration_ms = 5, result = '{}', "
    "error = NULL, traceback = NULL WHERE celery_task_id = :tid AND attempt = 0 AND status = 'running'"
)


def _close_is_hot(url: str, task_id: str) -> bool:
    """Insert a running row (committed), close it as the worker does, and ask PostgreSQL whether
    that UPDATE was heap-only (this transaction's own counter: no stats collector delay)."""
    engine = engine_for(url)
    with engine.begin() as conn:
        conn.execute(text(_OPEN), {"tid": task_id})
    with engine.begin() as conn:
        assert conn.execute(text(_CLOSE), {"tid": task_id}).rowcount == 1
        hot = conn.execute(text("SELECT pg_stat_get_xact_tuples_hot_updated('task_executions'::regclass)")).scalar()
    engine.dispose()
    return hot == 1


def test_closing_a_run_is_a_hot_update_only_without_the_index(pg_url: str) -> None:
    upgrade(pg_url, BEFORE)
    assert not _close_is_hot(pg_url, "with-index")
    upgrade(pg_url)
    assert _close_is_hot(pg_url, "at-head")


@pytest.mark.parametrize("name", ["contract", "hot_close", "dropped"])
def test_stages_keep_their_other_shapes(name: str) -> None:
    schedules, executions = sqlite_tables(name)
    assert ("handler_path" in schedules.c) is (name != "dropped")
    assert schedules.c.task_name.nullable is False
    assert "status" in executions.c and "attempt" in executions.c
