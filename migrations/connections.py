"""Connections that look at a database without changing it: the preflight and the reader of a
legacy database for an offline script.

SQLite: the file is opened read-only (URI ``mode=ro``), so nothing can be written to it, not
even the journal mode the runtime's engine would set; a missing file is reported, never
created. Temporary tables (the data step's staging) live outside the file and still work.
PostgreSQL: one transaction, always rolled back; its staging writes only session-temporary
objects. :func:`read_only` additionally makes that transaction ``READ ONLY`` for what comes
after (call it once the session-temporary helpers exist: a read-only transaction cannot
create them).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, create_engine, make_url, pool
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from dataforge.db import Database, is_sqlite
from dataforge.schema import driver_reason
from migrations.errors import DatabaseUnavailableError, UnsupportedDatabaseError
from migrations.sql import SUPPORTED_DIALECTS

__all__ = ["inspection_connection", "read_only", "redacted", "refuse_unsupported"]


def redacted(url: str) -> str:
    """``url`` without its password, for messages and scripts."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):  # unparsable: keep only what follows the credentials
        return url.rsplit("@", 1)[-1]


def refuse_unsupported(url: str) -> None:
    """Raise :class:`UnsupportedDatabaseError` for a URL of a database the migrations do not
    support, from the URL alone: nothing connects first (nor needs the database's driver).
    An unparsable URL is left to the connection attempt, which reports it."""
    try:
        backend = make_url(url).get_backend_name()
    except (ArgumentError, ValueError):
        return
    if backend not in SUPPORTED_DIALECTS:
        raise UnsupportedDatabaseError(redacted(url), backend, SUPPORTED_DIALECTS)


@contextmanager
def inspection_connection(url: str, *, missing_ok: bool = False) -> Iterator[Connection | None]:
    """A connection to ``url`` that cannot change it (see the module doc).

    A SQLite file that does not exist yields ``None`` when ``missing_ok`` (an empty database:
    the upgrade would create it), else raises :class:`DatabaseUnavailableError`, as does any
    failure to connect. A database the migrations do not support is refused before connecting.
    """
    refuse_unsupported(url)
    if is_sqlite(url):
        database = make_url(url).database
        if not database or database == ":memory:":
            raise DatabaseUnavailableError(redacted(url), "an in-memory SQLite database cannot be inspected")
        path = Path(database)
        if not path.parent.is_dir():
            raise DatabaseUnavailableError(redacted(url), f"the folder {path.parent} does not exist")
        if not path.is_file():
            if missing_ok:
                yield None
                return
            raise DatabaseUnavailableError(redacted(url), f"no SQLite file at {path}")
        uri = f"{path.resolve().as_uri()}?mode=ro"
        engine = create_engine("sqlite://", creator=lambda: sqlite3.connect(uri, uri=True), poolclass=pool.NullPool)
    else:
        engine = create_engine(Database(url).url, poolclass=pool.NullPool)
    try:
        try:
            connection = engine.connect()
        except SQLAlchemyError as exc:
            raise DatabaseUnavailableError(redacted(url), _first_line(exc)) from exc
        try:
            yield connection
        finally:
            connection.rollback()
            connection.close()
    finally:
        engine.dispose()


def read_only(connection: Connection) -> None:
    """Make the rest of ``connection``'s transaction read-only (PostgreSQL; SQLite already is)."""
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql("SET TRANSACTION READ ONLY")


def _first_line(exc: SQLAlchemyError) -> str:
    """The driver's reason, without SQLAlchemy's wrapping or class names."""
    return driver_reason(exc)
