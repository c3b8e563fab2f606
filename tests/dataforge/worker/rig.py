"""A real ``celery worker`` subprocess plus a client app with the same settings.

Every wait is on an event (a worker log line, a database row, a lock key, a result state)
with a deadline and a message that says what did not happen.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from celery import Celery
from celery.result import AsyncResult
from sqlalchemy import select

from dataforge.celery_app import create_app
from dataforge.models import LockLease, ScheduledTask, TaskExecution, utcnow
from dataforge.settings import Settings
from dataforge.tools.processes import CeleryProcess, beat_command, worker_command
from tests.conftest import REPO_ROOT
from tests.dataforge.worker.worker_tasks.tasks import SEQ_PATTERN

__all__ = [
    "REPO_ROOT",
    "TASKS_PACKAGE",
    "Rig",
    "running_rig",
    "start_beat",
    "start_worker",
    "wait_until",
    "worker_env",
    "worker_pid",
]

TASKS_PACKAGE = "tests.dataforge.worker.worker_tasks"
T = TypeVar("T")


def wait_until(probe: Callable[[], T], timeout: float, what: str, log: Callable[[], str] | None = None) -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` (and the log tail)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            tail = "\n".join(log().splitlines()[-40:]) if log else ""
            pytest.fail(f"not within {timeout}s: {what}\n--- worker log tail ---\n{tail}")
        time.sleep(0.1)


def worker_pid(worker: str | None) -> int:
    """The pid in an execution row's ``worker`` (``<hostname>:<pid>#<incarnation>``)."""
    assert worker, "the row names no worker"
    return int(worker.rsplit(":", 1)[1].split("#", 1)[0])


