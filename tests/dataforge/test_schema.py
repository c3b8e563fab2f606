"""The schema check (dataforge/schema.py): every database state it tells apart, on SQLite and
PostgreSQL; the revision ids it knows against migrations/; and its three users besides the
CLI: a real worker and a real beat refuse to start with one line, and an eager task applied
before ``db upgrade`` fails at once with one line instead of ten retries."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from celery import Celery
from sqlalchemy import text

from dataforge.db import Database
from dataforge.errors import DatabaseUnavailableError, SchemaError
from dataforge.schema import (
    HEAD,
    OLDEST_SUPPORTED,
    OPTIONAL_REVISIONS,
    REVISIONS,
    SchemaGate,
    may_be_schema_error,
    verify_schema,
)
from dataforge.settings import Settings
from tests.conftest import create_schema
from tests.migrations.support import build_legacy_db, script, upgrade


def test_the_revision_ids_are_those_of_migrations() -> None:
    main = [r.revision for r in script().walk_revisions()][::-1]
    assert tuple(main) == REVISIONS, "dataforge/schema.py REVISIONS must list migrations/versions, oldest first"
    everything = {r.revision for r in script(optional=True).walk_revisions()}
    assert tuple(sorted(everything - set(main))) == OPTIONAL_REVISIONS
    assert HEAD == script().get_current_head() and OLDEST_SUPPORTED in REVISIONS


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'schema.db'}"
    return str(request.getfixturevalue("pg_url"))


def _state(url: str) -> SchemaError | None:
    db = Database(url)
    try:
        verify_schema(db)
    except SchemaError as exc:
        return exc
    finally:
        db.dispose()
    return None


def _sql(url: str, statement: str) -> None:
    db = Database(url)
    try:
        with db.engine.begin() as conn:
            conn.execute(text(statement))
    finally:
        db.dispose()


def test_an_empty_database_has_no_schema(url: str) -> None:
    if url.startswith("sqlite"):
        _sql(url, "CREATE TABLE unrelated (x INTEGER)")
    problem = _state(url)
    assert problem is not None and problem.kind == "missing" and "run `dataforge db upgrade`" in str(problem)


def test_a_legacy_database_is_told_to_check_then_upgrade(url: str) -> None:
    build_legacy_db(url)
    problem = _state(url)
    assert problem is not None and problem.kind == "legacy"
    assert "`dataforge db check`, then `dataforge db upgrade`" in str(problem)


def test_revisions_older_than_the_oldest_supported_are_outdated(url: str) -> None:
    upgrade(url, "0001_legacy_baseline")
    problem = _state(url)
    assert problem is not None and problem.kind == "outdated" and problem.revision == "0001_legacy_baseline"
    assert str(problem).endswith("run `dataforge db upgrade`")
    upgrade(url, OLDEST_SUPPORTED)  # where a rollback runs
    assert _state(url) is None
    upgrade(url, "head")
    assert _state(url) is None


def test_an_unknown_revision_is_not_told_to_upgrade(url: str) -> None:
    upgrade(url, "head")
    _sql(url, "UPDATE alembic_version SET version_num = '0042_from_the_future'")
    problem = _state(url)
    assert problem is not None and problem.kind == "unknown" and "dataforge db upgrade" not in str(problem)
    assert "`dataforge db current`" in str(problem)


def test_a_missing_table_at_head_is_reported_by_name(url: str) -> None:
    upgrade(url, "head")
    _sql(url, "DROP TABLE dataforge_locks")
    problem = _state(url)
    assert problem is not None and "has no table dataforge_locks" in str(problem)


def test_a_schema_created_from_the_models_passes(url: str) -> None:
    create_schema(url)
    assert _state(url) is None


def test_unreachable_databases_say_why(tmp_path: Path) -> None:
    for bad, reason in [(f"sqlite:///{tmp_path / 'none' / 'x.db'}", "the folder"),
                        ("postgresql://nobody:pw@127.0.0.1:1/x", "Connection refused")]:
        db = Database(bad)
        with pytest.raises(DatabaseUnavailableError) as info:
            verify_schema(db)
        db.dispose()
        assert reason in str(info.value) and "pw" not in str(info.value)
        assert "psycopg" not in str(info.value) and "OperationalError" not in str(info.value)
    assert not (tmp_path / "none").exists()
    missing = tmp_path / "typo.db"
    with pytest.raises(SchemaError, match="does not exist yet"):
        verify_schema(Database(f"sqlite:///{missing}"))
    assert not missing.exists()


def test_the_gate_remembers_a_pass_and_rechecks_a_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db_url = f"sqlite:///{tmp_path / 'gate.db'}"
    gate = SchemaGate(Database(db_url))
    assert gate.problem() is not None and gate.problem() is not None
    create_schema(db_url)  # `db upgrade` while the process runs
    assert gate.problem() is None
    monkeypatch.setattr("dataforge.schema.verify_schema", lambda db: pytest.fail("re-checked after a pass"))
    assert gate.problem() is None
    gate.require()
    gate.db.dispose()


def test_schema_errors_are_told_from_other_database_errors(url: str) -> None:
    create_schema(url)
    db = Database(url)
    try:
        with pytest.raises(Exception) as missing_table, db.engine.connect() as conn:
            conn.execute(text("SELECT * FROM no_such_table"))
        assert may_be_schema_error(missing_table.value)
        insert = text("INSERT INTO dataforge_locks (key, owner, expires_at) VALUES ('k', 'o', '2030-01-01')")
        with pytest.raises(Exception) as duplicate, db.engine.begin() as conn:
            conn.execute(insert)
            conn.execute(insert)
        assert not may_be_schema_error(duplicate.value)
    finally:
        db.dispose()
    down = Database("postgresql://nobody@127.0.0.1:1/x")
    with pytest.raises(Exception) as refused:
        down.engine.connect()
    down.dispose()
    assert not may_be_schema_error(refused.value)


# --- the worker, beat and eager runs -------------------------------------------------------------


def _start(kind: str, settings: Settings, cwd: Path) -> subprocess.CompletedProcess[str]:
    args = ["worker", "--pool=solo", "--without-mingle", "--without-gossip"] if kind == "worker" else ["beat"]
    env = {**os.environ, **settings.as_env()}
    return subprocess.run([sys.executable, "-m", "celery", "-A", "dataforge.celery_app", *args, "--loglevel=INFO"],
                          env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["worker", "beat"])
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_worker_and_beat_refuse_to_start_without_the_schema(kind: str, backend: str, tmp_path: Path,
                                                           request: pytest.FixtureRequest) -> None:
    overrides = {} if backend == "sqlite" else {"DATAFORGE_DATABASE_URL": str(request.getfixturevalue("pg_url"))}
    settings = Settings.from_env(overrides, cwd=tmp_path)
    done = _start(kind, settings, tmp_path)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    lines = [line for line in output.splitlines() if f"{kind} not started" in line]
    assert len(lines) == 1 and "run `dataforge db upgrade`" in lines[0], output
    assert "Traceback" not in output and "no such table" not in output and "UndefinedTable" not in output, output


@pytest.mark.slow
def test_a_worker_at_an_outdated_revision_refuses_to_start(tmp_path: Path) -> None:
    settings = Settings.from_env({}, cwd=tmp_path)
    upgrade(settings.database_url, "0001_legacy_baseline")
    done = _start("worker", settings, tmp_path)
    assert done.returncode != 0 and "is at revision 0001_legacy_baseline" in done.stdout + done.stderr


def test_an_eager_run_before_db_upgrade_fails_once_with_the_fix(
    tmp_path: Path, make_app: Callable[[Settings], Celery], caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(Settings.from_env({}, cwd=tmp_path))  # no schema created
    app.loader.import_default_modules()
    with caplog.at_level(logging.WARNING):
        result = app.tasks["dataforge.example_cleanup"].apply(kwargs={"days": 1})
    assert result.state == "FAILURE"
    assert isinstance(result.result, SchemaError) and "run `dataforge db upgrade`" in str(result.result)
    ours = [r for r in caplog.records if r.name.startswith("dataforge")]
    assert len(ours) == 1 and "cannot record task runs" in ours[0].getMessage(), [r.getMessage() for r in ours]
    assert "dataforge db upgrade" in ours[0].getMessage()
    stats = app.runtime.recorder.stats
    assert stats.by_event == {"prerun": 1, "failure": 1, "postrun": 1}, "the run was retried"
