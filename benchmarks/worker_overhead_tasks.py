"""The tasks benchmarks/worker_overhead.py compares (imported by its worker process).

All do nothing, so the benchmark measures what the runtime adds per run: the lock (Redis
SET NX PX + EVALSHA release), the execution row (one upsert at prerun, one statement at the
end that also bumps the counters), kwargs binding and the run log line. ``bench.plain`` and
``bench.dataforge`` are the comparison; the other three (``--breakdown``) switch the lock
and the recording off to show where the cost goes.
"""

from __future__ import annotations

from typing import Any

from dataforge.celery_app import celery_app
from dataforge.tasks.base import DataForgeTask

__all__ = ["bare_noop", "dataforge_noop", "lock_only_noop", "noop_job", "plain_noop", "record_only_noop"]


def noop_job() -> None:
    """The job: takes nothing (scheduled_task_id is not passed to it)."""


@celery_app.task(name="bench.plain")  # type: ignore[untyped-decorator]
def plain_noop(**kwargs: Any) -> None:
    """Plain Celery: no lock, no recording."""


@celery_app.task(base=DataForgeTask, bind=True, name="bench.dataforge")  # type: ignore[untyped-decorator]
def dataforge_noop(self: DataForgeTask, **kwargs: Any) -> Any:
    """DataForgeTask: lock + recording + run_job."""
    return self.run_job(noop_job, kwargs)


class _Bare(DataForgeTask):
    dataforge_record = False
    lock_enabled = False


class _LockOnly(DataForgeTask):
    dataforge_record = False


class _RecordOnly(DataForgeTask):
    lock_enabled = False


@celery_app.task(base=_Bare, bind=True, name="bench.bare")  # type: ignore[untyped-decorator]
def bare_noop(self: DataForgeTask, **kwargs: Any) -> Any:
    """Breakdown: DataForgeTask's hooks, autoretry wrapper and run_job, no lock, no recording."""
    return self.run_job(noop_job, kwargs)


@celery_app.task(base=_LockOnly, bind=True, name="bench.lock_only")  # type: ignore[untyped-decorator]
def lock_only_noop(self: DataForgeTask, **kwargs: Any) -> Any:
    """Breakdown: the lock and run_job, no recording."""
    return self.run_job(noop_job, kwargs)


@celery_app.task(base=_RecordOnly, bind=True, name="bench.record_only")  # type: ignore[untyped-decorator]
def record_only_noop(self: DataForgeTask, **kwargs: Any) -> Any:
    """Breakdown: recording and run_job, no lock."""
    return self.run_job(noop_job, kwargs)