def worker_env(settings: Settings, extra_path: Sequence[Path] = ()) -> dict[str, str]:
    """The child's environment: ours minus any DATAFORGE_* (only the settings' own count)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATAFORGE_") or k.startswith("DATAFORGE_TEST_")}
    env.update(settings.as_env())
    paths = [str(p) for p in (*extra_path, REPO_ROOT)]
    env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


@dataclass
class Rig:
    settings: Settings
    app: Celery
    worker: CeleryProcess
    tmp: Path

    # -- sending --------------------------------------------------------------------------------
    def send(self, name: str, queue: str | None = None, **options: Any) -> AsyncResult:
        return self.app.send_task(name, queue=queue, **options)

    def wait_result(self, result: AsyncResult, timeout: float = 60) -> AsyncResult:
        wait_until(lambda: result.ready(), timeout, f"result of {result.id}", lambda: self.worker.log)
        return result

    def wait_state(self, result: AsyncResult, state: str, timeout: float = 60) -> None:
        wait_until(lambda: result.state == state, timeout, f"{result.id} in state {state}", lambda: self.worker.log)

    # -- database -------------------------------------------------------------------------------
    def add_schedule(self, task_name: str, name: str | None = None, **columns: Any) -> int:
        """A schedule row (hourly unless ``columns`` say otherwise; ``status="paused"`` keeps a
        running beat from sending it)."""
        values: dict[str, Any] = {"task_type": "interval", "interval_seconds": 3600, **columns}
        with self.app.runtime.db.session() as s:
            row = ScheduledTask(name=name or f"{task_name}-{time.monotonic_ns()}", task_name=task_name, **values)
            s.add(row)
            s.flush()
            return row.id

    def schedule(self, schedule_id: int) -> ScheduledTask:
        with self.app.runtime.db.session() as s:
            row: ScheduledTask | None = s.get(ScheduledTask, schedule_id)
            assert row is not None
            return row

    def executions(self, task_id: str | None = None, task_name: str | None = None) -> list[TaskExecution]:
        query = select(TaskExecution).order_by(TaskExecution.attempt, TaskExecution.id)
        if task_id is not None:
            query = query.where(TaskExecution.celery_task_id == task_id)
        if task_name is not None:
            query = query.where(TaskExecution.task_name == task_name)
        with self.app.runtime.db.session() as s:
            return list(s.scalars(query))

    def wait_execution(self, task_id: str, status: str, timeout: float = 60) -> TaskExecution:
        def probe() -> TaskExecution | None:
            rows = [r for r in self.executions(task_id) if r.status == status]
            return rows[-1] if rows else None

        found = wait_until(probe, timeout, f"execution of {task_id} in status {status}", lambda: self.worker.log)
        assert found is not None
        return found

    # -- locks ----------------------------------------------------------------------------------
    def lock_held(self, key: str) -> bool:
        if self.settings.redis_url:
            import redis

            client = redis.Redis.from_url(self.settings.redis_url)
            try:
                return client.exists(key) == 1
            finally:
                client.close()
        with self.app.runtime.db.session() as s:
            lease = s.get(LockLease, key)
            return lease is not None and lease.expires_at > utcnow()

    def wait_lock(self, key: str, held: bool, timeout: float = 60) -> None:
        wait_until(lambda: self.lock_held(key) is held, timeout, f"lock {key} {'held' if held else 'free'}",
                   lambda: self.worker.log)

    # -- worker log -----------------------------------------------------------------------------
    def sequence(self, task_id: str, attempt: int, last: str, timeout: float = 60) -> list[str]:
        """The hooks and signals of one attempt, in order, once ``last`` was logged."""
        self.worker.wait_for(rf"SEQ {re.escape(task_id)} {attempt} {re.escape(last)}", timeout)
        out = []
        for line in self.worker.lines():
            match = re.search(SEQ_PATTERN, line)
            if match and match.group(1) == task_id and int(match.group(2)) == attempt:
                out.append(match.group(3))
        return out


def start_worker(settings: Settings, tmp: Path, *, name: str = "df-worker", concurrency: int = 2,
                 queues: Sequence[str] = (), extra: Sequence[str] = ()) -> CeleryProcess:
    """A prefork worker on ``settings`` (with the test task package), started and ready;
    ``extra``: more ``celery worker`` options."""
    settings = settings.with_(task_packages=(TASKS_PACKAGE,))
    cmd = worker_command(concurrency=concurrency, queues=queues, hostname=f"{name}@%h", extra=extra)
    # stop_timeout: a warm shutdown on the sqla broker takes 6-15 s; teardown need not wait for it.
    worker = CeleryProcess(name, cmd, env=worker_env(settings), cwd=tmp, log_file=tmp / f"{name}.log", stop_timeout=5)
    worker.start()
    try:
        worker.wait_ready(120)
    except BaseException:
        worker.stop()
        raise
    return worker


def start_beat(settings: Settings, tmp: Path, *, name: str = "df-beat") -> CeleryProcess:
    """A ``celery beat`` (the DatabaseScheduler, its leader duties included), started."""
    settings = settings.with_(task_packages=(TASKS_PACKAGE,))
    beat = CeleryProcess(name, beat_command(), env=worker_env(settings), cwd=tmp, log_file=tmp / f"{name}.log",
                         stop_timeout=10)
    beat.start()
    try:
        beat.wait_ready(120)
    except BaseException:
        beat.stop()
        raise
    return beat


@contextmanager
def running_rig(
    settings: Settings, tmp: Path, *, name: str = "df-worker", concurrency: int = 2, queues: Sequence[str] = (),
    extra: Sequence[str] = (),
) -> Iterator[Rig]:
    """Start a prefork worker on ``settings`` with the test task package; stop it afterwards."""
    settings = settings.with_(task_packages=(TASKS_PACKAGE,))
    app = create_app(settings)
    if queues:
        app.conf.task_default_queue = queues[0]
    worker = start_worker(settings, tmp, name=name, concurrency=concurrency, queues=queues, extra=extra)
    try:
        yield Rig(settings=settings, app=app, worker=worker, tmp=tmp)
    finally:
        worker.stop()
        app.runtime.close()
