"""The Celery application of the legacy backend."""

from celery import Celery

from app import config

celery_app = Celery(
    "dataforge",
    broker=config.BROKER_URL,
    backend=config.RESULT_BACKEND,
    include=[
        "app.celery_tasks",
        "app.tasks.maintenance",
    ],
)
celery_app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    timezone="UTC",
    enable_utc=True,
    beat_scheduler="app.celery_scheduler:DatabaseScheduler",
)
celery_app.conf.beat_schedule = {
    # handler_path rows: sent by the poller (the scheduler above sends task_name rows).
    "dispatch-due-tasks": {
        "task": "app.celery_tasks.dispatch_due_tasks",
        "schedule": 60.0,
    },
}

# Signal handlers register on import.
import app.celery_signals  # noqa: E402,F401
