"""Helpers shared by the DataForgeTask tests: schedule rows, execution rows, lock state."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import redis
from celery import Celery, states
from sqlalchemy import select

from dataforge.models import LockLease, ScheduledTask, TaskExecution, utcnow

__all__ = ["add_schedule", "deliver", "executions", "lock_held", "noted", "schedule"]

T = TypeVar("T")
R = TypeVar("R")


def add_schedule(app: Celery, name: str = "s1", task_name: str = "t.job") -> int:
    with app.runtime.db.session() as s:
        row = ScheduledTask(name=name, task_type="interval", interval_seconds=60, task_name=task_name)
        s.add(row)
        s.flush()
        return row.id


def executions(app: Celery) -> list[TaskExecution]:
    with app.runtime.db.session() as s:
        return list(s.scalars(select(TaskExecution).order_by(TaskExecution.id)))


def schedule(app: Celery, schedule_id: int) -> ScheduledTask:
    with app.runtime.db.session() as s:
        row: ScheduledTask | None = s.get(ScheduledTask, schedule_id)
        assert row is not None
        return row


def lock_held(app: Celery, key: str) -> bool:
    """Whether ``key`` is currently held in the app's lock store (read-only peek)."""
    settings = app.runtime.settings
    if settings.redis_url:
        client = redis.Redis.from_url(settings.redis_url)
        try:
            return client.exists(key) == 1
        finally:
            client.close()
    with app.runtime.db.session() as s:
        lease = s.get(LockLease, key)
        return lease is not None and lease.expires_at > utcnow()


def noted(log: list[T], item: T, result: Callable[[], R]) -> R:
    """``log.append(item)``, then ``result()``: a job body that leaves a trace, in a lambda."""
    log.append(item)
    return result()


def deliver(task: Any, task_id: str, kwargs: dict[str, Any], retries: int = 0, *, flush: bool = True,
            **request: Any) -> str:
    """Run one delivery of ``task_id`` as a worker child does (Celery's non-eager tracer,
    task_track_started included); return the traced state. ``flush``: then write what the
    recorder queued, as its writer thread does within 50 ms."""
    from celery.app.trace import build_tracer

    tracer = build_tracer(task.name, task, app=task.app, hostname="w@test", eager=False)
    req = {"id": task_id, "retries": retries, "hostname": "w@test", "delivery_info": {}, "is_eager": False,
           "headers": {}, **request}  # fmt: skip
    info = tracer(task_id, (), kwargs, req).info
    if flush:
        assert task.app.runtime.recorder.flush(), task.app.runtime.recorder.stats
    return str(info.state) if info is not None else states.SUCCESS
