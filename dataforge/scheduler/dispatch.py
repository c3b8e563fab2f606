"""What beat does with one row: pure decisions, no I/O.

Beat reads rows (:mod:`dataforge.scheduler.store`), asks this module what to do with each,
then writes and publishes. Keeping the decisions here makes every rule (which name is sent,
which rows are bad and why, the message's id, limits, expiry and headers, missed runs, jitter)
a plain function of the row, the clock and a :class:`DispatchContext`, tested without a
database. The catch-up rules themselves are :mod:`dataforge.scheduler.catchup`.

A row's ``next_run_at`` is when beat *sends* its next run: the due time plus the row's jitter
offset (:func:`~dataforge.scheduler.schedules.jitter_offset`, fixed per schedule), so the due
query stays an index range scan; the due time in the message headers and in the task id is
``next_run_at`` minus that offset.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, Final

from dataforge.errors import ScheduleError
from dataforge.plugins import Target
from dataforge.protocol import (
    DUE_AT_HEADER,
    HARD_LIMIT_GRACE_SECONDS,
    MAX_RETRIES_HEADER,
    OVERLAP_HEADER,
    SCHEDULE_ID_HEADER,
    SCHEDULE_ID_KWARG,
    MissedRunPolicy,
    OverlapPolicy,
)
from dataforge.scheduler.catchup import MISSED_RUN_GRACE, plan_run
from dataforge.scheduler.expiry import run_expiry
from dataforge.scheduler.schedules import (
    DEFINITION_COLUMNS,
    Definition,
    definition_of,
    first_run_at,
    jitter_offset,
    parse_db_datetime,
    validate_definition,
)

__all__ = [
    "DispatchContext",
    "MarkInvalid",
    "Message",
    "Reschedule",
    "RowResolver",
    "RowSnapshot",
    "Send",
    "build_message",
    "plan_due_row",
    "plan_unscheduled_row",
    "resolve_target",
    "row_definition",
    "run_task_id",
]

#: Namespace of the deterministic task ids (uuid5): a run re-sent after a crash between
#: publish and commit carries the same id as the first send.
_RUN_ID_NAMESPACE: Final = uuid.UUID("5a0f7f0e-3d5e-4c1b-9a57-1f0e4b7d2c11")
_RUN_ID_PREFIX: Final = _RUN_ID_NAMESPACE.bytes


@dataclass(frozen=True, slots=True)
class RowSnapshot:
    """One ``scheduled_tasks`` row as beat read it.

    Timestamps are kept as the driver returned them (``datetime``; text on SQLite) so the
    compare-and-set compares exactly what was read, whatever format a raw-SQL edit wrote.
    """

    id: int
    name: str
    task_type: Any
    task_name: str | None
    handler_path: str | None
    interval_seconds: Any
    cron_expression: Any
    run_at: Any
    timezone: Any
    handler_kwargs: Any
    status: str
    timeout_seconds: Any
    max_retries: Any
    missed_run_policy: Any
    last_run_at: Any
    next_run_at: Any
    run_count: int
    invalid_reason: str | None
    # Columns of 0008_schedule_policies (a database rolled back below it reads the defaults).
    overlap_policy: Any = None
    catchup_window_seconds: Any = None
    jitter_seconds: Any = None
    missed_count: int = 0

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> RowSnapshot:
        """From column values; a column the mapping lacks is its default (``None`` if it has none)."""
        return cls(**{
            f.name: values.get(f.name, None if f.default is MISSING else f.default) for f in fields(cls)
        })


#: A plug-in's answer for a row the core cannot send (see :meth:`dataforge.plugins.Plugin.resolve_row`).
RowResolver = Callable[["RowSnapshot", "DispatchContext"], Target | None]


@dataclass(frozen=True)
class DispatchContext:
    """What beat knows besides the row: the app's task names, the plug-ins' resolvers, the
    global missed-run policy and catch-up window (for rows that do not set their own)."""

    is_registered: Callable[[str], bool]
    resolvers: tuple[RowResolver, ...] = ()
    missed_runs: MissedRunPolicy = MissedRunPolicy.ONCE
    catchup_window: timedelta | None = None
    grace: timedelta = MISSED_RUN_GRACE


@dataclass(frozen=True, slots=True)
class Message:
    """One Celery message: ``app.send_task(task_name, kwargs=..., **options())``."""

    task_name: str
    kwargs: dict[str, Any]
    task_id: str
    soft_time_limit: int | None = None
    time_limit: int | None = None
    #: Aware UTC: the message is discarded if it has not started by then (the next run's time).
    expires: datetime | None = None
    headers: dict[str, Any] = field(default_factory=dict)

    def options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"task_id": self.task_id, "headers": dict(self.headers)}
        if self.soft_time_limit is not None:
            opts["soft_time_limit"] = self.soft_time_limit
            opts["time_limit"] = self.time_limit
        if self.expires is not None:
            opts["expires"] = self.expires
        return opts


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``messages`` (one per run, oldest first) and move the row to ``next_run_at``
    (``None``: a once row, done), counting ``missed`` runs not sent."""

    messages: tuple[Message, ...]
    next_run_at: datetime | None
    missed: int = 0
    #: The runs are a catch-up (the row had missed runs), for the log.
    catch_up: bool = False


