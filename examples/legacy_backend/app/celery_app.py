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

# Signal handlers register on import.
import app.celery_signals  # noqa: E402,F401
