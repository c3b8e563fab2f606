"""One autocommit PostgreSQL connection per worker thread, for the recorder's hot path.

Each single-statement event (prerun's upsert, the close-and-count CTE) then costs exactly one
round trip: no pool checkout with its pre-ping ``SELECT 1``, no ``BEGIN``/``COMMIT``. A
connection that fails is discarded and the next event opens a new one through the pool,
pre-ping included. SQLite and the parent-side events use ordinary short transactions instead.

Durability: these connections commit with ``synchronous_commit = off`` unless
``Settings.recorder_synchronous_commit``. A commit then does not wait for its WAL flush (worth
about a third of the recording cost when the disk is busy, see docs/benchmarks.md); if the
PostgreSQL *server* crashes, the last ~0.6 s (3 x ``wal_writer_delay``) of execution rows and
outcome counters may be lost. Nothing is ever inconsistent, and the setting never applies to
other writes (beat's dispatch, lock leases, the CLI): it is set on these dedicated
connections only, which are discarded, never returned to the pool with it.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from dataforge.db import Database

__all__ = ["HeldConnections"]

log = logging.getLogger(__name__)


class HeldConnections:
    """Per-thread kept connections to ``db``; see the module docstring."""

    def __init__(self, db: Database, *, synchronous_commit: bool) -> None:
        self.db = db
        self.synchronous_commit = synchronous_commit
        self._local = threading.local()
        self._pid = os.getpid()
        #: Connections inherited from a parent process, kept referenced on purpose: see after_fork.
        self._inherited: list[Connection] = []

    def execute(self, stmt: Any, params: Mapping[str, Any]) -> Any:
        if self._pid != os.getpid():
            self.after_fork()
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is None or conn.closed or conn.invalidated:
            conn = self.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            if not self.synchronous_commit:
                conn.exec_driver_sql("SET synchronous_commit TO off")
            self._local.conn = conn
        try:
            return conn.execute(stmt, params)
        except DBAPIError:
            self._local.conn = None
            self._discard(conn)
            raise

    @staticmethod
    def _discard(conn: Connection) -> None:
        """Close the DBAPI connection for good: it must not go back to the pool carrying this
        session's settings."""
        try:
            if not conn.invalidated:
                conn.invalidate()
            conn.close()
        except Exception:  # already broken: nothing more to release
            log.debug("discarding a recorder connection failed", exc_info=True)

    def after_fork(self) -> None:
        # A connection inherited across a fork shares its socket with the parent: never close
        # it (or let it be garbage-collected, which would roll back on that socket); forget it.
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            self._inherited.append(conn)
        self._local = threading.local()
        self._pid = os.getpid()

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local = threading.local()
        if conn is not None and self._pid == os.getpid():
            self._discard(conn)
