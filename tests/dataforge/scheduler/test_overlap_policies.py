"""The four overlap policies with a real prefork worker (PostgreSQL records, Redis broker, locks),
and ``cancel_previous`` on the embedded defaults, whose SQL broker cannot broadcast a revoke.

Each message is built from its schedule row by beat's own builder, so the policy travels the
way beat sends it (the overlap header). The job (``sched_test.gated``) notes in a journal when it
starts and ends and waits for a gate file in between: the test decides how long a run lasts
and reads from the journal which runs overlapped. Every wait is on an event with a deadline.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from celery import Celery
from celery.result import AsyncResult

from dataforge.celery_app import create_app
from dataforge.locks import lock_key
from dataforge.plugins import Target
from dataforge.scheduler.dispatch import RowSnapshot, build_message, row_definition
from dataforge.settings import Settings
from dataforge.tools.processes import CeleryProcess, worker_command
from dataforge.worker.overlap import waiting_key
from tests.conftest import create_schema
from tests.dataforge.scheduler.support import add_row, get_row
from tests.dataforge.worker.rig import wait_until, worker_env
from tests.support.services import fresh_postgres_database, redis_db_url

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

TASK = "sched_test.gated"
TASKS = "tests.dataforge.scheduler.beat_tasks"


@dataclass
class Worker:
    settings: Settings
    app: Celery
    process: CeleryProcess
    tmp: Path

    def schedule(self, overlap: str) -> int:
        return add_row(self.app.runtime.db, task_name=TASK, interval_seconds=3600, overlap_policy=overlap)

    def send(self, schedule_id: int, value: str, *, gate: Path | None) -> AsyncResult:
        """One run of the schedule, as beat would send it (its builder, its headers)."""
        row = RowSnapshot.from_mapping(get_row(self.app.runtime.db, schedule_id))
        message = build_message(row, row_definition(row), Target(TASK), task_id=str(uuid.uuid4()))
        kwargs = {**message.kwargs, "journal": str(self.journal), "value": value,
                  "gate": None if gate is None else str(gate)}  # fmt: skip
        options = message.options()
        return self.app.send_task(TASK, kwargs=kwargs, task_id=options["task_id"], headers=options["headers"])

    @property
    def journal(self) -> Path:
        return self.tmp / "journal.txt"

    def events(self) -> dict[str, float]:
        """``{"start A": t, "end A": t, ...}`` from the journal."""
        if not self.journal.exists():
            return {}
        out = {}
        for line in self.journal.read_text().splitlines():
            what, value, at = line.split()
            out[f"{what} {value}"] = float(at)
        return out

    def wait_event(self, event: str, timeout: float = 60) -> float:
        at = wait_until(lambda: self.events().get(event), timeout, f"journal line {event!r}",
                        lambda: self.process.log)
        assert at is not None
        return at

    def status(self, result: AsyncResult) -> str | None:
        from sqlalchemy import select

        from dataforge.models import TaskExecution

        with self.app.runtime.db.session() as s:
            rows = list(s.scalars(select(TaskExecution.status).where(TaskExecution.celery_task_id == result.id)))
        return rows[-1] if rows else None

    def wait_status(self, result: AsyncResult, status: str, timeout: float = 60) -> None:
        wait_until(lambda: self.status(result) == status, timeout, f"{result.id} recorded {status}",
                   lambda: self.process.log)

    def error(self, result: AsyncResult) -> str:
        from sqlalchemy import select

        from dataforge.models import TaskExecution

        with self.app.runtime.db.session() as s:
            return str(s.scalars(select(TaskExecution.error).where(TaskExecution.celery_task_id == result.id)).one())

    def lock_held(self, key: str) -> bool:
        import redis

        client = redis.Redis.from_url(str(self.settings.redis_url))
        try:
            return bool(client.exists(key))
        finally:
            client.close()


@contextmanager
def _running_worker(name: str, settings: Settings, tmp: Path, *, concurrency: int) -> Iterator[Worker]:
    """A real prefork worker on ``settings``, ready; stopped (and the app's runtime closed) after."""
    app = create_app(settings)
    process = CeleryProcess(f"{name}-worker", worker_command(concurrency=concurrency, hostname=f"{name}@%h"),
                            env=worker_env(settings), cwd=tmp, log_file=tmp / "worker.log", stop_timeout=5)
    try:
        process.start()
        process.wait_ready(120)
        yield Worker(settings, app, process, tmp)
    finally:
        process.stop()
        app.runtime.close()


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    tmp = tmp_path_factory.mktemp("overlap")
    with fresh_postgres_database() as pg_url, redis_db_url() as redis_url:
        create_schema(pg_url)
        settings = Settings.from_env(
            {"DATAFORGE_DATABASE_URL": pg_url, "DATAFORGE_BROKER_URL": redis_url, "DATAFORGE_RESULT_BACKEND": redis_url,
             "DATAFORGE_REDIS_URL": redis_url, "DATAFORGE_LOCK_TTL": "10", "DATAFORGE_TASK_PACKAGES": TASKS},
            cwd=tmp,
        )  # fmt: skip
        # Three processes: a run, a waiting run, and one more that must not wait.
        with _running_worker("overlap", settings, tmp, concurrency=3) as worker:
            yield worker


@pytest.fixture
def gates(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path


def test_skip_the_default_skips_a_run_while_the_previous_one_runs(worker: Worker, gates: Path) -> None:
    sid = worker.schedule("skip")
    first = worker.send(sid, "skip-1", gate=gates / "a")
    worker.wait_event("start skip-1")
    second = worker.send(sid, "skip-2", gate=None)
    worker.wait_status(second, "skipped")
    (gates / "a").touch()
    worker.wait_status(first, "success")
    assert "start skip-2" not in worker.events()
    assert "is held by another run" in worker.error(second)


def test_buffer_one_lets_one_run_wait_and_start_when_the_previous_one_ends(worker: Worker, gates: Path) -> None:
    sid = worker.schedule("buffer_one")
    key = lock_key(TASK, {"scheduled_task_id": sid})
    first = worker.send(sid, "buf-1", gate=gates / "a")
    worker.wait_event("start buf-1")
    second, third = worker.send(sid, "buf-2", gate=None), worker.send(sid, "buf-3", gate=None)
    # One of them takes the waiting slot, the other finds it taken and is skipped at once.
    wait_until(lambda: "skipped" in (worker.status(second), worker.status(third)), 60, "one of two skipped",
               lambda: worker.process.log)
    skipped, waiter = (second, third) if worker.status(second) == "skipped" else (third, second)
    assert "another run already waits" in worker.error(skipped)
    wait_until(lambda: worker.lock_held(waiting_key(key)), 30, "the waiting slot held")
    waiter_value = "buf-2" if waiter is second else "buf-3"
    assert f"start {waiter_value}" not in worker.events(), "the waiting run started while the first one ran"

    (gates / "a").touch()
    worker.wait_status(waiter, "success")
    events = worker.events()
    assert events[f"start {waiter_value}"] >= events["end buf-1"]
    assert worker.status(first) == "success"
    assert not worker.lock_held(waiting_key(key)) and not worker.lock_held(key)


def test_allow_runs_alongside_the_previous_run(worker: Worker, gates: Path) -> None:
    sid = worker.schedule("allow")
    first = worker.send(sid, "allow-1", gate=gates / "a")
    worker.wait_event("start allow-1")
    second = worker.send(sid, "allow-2", gate=gates / "a")
    worker.wait_event("start allow-2")  # while the first one still waits for its gate
    assert "end allow-1" not in worker.events()
    (gates / "a").touch()
    worker.wait_status(first, "success")
    worker.wait_status(second, "success")
    assert not worker.lock_held(lock_key(TASK, {"scheduled_task_id": sid}))


def test_cancel_previous_terminates_the_running_run_then_runs(worker: Worker, gates: Path) -> None:
    sid = worker.schedule("cancel_previous")
    first = worker.send(sid, "cancel-1", gate=gates / "never")
    worker.wait_event("start cancel-1")
    second = worker.send(sid, "cancel-2", gate=None)
    worker.wait_status(second, "success", timeout=60)
    worker.wait_status(first, "failure")  # the recorder's account of a terminated run
    events = worker.events()
    assert "end cancel-1" not in events, "the cancelled run went on"
    assert events["start cancel-2"] > events["start cancel-1"]
    assert not worker.lock_held(lock_key(TASK, {"scheduled_task_id": sid}))


#: The embedded worker's lock TTL: short, since a cancel_previous run there waits it out.
EMBEDDED_LOCK_TTL = 2.0


@pytest.fixture(scope="module")
def embedded_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    """The embedded defaults: SQLite records and run locks, the SQL broker (no broadcast)."""
    tmp = tmp_path_factory.mktemp("overlap-embedded")
    settings = Settings.from_env(
        {"DATAFORGE_LOCK_TTL": str(EMBEDDED_LOCK_TTL), "DATAFORGE_TASK_PACKAGES": TASKS}, cwd=tmp
    )
    assert settings.broker_url.startswith("sqla+") and settings.redis_url is None
    create_schema(settings.database_url)
    with _running_worker("overlap-embedded", settings, tmp, concurrency=2) as worker:
        yield worker


def test_cancel_previous_on_the_sql_broker_waits_the_locks_ttl_and_is_skipped(
    embedded_worker: Worker, gates: Path
) -> None:
    """The revoke reaches no worker: the previous run goes on holding its lock (renewed), and
    the new run waits the lock's TTL plus 5 s for it, then is skipped without running."""
    worker = embedded_worker
    sid = worker.schedule("cancel_previous")
    first = worker.send(sid, "cancel-1", gate=gates / "a")
    worker.wait_event("start cancel-1")
    second = worker.send(sid, "cancel-2", gate=None)
    worker.wait_status(second, "skipped", timeout=60)
    error = worker.error(second)
    waited = re.search(r"still held ([0-9.]+)s after cancelling", error)
    assert waited, error
    # It gives up at the first poll (every 0.2 s) past TTL + 5 s; a loaded machine may be late.
    assert EMBEDDED_LOCK_TTL + 5 - 0.5 <= float(waited.group(1)) <= EMBEDDED_LOCK_TTL + 5 + 3, error
    events = worker.events()
    assert "start cancel-2" not in events and "end cancel-1" not in events, "the cancelled run ended or the new one ran"
    (gates / "a").touch()
    worker.wait_status(first, "success")  # it was never terminated
