"""What ``dataforge schedules`` does, without click: validate, plan and apply schedule writes.

The CLI is a thin shell over this module so the rules are testable without a terminal and
reusable by anything else that edits schedules (an API, a fixture). The rules:

* Every write is validated in full *before* anything is written: the task must be registered
  with the Celery app, the schedule (interval / cron + time zone / once) must evaluate with
  the scheduler's own functions (:mod:`dataforge.scheduler.schedules`; there is no second cron
  parser here), and the kwargs must be a JSON object that matches the task's declared params.
  A refused write raises and leaves the table as it was.
* ``next_run_at`` is computed here with the scheduler's math whenever the timing of a row
  changes (add, an edit of the schedule or time zone, resume), so beat sees a correct due time
  on its next tick. Edits that do not touch timing keep the due time.
* A row this module writes is valid by construction, so the scheduler's "invalid" flag is
  cleared on every successful add/edit/resume.
* ``run-now`` sends through the scheduler's own message builder, so a manual run is the same
  message a scheduled one would be.
* The policies (missed runs, catch-up window, overlap, jitter) are columns of the row like the
  timing: validated by the scheduler's rules, a jitter change re-plans the next run.

Pure planning (``plan_*``) is kept apart from the I/O functions that apply it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, select

from dataforge.catalog.params import check_kwargs
from dataforge.catalog.registry import TaskCatalog
from dataforge.db import Database, is_postgres
from dataforge.errors import ScheduleError
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
from dataforge.scheduler.errors import ScheduleNotFoundError, ScheduleStateError

if TYPE_CHECKING:
    from celery import Celery

__all__ = [
    "DEFAULT_CHOICE",
    "MISSED_RUN_CHOICES",
    "OVERLAP_CHOICES",
    "RunNowResult",
    "ScheduleEdit",
    "add_schedule",
    "delete_schedule",
    "describe_schedule",
    "edit_schedule",
    "execution_to_dict",
    "find_schedule",
    "get_schedule",
    "history",
    "list_schedules",
    "parse_at",
    "pause_schedule",
    "plan_add",
    "plan_edit",
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
    return schedules.to_naive_utc(value)


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
    #: ``--kwargs`` text; must be a JSON object (stored re-serialised, keys sorted).
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


#: The columns whose change moves the due time (the triggers' realign list).
_TIMING = ("task_type", "interval_seconds", "cron_expression", "run_at", "timezone", "jitter_seconds")


def _apply(current: Mapping[str, Any], edit: ScheduleEdit, catalog: TaskCatalog,
           now: datetime) -> tuple[dict[str, Any], schedules.Schedule]:
    """The row as it would be after ``edit``, validated in full with the scheduler's own
    rules (raises on the first fault), and the schedule it describes."""
    row = dict(current)
    if edit.name is not None:
        if not edit.name.strip():
            raise ScheduleError("name", edit.name, "a schedule needs a non-empty name")
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
        row["handler_kwargs"] = json.dumps(schedules.parse_kwargs(edit.handler_kwargs), sort_keys=True)

    task_name = row.get("task_name")
    if not task_name:
        raise ScheduleError("task_name", task_name, "the schedule has no task; give --task NAME")
    params = catalog.require(task_name)
    definition = schedules.definition_of(row)
    check_kwargs(task_name, definition.kwargs, params)
    return row, definition.schedule


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
    row, schedule = _apply(defaults, edit, catalog, now)
    row = _healthy(row)
    row.pop("last_run_at")
    row["next_run_at"] = _due(schedule, row, now)
    return row


def plan_edit(current: Mapping[str, Any], edit: ScheduleEdit, catalog: TaskCatalog,
              now: datetime) -> dict[str, Any]:
    """The columns an edit changes (only those), or a raised refusal.

    The due time is recomputed with beat's rule when the timing changed (or the row had none);
    otherwise it stays, so an edit of kwargs never makes a row fire early or skip a run. A
    ``done`` once row given a new time is active again.
    """
    row, schedule = _apply(current, edit, catalog, now)
    timing_changed = any(row.get(k) != current.get(k) for k in _TIMING)
    if timing_changed and row.get("status") == ScheduleStatus.DONE:
        row["status"] = ScheduleStatus.ACTIVE
    if row.get("status") == ScheduleStatus.ACTIVE and (timing_changed or row.get("next_run_at") is None):
        row["next_run_at"] = _due(schedule, row, now)
    changes = {k: v for k, v in row.items() if current.get(k) != v}
    if current.get("invalid_reason") is not None or current.get("invalid_at") is not None:
        changes.update(invalid_reason=None, invalid_at=None)
    return changes


def plan_resume(current: Mapping[str, Any], catalog: TaskCatalog, now: datetime) -> dict[str, Any]:
    """Resume a paused/disabled row: validated like an edit, due time realigned from ``now``.

    Runs missed while paused are not replayed (what django-celery-beat users expect when they
    re-enable a task): beat's :func:`~dataforge.scheduler.schedules.first_run_at` continues an
    interval's grid after ``now`` and takes a cron's next match after ``now``.
    """
    status = current.get("status")
    schedule_id = int(current.get("id") or 0)
    if status == ScheduleStatus.ACTIVE:
        raise ScheduleStateError(schedule_id, status, "it is already active; nothing to resume")
    if status == ScheduleStatus.DONE:
        raise ScheduleStateError(schedule_id, status, "this once schedule already ran; give it a new time "
                                 f"with `dataforge schedules edit {schedule_id} --at DATETIME`")
    row, schedule = _apply(current, ScheduleEdit(status=ScheduleStatus.ACTIVE), catalog, now)
    row = _healthy(row)
    row["next_run_at"] = _due(schedule, row, now)
    return {k: v for k, v in row.items() if current.get(k) != v}


# --- reading ------------------------------------------------------------------------------------------

_COLUMNS = tuple(c.key for c in ScheduledTask.__table__.columns)


def _values(row: ScheduledTask) -> dict[str, Any]:
    return {c: getattr(row, c) for c in _COLUMNS}


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
    """Every column (datetimes as ISO text, naive UTC) plus ``schedule`` and ``kwargs`` decoded."""
    values = _values(row) if isinstance(row, ScheduledTask) else dict(row)
    out: dict[str, Any] = {}
    for key, value in values.items():
        out[key] = value.isoformat() if isinstance(value, datetime) else value
    out["schedule"] = describe_schedule(values)
    try:
        out["kwargs"] = json.loads(values.get("handler_kwargs") or "{}")
    except json.JSONDecodeError:
        out["kwargs"] = None
    return out


def execution_to_dict(row: TaskExecution) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for column in TaskExecution.__table__.columns:
        value = getattr(row, column.key)
        out[column.key] = value.isoformat() if isinstance(value, datetime) else value
    return out


def _by_ref(ref: str | int) -> Select[ScheduledTask]:
    text = str(ref).strip()
    if text.isdigit():
        # An all-digit name is allowed by the schema; the id wins, the name is the fallback.
        return select(ScheduledTask).where(
            (ScheduledTask.id == int(text)) | (ScheduledTask.name == text)
        ).order_by(ScheduledTask.id != int(text))
    return select(ScheduledTask).where(ScheduledTask.name == text)


def find_schedule(db: Database, ref: str | int) -> ScheduledTask:
    """The row with id or name ``ref``; raises :class:`ScheduleNotFoundError`."""
    with db.session() as session:
        row = session.scalars(_by_ref(ref).limit(1)).first()
        if row is None:
            raise ScheduleNotFoundError(str(ref))
        session.expunge(row)
        return row


def get_schedule(db: Database, ref: str | int) -> dict[str, Any]:
    return schedule_to_dict(find_schedule(db, ref))


def list_schedules(db: Database, *, statuses: Iterable[str] = (), task_name: str | None = None,
                   invalid: bool = False, limit: int | None = None) -> list[dict[str, Any]]:
    """Rows ordered by id, filtered by status(es), exact task name and/or the invalid flag."""
    query = select(ScheduledTask).order_by(ScheduledTask.id).limit(limit)
    wanted = list(statuses)
    if wanted:
        query = query.where(ScheduledTask.status.in_(wanted))
    if task_name:
        query = query.where(ScheduledTask.task_name == task_name)
    if invalid:
        query = query.where(ScheduledTask.invalid_reason.is_not(None))
    with db.session() as session:
        return [schedule_to_dict(row) for row in session.scalars(query)]


def history(db: Database, ref: str | int, *, limit: int = 20,
            state: str | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The schedule and its newest executions (one per attempt), newest first."""
    if state is not None and state not in tuple(ExecutionStatus):
        raise ScheduleError("state", state, f"expected one of {', '.join(ExecutionStatus)}")
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


