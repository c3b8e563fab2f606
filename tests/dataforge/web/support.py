"""Helpers of the console tests: a console on a real database, rows written as the runtime writes them."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import insert

from dataforge.db import Database
from dataforge.models import ScheduledTask, TaskExecution, utcnow
from dataforge.settings import Settings
from dataforge.web import create_web_app

__all__ = ["TASK", "TOKEN", "add_execution", "add_schedule", "auth", "console", "counter"]

#: A task of the default task package (dataforge.tasks) with declared params.
TASK = "dataforge.example_cleanup"
TOKEN = "test-token-0123456789-abcdefghij"
_names = itertools.count(1)


def counter() -> int:
    return next(_names)


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@contextmanager
def console(settings: Settings, *, base_url: str = "http://127.0.0.1:8080") -> Iterator[tuple[FastAPI, TestClient]]:
    """The console on ``settings`` behind Starlette's test client (lifespan run, app closed after)."""
    web = create_web_app(settings)
    with TestClient(web, base_url=base_url, follow_redirects=False) as client:
        yield web, client


def add_schedule(db: Database, **values: Any) -> int:
    """A row as an operator or the legacy app would insert it (no validation)."""
    row = {"name": f"row-{counter()}", "task_type": "interval", "task_name": TASK, "interval_seconds": 3600,
           "handler_kwargs": "{}", "status": "active", **values}
    with db.session() as session:
        result = session.execute(insert(ScheduledTask).values(**row).returning(ScheduledTask.id))
        return int(result.scalar_one())


def add_execution(db: Database, schedule_id: int | None, *, status: str = "success", task_name: str = TASK,
                  started_at: datetime | None = None, duration_ms: int | None = 120, error: str | None = None,
                  attempt: int = 0) -> int:
    started = started_at or utcnow()
    with db.session() as session:
        result = session.execute(insert(TaskExecution).values(
            scheduled_task_id=schedule_id, celery_task_id=f"task-{counter()}", task_name=task_name, status=status,
            started_at=started, finished_at=None if duration_ms is None else started + timedelta(
                milliseconds=duration_ms),
            duration_ms=duration_ms, error=error, attempt=attempt, worker="w1@host",
        ).returning(TaskExecution.id))
        return int(result.scalar_one())
