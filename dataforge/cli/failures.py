"""Every error a verb can end with, turned into one exit status and one message.

The root group (:mod:`dataforge.cli.main`) catches what a verb raises and asks
:func:`failure_for` what it means; verbs never pick exit codes for errors themselves. A
failure is printed as one line on stderr (the object, what is wrong, what to do), or, when
the verb was given ``--json``, as ``{"error": {"code", "kind", "message", "field"}}`` on stdout,
so a script always gets one JSON document. Exceptions nobody expected are not turned into a
message: they are bugs, and their traceback is the report.

Libraries a verb may not have imported (kombu, redis, Alembic, the migrations) are looked up
in :data:`sys.modules`: an exception of a module that was never imported cannot occur, and
``dataforge convert`` does not pay for importing Celery to find that out.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

import click
from sqlalchemy.exc import (
    DataError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import (
    TimeoutError as PoolTimeoutError,
)

from dataforge.cli.exits import Exit
from dataforge.errors import (
    ConfigurationError,
    DatabaseUnavailableError,
    DataForgeError,
    LockUnavailableError,
    ScheduleError,
    SchemaError,
    UnknownTaskError,
)
from dataforge.scheduler.errors import ScheduleCannotRunError, ScheduleNotFoundError, ScheduleStateError
from dataforge.schema import driver_reason, safe_url, unreachable
from dataforge.settings import Settings

__all__ = [
    "OPTION_FOR_FIELD",
    "SUBJECT_META",
    "Failure",
    "Kind",
    "about",
    "echo_value",
    "failure_for",
    "one_line",
    "report",
    "stored_fault",
]

#: ``ctx.meta`` key: what the verb is working on (``schedule 'nightly'``), to start messages with.
SUBJECT_META: Final = "dataforge.subject"

#: ScheduleError.field -> the option a user types, so a refusal names what to fix.
OPTION_FOR_FIELD: Final = {
    "name": "NAME",
    "task_name": "--task",
    "task_type": "--interval / --cron / --at",
    "interval_seconds": "--interval",
    "cron_expression": "--cron",
    "timezone": "--timezone",
    "run_at": "--at",
    "handler_kwargs": "--kwargs",
    "timeout_seconds": "--timeout",
    "max_retries": "--max-retries",
    "missed_run_policy": "--missed-runs",
    "catchup_window_seconds": "--catchup-window",
    "overlap_policy": "--overlap",
    "jitter_seconds": "--jitter",
    "description": "--description",
    "status": "--status",
    "state": "--state",
    "limit": "--limit",
}

_ECHO_MAX = 200
#: Characters that would break the one-line rule or a terminal: shown escaped.
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")


class Kind(StrEnum):
    """``error.kind`` in ``--json`` output: what a script can branch on."""

    USAGE = "usage"
    INVALID = "invalid"
    UNKNOWN_TASK = "unknown_task"
    NOT_FOUND = "not_found"
    REFUSED = "refused"
    CONFLICT = "conflict"
    CONFIGURATION = "configuration"
    DATABASE_UNREACHABLE = "database_unreachable"
    DATABASE_ERROR = "database_error"
    SCHEMA_MISSING = "schema_missing"
    SCHEMA_OUTDATED = "schema_outdated"
    BROKER_UNREACHABLE = "broker_unreachable"
    LOCK_STORE_UNREACHABLE = "lock_store_unreachable"


_SCHEMA_KINDS = {"missing": Kind.SCHEMA_MISSING, "legacy": Kind.SCHEMA_OUTDATED, "outdated": Kind.SCHEMA_OUTDATED,
                 "unknown": Kind.SCHEMA_OUTDATED}  # fmt: skip


@dataclass(frozen=True)
class Failure:
    """What an error means to the person or script that ran the command."""

    exit: Exit
    kind: Kind
    message: str
    #: The option (or argument, or environment variable) at fault, when there is one.
    field: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"error": {"code": int(self.exit), "kind": str(self.kind), "message": self.message,
                          "field": self.field}}


def one_line(text: str) -> str:
    """``text`` printable on one line by any terminal and encoder: control characters and
    lone surrogates (undecodable bytes of argv) escaped."""
    safe = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), safe)


def echo_value(value: object) -> str:
    """A refused value as the user would write it: text as typed, data as JSON (never a
    Python repr), cut at 200 characters."""
    if isinstance(value, str):
        shown = f"'{value}'"
    elif isinstance(value, dict | list | tuple):
        shown = json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    else:
        shown = str(value)
    return shown if len(shown) <= _ECHO_MAX else shown[:_ECHO_MAX] + "..."


def about(ctx: click.Context, subject: str) -> None:
    """Name what the running verb works on; refusals of its values start with it."""
    ctx.meta[SUBJECT_META] = subject


def _module_class(module: str, name: str) -> type[BaseException] | None:
    found = getattr(sys.modules.get(module), name, None)
    return found if isinstance(found, type) and issubclass(found, BaseException) else None


def _is(exc: BaseException, module: str, *names: str) -> bool:
    return any((cls := _module_class(module, n)) is not None and isinstance(exc, cls) for n in names)


def _database_failure(exc: SQLAlchemyError, settings: Settings | None) -> Failure:
    url = settings.database_url if settings is not None else None
    if isinstance(exc, OperationalError | InterfaceError | PoolTimeoutError):
        if url is None:
            return Failure(Exit.ENVIRONMENT, Kind.DATABASE_UNREACHABLE,
                           f"the database is unreachable: {driver_reason(exc)}")
        return Failure(Exit.ENVIRONMENT, Kind.DATABASE_UNREACHABLE, str(unreachable(url, exc)))
    where = f"database {safe_url(url)}" if url is not None else "the database"
    reason = driver_reason(exc)
    if isinstance(exc, IntegrityError):
        return Failure(Exit.REFUSED, Kind.CONFLICT,
                       f"{where} refused the write: {reason}; another writer changed the same row, try again")
    if isinstance(exc, DataError):
        return Failure(Exit.REFUSED, Kind.INVALID, f"{where} refused a value: {reason}")
    return Failure(Exit.ENVIRONMENT, Kind.DATABASE_ERROR,
                   f"{where} failed: {reason}; `dataforge db current` shows the schema it has")


def _schedule_failure(exc: ScheduleError, subject: str | None) -> Failure:
    option = OPTION_FOR_FIELD.get(exc.field, exc.field)
    parts = [p for p in (subject, option) if p]
    if exc.value is not None:
        parts.append(echo_value(exc.value))
    parts.append(exc.reason)
    return Failure(Exit.REFUSED, Kind.INVALID, ": ".join(parts), option)


def stored_fault(schedule_id: int, fault: ScheduleError | UnknownTaskError) -> tuple[str, str]:
    """(option, text) for a fault stored in a row: what is refused, and the edit that fixes it."""
    field = fault.field if isinstance(fault, ScheduleError) else "task_name"
    option = OPTION_FOR_FIELD.get(field, field)
    what = (f"its {option} {echo_value(fault.value)} is refused: {fault.reason}" if isinstance(fault, ScheduleError)
            else str(fault).split(";")[0])
    return option, f"{what}; fix it with `dataforge schedules edit {schedule_id} {option} ...`"


def _cannot_run(exc: ScheduleCannotRunError) -> Failure:
    option, text = stored_fault(exc.schedule_id, exc.cause)
    if exc.verb == "resume":
        text += " (it stays paused until then)"
    return Failure(Exit.REFUSED, Kind.REFUSED, f"schedule {exc.schedule_id} ({exc.name}) cannot {exc.verb}: {text}",
                   option)


def _usage(exc: click.UsageError) -> Failure:
    field: str | None = None
    if isinstance(exc, click.BadParameter) and exc.param is not None:
        field = exc.param.opts[0] if exc.param.opts else exc.param.human_readable_name
    elif isinstance(exc, click.BadParameter) and exc.param_hint:
        field = str(exc.param_hint)
    message = exc.format_message().rstrip(".")
    if exc.ctx is not None:
        message += f"; see `{exc.ctx.command_path} --help`"
    return Failure(Exit.REFUSED, Kind.USAGE, message, field)


def failure_for(exc: BaseException, settings: Settings | None, subject: str | None = None) -> Failure | None:
    """What ``exc`` means, or ``None`` for an exception nobody expected (a bug: let it raise)
    or one click reports itself (a group's help).

    ``settings``: the CLI's, to name the database or broker that failed (``None`` when the
    settings themselves could not be built); ``subject``: what the verb was working on.
    """
    if isinstance(exc, click.exceptions.NoArgsIsHelpError):
        return None  # a group run without a verb: click prints its help, exit 2
    if isinstance(exc, click.UsageError):
        return _usage(exc)
    if isinstance(exc, click.ClickException):
        return Failure(Exit.REFUSED, Kind.REFUSED, exc.format_message())
    if isinstance(exc, SchemaError):
        return Failure(Exit.ENVIRONMENT, _SCHEMA_KINDS.get(exc.kind, Kind.SCHEMA_OUTDATED), str(exc))
    if isinstance(exc, DatabaseUnavailableError):
        return Failure(Exit.ENVIRONMENT, Kind.DATABASE_UNREACHABLE, str(exc))
    if isinstance(exc, ConfigurationError):
        return Failure(Exit.REFUSED, Kind.CONFIGURATION, str(exc), exc.name)
    if isinstance(exc, ScheduleCannotRunError):
        return _cannot_run(exc)
    if isinstance(exc, ScheduleError):
        return _schedule_failure(exc, subject)
    if isinstance(exc, UnknownTaskError):
        prefix = f"{subject}: " if subject else ""
        return Failure(Exit.REFUSED, Kind.UNKNOWN_TASK, f"{prefix}--task: {exc}", "--task")
    if isinstance(exc, ScheduleNotFoundError):
        return Failure(Exit.REFUSED, Kind.NOT_FOUND, str(exc))
    if isinstance(exc, ScheduleStateError):
        return Failure(Exit.REFUSED, Kind.REFUSED, str(exc))
    if isinstance(exc, LockUnavailableError):
        return Failure(Exit.ENVIRONMENT, Kind.LOCK_STORE_UNREACHABLE,
                       f"the lock store is unreachable ({exc.cause}); check DATAFORGE_REDIS_URL and that it is running")
    if _is(exc, "kombu.exceptions", "OperationalError") or _is(exc, "redis.exceptions", "ConnectionError",
                                                                  "TimeoutError"):
        broker = safe_url(settings.broker_url) if settings is not None else "the broker"
        return Failure(Exit.ENVIRONMENT, Kind.BROKER_UNREACHABLE,
                       f"could not send to the broker {broker} ({exc}); check that it is running "
                       "(DATAFORGE_BROKER_URL)")
    if _is(exc, "migrations.errors", "DatabaseUnavailableError"):
        return Failure(Exit.ENVIRONMENT, Kind.DATABASE_UNREACHABLE, str(exc))
    if _is(exc, "migrations.errors", "MigrationRefusedError"):
        return Failure(Exit.NO, Kind.REFUSED, str(exc).splitlines()[0])
    if _is(exc, "migrations.errors", "MigrationOptionError"):
        return Failure(Exit.REFUSED, Kind.USAGE, str(exc), "-x")
    if _is(exc, "alembic.util.exc", "CommandError"):
        return Failure(Exit.REFUSED, Kind.REFUSED, f"alembic: {exc}")
    if isinstance(exc, SQLAlchemyError):
        return _database_failure(exc, settings)
    if isinstance(exc, DataForgeError):
        # A deliberate refusal of another package (legacy switch, codemod, verify): its
        # message says what to do. A database error underneath is the database's failure.
        if isinstance(exc.__cause__, SQLAlchemyError):
            return _database_failure(exc.__cause__, settings)
        return Failure(Exit.REFUSED, Kind.REFUSED, str(exc))
    return None


def report(failure: Failure, *, as_json: bool) -> None:
    """Print ``failure``: JSON on stdout with ``--json``, else one line on stderr."""
    message = one_line(failure.message)
    if as_json:
        data = {**failure.to_json()}
        data["error"]["message"] = message
        if failure.field is not None:
            data["error"]["field"] = one_line(failure.field)
        click.echo(json.dumps(data, indent=2, sort_keys=True, allow_nan=False))
    else:
        click.echo(f"error: {message}", err=True)
