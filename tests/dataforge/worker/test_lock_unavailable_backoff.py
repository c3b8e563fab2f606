"""docs/runtime.md: with the lock store unreachable, policy ``retry`` re-queues the run with
backoff 1, 2, 4 ... seconds capped at 60 s, at most LOCK_UNAVAILABLE_MAX_RETRIES times.

Eager mode ignores a retry's countdown, so the countdowns are read where the task hands them
to Celery (``Task.retry``), for each attempt number a worker would deliver.
"""

from __future__ import annotations

from typing import Any

import pytest
from celery import Celery

from dataforge.errors import LockUnavailableError
from dataforge.protocol import LockUnavailablePolicy
from dataforge.worker.task import LOCK_UNAVAILABLE_MAX_RETRIES, DataForgeTask

#: The stated schedule: 1, 2, 4 ... doubling, never above 60 s.
STATED = [min(60, 2**n) for n in range(12)]


class _Retried(Exception):
    def __init__(self, countdown: float | None, max_retries: int | None) -> None:
        super().__init__(countdown, max_retries)
        self.countdown = countdown
        self.max_retries = max_retries


def test_backoff_doubles_from_one_second_and_stops_at_sixty(embedded_settings: Any, make_app: Any) -> None:
    app: Celery = make_app(embedded_settings)

    @app.task(base=DataForgeTask, bind=True, name="t.backoff", shared=False)
    def job(self: DataForgeTask, **kwargs: Any) -> None:
        return None

    def capture(*args: Any, countdown: float | None = None, max_retries: int | None = None, **kw: Any) -> Any:
        raise _Retried(countdown, max_retries)

    seen: list[float | None] = []
    for attempt in range(len(STATED)):
        job.push_request(id=f"tid-{attempt}", retries=attempt, is_eager=False, called_directly=False)
        try:
            job.retry = capture
            with pytest.raises(_Retried) as info:
                job._on_lock_unavailable(LockUnavailablePolicy.RETRY, LockUnavailableError("k", OSError("down")))
        finally:
            job.pop_request()
        seen.append(info.value.countdown)
        assert info.value.max_retries == LOCK_UNAVAILABLE_MAX_RETRIES
    assert seen == STATED
