"""Test tasks for real workers: hook tracing, gated jobs, slow coroutines, the legacy executor.

``shared=False`` everywhere: the tasks register on ``dataforge.celery_app.celery_app`` only
(the app ``celery -A dataforge.celery_app worker`` runs), not on every app the test process
creates afterwards, so other tests' registries never see them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis
from celery import signals

from dataforge.celery_app import celery_app
from dataforge.worker.task import DataForgeTask

__all__ = ["SEQ_PATTERN", "SequenceTask"]

#: Worker log lines: ``SEQ <task id> <attempt> <hook or signal>``.
SEQ_PATTERN = r"SEQ (\S+) (\d+) (\S+)"
_seq_log = logging.getLogger("wt.seq")


def _seq(task_id: str | None, attempt: int | None, what: str) -> None:
    _seq_log.warning("SEQ %s %s %s", task_id, attempt or 0, what)


class SequenceTask(DataForgeTask):
    """Logs every hook, so a test can read the exact order from the worker's output."""

    def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
        _seq(task_id, self.request.retries, "before_start")
        super().before_start(task_id, args, kwargs)

    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        _seq(task_id, self.request.retries, "on_success")

    def on_failure(self, exc: Any, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        _seq(task_id, self.request.retries, "on_failure")

    def on_retry(self, exc: Any, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        _seq(task_id, self.request.retries, "on_retry")

    def after_return(self, *args: Any, **kwargs: Any) -> None:
        _seq(self.request.id, self.request.retries, "after_return")


def _traced(sender: Any) -> bool:
    return str(getattr(sender, "name", "")).startswith("wt.seq")


def _on_prerun(sender: Any = None, task_id: str | None = None, task: Any = None, **_: Any) -> None:
    if _traced(task):
        _seq(task_id, task.request.retries, "signal:task_prerun")


def _on_success(sender: Any = None, **_: Any) -> None:
    if _traced(sender):
        _seq(sender.request.id, sender.request.retries, "signal:task_success")


def _on_failure(sender: Any = None, task_id: str | None = None, **_: Any) -> None:
    if _traced(sender):
        _seq(task_id, sender.request.retries, "signal:task_failure")


def _on_retry(sender: Any = None, request: Any = None, **_: Any) -> None:
    if _traced(sender):
        _seq(request.id, request.retries, "signal:task_retry")


def _on_postrun(sender: Any = None, task_id: str | None = None, task: Any = None, state: str = "", **_: Any) -> None:
    if _traced(task):
        _seq(task_id, task.request.retries, f"signal:task_postrun:{state}")


for _signal, _handler in (
    (signals.task_prerun, _on_prerun),
    (signals.task_success, _on_success),
    (signals.task_failure, _on_failure),
    (signals.task_retry, _on_retry),
    (signals.task_postrun, _on_postrun),
):
    _signal.connect(_handler, weak=False, dispatch_uid=f"wt.{_handler.__name__}")


@celery_app.task(base=SequenceTask, bind=True, name="wt.seq", shared=False)
def seq(self: SequenceTask, **kwargs: Any) -> Any:
    mode = kwargs.get("mode", "ok")
    _seq(self.request.id, self.request.retries, "run")
    if mode == "fail":
        raise ValueError("boom")
    if mode == "fail_once" and self.request.retries == 0:
        raise ConnectionError("flaky upstream")
    return "ok"


async def gate_job(gate: str | None = None, value: Any = None) -> dict[str, Any]:
    """Blocks until the file ``gate`` exists: the test decides when the run ends."""
    deadline = time.monotonic() + 120
    while gate and not Path(gate).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate {gate} never opened")
        await asyncio.sleep(0.05)
    return {"pid": os.getpid(), "value": value}


@celery_app.task(base=DataForgeTask, bind=True, name="wt.gated", shared=False)
def gated(self: DataForgeTask, **kwargs: Any) -> Any:
    return self.run_job(gate_job, kwargs)


async def slow_job(marker: str) -> None:
    """Sleeps far past any soft time limit; its cleanup must still run when it is cancelled."""
    try:
        await asyncio.sleep(120)
    finally:
        await asyncio.sleep(0)
        Path(marker).write_text("unwound")


@celery_app.task(base=DataForgeTask, bind=True, name="wt.slow", shared=False)
def slow(self: DataForgeTask, **kwargs: Any) -> Any:
    return self.run_job(slow_job, kwargs)


async def run(scheduled_task_id: int, days: int = 7) -> dict[str, int]:
    """A legacy-style job: named parameters, no **kwargs."""
    await asyncio.sleep(0)
    return {"schedule": scheduled_task_id, "days": days}


@celery_app.task(bind=True, name="wt.legacy_execute_scheduled_task", shared=False)
def legacy_execute_scheduled_task(self: Any, scheduled_task_id: int, handler_path: str, **kwargs: Any) -> Any:
    """The legacy generic executor's behaviour: inject plumbing keys, asyncio.run the job."""
    kwargs["scheduled_task_id"] = scheduled_task_id
    kwargs["_lock_key"] = f"lock:{handler_path}:{scheduled_task_id}"
    return asyncio.run(run(**kwargs))


@celery_app.task(base=DataForgeTask, bind=True, name="wt.report", shared=False)
def report(self: DataForgeTask, **kwargs: Any) -> Any:
    return self.run_job(run, kwargs)


def effect_job(marker: str, fail_runs: int = 0) -> dict[str, Any]:
    """A side effect the test can count: one line appended to ``marker`` per run. The first
    ``fail_runs`` runs fail."""
    with open(marker, "a") as out:
        out.write(f"{os.getpid()}\n")
    runs = len(Path(marker).read_text().splitlines())
    if runs <= fail_runs:
        raise ValueError(f"failed on run {runs}")
    return {"run": runs}


@celery_app.task(base=DataForgeTask, bind=True, name="wt.effect", shared=False)
def effect(self: DataForgeTask, **kwargs: Any) -> Any:
    return self.run_job(effect_job, kwargs)


_client: aioredis.Redis | None = None


async def loop_client_job() -> dict[str, Any]:
    """Keeps a loop-bound client between runs, as real async jobs keep engines and pools."""
    global _client
    if _client is None:
        _client = aioredis.Redis.from_url(str(celery_app.runtime.settings.redis_url))
    return {"pid": os.getpid(), "loop": id(asyncio.get_running_loop()), "ping": await _client.ping()}


@celery_app.task(base=DataForgeTask, bind=True, name="wt.loop_client", lock_enabled=False, shared=False)
def loop_client(self: DataForgeTask, **kwargs: Any) -> Any:
    return self.run_job(loop_client_job, kwargs)


@celery_app.task(base=DataForgeTask, bind=True, name="wt.shutdown_lock_store", shared=False)
def shutdown_lock_store(self: DataForgeTask, **kwargs: Any) -> Any:
    """Takes the lock store down mid-run: the release at the end cannot reach it."""
    client = redis.Redis.from_url(self.app.runtime.settings.redis_url)
    try:
        client.shutdown(nosave=True)
    except redis.ConnectionError:
        pass
    return "lock store is down"


@celery_app.task(name="wt.plain", shared=False)
def plain(**kwargs: Any) -> Any:
    """A plain Celery task: no lock, not recorded."""
    return kwargs.get("value")


def hold_records_job(value: Any = None) -> dict[str, Any]:
    """From now on this process's writer waits an hour before writing a batch: the records
    of this run (at least its outcome) stay queued until the process exits."""
    celery_app.runtime.recorder.writer.interval = 3600.0
    return {"pid": os.getpid(), "value": value}


@celery_app.task(base=DataForgeTask, bind=True, name="wt.hold_records", lock_enabled=False, shared=False)
def hold_records(self: DataForgeTask, **kwargs: Any) -> Any:
    return self.run_job(hold_records_job, kwargs)
