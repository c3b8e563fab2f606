"""The revision graph and the schema it produces, on SQLite and PostgreSQL."""

from __future__ import annotations

import ast
import io
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import DefaultClause, Text, inspect, text

from dataforge.db import is_sqlite
from dataforge.models import Base
from dataforge.settings import Settings
from migrations.compare import compare_type
from migrations.config import alembic_config
from migrations.errors import MigrationRefusedError
from tests.conftest import REPO_ROOT
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


MIGRATIONS = REPO_ROOT / "migrations"
MODELS = "dataforge.models"


def _models_imports(tree: ast.AST, path: Path) -> list[str]:
    """``file:line`` of every import statement under ``tree`` (lazy ones included) that reaches
    ``dataforge.models``: ``import dataforge.models...``, ``from dataforge.models... import x``
    or ``from dataforge import models``. The migrations import the project absolutely."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module or "", *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        if any(name == MODELS or name.startswith(f"{MODELS}.") for name in names):
            found.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}")
    return found


def test_no_migration_module_imports_the_models() -> None:
    """Every revision describes the schema it works on itself (migrations/legacy_schema.py holds
    the frozen shapes), and so do the helpers they use: a change of the models must not change
    what a revision does. Only env.py's ``_target_metadata`` imports them, for ``alembic check``
    and autogenerate."""
    modules = sorted(p for p in MIGRATIONS.rglob("*.py") if "__pycache__" not in p.parts)
    names = {p.name for p in modules}
    assert {"0002_expand.py", "0008_schedule_policies.py", "0007_drop_handler_path.py", "legacy_schema.py"} <= names
    found: list[str] = []
    for path in modules:
        tree = ast.parse(path.read_bytes(), filename=str(path))
        # Relative imports would need resolving against the package; there are none.
        assert not [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level], path
        if path.name == "env.py":
            allowed = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "_target_metadata"]
            assert len(allowed) == 1 and _models_imports(allowed[0], path), "env.py's models import moved"
            tree.body = [n for n in tree.body if n not in allowed]
        found += _models_imports(tree, path)
    assert found == []


def _scripts(url: str) -> list[str]:
    """The offline scripts of every revision for ``url``'s dialect: up to the optional one, and down."""
    out = []
    for optional, revisions, down in ((True, "base:0007_drop_handler_path", False), (False, f"{HEAD}:base", True)):
        buf = io.StringIO()
        cfg = alembic_config(Settings.from_env({"DATAFORGE_DATABASE_URL": url}), output=buf, optional=optional)
        (command.downgrade if down else command.upgrade)(cfg, revisions, sql=True)
        out.append(buf.getvalue())
    return out


@pytest.mark.parametrize("url", ["sqlite:///unused.db", "postgresql://unused@127.0.0.1:1/unused"])
def test_the_revisions_do_the_same_whatever_the_models_say(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """What no import scan can see: a revision reaching the models some other way (a helper
    that takes a table from ``Base.metadata``). Every column of every model table gets another
    type, nullability and default: the scripts of every revision stay byte for byte the same
    (rendered without a database: nothing connects to the URL)."""
    before = _scripts(url)
    for table in Base.metadata.tables.values():
        for column in table.columns:
            monkeypatch.setattr(column, "type", Text())
            monkeypatch.setattr(column, "nullable", not column.nullable)
            monkeypatch.setattr(column, "server_default", DefaultClause(text("'models changed'")))
    assert _scripts(url) == before


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
