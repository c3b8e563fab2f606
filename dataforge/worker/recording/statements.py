"""The recorder's SQL, one named builder per statement, each built once per process.

Building SQLAlchemy constructs per event costs more Python time than the round trip itself
(the worker-overhead benchmark), so every builder is cached: the statements take bind
parameters (``b_*``) and never embed a value. Pure: nothing here touches a connection.
"""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import Boolean, Integer, Table, bindparam, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from dataforge.models import ScheduledTask, TaskExecution
from dataforge.protocol import ExecutionStatus

__all__ = ["attempt_status", "bump_counters", "close_attempt", "close_attempt_and_count", "start_attempt"]

EXECUTIONS: Table = TaskExecution.__table__  # type: ignore[assignment]
SCHEDULES: Table = ScheduledTask.__table__  # type: ignore[assignment]


def _bp(name: str, column: str) -> Any:
    return bindparam(name, type_=EXECUTIONS.c[column].type)


@functools.cache
def attempt_status() -> Any:
    """The status of the ``(b_tid, b_attempt)`` row (no row: nothing)."""
    te = EXECUTIONS
    return select(te.c.status).where(
        te.c.celery_task_id == _bp("b_tid", "celery_task_id"), te.c.attempt == _bp("b_attempt", "attempt")
    )


@functools.cache
def start_attempt(dialect: str) -> Any:
    """Upsert the attempt's ``running`` row.

    Only a redelivery of an attempt that did not finish (``running`` after a worker crash with
    acks_late, ``lost`` after a killed child) takes its row over; a finished attempt keeps its
    row and RETURNING gives nothing. ``b_reset`` (eager mode) resets any row.

    SQLite: ``RETURNING id`` (the caller reads :func:`attempt_status` when refused, in the same
    transaction). PostgreSQL: ONE statement whatever happened, giving ``owned`` (the id of the
    row this delivery now owns, NULL if refused) and ``existing`` (the status the row had).
    """
    te, st = EXECUTIONS, SCHEDULES
    if dialect == "postgresql":
        ins: Any = postgresql.insert(te)
    elif dialect == "sqlite":
        ins = sqlite.insert(te)
    else:
        raise NotImplementedError(f"execution recording supports PostgreSQL and SQLite, not {dialect}")
    upsert = ins.values(
        celery_task_id=_bp("b_tid", "celery_task_id"),
        attempt=_bp("b_attempt", "attempt"),
        task_name=_bp("b_task", "task_name"),
        handler_path=_bp("b_handler", "handler_path"),
        status=ExecutionStatus.RUNNING.value,
        started_at=_bp("b_started", "started_at"),
        worker=_bp("b_worker", "worker"),
        # A schedule deleted meanwhile (or a bogus id in a manual call) records NULL instead of
        # failing the foreign key.
        scheduled_task_id=select(st.c.id).where(st.c.id == bindparam("b_sid", type_=Integer())).scalar_subquery(),
    ).on_conflict_do_update(
        index_elements=[te.c.celery_task_id, te.c.attempt],
        set_={
            "status": ExecutionStatus.RUNNING.value,
            "started_at": ins.excluded.started_at,
            "worker": ins.excluded.worker,
            "finished_at": None,
            "duration_ms": None,
            "error": None,
            "traceback": None,
            "result": None,
        },
        where=or_(
            *(te.c.status == s.value for s in ExecutionStatus if not s.finished),
            bindparam("b_reset", type_=Boolean()),
        ),
    ).returning(te.c.id)
    if dialect == "sqlite":
        return upsert
    started = upsert.cte("started")
    return select(
        select(started.c.id).scalar_subquery().label("owned"),
        attempt_status().scalar_subquery().label("existing"),
    )


@functools.cache
def close_attempt() -> Any:
    """Move the ``(b_tid, b_attempt)`` row from ``running`` to ``b_status``; RETURNING its
    schedule id (no row: it was not running, nothing to count)."""
    te = EXECUTIONS
    return (
        update(te)
        .where(
            te.c.celery_task_id == _bp("b_tid", "celery_task_id"),
            te.c.attempt == _bp("b_attempt", "attempt"),
            te.c.status == ExecutionStatus.RUNNING.value,
        )
        .values(
            status=_bp("b_status", "status"),
            finished_at=_bp("b_finished", "finished_at"),
            duration_ms=_bp("b_duration", "duration_ms"),
            result=_bp("b_result", "result"),
            error=_bp("b_error", "error"),
            traceback=_bp("b_traceback", "traceback"),
        )
        .returning(te.c.scheduled_task_id)
    )


def _counter_values(outcome: ExecutionStatus) -> dict[str, Any]:
    st = SCHEDULES
    counter = st.c[f"{outcome.value}_count"]
    return {
        counter.key: counter + 1,
        "last_status": outcome.value,
        "last_error": bindparam("b_last_error", type_=st.c.last_error.type),
        # Statistics are not edits: keep updated_at (the model's onupdate would bump it).
        "updated_at": st.c.updated_at,
    }


@functools.cache
def bump_counters(outcome: ExecutionStatus) -> Any:
    """``<outcome>_count + 1`` and the last outcome on schedule ``b_sid``."""
    st = SCHEDULES
    return update(st).where(st.c.id == bindparam("b_sid", type_=Integer())).values(**_counter_values(outcome))


@functools.cache
def close_attempt_and_count(outcome: ExecutionStatus) -> Any:
    """PostgreSQL: :func:`close_attempt` and :func:`bump_counters` as ONE statement (a
    data-modifying CTE), counting only if the attempt was still running, so a duplicate event
    never counts twice."""
    st = SCHEDULES
    closed = close_attempt().cte("closed")
    return update(st).where(st.c.id == closed.c.scheduled_task_id).values(**_counter_values(outcome))