def _locked(db: Database, ref: str | int) -> Select[ScheduledTask]:
    query = _by_ref(ref).limit(1)
    # Beat advances next_run_at with a compare-and-set; holding the row while we read and
    # write it means our write is based on what we read, never on a stale copy.
    return query.with_for_update() if is_postgres(db.url) else query


def add_schedule(db: Database, catalog: TaskCatalog, edit: ScheduleEdit,
                 now: datetime | None = None) -> dict[str, Any]:
    """Validate and insert one schedule; returns the new row."""
    values = plan_add(edit, catalog, now or utcnow())
    with db.session() as session:
        if session.scalars(select(ScheduledTask.id).where(ScheduledTask.name == values["name"])).first():
            raise ScheduleError("name", values["name"], "a schedule with this name exists; pick another name "
                                "or change it with `dataforge schedules edit`")
        row = ScheduledTask(**values)
        session.add(row)
        session.flush()
        if row.jitter_seconds and row.next_run_at is not None:
            # The jitter offset comes from the id, known only now.
            row.next_run_at += schedules.jitter_offset(row.id, row.jitter_seconds)
            session.flush()
        return schedule_to_dict(row)


def _update(db: Database, ref: str | int, plan: Any) -> dict[str, Any]:
    with db.session() as session:
        row = session.scalars(_locked(db, ref)).first()
        if row is None:
            raise ScheduleNotFoundError(str(ref))
        changes: dict[str, Any] = plan(_values(row))
        new_name = changes.get("name")
        if new_name is not None and session.scalars(
            select(ScheduledTask.id).where(ScheduledTask.name == new_name, ScheduledTask.id != row.id)
        ).first():
            raise ScheduleError("name", new_name, "another schedule has this name; pick another name")
        for key, value in changes.items():
            setattr(row, key, value)
        session.flush()
        return schedule_to_dict(row)


