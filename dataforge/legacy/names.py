"""The names the legacy path is known by: the message's task name and the modules that register it."""

from __future__ import annotations

from typing import Final

__all__ = ["FORWARDER_MODULE", "LEGACY_TASK_NAME", "SHIM_MODULE"]

#: Celery's default name for the legacy executor (``app/celery_tasks.py``), the name legacy beat
#: used; messages under it may sit in the broker during any deploy.
LEGACY_TASK_NAME: Final = "app.celery_tasks.execute_scheduled_task"
#: Registers LEGACY_TASK_NAME while the switch is on: the rollback shim, which runs the legacy
#: ``scripts.<m>.run``. The only reference to the compat package outside it (tests/compat checks).
SHIM_MODULE: Final = "compat.celery_tasks_legacy"
#: Registers LEGACY_TASK_NAME while the switch is off: runs the new task the message maps to.
FORWARDER_MODULE: Final = "dataforge.legacy.forwarder"
