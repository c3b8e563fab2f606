"""Connections that look without changing: SQLite opened read-only, PostgreSQL rolled back;
and a database the migrations do not support (MariaDB, MySQL) is never connected to at all."""

from __future__ import annotations

import io
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from dataforge.settings import Settings
from migrations.config import alembic_config
from migrations.connections import inspection_connection, read_only, redacted
from migrations.errors import DatabaseUnavailableError, UnsupportedDatabaseError
from tests.dataforge.cli.support import invoke
from tests.migrations.support import build_legacy_db, downgrade, rows, upgrade


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


class _Listener:
    """A TCP port where the unsupported database "is": it counts connection attempts and hangs
    up on each at once (a driver that got this far fails instead of waiting for a handshake)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        host, port = self.sock.getsockname()[:2]
        self.address = f"{host}:{port}"
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            connection.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[_Listener]:
    server = _Listener()
    try:
        yield server
    finally:
        server.close()


@pytest.mark.parametrize(
    "template",
    [
        "mysql://root@{address}/test",
        "mariadb://root@{address}/test",
        "mysql+pymysql://root:s3cret@{address}/test",
        "mariadb+mariadbconnector://root@{address}/test",
    ],
)
def test_mariadb_and_mysql_are_refused_before_anything_connects(listener: _Listener, template: str) -> None:
    """Refused from the URL, before any connection: on these databases DDL commits at once, so a
    refusal by the first revision would already leave Alembic's version table behind. No
    driver needs to be installed: connecting first would fail on the missing driver instead,
    or reach the listener."""
    url = template.format(address=listener.address)
    script = io.StringIO()
    offline = alembic_config(Settings.from_env({"DATAFORGE_DATABASE_URL": url}), output=script)
    attempts: list[tuple[str, Callable[[], object]]] = [
        ("upgrade", lambda: upgrade(url)),
        ("downgrade", lambda: downgrade(url, "base")),
        ("offline upgrade", lambda: command.upgrade(offline, "base:head", sql=True)),
        ("inspection", lambda: inspection_connection(url).__enter__()),
    ]
    backend = template.split(":", 1)[0].split("+", 1)[0]
    for what, attempt in attempts:
        with pytest.raises(UnsupportedDatabaseError) as refused:
            attempt()
        assert refused.value.backend == backend, what
        assert f"{backend} is not supported" in str(refused.value) and "s3cret" not in str(refused.value), what
    assert script.getvalue() == ""  # the script printed nothing, not even its BEGIN or version table
    settings = Settings.from_env({"DATAFORGE_DATABASE_URL": url})
    for verb in (["upgrade"], ["check"], ["current"], ["sql"], ["downgrade", "base"]):
        result = invoke(settings, "db", *verb)
        assert result.exit_code == 2, (verb, result.output)  # bad input, not a traceback
        assert f"error: database {redacted(url)}: {backend} is not supported" in result.output, (verb, result.output)
        assert "nothing was changed" in result.output and "Traceback" not in result.output
    listener.close()  # joins the thread: every attempt so far is counted
    assert listener.connections == 0, f"something connected to the {backend} database"
