"""Tasks for the real beat / worker process tests.

Loaded only by child processes started with
``DATAFORGE_TASK_PACKAGES=tests.dataforge.scheduler.beat_tasks``; nothing in the test process
imports it, so these names exist only where a test asked for them.
"""

from __future__ import annotations

import os
import time
from typing import Any

from dataforge.celery_app import celery_app
from dataforge.tasks.base import DataForgeTask

__all__ = ["echo", "gated"]


@celery_app.task(name="sched_test.echo")
def echo(**kwargs: Any) -> dict[str, Any]:
    """Returns its kwargs, so the worker's "succeeded" log line shows what beat sent."""
    return kwargs


def _note(journal: str, line: str) -> None:
    with open(journal, "a") as out:
        out.write(f"{line} {time.time():.6f}\n")


def gate_job(journal: str, value: str, gate: str | None = None, **_: Any) -> str:
    """Notes when it starts and ends in ``journal`` and waits for the file ``gate`` in between,
    so a test decides how long a run lasts and sees which runs overlapped."""
    _note(journal, f"start {value}")
    deadline = time.monotonic() + 120
    while gate and not os.path.exists(gate):
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate {gate} never opened")
        time.sleep(0.02)
    _note(journal, f"end {value}")
    return value


@celery_app.task(base=DataForgeTask, bind=True, name="sched_test.gated")
def gated(self: DataForgeTask, **kwargs: Any) -> Any:
    return self.run_job(gate_job, kwargs)
