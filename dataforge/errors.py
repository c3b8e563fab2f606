"""The error hierarchy of the runtime.

Every error the project raises on purpose derives from :class:`DataForgeError`, so callers
(CLI, beat, workers) can tell "we refused this, with a reason" from a bug. Each error carries
the object that failed (a setting name, a task name, a schedule id) so messages can name it.
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "DataForgeError",
    "LockUnavailableError",
    "ScheduleError",
    "UnknownTaskError",
]


class DataForgeError(Exception):
    """Root of every error this project raises deliberately."""


class ConfigurationError(DataForgeError):
    """A setting has a value we cannot use. ``name`` is the environment variable."""

    def __init__(self, name: str, value: object, reason: str) -> None:
        self.name = name
        self.value = value
        self.reason = reason
        super().__init__(f"{name}={value!r}: {reason}")


class UnknownTaskError(DataForgeError):
    """A task name is not registered with the Celery app (nothing is ever sent for it)."""

    def __init__(self, task_name: str, hint: str = "") -> None:
        self.task_name = task_name
        msg = f"task {task_name!r} is not registered"
        super().__init__(f"{msg}; {hint}" if hint else msg)


class ScheduleError(DataForgeError):
    """A schedule definition cannot be evaluated (bad cron, unknown time zone, bad kwargs...).

    ``field`` names the column at fault so a flagged row or a CLI refusal can point at it.
    """

    def __init__(self, field: str, value: object, reason: str, schedule_id: int | None = None) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        self.schedule_id = schedule_id
        where = f"schedule {schedule_id}: " if schedule_id is not None else ""
        super().__init__(f"{where}{field}={value!r}: {reason}")


class LockUnavailableError(DataForgeError):
    """The lock store could not be reached; what happens next is the configured policy."""

    def __init__(self, key: str, cause: BaseException | None = None) -> None:
        self.key = key
        self.cause = cause
        super().__init__(f"lock store unreachable for {key!r}: {cause!r}")
