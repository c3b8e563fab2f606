"""What ``dataforge schedules`` does, without click: validate, plan and apply schedule writes.

The CLI is a thin shell over this module so the rules are testable without a terminal and
reusable by anything else that edits schedules (the HTTP API, a fixture). The rules:

* Every write is validated *before* anything is written, identically on every backend: the
  task must be registered with the Celery app, the schedule (interval / cron + time zone /
  once) must evaluate with the scheduler's own functions (:mod:`dataforge.scheduler.schedules`;
  there is no second cron parser here), every value must fit its PostgreSQL column
  (:mod:`dataforge.scheduler.limits`: SQLite would store what PostgreSQL refuses), and the
  kwargs must be strict JSON (:mod:`dataforge.strict_json`, the rule beat applies too) that
  matches the task's declared params. A refused write raises and leaves the table as it was.
* A row's stored state never blocks a write that does not touch it: an edit validates what it
  changes (and what depends on it: a new task is checked against the stored kwargs); a fault
  in an untouched column (kwargs broken by raw SQL, a task removed by a deploy) is returned
  with the result (:attr:`Written.problems`) instead of refusing the edit, so the row can
  always be fixed. ``resume`` and ``run-now`` need a row that can run: they refuse a faulty
  one with :class:`~dataforge.scheduler.errors.ScheduleCannotRunError` naming the column.
* Idempotent verbs: pausing a paused row, resuming an active one, an edit that changes
  nothing: nothing is written and :attr:`Written.changed` is ``False``.
* ``next_run_at`` is computed here with the scheduler's math whenever the timing of a row
  changes (add, an edit of the schedule or time zone, resume), so beat sees a correct due time
  on its next tick. Edits that do not touch timing keep the due time.
* The scheduler's "invalid" flag is cleared when a write leaves the row valid as a whole.
* ``run-now`` sends through the scheduler's own message builder, so a manual run is the same
  message a scheduled one would be.
* The policies (missed runs, catch-up window, overlap, jitter) are columns of the row like the
  timing: validated by the scheduler's rules, a jitter change re-plans the next run.

Pure planning (``plan_*``) is kept apart from the I/O functions that apply it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, func, inspect, or_, select
from sqlalchemy import text as sql_text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import defer

from dataforge import strict_json
from dataforge.catalog.params import check_kwargs
from dataforge.catalog.registry import TaskCatalog
from dataforge.db import Database, is_postgres
from dataforge.errors import ScheduleError, UnknownTaskError
from dataforge.models import ScheduledTask, TaskExecution, utcnow
from dataforge.protocol import (
    PUBLISH_RETRY_POLICY,
    ExecutionStatus,
    MissedRunPolicy,
    OverlapPolicy,
    ScheduleStatus,
    TaskType,
)
from dataforge.scheduler import schedules
from dataforge.scheduler.errors import ScheduleCannotRunError, ScheduleNotFoundError, ScheduleStateError
from dataforge.scheduler.limits import INT32_MAX, check_text, max_length
from dataforge.scheduler.store import missing_policy_columns
from dataforge.schema import may_be_schema_error

if TYPE_CHECKING:
    from celery import Celery

__all__ = [
    "COUNT_CAP",
    "DEFAULT_CHOICE",
    "MAX_PAGE",
    "MISSED_RUN_CHOICES",
    "OVERLAP_CHOICES",
    "SCAN_WINDOW",
    "WRITABLE_COLUMNS",
    "Count",
    "Page",
    "Plan",
    "RunNowResult",
    "ScheduleEdit",
    "Written",
    "add_schedule",
    "count_schedules",
    "delete_schedule",
    "describe_schedule",
    "edit_from_columns",
    "edit_schedule",
    "execution_to_dict",
    "find_schedule",
    "get_schedule",
    "history",
    "list_schedules",
    "page_executions",
    "page_schedule_executions",
    "page_schedules",
    "parse_at",
    "pause_schedule",
    "plan_add",
    "plan_edit",
    "plan_pause",
    "plan_resume",
    "resume_schedule",
    "run_now",
    "schedule_to_dict",
]

#: The value of ``--missed-runs`` / ``--catchup-window`` that stores NULL: the global setting
#: (DATAFORGE_MISSED_RUNS, DATAFORGE_CATCHUP_WINDOW) applies.
DEFAULT_CHOICE = "default"
#: ``--missed-runs`` values.
MISSED_RUN_CHOICES = (*(p.value for p in MissedRunPolicy), DEFAULT_CHOICE)
#: ``--overlap`` values.
OVERLAP_CHOICES = tuple(p.value for p in OverlapPolicy)


def parse_catchup_window(text: str) -> int | None:
    """``--catchup-window`` to the column: whole seconds, or ``default`` (NULL, the global
    setting). The value is range-checked with the rest of the row."""
    value = text.strip().lower()
    if value == DEFAULT_CHOICE:
        return None
    try:
        return int(value)
    except ValueError:
        raise ScheduleError(
            "catchup_window_seconds", text, "expected whole seconds (e.g. 3600) or 'default' (the global setting)"
        ) from None

#: A refusal of one column: the service's own, or an unregistered task.
Fault = ScheduleError | UnknownTaskError


# --- parsing user input ---------------------------------------------------------------------------


def parse_at(text: str, timezone: str) -> datetime:
    """``--at`` to naive UTC (the table's convention). An offset in the text wins; a naive
    value is read in ``timezone`` (the row's time zone, UTC by default)."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ScheduleError("run_at", text, "not an ISO 8601 date-time; write e.g. 2030-01-31T09:30 "
                            "or 2030-01-31T09:30+01:00") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=schedules.validate_timezone(timezone))
    try:
        return schedules.to_naive_utc(value)
    except OverflowError:
        raise ScheduleError("run_at", text, "out of range: in UTC it falls outside years 1 .. 9999") from None


