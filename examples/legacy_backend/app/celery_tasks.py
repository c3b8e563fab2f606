"""Generic executor for the scripts/*.py jobs.

The scheduler sends ``app.celery_tasks.execute_scheduled_task`` with the row's id, its
handler_path and its handler_kwargs. The executor imports the script, injects the id and the
lock key, and runs the coroutine. ``dispatch_due_tasks`` (a beat entry, every minute) sends the
handler_path rows that are due, from before the database scheduler existed.
"""

import asyncio
import importlib
import json
import logging
from datetime import datetime

import redis
from celery.signals import task_postrun
from croniter import croniter

from app import config
from app.celery_app import celery_app
from app.database import SessionLocal
from app.models import ScheduledTask

logger = logging.getLogger(__name__)
_redis = redis.Redis.from_url(config.REDIS_URL)


def resolve_handler(handler_path):
    """scripts:x, scripts.x, scripts.x:run and scripts/x.py all name scripts/x.py."""
    path = handler_path.strip()
    if path.endswith(".py"):
        module_name = path[:-3].replace("/", ".")
    elif path.endswith(":run"):
        module_name = path[: -len(":run")]
    else:
        module_name = path.replace(":", ".")
    return getattr(importlib.import_module(module_name), "run")


@celery_app.task(bind=True)
def execute_scheduled_task(self, scheduled_task_id, handler_path, **kwargs):
    handler = resolve_handler(handler_path)
    lock_key = f"scheduled_task:{scheduled_task_id}"
    lock = _redis.lock(lock_key, timeout=config.TASK_LOCK_TTL, blocking=False)
    if not lock.acquire():
        logger.info("task %s already running, skipped", scheduled_task_id)
        return {"skipped": True}
    try:
        call_kwargs = {"_lock_key": lock_key, **kwargs, "scheduled_task_id": scheduled_task_id}
        if asyncio.iscoroutinefunction(handler):
            return asyncio.run(handler(**call_kwargs))
        return handler(**call_kwargs)
    finally:
        try:
            lock.release()
        except redis.exceptions.LockError:
            pass


@celery_app.task
def dispatch_due_tasks():
    """Send every due handler_path row to execute_scheduled_task."""
    now = datetime.utcnow()
    with SessionLocal() as session:
        rows = (
            session.query(ScheduledTask)
            .filter(ScheduledTask.status == "active", ScheduledTask.handler_path.isnot(None))
            .filter(ScheduledTask.next_run_at <= now)
            .all()
        )
        for row in rows:
            kwargs = json.loads(row.handler_kwargs or "{}") or {}
            execute_scheduled_task.delay(scheduled_task_id=row.id, handler_path=row.handler_path, **kwargs)
    return {"sent": len(rows)}


@task_postrun.connect
def update_next_run_time(sender=None, task_id=None, task=None, args=None, kwargs=None, state=None, **extra):
    """Duplicate of celery_signals.on_task_postrun (both update next_run_at)."""
    scheduled_task_id = (kwargs or {}).get("scheduled_task_id")
    if not scheduled_task_id:
        return
    with SessionLocal() as session:
        row = session.get(ScheduledTask, scheduled_task_id)
        if row is None:
            return
        now = datetime.utcnow()
        row.last_run_at = now
        if row.task_type == "interval" and row.interval_seconds:
            from datetime import timedelta

            row.next_run_at = now + timedelta(seconds=row.interval_seconds)
        elif row.task_type == "cron" and row.cron_expression:
            row.next_run_at = croniter(row.cron_expression, now).get_next(datetime)
        session.commit()