@dataclass(frozen=True, slots=True)
class Reschedule:
    """Move the row to ``next_run_at`` without sending (``None``: mark it done), counting
    ``missed`` runs not sent."""

    next_run_at: datetime | None
    why: str
    missed: int = 0


@dataclass(frozen=True, slots=True)
class MarkInvalid:
    """The row cannot run: record ``reason`` on it and leave every other row alone."""

    reason: str


Decision = Send | Reschedule | MarkInvalid


def _uncomputable(exc: Exception) -> str:
    return f"next_run_at: the next run cannot be computed ({exc!r}); check the schedule columns"


def _reason(exc: ScheduleError) -> str:
    return f"{exc.field}={exc.value!r}: {exc.reason}"


@lru_cache(maxsize=4096)
def _definition(values: tuple[Any, ...]) -> Definition:
    return validate_definition(**dict(zip(DEFINITION_COLUMNS, values, strict=True)))


def row_definition(row: RowSnapshot) -> Definition:
    """Every user-written column of ``row``, validated (ScheduleError naming the column).

    Memoized on the column values: the rows of a top-of-the-hour burst mostly share their
    definition, and validating it (the kwargs JSON, the cron fields) once instead of per row is
    a fifth of the dispatch cost. A refusal is re-raised with the row's id.
    """
    try:
        return _definition(tuple(getattr(row, column) for column in DEFINITION_COLUMNS))
    except ScheduleError:
        return definition_of(row, row.id)


def resolve_target(row: RowSnapshot, ctx: DispatchContext) -> Target:
    """What to send for ``row``: its registered ``task_name``, else what a plug-in resolves
    (in installation order); ScheduleError naming the column when nothing can run it."""
    name = (row.task_name or "").strip()
    if name and ctx.is_registered(name):
        return Target(name)
    for resolve in ctx.resolvers:
        target = resolve(row, ctx)
        if target is not None:
            return target
    if name:
        raise ScheduleError(
            "task_name", row.task_name,
            "not registered with the Celery app; deploy the task or fix task_name (`dataforge tasks` lists them)",
        )
    raise ScheduleError("task_name", None, "missing; set task_name to a registered task (`dataforge tasks`)")


