"""Engines and short sessions, one engine per process and URL.

Celery's prefork pool forks children after the parent may have opened connections; a pooled
connection shared across a fork corrupts both sides. :func:`dispose_after_fork` is wired to
``worker_process_init`` by :mod:`dataforge.worker.recording` and drops inherited pools.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

__all__ = ["Database", "is_sqlite", "is_postgres"]


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def is_postgres(url: str) -> bool:
    return url.startswith("postgresql")


def _normalise(url: str) -> str:
    # Users write postgresql:// (what psql takes); SQLAlchemy would pick psycopg2, which we do
    # not depend on. psycopg 3 is the driver we ship.
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


class Database:
    """The engine and session factory for one database URL, rebuilt lazily after a fork."""

    def __init__(self, url: str) -> None:
        self.url = _normalise(url)
        self._engine: Engine | None = None
        self._pid = os.getpid()
        self._sessions: sessionmaker[Session] | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is not None and self._pid != os.getpid():
            # Inherited across a fork: drop the pool without closing the parent's sockets.
            self._engine.dispose(close=False)
            self._engine = None
        if self._engine is None:
            self._engine = self._create_engine()
            self._pid = os.getpid()
            self._sessions = sessionmaker(self._engine, expire_on_commit=False)
        return self._engine

    def _create_engine(self) -> Engine:
        if is_sqlite(self.url):
            # Worker children, beat and the CLI all write the same file: wait for the writer
            # instead of failing with "database is locked"; WAL lets readers run meanwhile.
            engine = create_engine(self.url, connect_args={"timeout": 30}, pool_pre_ping=False)

            @event.listens_for(engine, "connect")
            def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA busy_timeout=30000")
                cur.execute("PRAGMA foreign_keys=ON")
                cur.close()

            return engine
        return create_engine(self.url, pool_pre_ping=True, pool_size=5, max_overflow=5)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A short transaction: commit on success, roll back on error, always close."""
        _ = self.engine
        assert self._sessions is not None
        with self._sessions() as session, session.begin():
            yield session

    def dispose_after_fork(self) -> None:
        """Forget pooled connections inherited from the parent without closing them."""
        if self._engine is not None:
            self._engine.dispose(close=False)
            self._engine = None

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