def edit_schedule(db: Database, catalog: TaskCatalog, ref: str | int, edit: ScheduleEdit,
                  now: datetime | None = None) -> dict[str, Any]:
    """Validate and apply an edit; returns the row as written."""
    at = now or utcnow()
    return _update(db, ref, lambda current: plan_edit(current, edit, catalog, at))


def pause_schedule(db: Database, ref: str | int) -> dict[str, Any]:
    """Beat sends nothing for a paused row; its due time is left for resume to realign."""

    def plan(current: Mapping[str, Any]) -> dict[str, Any]:
        if current["status"] == ScheduleStatus.PAUSED:
            return {}
        if current["status"] != ScheduleStatus.ACTIVE:
            raise ScheduleStateError(current["id"], current["status"], "only an active schedule can be paused")
        return {"status": ScheduleStatus.PAUSED}

    return _update(db, ref, plan)


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
                    now: datetime | None = None) -> dict[str, Any]:
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
    Paused rows can be run (that is how one tries a schedule before resuming it); a row whose
    task is not registered is refused, since the worker would discard the message.
    """
    from dataforge.plugins import Target
    from dataforge.scheduler.dispatch import RowSnapshot, build_message

    row = find_schedule(db, ref)
    values = _values(row)
    if not row.task_name:
        raise ScheduleError("task_name", None, "the schedule has no task; give it one with "
                            f"`dataforge schedules edit {row.id} --task NAME`", schedule_id=row.id)
    params = catalog.require(row.task_name)
    definition = schedules.definition_of(values, row.id)
    check_kwargs(row.task_name, definition.kwargs, params)
    message = build_message(RowSnapshot.from_mapping(values), definition, Target(row.task_name),
                            task_id=str(uuid.uuid4()))
    # Beat's publish: same options, same short retry policy (a dead broker fails in about a
    # second instead of hanging the command).
    result = app.send_task(message.task_name, kwargs=message.kwargs, retry=True,
                           retry_policy=PUBLISH_RETRY_POLICY, **message.options())
    return RunNowResult(schedule_id=row.id, task_name=row.task_name, celery_task_id=str(result.id),
                        kwargs=definition.kwargs)
