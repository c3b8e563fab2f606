"""The revision graph and the schema it produces, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from dataforge.db import is_sqlite
from dataforge.models import Base
from migrations.compare import compare_type
from migrations.errors import MigrationRefusedError
from tests.migrations.support import build_legacy_db, downgrade, engine_for, rows, schema_snapshot, script, upgrade
from tests.support.services import fresh_postgres_database

MAIN_LINE = [
    "0001_legacy_baseline", "0002_expand", "0003_data", "0004_contract", "0005_change_triggers",
    "0006_executions_hot_close", "0008_schedule_policies",
]  # fmt: skip
HEAD = MAIN_LINE[-1]


def _drift(url: str) -> list[object]:
    engine = engine_for(url)
    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": compare_type}), Base.metadata)
    engine.dispose()
    return list(diffs)


def _current(url: str) -> str | None:
    engine = engine_for(url)
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    engine.dispose()
    return current


def _tables(url: str) -> set[str]:
    engine = engine_for(url)
    names = set(inspect(engine).get_table_names())
    engine.dispose()
    return names


def test_main_line_has_a_single_head_and_is_linear() -> None:
    scripts = script()
    assert scripts.get_heads() == [HEAD]
    assert [r.revision for r in reversed(list(scripts.walk_revisions()))] == MAIN_LINE


def test_the_optional_revision_is_outside_head() -> None:
    assert script().get_heads() == [HEAD]
    optional = script(optional=True)
    # After the main line's head: a database at the optional revision has the whole main line.
    assert optional.get_heads() == ["0007_drop_handler_path"]
    assert optional.get_revision("0007_drop_handler_path").down_revision == HEAD


def test_upgrade_from_empty_reaches_head_without_drift(db_url: str) -> None:
    upgrade(db_url)
    assert _current(db_url) == HEAD
    assert {"scheduled_tasks", "task_executions", "dataforge_locks", "dataforge_flags"} <= _tables(db_url)
    assert _drift(db_url) == []


def test_upgrade_of_a_legacy_database_adopts_it_without_stamp_and_has_no_drift(db_url: str) -> None:
    build_legacy_db(db_url)
    before = rows(db_url)
    upgrade(db_url)
    assert _current(db_url) == HEAD
    assert _drift(db_url) == []
    after = rows(db_url)
    assert [r["id"] for r in after["scheduled_tasks"]] == [r["id"] for r in before["scheduled_tasks"]]
    assert [r["id"] for r in after["task_executions"]] == [r["id"] for r in before["task_executions"]]


def test_baseline_is_exactly_the_legacy_schema_files(db_url: str, tmp_path: Path) -> None:
    upgrade(db_url, "0001_legacy_baseline")
    if is_sqlite(db_url):
        reference = f"sqlite:///{tmp_path / 'reference.db'}"
        build_legacy_db(reference, [], [], sequence_gap=False)
        assert schema_snapshot(db_url)["master"] == schema_snapshot(reference)["master"]
        return
    with fresh_postgres_database() as reference:
        build_legacy_db(reference, [], [], sequence_gap=False)
        assert schema_snapshot(db_url)["dump"] == schema_snapshot(reference)["dump"]


def test_baseline_refuses_tables_that_are_not_the_legacy_shape(db_url: str) -> None:
    engine = engine_for(db_url)
    Base.metadata.create_all(engine)  # models, not the legacy schema
    engine.dispose()
    with pytest.raises(MigrationRefusedError, match="not the legacy schema.*stamp head"):
        upgrade(db_url)
    assert _current(db_url) is None


def test_stairway_from_empty(db_url: str) -> None:
    """Each revision: up, down one, up again; every step leaves the next one workable."""
    for rev in MAIN_LINE:
        upgrade(db_url, rev)
        downgrade(db_url, "-1")
        upgrade(db_url, rev)
        assert _current(db_url) == rev
    assert _drift(db_url) == []
    downgrade(db_url, "base")
    assert not {"scheduled_tasks", "task_executions"} & _tables(db_url)


def test_stairway_on_legacy_data(db_url: str) -> None:
    build_legacy_db(db_url)
    original = rows(db_url)
    for rev in MAIN_LINE[1:]:
        upgrade(db_url, rev)
        downgrade(db_url, "-1")
        upgrade(db_url, rev)
    downgrade(db_url, "0001_legacy_baseline")
    assert rows(db_url) == original


def test_legacy_to_head_to_legacy_is_byte_exact(db_url: str) -> None:
    build_legacy_db(db_url)
    schema, data = schema_snapshot(db_url), rows(db_url)
    upgrade(db_url)
    assert rows(db_url) != data  # the upgrade did change rows...
    downgrade(db_url, "0001_legacy_baseline")
    assert rows(db_url) == data  # ...and every column of every row is back, NULLs and kwargs text included
    assert schema_snapshot(db_url) == schema  # same DDL text / pg_dump, same index, same sequences


def test_downgrade_below_baseline_refuses_to_drop_rows(db_url: str) -> None:
    build_legacy_db(db_url)
    upgrade(db_url, "0001_legacy_baseline")
    with pytest.raises(MigrationRefusedError, match="allow_drop_data"):
        downgrade(db_url, "base")
    assert {"scheduled_tasks", "task_executions"} <= _tables(db_url)
    downgrade(db_url, "base", {"allow_drop_data": "1"})
    assert not {"scheduled_tasks", "task_executions"} & _tables(db_url)


def test_sqlite_rebuilds_keep_autoincrement(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    build_legacy_db(url)
    upgrade(url)
    engine = engine_for(url)
    with engine.connect() as conn:
        ddl: dict[str, str] = dict(conn.execute(text("SELECT name, sql FROM sqlite_master WHERE type = 'table'")).all())
        seq: dict[str, int] = dict(conn.execute(text("SELECT name, seq FROM sqlite_sequence")).all())
        top = conn.execute(text("SELECT max(id) FROM scheduled_tasks")).scalar_one()
    engine.dispose()
    assert "AUTOINCREMENT" in ddl["scheduled_tasks"] and "AUTOINCREMENT" in ddl["task_executions"]
    assert seq["scheduled_tasks"] == top + 1  # the deleted row's id is never reused


def test_change_triggers_are_the_schedulers_and_installed_at_head(db_url: str) -> None:
    from dataforge.models import triggers as ddl
    from migrations import schedule_triggers as frozen

    # The newest revision's frozen copy is the scheduler's current SQL; a change there needs a revision.
    current = (frozen.POSTGRESQL_POLICY_TRIGGERS, frozen.POSTGRESQL_DROP)
    assert current == (ddl.POSTGRESQL_TRIGGERS, ddl.POSTGRESQL_DROP)
    assert (frozen.SQLITE_POLICY_TRIGGERS, frozen.SQLITE_DROP) == (ddl.SQLITE_TRIGGERS, ddl.SQLITE_DROP)
    build_legacy_db(db_url)
    upgrade(db_url)
    engine = engine_for(db_url)
    with engine.connect() as conn:
        assert ddl.triggers_installed(conn)
    engine.dispose()
    downgrade(db_url, "0002_expand")
    engine = engine_for(db_url)
    with engine.connect() as conn:
        assert not ddl.triggers_installed(conn)
    engine.dispose()
