"""Tasks for the real beat / worker process tests.

Loaded only by child processes started with
``DATAFORGE_TASK_PACKAGES=tests.dataforge.scheduler.beat_tasks``; nothing in the test process
imports it, so these names exist only where a test asked for them.
"""

from __future__ import annotations

from typing import Any

from dataforge.celery_app import celery_app

__all__ = ["echo"]


@celery_app.task(name="sched_test.echo")
def echo(**kwargs: Any) -> dict[str, Any]:
    """Returns its kwargs, so the worker's "succeeded" log line shows what beat sent."""
    return kwargs