def run_task_id(schedule_id: int, run_number: int, due: datetime) -> str:
    """The Celery task id of run ``run_number`` of a schedule, due at ``due``.

    Deterministic, so a run re-sent after a crash between publish and commit is recognisable
    as the same run (same id) by the result backend, the execution records and the job.
    """
    # uuid.uuid5, spelled out: the same value, without building a UUID object per run (a fifth
    # of the planning cost of a burst).
    digest = bytearray(hashlib.sha1(_RUN_ID_PREFIX + f"{schedule_id}:{run_number}:{due.isoformat()}".encode()).digest())
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest[:16].hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def build_message(
    row: RowSnapshot,
    definition: Definition,
    target: Target,
    *,
    task_id: str,
    due: datetime | None = None,
    expires: datetime | None = None,
) -> Message:
    """The message for one run of ``row`` (scheduled, or ``run-now`` with ``due=None``)."""
    kwargs: dict[str, Any] = dict(definition.kwargs)
    kwargs.update(target.extra_kwargs)
    # The row's own id wins over a scheduled_task_id copied into handler_kwargs from an old message.
    kwargs[SCHEDULE_ID_KWARG] = row.id
    headers: dict[str, Any] = {MAX_RETRIES_HEADER: definition.max_retries, SCHEDULE_ID_HEADER: row.id}
    if due is not None:
        headers[DUE_AT_HEADER] = due.isoformat()
    if definition.overlap_policy != OverlapPolicy.SKIP:
        headers[OVERLAP_HEADER] = definition.overlap_policy.value
    timeout = definition.timeout_seconds
    return Message(
        task_name=target.task_name,
        kwargs=kwargs,
        task_id=task_id,
        soft_time_limit=timeout,
        time_limit=None if timeout is None else timeout + HARD_LIMIT_GRACE_SECONDS,
        expires=None if expires is None else expires.replace(tzinfo=UTC),
        headers=headers,
    )


def _window_text(window: timedelta | None) -> str:
    return "unbounded" if window is None else f"{int(window.total_seconds())}s"


def plan_due_row(row: RowSnapshot, now: datetime, ctx: DispatchContext) -> Decision:
    """A row whose ``next_run_at <= now``: send its run(s), skip missed runs, or flag it."""
    try:
        definition = row_definition(row)
        target = resolve_target(row, ctx)
    except ScheduleError as exc:
        return MarkInvalid(_reason(exc))
    try:
        send_at = parse_db_datetime(row.next_run_at)
    except ValueError:
        return MarkInvalid(f"next_run_at={row.next_run_at!r}: not a timestamp; set it to NULL to let beat recompute it")
    assert send_at is not None
    offset = jitter_offset(row.id, definition.jitter_seconds)
    policy = definition.missed_run_policy or ctx.missed_runs
    window = definition.catchup_window if definition.catchup_window is not None else ctx.catchup_window
    try:
        plan = plan_run(definition.schedule, send_at - offset, now - offset, policy, window=window, grace=ctx.grace)
    except Exception as exc:  # one row's schedule math must never stop beat (croniter limits...)
        return MarkInvalid(_uncomputable(exc))
    next_send = None if plan.next_run_at is None else plan.next_run_at + offset
    if not plan.dues:
        return Reschedule(
            next_send,
            f"{plan.missed} missed run(s) from {(send_at - offset).isoformat(sep=' ')} not sent "
            f"(missed_run_policy={policy}, catch-up window {_window_text(window)})",
            missed=plan.missed,
        )
    messages = tuple(
        build_message(
            row, definition, target,
            task_id=run_task_id(row.id, row.run_count + 1 + k, due),
            due=due,
            # Lateness is measured from when beat meant to send (the row's due time), not from
            # the catch-up run's own due time, which is recent by construction.
            expires=run_expiry(min(due + offset, send_at), now, next_send, policy, window),
        )
        for k, due in enumerate(plan.dues)
    )
    return Send(messages=messages, next_run_at=next_send, missed=plan.missed, catch_up=plan.catch_up)


def plan_unscheduled_row(row: RowSnapshot, now: datetime, ctx: DispatchContext) -> Reschedule | MarkInvalid:
    """An active row without a due time (new, resumed, edited, flagged): its first due time."""
    try:
        definition = row_definition(row)
        resolve_target(row, ctx)
        last = parse_db_datetime(row.last_run_at)
    except ScheduleError as exc:
        return MarkInvalid(_reason(exc))
    except ValueError:
        return MarkInvalid(f"last_run_at={row.last_run_at!r}: not a timestamp")
    offset = jitter_offset(row.id, definition.jitter_seconds)
    try:
        nxt = first_run_at(definition.schedule, now, last, offset)
    except Exception as exc:  # as in plan_due_row
        return MarkInvalid(_uncomputable(exc))
    if nxt is None:
        return Reschedule(None, "once row already ran")
    return Reschedule(nxt + offset, "scheduled")