# --- planning writes (pure) -----------------------------------------------------------------------


@dataclass(frozen=True)
class ScheduleEdit:
    """The fields one add/edit sets. ``None`` means "not given" (keep, or the default on add).

    At most one of ``interval_seconds`` / ``cron_expression`` / ``run_at`` may be given; giving
    one switches the row to that type and clears the other two. ``run_at`` is the raw
    ``--at`` text, read in the row's (possibly new) time zone.
    """

    name: str | None = None
    task_name: str | None = None
    interval_seconds: int | None = None
    cron_expression: str | None = None
    run_at: str | None = None
    timezone: str | None = None
    #: ``--kwargs`` text; must be a strict JSON object (stored re-serialised, keys sorted).
    handler_kwargs: str | None = None
    description: str | None = None
    timeout_seconds: int | None = None
    clear_timeout: bool = False
    max_retries: int | None = None
    missed_run_policy: str | None = None
    #: ``--catchup-window`` text: seconds or ``default``.
    catchup_window: str | None = None
    overlap_policy: str | None = None
    jitter_seconds: int | None = None
    status: str | None = None

    def schedule_kind(self) -> TaskType | None:
        given: list[TaskType] = []
        if self.interval_seconds is not None:
            given.append(TaskType.INTERVAL)
        if self.cron_expression is not None:
            given.append(TaskType.CRON)
        if self.run_at is not None:
            given.append(TaskType.ONCE)
        if len(given) > 1:
            raise ScheduleError("task_type", given, "give only one of --interval, --cron, --at")
        return given[0] if given else None

    def touched(self) -> frozenset[str]:
        """The validation groups (see :data:`_GROUPS`) this edit changes."""
        given = {
            "name": self.name is not None,
            "task": self.task_name is not None,
            "timing": any(v is not None for v in (self.interval_seconds, self.cron_expression, self.run_at,
                                                  self.timezone)),
            # A new task must accept the stored kwargs: changing the task touches them.
            "kwargs": self.handler_kwargs is not None or self.task_name is not None,
            "timeout": self.timeout_seconds is not None or self.clear_timeout,
            "retries": self.max_retries is not None,
            "missed": self.missed_run_policy is not None,
            "overlap": self.overlap_policy is not None,
            "catchup": self.catchup_window is not None,
            # Jitter moves the next send like the timing does.
            "jitter": self.jitter_seconds is not None,
            "description": self.description is not None,
        }
        return frozenset(group for group, yes in given.items() if yes)


#: The validation groups of a row, in the order refusals are reported. Each is checked on its
#: own, so a fault in one never hides (or blocks) a change in another.
_GROUPS = ("name", "task", "timing", "kwargs", "timeout", "retries", "missed", "overlap", "catchup", "jitter",
           "description")
#: The columns whose change moves the due time (the triggers' realign list).
_TIMING = ("task_type", "interval_seconds", "cron_expression", "run_at", "timezone", "jitter_seconds")


@dataclass(frozen=True)
class Plan:
    """What a write changes (only the columns that change; empty: nothing to write), and the
    stored faults it leaves: columns it did not touch that still keep the row from running."""

    changes: dict[str, Any]
    problems: tuple[Fault, ...] = ()


def _check_name(row: Mapping[str, Any], schedule_id: int | None) -> None:
    name = row.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ScheduleError("name", name, "a schedule needs a non-empty name", schedule_id)
    check_text("name", name, schedule_id)


def _check_task(row: Mapping[str, Any], catalog: TaskCatalog, schedule_id: int | None) -> None:
    task_name = row.get("task_name")
    if not task_name:
        raise ScheduleError("task_name", task_name, "the schedule has no task; give --task NAME", schedule_id)
    check_text("task_name", task_name, schedule_id)
    catalog.require(task_name)


def _check_kwargs(row: Mapping[str, Any], catalog: TaskCatalog, schedule_id: int | None) -> None:
    kwargs = schedules.parse_kwargs(row.get("handler_kwargs"), schedule_id)
    task_name = row.get("task_name")
    if isinstance(task_name, str) and task_name in catalog.tasks:
        # (An unknown task is the task group's fault, not the kwargs'.)
        check_kwargs(task_name, kwargs, catalog.tasks[task_name])


def _check_description(row: Mapping[str, Any], schedule_id: int | None) -> None:
    if row.get("description") is not None:
        check_text("description", row["description"], schedule_id)


def _faults(row: Mapping[str, Any], catalog: TaskCatalog) -> tuple[dict[str, Fault], schedules.Schedule | None]:
    """Every group's refusal (if any), each checked on its own, and the schedule when valid."""
    schedule_id = row.get("id")
    found: dict[str, Fault] = {}
    schedule: schedules.Schedule | None = None

    def timing() -> None:
        nonlocal schedule
        schedule = schedules.validate_schedule(
            row.get("task_type"), interval_seconds=row.get("interval_seconds"),
            cron_expression=row.get("cron_expression"), run_at=row.get("run_at"), timezone=row.get("timezone"),
            schedule_id=schedule_id,
        )  # fmt: skip

    checks: dict[str, Callable[[], object]] = {
        "name": lambda: _check_name(row, schedule_id),
        "task": lambda: _check_task(row, catalog, schedule_id),
        "timing": timing,
        "kwargs": lambda: _check_kwargs(row, catalog, schedule_id),
        "timeout": lambda: schedules.validate_timeout(row.get("timeout_seconds"), schedule_id),
        "retries": lambda: schedules.validate_max_retries(row.get("max_retries"), schedule_id),
        "missed": lambda: schedules.validate_missed_run_policy(row.get("missed_run_policy"), schedule_id),
        "overlap": lambda: schedules.validate_overlap_policy(row.get("overlap_policy"), schedule_id),
        "catchup": lambda: schedules.validate_catchup_window(row.get("catchup_window_seconds"), schedule_id),
        "jitter": lambda: schedules.validate_jitter(row.get("jitter_seconds"), schedule_id),
        "description": lambda: _check_description(row, schedule_id),
    }
    for group in _GROUPS:
        try:
            checks[group]()
        except (ScheduleError, UnknownTaskError) as exc:
            found[group] = exc
    return found, schedule


