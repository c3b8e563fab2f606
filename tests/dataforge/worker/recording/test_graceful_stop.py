"""A worker that stops gracefully writes what its processes queued (real workers, real signals).

The writer writes a batch 50 ms after its first record, so a stop rarely finds anything
queued; each run here is of ``wt.hold_records``, whose job makes its process's writer wait an
hour, so its outcome is still queued when the process exits and only the exit can write it:
a prefork child leaving after ``--max-tasks-per-child`` runs, a child and its parent in a warm
shutdown (SIGTERM), and the same with the database down, where a process gives up after
``Writer.exit_timeout`` (5 s) and logs how many records it lost.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import redis
from celery.result import AsyncResult

from dataforge.settings import Settings
from dataforge.worker.recording.writer import Writer
from tests.conftest import create_schema
from tests.dataforge.worker.rig import Rig, running_rig, wait_until
from tests.support.servers import PrivatePostgres
from tests.support.services import REDIS_DB, fresh_postgres_database

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

REDIS_URL = f"redis://127.0.0.1:6379/{REDIS_DB}"


def _settings(tmp: Path, database: str) -> Settings:
    env = {"DATAFORGE_DATABASE_URL": database, "DATAFORGE_BROKER_URL": REDIS_URL,
           "DATAFORGE_RESULT_BACKEND": REDIS_URL, "DATAFORGE_REDIS_URL": REDIS_URL}  # fmt: skip
    settings = Settings.from_env(env, cwd=tmp)
    create_schema(settings.database_url)
    return settings


@pytest.fixture
def flushed_redis() -> Iterator[None]:
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    yield
    client.flushdb()
    client.close()


def _statuses(rig: Rig, task_id: str) -> list[str]:
    return [r.status for r in rig.executions(task_id)]


def _written(rig: Rig, task_id: str) -> bool:
    return _statuses(rig, task_id) == ["success"]


def _held(rig: Rig, value: str) -> AsyncResult:
    """A run that ended (its result is stored) while its outcome is still queued in its process."""
    result = rig.send("wt.hold_records", kwargs={"value": value})
    assert rig.wait_result(result).get(timeout=5)["value"] == value
    assert "success" not in _statuses(rig, result.id), "the outcome was written before the process exited"
    return result


def test_a_child_leaving_after_max_tasks_and_a_warm_shutdown_write_what_was_queued(
    tmp_path: Path, flushed_redis: None
) -> None:
    with fresh_postgres_database() as pg_url, running_rig(
        _settings(tmp_path, pg_url), tmp_path, name="df-stop", concurrency=1, extra=["--max-tasks-per-child=2"]
    ) as rig:
        first = _held(rig, "first")
        second = rig.wait_result(rig.send("wt.hold_records", kwargs={"value": "second"}))
        # Its second run made the child leave: both outcomes written as it exits.
        for result in (first, second):
            wait_until(partial(_written, rig, result.id), 30,
                       f"{result.id} written by the child leaving after its max tasks", lambda: rig.worker.log)
        third = _held(rig, "third")  # the next child
        rig.worker.stop_timeout = 30
        assert rig.worker.stop(signal.SIGTERM) == 0, "the warm shutdown did not end by itself"
        assert _statuses(rig, third.id) == ["success"]


def test_with_the_database_down_a_stopping_worker_gives_up_after_5s_and_logs_what_it_lost(
    tmp_path: Path, flushed_redis: None
) -> None:
    assert Writer.exit_timeout == 5.0
    with PrivatePostgres.running(tmp_path / "pg") as pg, running_rig(
        _settings(tmp_path, pg.url), tmp_path, name="df-stop-down", concurrency=1
    ) as rig:
        held = _held(rig, "lost")
        pg.stop()
        rig.worker.stop_timeout = Writer.exit_timeout + 15
        stopping = time.monotonic()
        code = rig.worker.stop(signal.SIGTERM)
        took = time.monotonic() - stopping
        assert code == 0, f"the worker did not exit by itself within {rig.worker.stop_timeout}s"
        assert took >= Writer.exit_timeout, f"gave up after {took:.1f}s, before trying for {Writer.exit_timeout}s"
        assert [line for line in rig.worker.lines()
                if "1 execution record(s) could not be written before the process exits" in line], rig.worker.log
        pg.start()
        assert _statuses(rig, held.id) in ([], ["running"])  # lost, as logged: the reaper's to close
