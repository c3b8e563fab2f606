"""Kept autocommit PostgreSQL connections, one per recording thread, that replace themselves.

Each statement then costs exactly one round trip: no pool checkout with its pre-ping
``SELECT 1``, no ``BEGIN``/``COMMIT``. The recorder keeps two sets: the task thread's (the one
read on a run's path, at ``task_prerun``) and the writer thread's (its flushes).

A database restart, failover or idle-session kill leaves every kept connection dead; the next
statement on it fails (``AdminShutdown``, "server closed the connection"), which SQLAlchemy
reports as a disconnect (``connection_invalidated``). That statement is then retried once, at
once, on a new connection, so the first run after a restart is recorded like any other. Any
other failure (the server is down, the schema is missing) is raised to the caller after the
connection is discarded: the writer keeps the records and tries again, a read fails open.

Time bounds: a new connection gives up after ``connect_timeout``; the server cancels a
statement after ``statement_timeout`` (the read on a run's path: 1 s; flushes: 10 s), so a
database that is down or overloaded never holds a run for longer than that. Neither bounds a
server that stops answering a kept connection (frozen, its host cut off): the statement
timeout is the server's, and the client then waits until it answers or TCP gives up.

Durability: these connections commit with ``synchronous_commit = off`` unless
``Settings.recorder_synchronous_commit`` (then they commit with ``on``, whatever the server's or the
database's default). A commit with ``off`` does not wait for its WAL flush; if the
PostgreSQL *server* crashes, the last ~0.6 s (3 x ``wal_writer_delay``) of execution rows and
outcome counters may be lost. Nothing is ever inconsistent, and the setting never applies to
other writes (beat's dispatch, lock leases, the CLI): it is set on these dedicated connections,
which belong to the recorder's own engine (no pool: a connection is closed when dropped).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from typing import Any

import psycopg
from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

__all__ = ["HeldConnections"]

log = logging.getLogger(__name__)


class HeldConnections:
    """Per-thread kept connections to ``url``; see the module docstring."""

    def __init__(
        self, url: str, *, synchronous_commit: bool, statement_timeout: float, connect_timeout: int = 2
    ) -> None:
        self.url = url
        self.synchronous_commit = synchronous_commit
        self.statement_timeout = statement_timeout
        self.connect_timeout = connect_timeout
        self._engine: Engine | None = None
        self._local = threading.local()
        self._pid = os.getpid()
        #: Connections inherited from a parent process, kept referenced on purpose: see after_fork.
        self._inherited: list[Connection] = []
        #: How many dead connections were replaced (a restart shows up here, not as a lost record).
        self.replaced = 0
        #: Every thread's connection, so close() can close them all.
        self._open: list[Connection] = []
        self._open_lock = threading.Lock()

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            # Said either way: "on" must hold even where the server or database defaults to off.
            commit = "on" if self.synchronous_commit else "off"
            options = f"-c statement_timeout={int(self.statement_timeout * 1000)} -c synchronous_commit={commit}"
            self._engine = create_engine(
                self.url, poolclass=NullPool,
                connect_args={"connect_timeout": self.connect_timeout, "options": options},
            )  # fmt: skip
        return self._engine

    def _connection(self) -> Connection:
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is None or conn.closed or conn.invalidated:
            conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            self._local.conn = conn
            with self._open_lock:
                self._open = [c for c in self._open if not c.closed]
                self._open.append(conn)
        return conn

    def execute(self, stmt: Any, params: Mapping[str, Any]) -> Any:
        """Run ``stmt``; a dead kept connection is replaced and the statement retried once."""
        if self._pid != os.getpid():
            self.after_fork()
        conn = self._connection()
        try:
            return conn.execute(stmt, params)
        except DBAPIError as exc:
            self._drop(conn)
            if not exc.connection_invalidated:
                raise
        self.replaced += 1
        log.info("recorder: replaced a dead database connection (server restarted or dropped it)")
        conn = self._connection()
        try:
            return conn.execute(stmt, params)
        except DBAPIError:
            self._drop(conn)
            raise

    def fetch_one(self, sql: str, params: tuple[Any, ...]) -> tuple[Any, ...] | None:
        """The first row of a plain-SQL query (``%s`` placeholders), run by the driver itself
        and prepared once per connection: the read on a run's path, where SQLAlchemy's
        execution layer would cost more CPU than the query. A dead kept connection is
        replaced and the query retried once, as in :meth:`execute`."""
        if self._pid != os.getpid():
            self.after_fork()
        for retried in (False, True):
            conn = self._connection()
            raw: Any = conn.connection.driver_connection
            try:
                row: tuple[Any, ...] | None = raw.execute(sql, params, prepare=True).fetchone()
                return row
            except psycopg.Error:
                dead = bool(raw.broken or raw.closed)
                self._drop(conn)
                if retried or not dead:
                    raise
            self.replaced += 1
            log.info("recorder: replaced a dead database connection (server restarted or dropped it)")
        raise AssertionError("unreachable")

    def _drop(self, conn: Connection) -> None:
        self._local.conn = None
        try:
            if not conn.invalidated:
                conn.invalidate()
            conn.close()
        except Exception:  # already broken: nothing more to release
            log.debug("discarding a recorder connection failed", exc_info=True)

    def after_fork(self) -> None:
        # A connection inherited across a fork shares its socket with the parent: never close
        # it (or let it be garbage-collected, which would roll back on that socket); forget it.
        self._inherited.extend(self._open)
        self._open = []
        self._open_lock = threading.Lock()
        self._local = threading.local()
        self._engine = None
        self._pid = os.getpid()

    def close(self) -> None:
        """Close every thread's connection (call it when no thread uses them any more)."""
        self._local = threading.local()
        if self._pid != os.getpid():
            return
        with self._open_lock:
            conns, self._open = self._open, []
        for conn in conns:
            if not conn.closed:
                self._drop(conn)
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