def _apply(current: Mapping[str, Any], edit: ScheduleEdit, now: datetime) -> dict[str, Any]:
    """The row as it would be after ``edit``. Raises only on input that cannot even be read
    (an unreadable ``--at``, kwargs that are not strict JSON, two timings)."""
    row = dict(current)
    if edit.name is not None:
        row["name"] = edit.name.strip()
    if edit.task_name is not None:
        row["task_name"] = edit.task_name
    if edit.timezone is not None:
        row["timezone"] = edit.timezone
    kind = edit.schedule_kind()
    if kind is not None:
        row.update(task_type=kind, interval_seconds=None, cron_expression=None, run_at=None)
        if kind == TaskType.INTERVAL:
            row["interval_seconds"] = edit.interval_seconds
        elif kind == TaskType.CRON:
            row["cron_expression"] = edit.cron_expression
        else:
            assert edit.run_at is not None
            run_at = parse_at(edit.run_at, row.get("timezone") or "UTC")
            if run_at <= now:
                raise ScheduleError("run_at", edit.run_at, f"is in the past ({run_at.isoformat(sep=' ')} UTC); "
                                    "give a future time, or use `dataforge schedules run-now` to run it now")
            row["run_at"] = run_at
    if edit.description is not None:
        row["description"] = edit.description or None
    if edit.clear_timeout:
        row["timeout_seconds"] = None
    elif edit.timeout_seconds is not None:
        row["timeout_seconds"] = edit.timeout_seconds
    if edit.max_retries is not None:
        row["max_retries"] = edit.max_retries
    if edit.missed_run_policy is not None:
        row["missed_run_policy"] = None if edit.missed_run_policy == DEFAULT_CHOICE else edit.missed_run_policy
    if edit.catchup_window is not None:
        row["catchup_window_seconds"] = parse_catchup_window(edit.catchup_window)
    if edit.overlap_policy is not None:
        row["overlap_policy"] = edit.overlap_policy
    if edit.jitter_seconds is not None:
        row["jitter_seconds"] = edit.jitter_seconds
    if edit.status is not None:
        if edit.status not in tuple(ScheduleStatus):
            raise ScheduleError("status", edit.status, f"expected one of {', '.join(ScheduleStatus)}")
        row["status"] = edit.status
    if edit.handler_kwargs is not None:
        row["handler_kwargs"] = strict_json.dumps(schedules.parse_kwargs(edit.handler_kwargs))
    return row


def _validated(current: Mapping[str, Any], edit: ScheduleEdit, catalog: TaskCatalog, now: datetime,
               touched: frozenset[str]) -> tuple[dict[str, Any], schedules.Schedule | None, tuple[Fault, ...]]:
    """The edited row; raises the first fault in a group the edit touches. The faults of the
    untouched groups are returned: stored state that does not block this write."""
    row = _apply(current, edit, now)
    faults, schedule = _faults(row, catalog)
    for group in _GROUPS:
        if group in touched and group in faults:
            raise faults[group]
    return row, schedule, tuple(faults[g] for g in _GROUPS if g in faults)


def _healthy(row: dict[str, Any]) -> dict[str, Any]:
    row["invalid_reason"] = None
    row["invalid_at"] = None
    return row


def _due(schedule: schedules.Schedule, row: Mapping[str, Any], now: datetime) -> datetime | None:
    """Beat's own rule for a row without a due time (new, edited, resumed, revived): when its
    next run is sent (its due time plus the row's jitter offset; a new row has no id yet, so
    :func:`add_schedule` applies the offset once it has one)."""
    row_id, jitter = row.get("id"), int(row.get("jitter_seconds") or 0)
    offset = schedules.jitter_offset(row_id, jitter) if row_id is not None else timedelta(0)
    due = schedules.first_run_at(schedule, now, row.get("last_run_at"), offset)
    return None if due is None else due + offset


def plan_add(edit: ScheduleEdit, catalog: TaskCatalog, now: datetime) -> dict[str, Any]:
    """The column values of a new row, or a raised refusal. ``now`` is naive UTC."""
    if edit.name is None:
        raise ScheduleError("name", None, "a schedule needs a name")
    if edit.task_name is None:
        raise ScheduleError("task_name", None, "give --task NAME (see `dataforge tasks`)")
    if edit.schedule_kind() is None:
        raise ScheduleError("task_type", None, "give one of --interval SECONDS, --cron EXPR or --at DATETIME")
    defaults: dict[str, Any] = {
        "timezone": "UTC", "handler_kwargs": "{}", "status": ScheduleStatus.ACTIVE, "max_retries": 0,
        "timeout_seconds": None, "description": None, "missed_run_policy": None, "last_run_at": None,
        "overlap_policy": OverlapPolicy.SKIP.value, "catchup_window_seconds": None, "jitter_seconds": 0,
    }
    row, schedule, _ = _validated(defaults, edit, catalog, now, frozenset(_GROUPS))
    assert schedule is not None
    row = _healthy(row)
    row.pop("last_run_at")
    row["next_run_at"] = _due(schedule, row, now)
    return row


