"""Beat scheduler reading scheduled_tasks; understands handler_path rows and task_name rows."""

import json
import logging
from datetime import datetime

from celery.beat import ScheduleEntry, Scheduler
from celery.schedules import crontab, schedule

from app.database import SessionLocal
from app.models import ScheduledTask

logger = logging.getLogger(__name__)
LEGACY_EXECUTOR = "app.celery_tasks.execute_scheduled_task"


def _kwargs(row):
    try:
        return json.loads(row.handler_kwargs or "{}") or {}
    except ValueError:
        logger.warning("schedule %s: bad handler_kwargs %r", row.id, row.handler_kwargs)
        return {}


class DatabaseScheduleEntry(ScheduleEntry):
    @classmethod
    def from_row(cls, row, app):
        if row.task_type == "cron":
            minute, hour, dom, month, dow = row.cron_expression.split()
            sched = crontab(minute=minute, hour=hour, day_of_month=dom, month_of_year=month, day_of_week=dow)
        else:
            sched = schedule(row.interval_seconds or 60)
        kwargs = _kwargs(row)
        if row.handler_path:
            task = LEGACY_EXECUTOR
            kwargs = {"scheduled_task_id": row.id, "handler_path": row.handler_path, **kwargs}
        else:
            task = row.task_name
            kwargs = {"scheduled_task_id": row.id, **kwargs}
        return cls(name=row.name, task=task, schedule=sched, kwargs=kwargs, app=app, last_run_at=row.last_run_at)


class DatabaseScheduler(Scheduler):
    """Reloads every schedule from the database every sync."""

    def setup_schedule(self):
        self.schedule = self._load()

    def _load(self):
        with SessionLocal() as session:
            rows = session.query(ScheduledTask).filter(ScheduledTask.status == "active").all()
            return {row.name: DatabaseScheduleEntry.from_row(row, self.app) for row in rows}

    def sync(self):
        self.schedule = self._load()
        logger.debug("reloaded %d schedules at %s", len(self.schedule), datetime.utcnow())
