"""The error hierarchy of the runtime.

Every error the project raises on purpose derives from :class:`DataForgeError`, so callers
(CLI, beat, workers) can tell "we refused this, with a reason" from a bug. Each error carries
the object that failed (a setting name, a task name, a schedule id) so messages can name it.
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "DataForgeError",
    "DatabaseUnavailableError",
    "JsonValueError",
    "LockUnavailableError",
    "ScheduleError",
    "SchemaError",
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


class DatabaseUnavailableError(DataForgeError):
    """The database cannot be reached (server down, wrong URL, SQLite file in a missing folder).

    ``url`` is the database URL with any password hidden; ``reason`` is the driver's first line;
    ``fix`` what to check.
    """

    def __init__(self, url: str, reason: str, fix: str) -> None:
        self.url = url
        self.reason = reason
        self.fix = fix
        super().__init__(f"database {url} is unreachable: {reason}; {fix}")

    def __reduce__(self) -> tuple[type[DatabaseUnavailableError], tuple[str, str, str]]:
        # Celery pickles a task's exception (eager results, the result backend): keep the type.
        return type(self), (self.url, self.reason, self.fix)


class SchemaError(DataForgeError):
    """The database has no DataForge schema, or one at a revision this code cannot run on.

    ``kind`` is ``missing`` (no tables), ``legacy`` (the legacy tables, never migrated),
    ``outdated`` (an older revision) or ``unknown`` (a revision this release does not know);
    ``fix`` is the command that repairs it, already part of the message.
    """

    def __init__(self, url: str, kind: str, problem: str, fix: str, revision: str | None = None) -> None:
        self.url = url
        self.kind = kind
        self.problem = problem
        self.fix = fix
        self.revision = revision
        super().__init__(f"database {url} {problem}: {fix}")

    def __reduce__(self) -> tuple[type[SchemaError], tuple[str, str, str, str, str | None]]:
        return type(self), (self.url, self.kind, self.problem, self.fix, self.revision)


class JsonValueError(DataForgeError):
    """A value is not strict JSON (NaN, infinities, lone surrogates, duplicate keys, too deep
    or too large). ``path`` points at the offending part (``$.a[2]``)."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}" if path != "$" else reason)

    def __reduce__(self) -> tuple[type[JsonValueError], tuple[str, str]]:
        return type(self), (self.path, self.reason)
