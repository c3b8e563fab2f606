"""The Celery app that carries its DataForge runtime, and the per-process resources it holds.

Every component that has the app (a task via ``self.app``, a signal handler via
``sender.app``, beat via ``self.app``) reaches the same settings, database, lock store, job
loop and recorder through :func:`get_runtime`, without module globals. Resources are built on
first use, so importing the app (the CLI, tests) opens nothing, and each prefork child builds
its own after :meth:`Runtime.after_fork`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from celery import Celery

from dataforge.db import Database
from dataforge.errors import DataForgeError
from dataforge.locks import LockBackend, LockRenewer, backend_for
from dataforge.schema import SchemaGate
from dataforge.settings import Settings
from dataforge.worker.loop import JobLoop
from dataforge.worker.recording.recorder import Recorder

if TYPE_CHECKING:
    from dataforge.plugins import Plugin

__all__ = ["DataForgeApp", "NotConfiguredError", "Runtime", "get_runtime"]


class NotConfiguredError(DataForgeError):
    """A Celery app without a DataForge runtime was asked for one."""

    def __init__(self, app: object) -> None:
        self.app = app
        super().__init__(
            f"Celery app {getattr(app, 'main', app)!r} has no DataForge runtime; build it with "
            "dataforge.celery_app.create_app(settings)"
        )


class Runtime:
    """Settings plus the resources that depend on them, one set per app and process."""

    def __init__(self, settings: Settings, plugins: Iterable[Plugin] = ()) -> None:
        self.settings = settings
        self.db = Database(settings.database_url)
        #: Installed plug-ins, in order (see :mod:`dataforge.plugins`).
        self.plugins: tuple[Plugin, ...] = tuple(plugins)
        self._locks: LockBackend | None = None
        self._lock_renewer: LockRenewer | None = None
        self._job_loop: JobLoop | None = None
        self._recorder: Recorder | None = None
        #: Whether the database has a schema this release runs on (checked once it passes;
        #: kept across forks: a fork does not change the schema).
        self.schema = SchemaGate(self.db)

    @property
    def locks(self) -> LockBackend:
        """The lock store: Redis when ``redis_url`` is set, else the database's lease table."""
        if self._locks is None:
            self._locks = backend_for(self.settings, self.db)
        return self._locks

    @property
    def lock_renewer(self) -> LockRenewer:
        """Keeps every lock this process holds alive from one thread."""
        if self._lock_renewer is None:
            self._lock_renewer = LockRenewer()
        return self._lock_renewer

    @property
    def job_loop(self) -> JobLoop:
        """The process's one persistent event loop for ``async`` jobs."""
        if self._job_loop is None:
            self._job_loop = JobLoop()
        return self._job_loop

    @property
    def recorder(self) -> Recorder:
        """Writes execution rows and outcome counters."""
        if self._recorder is None:
            self._recorder = Recorder(self.db, self.settings, locks=lambda: self.locks)
        return self._recorder

    def _built(self) -> list[Any]:
        # The recorder first: closing it writes its queued records and drops its heartbeat lease.
        return [r for r in (self._recorder, self._locks, self._lock_renewer, self._job_loop) if r is not None]

    def after_fork(self) -> None:
        """In each prefork child: forget what the parent built (its sockets, threads and loop
        did not survive the fork, or must not be shared); the child builds its own."""
        self.db.dispose_after_fork()
        for resource in self._built():
            resource.after_fork()
        self._locks = self._lock_renewer = self._job_loop = self._recorder = None

    def close(self) -> None:
        for resource in self._built():
            resource.close()
        self._locks = self._lock_renewer = self._job_loop = self._recorder = None
        self.db.dispose()


class DataForgeApp(Celery):  # type: ignore[misc]
    """A Celery app with a typed :attr:`runtime` (see :func:`dataforge.celery_app.create_app`)."""

    runtime: Runtime


def get_runtime(app: object) -> Runtime:
    """The runtime of ``app``; :class:`NotConfiguredError` for an app that has none."""
    runtime = getattr(app, "runtime", None) if isinstance(app, DataForgeApp) else None
    if not isinstance(runtime, Runtime):
        raise NotConfiguredError(app)
    return runtime