def plan_edit(current: Mapping[str, Any], edit: ScheduleEdit, catalog: TaskCatalog, now: datetime) -> Plan:
    """The columns an edit changes (only those), or a raised refusal.

    The due time is recomputed with beat's rule when the timing changed (or the row had none);
    otherwise it stays, so an edit of kwargs never makes a row fire early or skip a run. A
    ``done`` once row given a new time is active again.
    """
    row, schedule, problems = _validated(current, edit, catalog, now, edit.touched())
    timing_changed = any(row.get(k) != current.get(k) for k in _TIMING)
    if timing_changed and row.get("status") == ScheduleStatus.DONE:
        row["status"] = ScheduleStatus.ACTIVE
    if (schedule is not None and row.get("status") == ScheduleStatus.ACTIVE
            and (timing_changed or row.get("next_run_at") is None)):
        row["next_run_at"] = _due(schedule, row, now)
    changes = {k: v for k, v in row.items() if current.get(k) != v}
    if not problems and (current.get("invalid_reason") is not None or current.get("invalid_at") is not None):
        changes.update(invalid_reason=None, invalid_at=None)
    return Plan(changes, problems)


def _runnable(current: Mapping[str, Any], catalog: TaskCatalog, verb: str) -> schedules.Schedule:
    """The row's schedule, or ScheduleCannotRunError naming the first faulty column."""
    faults, schedule = _faults(current, catalog)
    for group in _GROUPS:
        if group in faults:
            raise ScheduleCannotRunError(int(current.get("id") or 0), str(current.get("name")), verb, faults[group])
    assert schedule is not None
    return schedule


def plan_pause(current: Mapping[str, Any]) -> Plan:
    """Beat sends nothing for a paused row; its due time is left for resume to realign. A
    paused row stays as it is (no change); a done or disabled row cannot be paused."""
    status = current.get("status")
    if status == ScheduleStatus.PAUSED:
        return Plan({})
    if status != ScheduleStatus.ACTIVE:
        raise ScheduleStateError(int(current.get("id") or 0), str(status), "only an active schedule can be paused")
    return Plan({"status": ScheduleStatus.PAUSED})


def plan_resume(current: Mapping[str, Any], catalog: TaskCatalog, now: datetime) -> Plan:
    """Resume a paused/disabled row: it must be able to run; due time realigned from ``now``.

    An active row stays as it is (no change). Runs missed while paused are not replayed (what
    django-celery-beat users expect when they re-enable a task): beat's
    :func:`~dataforge.scheduler.schedules.first_run_at` continues an interval's grid after
    ``now`` and takes a cron's next match after ``now``.
    """
    status = current.get("status")
    schedule_id = int(current.get("id") or 0)
    if status == ScheduleStatus.ACTIVE:
        return Plan({})
    if status == ScheduleStatus.DONE:
        raise ScheduleStateError(schedule_id, str(status), "this once schedule already ran; give it a new time "
                                 f"with `dataforge schedules edit {schedule_id} --at DATETIME`")
    schedule = _runnable(current, catalog, "resume")
    row = _healthy({**current, "status": ScheduleStatus.ACTIVE})
    row["next_run_at"] = _due(schedule, row, now)
    return Plan({k: v for k, v in row.items() if current.get(k) != v})


# --- reading ------------------------------------------------------------------------------------------

_COLUMNS = tuple(c.key for c in ScheduledTask.__table__.columns)


def _values(row: ScheduledTask) -> dict[str, Any]:
    unloaded = inspect(row).unloaded  # columns the database lacks (see _fetch)
    return {c: None if c in unloaded else getattr(row, c) for c in _COLUMNS}


def describe_schedule(row: Mapping[str, Any]) -> str:
    """One human phrase for the timing: ``every 3600s``, ``cron 0 3 * * * (Europe/Berlin)``..."""
    kind = row.get("task_type")
    if kind == TaskType.INTERVAL:
        return f"every {row.get('interval_seconds')}s"
    if kind == TaskType.CRON:
        return f"cron {row.get('cron_expression')} ({row.get('timezone') or 'UTC'})"
    if kind == TaskType.ONCE:
        at = row.get("run_at")
        return f"once at {at.isoformat(sep=' ') if isinstance(at, datetime) else at} UTC"
    return str(kind)


def schedule_to_dict(row: ScheduledTask | Mapping[str, Any]) -> dict[str, Any]:
    """Every column (datetimes as ISO text, naive UTC) plus ``schedule`` and ``kwargs`` decoded.

    ``kwargs`` is ``None`` when the stored text breaks the kwargs rule (``NaN``, not an object):
    the output stays strict JSON whatever raw SQL stored; ``handler_kwargs`` has the text.
    """
    values = _values(row) if isinstance(row, ScheduledTask) else dict(row)
    out: dict[str, Any] = {}
    for key, value in values.items():
        out[key] = value.isoformat() if isinstance(value, datetime) else value
    out["schedule"] = describe_schedule(values)
    try:
        out["kwargs"] = schedules.parse_kwargs(values.get("handler_kwargs") or "{}")
    except ScheduleError:
        out["kwargs"] = None
    return out


def execution_to_dict(row: TaskExecution) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for column in TaskExecution.__table__.columns:
        value = getattr(row, column.key)
        out[column.key] = value.isoformat() if isinstance(value, datetime) else value
    return out


_NAME_MAX = max_length("name") or 0


def _by_ref(ref: str | int) -> Select[ScheduledTask]:
    """The row with id or name ``ref``. A ref no row could have (too long, a NUL, undecodable
    bytes) finds nothing without reaching the database (whose driver would refuse it)."""
    if isinstance(ref, int):
        # An id from a URL or a resolved row: never fall back to a name, so a retried DELETE
        # of a gone id cannot hit the schedule that happens to be named "5".
        if not 0 < ref <= INT32_MAX:
            raise ScheduleNotFoundError(str(ref))
        return select(ScheduledTask).where(ScheduledTask.id == ref)
    text = str(ref).strip()
    try:
        text.encode("utf-8")
        readable = "\x00" not in text and len(text) <= _NAME_MAX
    except UnicodeEncodeError:
        readable = False
    if not readable:
        raise ScheduleNotFoundError(text[:_NAME_MAX] + ("..." if len(text) > _NAME_MAX else ""))
    if text.isascii() and text.isdigit() and int(text) <= INT32_MAX:
        # An all-digit name is allowed by the schema; the id wins, the name is the fallback.
        return select(ScheduledTask).where(
            (ScheduledTask.id == int(text)) | (ScheduledTask.name == text)
        ).order_by(ScheduledTask.id != int(text))
    return select(ScheduledTask).where(ScheduledTask.name == text)


