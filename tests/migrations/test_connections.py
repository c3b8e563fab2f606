"""Connections that look without changing: SQLite opened read-only, PostgreSQL rolled back."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from migrations.connections import inspection_connection, read_only, redacted
from migrations.errors import DatabaseUnavailableError
from tests.migrations.support import build_legacy_db, rows


def test_sqlite_is_opened_read_only_and_a_missing_file_is_not_created(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'legacy.db'}"
    with inspection_connection(url, missing_ok=True) as conn:
        assert conn is None
    with pytest.raises(DatabaseUnavailableError, match="no SQLite file"):
        with inspection_connection(url):
            pass
    assert not (tmp_path / "legacy.db").exists()
    build_legacy_db(url)
    with inspection_connection(url) as conn:
        assert conn is not None
        conn.execute(text("CREATE TEMPORARY TABLE t (a INTEGER)"))  # temporary tables work
        with pytest.raises(OperationalError, match="readonly"):
            conn.execute(text("DELETE FROM scheduled_tasks"))


def test_postgresql_is_rolled_back_and_read_only_after_the_helpers(pg_url: str) -> None:
    build_legacy_db(pg_url)
    before = rows(pg_url)
    with inspection_connection(pg_url) as conn:
        assert conn is not None
        conn.execute(text("DELETE FROM task_executions"))
    assert rows(pg_url) == before
    with inspection_connection(pg_url) as conn:
        assert conn is not None
        read_only(conn)
        with pytest.raises(SQLAlchemyError, match="read-only transaction"):
            conn.execute(text("DELETE FROM task_executions"))
    assert rows(pg_url) == before


def test_an_unreachable_database_is_reported_without_its_password() -> None:
    url = "postgresql://user:s3cret@127.0.0.1:1/db"
    with pytest.raises(DatabaseUnavailableError) as failed:
        with inspection_connection(url):
            pass
    assert "s3cret" not in str(failed.value) and "127.0.0.1:1" in str(failed.value)
    assert "s3cret" not in redacted(url)
