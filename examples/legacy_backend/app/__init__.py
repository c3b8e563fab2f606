"""DataForge backend (legacy layout: jobs in scripts/, a few tasks in app/tasks/)."""

# The Celery docs' layout: the app is loaded with the package, so @shared_task uses it.
from app.celery_app import celery_app

__all__ = ("celery_app",)