def _fetch(db: Database, query: Select[ScheduledTask]) -> list[ScheduledTask]:
    """The rows of ``query``, detached. A database rolled back below 0008_schedule_policies
    (the rollback runs at 0002_expand) lacks the policy and counter columns: the read verbs
    still work there, with those columns left out (``None`` in :func:`schedule_to_dict`).
    The head pays nothing for it: the columns are looked up only after a statement failed."""
    try:
        with db.session() as session:
            rows = list(session.scalars(query))
            session.expunge_all()
            return rows
    except DBAPIError as exc:
        if not may_be_schema_error(exc):
            raise
        with db.engine.connect() as conn:
            missing = missing_policy_columns(conn)
        if not missing:
            raise
    with db.session() as session:
        rows = list(session.scalars(query.options(*(defer(getattr(ScheduledTask, name)) for name in missing))))
        session.expunge_all()
        return rows


def find_schedule(db: Database, ref: str | int) -> ScheduledTask:
    """The row with id or name ``ref``; raises :class:`ScheduleNotFoundError`."""
    rows = _fetch(db, _by_ref(ref).limit(1))
    if not rows:
        raise ScheduleNotFoundError(str(ref))
    return rows[0]


def get_schedule(db: Database, ref: str | int) -> dict[str, Any]:
    return schedule_to_dict(find_schedule(db, ref))


def list_schedules(db: Database, *, statuses: Iterable[str] = (), task_name: str | None = None,
                   invalid: bool = False, limit: int | None = None) -> list[dict[str, Any]]:
    """Rows ordered by id, filtered by status(es), exact task name and/or the invalid flag."""
    wanted = list(statuses)
    unknown = [s for s in wanted if s not in tuple(ScheduleStatus)]
    if unknown:
        raise ScheduleError("status", unknown[0], f"expected one of {', '.join(ScheduleStatus)}")
    if limit is not None and not 1 <= limit <= INT32_MAX:
        raise ScheduleError("limit", limit, f"must be between 1 and {INT32_MAX}")
    query = select(ScheduledTask).order_by(ScheduledTask.id).limit(limit)
    if wanted:
        query = query.where(ScheduledTask.status.in_(wanted))
    if task_name:
        check_text("task_name", task_name)
        query = query.where(ScheduledTask.task_name == task_name)
    if invalid:
        query = query.where(ScheduledTask.invalid_reason.is_not(None))
    return [schedule_to_dict(row) for row in _fetch(db, query)]


