"""Example tasks: one async job, one sync job, one that fails sometimes.

They are written the way every DataForge task is written (and the way the codemod writes
converted legacy scripts): the job is a plain function (``async def`` or ``def``) that takes
only the parameters it needs; the task is a thin sync wrapper that hands the message's kwargs
to :meth:`~dataforge.worker.task.DataForgeTask.run_job`.
"""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta
from typing import Any

from dataforge.celery_app import celery_app
from dataforge.models import utcnow
from dataforge.worker.task import DataForgeTask

__all__ = [
    "cleanup",
    "cleanup_job",
    "flaky",
    "flaky_job",
    "sync_accounts",
    "sync_accounts_job",
]


async def sync_accounts_job(
    pages: int = 3, page_size: int = 50, *, scheduled_task_id: int | None = None
) -> dict[str, Any]:
    """Fetch ``pages`` pages concurrently (simulated I/O) and count the accounts."""

    async def fetch(page: int) -> int:
        await asyncio.sleep(0.01)
        return page_size

    counts = await asyncio.gather(*(fetch(p) for p in range(pages)))
    return {"synced_count": sum(counts), "pages": pages, "scheduled_task_id": scheduled_task_id}


def cleanup_job(days: int = 7, dry_run: bool = True) -> dict[str, Any]:
    """Report the cut-off for data older than ``days`` (nothing is deleted in the example)."""
    cutoff = utcnow() - timedelta(days=days)
    return {"cutoff": cutoff.isoformat(timespec="seconds"), "deleted": 0, "dry_run": dry_run}


def flaky_job(failure_rate: float = 0.3) -> dict[str, Any]:
    """Raise with probability ``failure_rate``; retried per the schedule's max_retries."""
    if random.random() < failure_rate:
        raise RuntimeError(f"example failure (failure_rate={failure_rate})")
    return {"ok": True}


@celery_app.task(base=DataForgeTask, bind=True, name="dataforge.example_sync_accounts")  # type: ignore[untyped-decorator]
def sync_accounts(self: DataForgeTask, **kwargs: Any) -> Any:
    """Async example: the job is a coroutine; run_job awaits it on the worker's loop."""
    return self.run_job(sync_accounts_job, kwargs)


@celery_app.task(base=DataForgeTask, bind=True, name="dataforge.example_cleanup")  # type: ignore[untyped-decorator]
def cleanup(self: DataForgeTask, **kwargs: Any) -> Any:
    """Sync example: ``scheduled_task_id`` is not passed to a job that does not declare it."""
    return self.run_job(cleanup_job, kwargs)


@celery_app.task(base=DataForgeTask, bind=True, name="dataforge.example_flaky")  # type: ignore[untyped-decorator]
def flaky(self: DataForgeTask, **kwargs: Any) -> Any:
    """Fails sometimes: shows autoretry with the schedule's max_retries."""
    return self.run_job(flaky_job, kwargs)
