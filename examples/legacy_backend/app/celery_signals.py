"""prerun / success / failure / postrun: one TaskExecution row per run, counters on the schedule."""

import json
from datetime import datetime, timedelta

from celery.signals import task_failure, task_postrun, task_prerun, task_success
from croniter import croniter

from app.database import SessionLocal
from app.models import ScheduledTask, TaskExecution

_started = {}


@task_prerun.connect
def on_task_prerun(sender=None, task_id=None, task=None, args=None, kwargs=None, **extra):
    kwargs = kwargs or {}
    with SessionLocal() as session:
        execution = TaskExecution(
            scheduled_task_id=kwargs.get("scheduled_task_id"),
            celery_task_id=task_id,
            task_name=task.name if task else None,
            handler_path=kwargs.get("handler_path"),
            status="running",
            started_at=datetime.utcnow(),
        )
        session.add(execution)
        session.commit()
        _started[task_id] = execution.id


@task_success.connect
def on_task_success(sender=None, result=None, **extra):
    task_id = sender.request.id
    with SessionLocal() as session:
        execution = session.get(TaskExecution, _started.get(task_id))
        if execution is not None:
            execution.status = "success"
            execution.finished_at = datetime.utcnow()
            execution.duration_ms = int((execution.finished_at - execution.started_at).total_seconds() * 1000)
            execution.result = json.dumps(result, default=str)
            row = session.get(ScheduledTask, execution.scheduled_task_id) if execution.scheduled_task_id else None
            if row is not None:
                row.success_count += 1
                row.last_status = "success"
        session.commit()


@task_failure.connect
def on_task_failure(sender=None, task_id=None, exception=None, **extra):
    with SessionLocal() as session:
        execution = session.get(TaskExecution, _started.get(task_id))
        if execution is not None:
            execution.status = "failure"
            execution.finished_at = datetime.utcnow()
            execution.error = repr(exception)
            row = session.get(ScheduledTask, execution.scheduled_task_id) if execution.scheduled_task_id else None
            if row is not None:
                row.failure_count += 1
                row.last_status = "failure"
                row.last_error = str(exception)
        session.commit()


@task_postrun.connect
def on_task_postrun(sender=None, task_id=None, kwargs=None, **extra):
    _started.pop(task_id, None)
    scheduled_task_id = (kwargs or {}).get("scheduled_task_id")
    if not scheduled_task_id:
        return
    with SessionLocal() as session:
        row = session.get(ScheduledTask, scheduled_task_id)
        if row is None:
            return
        now = datetime.utcnow()
        row.run_count += 1
        row.last_run_at = now
        if row.task_type == "interval" and row.interval_seconds:
            row.next_run_at = now + timedelta(seconds=row.interval_seconds)
        elif row.task_type == "cron" and row.cron_expression:
            row.next_run_at = croniter(row.cron_expression, now).get_next(datetime)
        session.commit()