def history(db: Database, ref: str | int, *, limit: int = 20,
            state: str | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The schedule and its newest executions (one per attempt), newest first."""
    if state is not None and state not in tuple(ExecutionStatus):
        raise ScheduleError("state", state, f"expected one of {', '.join(ExecutionStatus)}")
    if not 1 <= limit <= INT32_MAX:
        raise ScheduleError("limit", limit, f"must be between 1 and {INT32_MAX}")
    schedule = find_schedule(db, ref)
    query = (
        select(TaskExecution)
        .where(TaskExecution.scheduled_task_id == schedule.id)
        # Plain DESC (no NULLS LAST): a backward scan of the (scheduled_task_id, started_at)
        # index, so a schedule with a million executions costs `limit` rows, not a sort.
        .order_by(TaskExecution.started_at.desc(), TaskExecution.id.desc())
        .limit(limit)
    )
    if state is not None:
        query = query.where(TaskExecution.status == state)
    with db.session() as session:
        runs = [execution_to_dict(r) for r in session.scalars(query)]
    return schedule_to_dict(schedule), runs


# --- writing ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Written:
    """The row after a write, and what the write did."""

    row: dict[str, Any]
    #: ``False``: the row already was as asked (a second pause, a no-op edit); nothing written.
    changed: bool = True
    #: Stored faults in columns the write did not touch: the row still cannot run until they
    #: are fixed (the CLI prints them as warnings with the option that fixes each).
    problems: tuple[Fault, ...] = ()


def _locked(db: Database, ref: str | int) -> Select[ScheduledTask]:
    query = _by_ref(ref).limit(1)
    # Beat advances next_run_at with a compare-and-set; holding the row while we read and
    # write it means our write is based on what we read, never on a stale copy.
    return query.with_for_update() if is_postgres(db.url) else query


def _name_taken(name: object) -> ScheduleError:
    return ScheduleError("name", name, "a schedule with this name exists; pick another name "
                         "or change that one with `dataforge schedules edit`")


def add_schedule(db: Database, catalog: TaskCatalog, edit: ScheduleEdit,
                 now: datetime | None = None) -> Written:
    """Validate and insert one schedule; returns the new row."""
    values = plan_add(edit, catalog, now or utcnow())
    try:
        with db.session() as session:
            if session.scalars(select(ScheduledTask.id).where(ScheduledTask.name == values["name"])).first():
                raise _name_taken(values["name"])
            row = ScheduledTask(**values)
            session.add(row)
            session.flush()
            if row.jitter_seconds and row.next_run_at is not None:
                # The jitter offset comes from the id, known only now.
                row.next_run_at += schedules.jitter_offset(row.id, row.jitter_seconds)
                session.flush()
            session.refresh(row)
            return Written(schedule_to_dict(row))
    except IntegrityError as exc:  # another writer took the name between our check and insert
        raise _name_taken(values["name"]) from exc


def _update(db: Database, ref: str | int, plan: Callable[[Mapping[str, Any]], Plan]) -> Written:
    with db.session() as session:
        row = session.scalars(_locked(db, ref)).first()
        if row is None:
            raise ScheduleNotFoundError(str(ref))
        planned = plan(_values(row))
        changes = planned.changes
        new_name = changes.get("name")
        if new_name is not None and session.scalars(
            select(ScheduledTask.id).where(ScheduledTask.name == new_name, ScheduledTask.id != row.id)
        ).first():
            raise ScheduleError("name", new_name, "another schedule has this name; pick another name")
        for key, value in changes.items():
            setattr(row, key, value)
        if changes:
            session.flush()
            # The change triggers may have adjusted the row (cleared a due time that equals
            # the old one, cleared the invalid flag): report what is stored, not what we sent.
            session.refresh(row)
        return Written(schedule_to_dict(row), changed=bool(changes), problems=planned.problems)


def edit_schedule(db: Database, catalog: TaskCatalog, ref: str | int, edit: ScheduleEdit,
                  now: datetime | None = None) -> Written:
    """Validate and apply an edit; returns the row as written (unchanged if it changes nothing)."""
    at = now or utcnow()
    return _update(db, ref, lambda current: plan_edit(current, edit, catalog, at))


def pause_schedule(db: Database, ref: str | int) -> Written:
    """Pause an active row; a paused one is left as it is (``changed=False``)."""
    return _update(db, ref, plan_pause)


def delete_schedule(db: Database, ref: str | int) -> dict[str, Any]:
    """Delete one schedule; returns the row as it was, so the caller can show what went.

    Its execution history stays (``task_executions.scheduled_task_id`` becomes NULL, the
    foreign key's ``ON DELETE SET NULL``). Beat sees the deletion at its next tick; a run
    already queued still runs (its job gets the id of a schedule that no longer exists).
    """
    with db.session() as session:
        row = session.scalars(_locked(db, ref)).first()
        if row is None:
            raise ScheduleNotFoundError(str(ref))
        gone = schedule_to_dict(row)
        session.delete(row)
        session.flush()
        return gone


def resume_schedule(db: Database, catalog: TaskCatalog, ref: str | int,
                    now: datetime | None = None) -> Written:
    """Resume a paused or disabled row (refused when it cannot run); an active row is left as
    it is (``changed=False``)."""
    at = now or utcnow()
    return _update(db, ref, lambda current: plan_resume(current, catalog, at))


@dataclass(frozen=True)
class RunNowResult:
    """What ``run-now`` sent: the Celery task id to follow in ``history`` or ``celery events``."""

    schedule_id: int
    task_name: str
    celery_task_id: str
    kwargs: dict[str, Any] = field(default_factory=dict)


def run_now(app: Celery, catalog: TaskCatalog, db: Database, ref: str | int) -> RunNowResult:
    """Send one run of the schedule now, as beat would; the row's timing is not touched.

    The message comes from beat's own builder (:func:`dataforge.scheduler.dispatch.build_message`:
    kwargs plus ``scheduled_task_id``, the max-retries and schedule-id headers, the time
    limits), with a fresh task id and no due time, so it is never mistaken for a scheduled run.
    Paused rows can be run (that is how one tries a schedule before resuming it); a row that
    cannot run (an unregistered task, which the worker would discard, bad kwargs...) is refused.
    """
    from dataforge.plugins import Target
    from dataforge.scheduler.dispatch import RowSnapshot, build_message

    row = find_schedule(db, ref)
    values = _values(row)
    _runnable(values, catalog, "run")
    assert row.task_name is not None
    definition = schedules.definition_of(values, row.id)
    message = build_message(RowSnapshot.from_mapping(values), definition, Target(row.task_name),
                            task_id=str(uuid.uuid4()))
    # Beat's publish: same options, same short retry policy (a dead broker fails in about a
    # second instead of hanging the command).
    result = app.send_task(message.task_name, kwargs=message.kwargs, retry=True,
                           retry_policy=PUBLISH_RETRY_POLICY, **message.options())
    return RunNowResult(schedule_id=row.id, task_name=row.task_name, celery_task_id=str(result.id),
                        kwargs=definition.kwargs)


# --- console and API: column-named edits, bounded pages ----------------------------------------------
#
# The HTTP API (dataforge.web) writes with the column names of ``scheduled_tasks`` and reads
# a million schedules and any number of executions page by page. Every read below touches a
# bounded number of index entries whatever the table size:
#
# * keyset paging (``id > cursor`` / ``id < cursor``), never an OFFSET over the table;
# * a filter with an index of its own is an index range: ``status`` (the (status, next_run_at)
#   index) and ``invalid`` (beat's flagged rows: active, no due time, a reason);
# * a filter without one (a schedule's task name; an execution's status, task, start time) is
#   applied inside a scan window of the next :data:`SCAN_WINDOW` keys. Such a page may hold
#   fewer rows than asked, none even, and still carry a cursor: the search goes on from there.

#: Most keys one filtered page request reads from an index (a few milliseconds of index scan).
SCAN_WINDOW = 50_000
#: Largest page a caller may ask for.
MAX_PAGE = 500
#: Exact counts stop here; above it PostgreSQL's planner estimate is shown instead.
COUNT_CAP = 10_000
#: A ``since`` search stops at the first scan window whose oldest row started this long before
#: ``since``. Ids grow with insertion, and a row is inserted when its run starts, so older ids
#: started earlier; the margin covers clock skew between worker hosts.
SINCE_MARGIN = timedelta(minutes=5)

#: The columns an API body may set; each maps onto :class:`ScheduleEdit`.
WRITABLE_COLUMNS = (
    "name", "task_name", "task_type", "interval_seconds", "cron_expression", "run_at", "timezone",
    "handler_kwargs", "description", "timeout_seconds", "max_retries", "missed_run_policy", "status",
    "catchup_window_seconds", "overlap_policy", "jitter_seconds",
)  # fmt: skip

_TIMING_FIELD = {TaskType.INTERVAL: "interval_seconds", TaskType.CRON: "cron_expression", TaskType.ONCE: "run_at"}


def edit_from_columns(values: Mapping[str, Any]) -> ScheduleEdit:
    """An API body (``scheduled_tasks`` column names, JSON values) as the :class:`ScheduleEdit`
    the CLI would build; refusals name the column.

    ``task_type`` may be left out: the timing column given decides it. Given, it must agree
    with that column (or name the one column to give). ``null`` clears what can be cleared
    (``description``, ``timeout_seconds``, ``missed_run_policy`` and ``catchup_window_seconds``
    back to the global default)
    and is refused elsewhere. ``handler_kwargs`` is a JSON value, checked by the same rule as
    ``--kwargs`` (a JSON object fitting the task's params).
    """
    unknown = sorted(set(values) - set(WRITABLE_COLUMNS))
    if unknown:
        raise ScheduleError(unknown[0], values[unknown[0]],
                            f"not a column this API writes (writable: {', '.join(WRITABLE_COLUMNS)})")
    for column in ("name", "task_name", "max_retries", "handler_kwargs", "timezone", "status", "task_type",
                   "overlap_policy", "jitter_seconds"):
        if column in values and values[column] is None:
            raise ScheduleError(column, None, "cannot be null; leave it out to keep it")
    timing = {c: values[c] for c in _TIMING_FIELD.values() if values.get(c) is not None}
    kind = values.get("task_type")
    if kind is not None:
        if kind not in tuple(TaskType):
            raise ScheduleError("task_type", kind, f"expected one of {', '.join(TaskType)}")
        wanted = _TIMING_FIELD[TaskType(kind)]
        others = sorted(set(timing) - {wanted})
        if others:
            raise ScheduleError("task_type", kind, f"a {kind} schedule takes {wanted}, not {others[0]}")
        if wanted not in timing:
            raise ScheduleError(wanted, None, f"required for task_type {kind!r}")
    elif len(timing) > 1:
        raise ScheduleError("task_type", sorted(timing), "give only one of interval_seconds, cron_expression, run_at")
    kwargs = values.get("handler_kwargs")
    policy = values.get("missed_run_policy")
    window = values.get("catchup_window_seconds")
    return ScheduleEdit(
        name=values.get("name"),
        task_name=values.get("task_name"),
        interval_seconds=timing.get("interval_seconds"),
        cron_expression=timing.get("cron_expression"),
        run_at=timing.get("run_at"),
        timezone=values.get("timezone"),
        handler_kwargs=None if kwargs is None else strict_json.dumps(kwargs),
        description="" if "description" in values and values["description"] is None else values.get("description"),
        timeout_seconds=values.get("timeout_seconds"),
        clear_timeout="timeout_seconds" in values and values["timeout_seconds"] is None,
        max_retries=values.get("max_retries"),
        # null: back to the global DATAFORGE_MISSED_RUNS, what the CLI spells "default".
        missed_run_policy="default" if "missed_run_policy" in values and policy is None else policy,
        catchup_window=(DEFAULT_CHOICE if "catchup_window_seconds" in values and window is None
                        else None if window is None else str(window)),
        overlap_policy=values.get("overlap_policy"),
        jitter_seconds=values.get("jitter_seconds"),
        status=values.get("status"),
    )


@dataclass(frozen=True)
class Page:
    """One page of a listing, and where the next one starts."""

    items: list[dict[str, Any]]
    #: Give it back as ``cursor`` for the next page; ``None``: nothing after this page.
    next_cursor: str | None
    #: The page ended at a scan window, not because it was full: it may hold fewer rows than
    #: asked (none, even) and the search goes on from ``next_cursor``.
    window_ended: bool = False


@dataclass(frozen=True)
class Count:
    """How many rows a table holds; ``exact`` is False above :data:`COUNT_CAP`."""

    value: int
    exact: bool


def _check_page(limit: int) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise ScheduleError("limit", limit, f"must be a whole number from 1 to {MAX_PAGE}")


def _check_choices(column: str, values: Iterable[str], enum: type[ScheduleStatus] | type[ExecutionStatus]) -> list[str]:
    wanted = list(values)
    for value in wanted:
        if value not in tuple(enum):
            raise ScheduleError(column, value, f"expected one of {', '.join(enum)}")
    return wanted


def _id_cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    text = cursor.strip()
    if not text.isdigit() or len(text) > 18:
        raise ScheduleError("cursor", cursor, "not a cursor of this listing; use the next_cursor a page returned")
    return int(text)


def _window_edge(session: Any, key: Any, where: list[Any], *, descending: bool) -> Any:
    """The key :data:`SCAN_WINDOW` entries on from the cursor (``None``: fewer remain)."""
    order = key.desc() if descending else key
    return session.execute(select(key).where(*where).order_by(order).offset(SCAN_WINDOW - 1).limit(1)).scalar()


def page_schedules(db: Database, *, statuses: Iterable[str] = (), task_name: str | None = None,
                   invalid: bool | None = None, cursor: str | None = None, limit: int = 50) -> Page:
    """Schedules by id from ``cursor``. ``invalid=True``: the rows beat refuses (flagged:
    active, no due time, ``invalid_reason`` set; beat never reads the others, and any write of
    a row clears its flag); ``False``: every other row."""
    _check_page(limit)
    wanted = _check_choices("status", statuses, ScheduleStatus)
    after = _id_cursor(cursor)
    t = ScheduledTask
    keyed = [t.id > after] if after is not None else []
    where = list(keyed)
    if wanted:
        where.append(t.status.in_(wanted))
    if invalid:
        where += [t.status == ScheduleStatus.ACTIVE, t.next_run_at.is_(None), t.invalid_reason.is_not(None)]
    windowed = task_name is not None or invalid is False
    if task_name is not None:
        where.append(t.task_name == task_name)
    if invalid is False:
        where.append(or_(t.status != ScheduleStatus.ACTIVE, t.next_run_at.is_not(None), t.invalid_reason.is_(None)))
    with db.session() as session:
        edge = _window_edge(session, t.id, keyed, descending=False) if windowed else None
        if edge is not None:
            where.append(t.id <= edge)
        rows = list(session.scalars(select(t).where(*where).order_by(t.id).limit(limit + 1)))
        items = [schedule_to_dict(row) for row in rows[:limit]]
    if len(rows) > limit:
        return Page(items, str(rows[limit - 1].id))
    if edge is not None:
        return Page(items, str(edge), window_ended=True)
    return Page(items, None)


def count_schedules(db: Database) -> Count:
    """Exact up to :data:`COUNT_CAP` (an index-only count that stops there), then PostgreSQL's
    planner estimate (``pg_class.reltuples``, as fresh as the last ANALYZE); on SQLite the cap."""
    with db.session() as session:
        capped = int(session.execute(
            select(func.count()).select_from(select(ScheduledTask.id).limit(COUNT_CAP + 1).subquery())
        ).scalar_one())
        if capped <= COUNT_CAP:
            return Count(capped, True)
        estimate = 0
        if is_postgres(db.url):
            estimate = int(session.execute(
                sql_text("SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass('scheduled_tasks')")
            ).scalar() or 0)
    return Count(max(estimate, COUNT_CAP + 1), False)


def _execution_items(session: Any, where: list[Any], order: list[Any], limit: int) -> list[tuple[TaskExecution, Any]]:
    query = (
        select(TaskExecution, ScheduledTask.name)
        .outerjoin(ScheduledTask, ScheduledTask.id == TaskExecution.scheduled_task_id)
        .where(*where)
        .order_by(*order)
        .limit(limit + 1)
    )
    return [(row, name) for row, name in session.execute(query)]


def _execution_dict(row: TaskExecution, schedule_name: Any) -> dict[str, Any]:
    return {**execution_to_dict(row), "schedule_name": schedule_name}


def page_executions(db: Database, *, statuses: Iterable[str] = (), task_name: str | None = None,
                    since: datetime | None = None, cursor: str | None = None, limit: int = 50) -> Page:
    """Executions newest first (by id) from ``cursor``, with their schedule's name.

    ``since`` is naive UTC. No filter on this table has an index of its own (each index costs
    every recorded run a write), so filtered pages search scan windows.
    """
    _check_page(limit)
    wanted = _check_choices("status", statuses, ExecutionStatus)
    before = _id_cursor(cursor)
    te = TaskExecution
    keyed = [te.id < before] if before is not None else []
    where = list(keyed)
    if wanted:
        where.append(te.status.in_(wanted))
    if task_name is not None:
        where.append(te.task_name == task_name)
    if since is not None:
        where.append(te.started_at >= since)
    windowed = len(where) > len(keyed)
    with db.session() as session:
        edge = _window_edge(session, te.id, keyed, descending=True) if windowed else None
        if edge is not None:
            where.append(te.id >= edge)
        rows = _execution_items(session, where, [te.id.desc()], limit)
        items = [_execution_dict(row, name) for row, name in rows[:limit]]
        if len(rows) > limit:
            return Page(items, str(rows[limit - 1][0].id))
        if edge is None:
            return Page(items, None)
        if since is not None:
            oldest = session.execute(select(te.started_at).where(te.id == edge)).scalar()
            if oldest is not None and oldest < since - SINCE_MARGIN:
                return Page(items, None)
    return Page(items, str(edge), window_ended=True)


def _time_cursor(cursor: str | None) -> tuple[datetime, int] | None:
    if cursor is None:
        return None
    at, _, row_id = cursor.rpartition(",")
    try:
        return datetime.fromisoformat(at), int(row_id)
    except ValueError:
        raise ScheduleError("cursor", cursor, "not a cursor of this listing; use the next_cursor a page returned") \
            from None


def page_schedule_executions(db: Database, schedule_id: int, *, statuses: Iterable[str] = (),
                             cursor: str | None = None, limit: int = 20) -> tuple[dict[str, Any], Page]:
    """One schedule and its executions newest first (by start), from ``cursor``.

    Walks the (scheduled_task_id, started_at) index backwards, as :func:`history` does; a
    status filter searches scan windows of it. Rows without a start time (none are recorded
    so since the recorder writes the start with the row) are not listed.
    """
    _check_page(limit)
    wanted = _check_choices("status", statuses, ExecutionStatus)
    position = _time_cursor(cursor)
    schedule = find_schedule(db, schedule_id)
    te = TaskExecution
    keyed: list[Any] = [te.scheduled_task_id == schedule.id, te.started_at.is_not(None)]
    if position is not None:
        at, row_id = position
        keyed += [te.started_at <= at, (te.started_at < at) | (te.id < row_id)]
    where = list(keyed)
    if wanted:
        where.append(te.status.in_(wanted))
    with db.session() as session:
        edge = _window_edge(session, te.started_at, keyed, descending=True) if wanted else None
        if edge is not None:
            where.append(te.started_at >= edge)
        rows = _execution_items(session, where, [te.started_at.desc(), te.id.desc()], limit)
    items = [_execution_dict(row, name) for row, name in rows[:limit]]
    if len(rows) > limit:
        last = rows[limit - 1][0]
        assert last.started_at is not None
        return schedule_to_dict(schedule), Page(items, f"{last.started_at.isoformat()},{last.id}")
    if edge is not None:
        # Everything at or after the edge time was searched: go on strictly before it.
        return schedule_to_dict(schedule), Page(items, f"{edge.isoformat()},0", window_ended=True)
    return schedule_to_dict(schedule), Page(items, None)
