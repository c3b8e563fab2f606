"""DataForge: one way to define, schedule, lock and record Celery jobs.

The package is the *target* runtime of the migration: tasks are plain
``@celery_app.task(base=DataForgeTask)`` functions, ``DatabaseScheduler`` sends rows of
``scheduled_tasks`` by ``task_name``, and :mod:`dataforge.worker.recording` is the only place
that records executions.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
