"""SQLAlchemy 2.0 typed models of the scheduling tables.

``Base.metadata`` is the single description of the target schema; the Alembic migrations are
checked against it (autogenerate must find nothing).
"""

from dataforge.models.base import Base, utcnow
from dataforge.models.flag import Flag
from dataforge.models.lock_lease import LockLease
from dataforge.models.scheduled_task import ScheduledTask
from dataforge.models.task_execution import TaskExecution

__all__ = [
    "Base",
    "Flag",
    "LockLease",
    "ScheduledTask",
    "TaskExecution",
    "utcnow",
]
