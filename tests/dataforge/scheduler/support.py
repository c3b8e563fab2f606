"""Helpers for the scheduler's database and process tests.

* :class:`CapturingScheduler`: the real :class:`DatabaseScheduler` on a real database, with
  its publish seam capturing messages and its two clocks under the test's control.
* :func:`legacy_capable_schema`: the target schema with ``task_name`` nullable, as it is on a
  database rolled back for the legacy switch (rows with only ``handler_path``).
* :class:`TcpProxy`: a TCP forwarder a test can cut, to give a client a real outage of a
  shared server without stopping the server.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from celery import Celery
from sqlalchemy import MetaData, create_engine, text

from dataforge.celery_app import create_app
from dataforge.db import Database
from dataforge.models import Base, ScheduledTask, utcnow
from dataforge.models.triggers import install_change_triggers
from dataforge.protocol import DUE_AT_HEADER
from dataforge.scheduler.beat import DatabaseScheduler, PublishBatch
from dataforge.scheduler.dispatch import Message
from dataforge.settings import Settings

__all__ = [
    "OTHER_TASK",
    "TEST_TASK",
    "CapturingScheduler",
    "FakeClock",
    "TcpProxy",
    "add_row",
    "get_row",
    "legacy_capable_schema",
    "make_app",
    "register",
    "run_sql",
    "settings_for",
]

_names = itertools.count(1)
TEST_TASK = "sched_test.echo"
OTHER_TASK = "sched_test.other"


def settings_for(tmp_path: Path, database_url: str, **env: str) -> Settings:
    values = {"DATAFORGE_DATABASE_URL": database_url, "DATAFORGE_BEAT_MAX_INTERVAL": "5", **env}
    return Settings.from_env(values, cwd=tmp_path)


def make_app(settings: Settings) -> Celery:
    """An app on ``settings`` with the two test tasks registered."""
    app = create_app(settings)
    register(app, TEST_TASK, OTHER_TASK)
    return app


def _echo(**kwargs: Any) -> dict[str, Any]:
    return kwargs


def register(app: Celery, *names: str) -> None:
    """Register test tasks on ``app`` only (``shared=False``: other apps never see them)."""
    for name in names:
        app.task(name=name, shared=False)(_echo)


def legacy_capable_schema(url: str) -> None:
    """The models' tables with ``task_name`` nullable, plus the scheduler's triggers."""
    metadata = MetaData(naming_convention=Base.metadata.naming_convention)
    for table in Base.metadata.sorted_tables:
        copy = table.to_metadata(metadata)
        if copy.name == "scheduled_tasks":
            copy.c.task_name.nullable = True
    engine = Database(url).engine
    metadata.create_all(engine)
    install_change_triggers(engine)
    engine.dispose()


class FakeClock:
    """Wall clock (naive UTC) and monotonic clock that move only when told."""

    def __init__(self, start: datetime | None = None) -> None:
        self.wall = (start or utcnow()).replace(microsecond=0)
        self.mono = 1000.0

    def advance(self, seconds: float) -> None:
        self.wall += timedelta(seconds=seconds)
        self.mono += seconds


class CapturingScheduler(DatabaseScheduler):
    """The real scheduler; messages are captured instead of published."""

    def __init__(self, app: Celery, clock: FakeClock | None = None, **kwargs: Any) -> None:
        self.clock = clock
        self.sent: list[Message] = []
        #: Called before each publish; raise from it to simulate a broker failure.
        self.before_publish: Callable[[Message], None] | None = None
        super().__init__(app=app, **kwargs)

    def publish(self, message: Message, producer: Any) -> None:
        if self.before_publish is not None:
            self.before_publish(message)
        self.sent.append(message)

    @contextlib.contextmanager
    def producer_for_batch(self) -> Iterator[PublishBatch]:
        yield PublishBatch(None, False, lambda: None)

    def now(self) -> datetime:
        return self.clock.wall if self.clock is not None else super().now()

    def monotonic(self) -> float:
        return self.clock.mono if self.clock is not None else super().monotonic()

    def sent_for(self, schedule_id: int) -> list[Message]:
        return [m for m in self.sent if m.kwargs.get("scheduled_task_id") == schedule_id]

    def due_times(self, schedule_id: int) -> list[str]:
        return [str(m.headers[DUE_AT_HEADER]) for m in self.sent_for(schedule_id)]


def add_row(db: Database, **values: Any) -> int:
    """Insert a schedule through the ORM (defaults: an active interval row of the test task)."""
    defaults: dict[str, Any] = {"task_type": "interval", "interval_seconds": 60, "task_name": TEST_TASK}
    defaults.update(values)
    defaults.setdefault("name", f"row-{next(_names)}")
    with db.session() as session:
        row = ScheduledTask(**defaults)
        session.add(row)
        session.flush()
        return row.id


def get_row(db: Database, row_id: int) -> dict[str, Any]:
    with db.session() as session:
        row = session.get(ScheduledTask, row_id)
        assert row is not None, f"schedule {row_id} is gone"
        return {c.key: getattr(row, c.key) for c in ScheduledTask.__table__.columns}


def run_sql(url: str, sql: str, **params: Any) -> int:
    """Raw SQL on its own connection, as an operator would run it; returns the rowcount."""
    engine = create_engine(Database(url).url)
    try:
        with engine.begin() as conn:
            return conn.execute(text(sql), params).rowcount
    finally:
        engine.dispose()


class TcpProxy:
    """Forward ``127.0.0.1:<port>`` to a target; :meth:`cut` drops every connection and stops
    accepting (an outage as the client sees it), :meth:`restore` listens again on the same port."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        if self._listener is not None:
            # shutdown() first: close() alone does not wake a thread blocked in accept(), and
            # the socket would keep accepting.
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        self.cut()
