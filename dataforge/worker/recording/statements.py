"""The recorder's SQL, one named builder per statement, each built once per process.

Building SQLAlchemy constructs per event costs more Python time than the round trip itself
(the worker-overhead benchmark), so every builder is cached: the statements take bind
parameters (``b_*``) and never embed a value. Pure: nothing here touches a connection.

* :func:`attempt_state`: the one read on a run's path (``task_prerun``): has this attempt a
  row, and in which state.
* :func:`write_images_pg`: PostgreSQL, the whole flush of a writer in ONE statement: every
  queued row image as one multi-row upsert, and the schedules' counters moved by the rows
  that were really written (a data-modifying CTE).
* :func:`insert_image`, :func:`update_image`, :func:`running_attempts`, :func:`close_by_id`,
  :func:`bump_counters`: the same writes one record at a time, in one transaction per flush
  (SQLite, and the rare records PostgreSQL's multi-row statement does not take: eager resets,
  expired messages, the parent process's closes).
"""

from __future__ import annotations

import functools
from typing import Any, Final

from sqlalchemy import Integer, Table, TextClause, bindparam, case, insert, select, text, update

from dataforge.models import ScheduledTask, TaskExecution
from dataforge.protocol import ExecutionStatus
from dataforge.worker.recording.records import COUNTED, LAST_STATUS_OF, counter_column

__all__ = [
    "ATTEMPT_STATE_SQL",
    "EXECUTIONS",
    "SCHEDULES",
    "attempt_state",
    "bump_counters",
    "close_by_id",
    "insert_image",
    "reap_running",
    "row_of_attempt",
    "running_attempts",
    "update_image",
    "write_images_pg",
]

EXECUTIONS: Table = TaskExecution.__table__  # type: ignore[assignment]
SCHEDULES: Table = ScheduledTask.__table__  # type: ignore[assignment]

#: Statuses a row image may take over (an attempt that did not finish).
_UNFINISHED: Final = tuple(s.value for s in ExecutionStatus if not s.finished)


def _bp(name: str, column: str) -> Any:
    return bindparam(name, type_=EXECUTIONS.c[column].type)


@functools.cache
def attempt_state() -> Any:
    """``status`` and ``worker`` of the ``(b_tid, b_attempt)`` row (no row: nothing)."""
    te = EXECUTIONS
    return select(te.c.status, te.c.worker).where(
        te.c.celery_task_id == _bp("b_tid", "celery_task_id"), te.c.attempt == _bp("b_attempt", "attempt")
    )


#: :func:`attempt_state` as the driver's own SQL, for the read on a run's path on PostgreSQL
#: (run without SQLAlchemy's execution layer; ``tests`` check both give the same answer).
ATTEMPT_STATE_SQL: Final = "SELECT status, worker FROM task_executions WHERE celery_task_id = %s AND attempt = %s"


def _sql_list(values: tuple[str, ...] | frozenset[ExecutionStatus]) -> str:
    return ", ".join(f"'{v}'" for v in sorted(str(x) for x in values))


@functools.cache
def write_images_pg(counted: frozenset[ExecutionStatus] = COUNTED) -> TextClause:
    """Upsert a batch of row images and move the counters of the rows written: ONE statement.

    The batch travels as one array per column (``unnest``), so the statement text is the same
    for every batch size and is prepared once per connection. A row is written if it is new
    or still ``running``/``lost`` (``ON CONFLICT ... WHERE``); a finished row is never
    touched. ``earlier`` is the rows' status before the statement (all CTEs see the same
    snapshot): an image that takes over a ``lost`` row (a redelivery of a reaped run, or a
    late outcome of a frozen one) takes that ``lost`` back out of ``lost_count``, so each
    run is counted once. ``last_status``/``last_error`` become those of the batch's last
    image (``ord``) that ran. Only the counters of ``counted`` are written (the ones the
    schema has: a database rolled back below the counters' migration has only two). Returns
    how many rows were written.
    """
    last = _sql_list(LAST_STATUS_OF)
    counters = ",\n        ".join(
        f"{counter_column(s)} = GREATEST(0, st.{counter_column(s)} + p.{s.value} - p.unlost)"
        if s is ExecutionStatus.LOST else f"{counter_column(s)} = st.{counter_column(s)} + p.{s.value}"
        for s in sorted(counted)
    )
    tallies = ",\n            ".join(
        f"count(*) FILTER (WHERE c.count_as = '{s.value}') AS {s.value}" for s in sorted(counted)
    )
    return text(f"""
WITH batch AS (
    SELECT * FROM unnest(
        CAST(:tid AS text[]), CAST(:attempt AS integer[]), CAST(:task AS text[]), CAST(:handler AS text[]),
        CAST(:sid AS integer[]), CAST(:status AS text[]), CAST(:started AS timestamp[]),
        CAST(:finished AS timestamp[]), CAST(:duration AS integer[]), CAST(:result AS text[]),
        CAST(:error AS text[]), CAST(:traceback AS text[]), CAST(:worker AS text[]),
        CAST(:count_as AS text[]), CAST(:ord AS integer[])
    ) AS b(tid, attempt, task, handler, sid, status, started, finished, duration, result, error,
           traceback, worker, count_as, ord)
),
earlier AS (
    SELECT te.celery_task_id AS tid, te.attempt, te.status
    FROM task_executions te JOIN batch b ON te.celery_task_id = b.tid AND te.attempt = b.attempt
),
written AS (
    INSERT INTO task_executions AS te (
        celery_task_id, attempt, task_name, handler_path, scheduled_task_id, status, started_at,
        finished_at, duration_ms, result, error, traceback, worker)
    SELECT b.tid, b.attempt, b.task, b.handler, st.id, b.status, b.started, b.finished, b.duration,
           b.result, b.error, b.traceback, b.worker
    FROM batch b LEFT JOIN scheduled_tasks st ON st.id = b.sid
    ORDER BY b.tid, b.attempt
    ON CONFLICT (celery_task_id, attempt) DO UPDATE SET
        status = EXCLUDED.status, started_at = EXCLUDED.started_at, worker = EXCLUDED.worker,
        finished_at = EXCLUDED.finished_at, duration_ms = EXCLUDED.duration_ms,
        result = EXCLUDED.result, error = EXCLUDED.error, traceback = EXCLUDED.traceback
    WHERE te.status IN ({_sql_list(_UNFINISHED)})
    RETURNING te.celery_task_id AS tid, te.attempt, te.scheduled_task_id AS sid
),
counted AS (
    SELECT w.sid, b.count_as, b.error, b.ord, e.status AS was
    FROM written w
    JOIN batch b ON b.tid = w.tid AND b.attempt = w.attempt
    LEFT JOIN earlier e ON e.tid = w.tid AND e.attempt = w.attempt
    WHERE w.sid IS NOT NULL AND (b.count_as IS NOT NULL OR e.status = '{ExecutionStatus.LOST.value}')
),
per_schedule AS (
    SELECT c.sid,
            {tallies},
            count(*) FILTER (WHERE c.was = '{ExecutionStatus.LOST.value}') AS unlost,
            (array_agg(c.count_as ORDER BY c.ord DESC) FILTER (WHERE c.count_as IN ({last})))[1] AS last_status,
            (array_agg(c.error ORDER BY c.ord DESC) FILTER (WHERE c.count_as IN ({last})))[1] AS last_error
    FROM counted c GROUP BY c.sid
),
bumped AS (
    UPDATE scheduled_tasks st SET
        {counters},
        last_status = COALESCE(p.last_status, st.last_status),
        last_error = CASE WHEN p.last_status IS NULL THEN st.last_error ELSE p.last_error END
    FROM per_schedule p WHERE st.id = p.sid
    RETURNING st.id
)
SELECT count(*) AS written FROM written
""")


@functools.cache
def insert_image() -> Any:
    """Insert one attempt's row (a schedule deleted meanwhile, or a bogus id in a manual call,
    records NULL instead of failing the foreign key)."""
    te, st = EXECUTIONS, SCHEDULES
    return insert(te).values(
        celery_task_id=_bp("b_tid", "celery_task_id"),
        attempt=_bp("b_attempt", "attempt"),
        task_name=_bp("b_task", "task_name"),
        handler_path=_bp("b_handler", "handler_path"),
        scheduled_task_id=select(st.c.id).where(st.c.id == bindparam("b_sid", type_=Integer())).scalar_subquery(),
        status=_bp("b_status", "status"),
        started_at=_bp("b_started", "started_at"),
        finished_at=_bp("b_finished", "finished_at"),
        duration_ms=_bp("b_duration", "duration_ms"),
        result=_bp("b_result", "result"),
        error=_bp("b_error", "error"),
        traceback=_bp("b_traceback", "traceback"),
        worker=_bp("b_worker", "worker"),
    )


@functools.cache
def update_image() -> Any:
    """Overwrite row ``b_id`` with an image, only if it still has the status ``b_was`` that
    was read (compare-and-set). What the image does not know (a parent's close has no start)
    keeps the row's value."""
    te = EXECUTIONS
    return (
        update(te)
        .where(te.c.id == bindparam("b_id", type_=Integer()), te.c.status == _bp("b_was", "status"))
        .values(
            status=_bp("b_status", "status"),
            started_at=case((_bp("b_started", "started_at").is_(None), te.c.started_at),
                            else_=_bp("b_started", "started_at")),
            worker=case((_bp("b_worker", "worker").is_(None), te.c.worker), else_=_bp("b_worker", "worker")),
            finished_at=_bp("b_finished", "finished_at"),
            duration_ms=_bp("b_duration", "duration_ms"),
            result=_bp("b_result", "result"),
            error=_bp("b_error", "error"),
            traceback=_bp("b_traceback", "traceback"),
        )  # fmt: skip
    )


@functools.cache
def row_of_attempt() -> Any:
    """``id``, ``status``, ``started_at``, ``scheduled_task_id`` of the ``(b_tid, b_attempt)`` row."""
    te = EXECUTIONS
    return select(te.c.id, te.c.status, te.c.started_at, te.c.scheduled_task_id).where(
        te.c.celery_task_id == _bp("b_tid", "celery_task_id"), te.c.attempt == _bp("b_attempt", "attempt")
    )


@functools.cache
def running_attempts() -> Any:
    """Every ``running`` row of task ``b_tid`` (parent side: which attempt it was is unknown)."""
    te = EXECUTIONS
    return select(te.c.id, te.c.status, te.c.started_at, te.c.scheduled_task_id).where(
        te.c.celery_task_id == _bp("b_tid", "celery_task_id"), te.c.status == ExecutionStatus.RUNNING.value
    )


@functools.cache
def close_by_id() -> Any:
    """Close running row ``b_id`` (the reaper, the parent's close of an unknown attempt)."""
    te = EXECUTIONS
    return (
        update(te)
        .where(te.c.id == bindparam("b_id", type_=Integer()), te.c.status == ExecutionStatus.RUNNING.value)
        .values(
            status=_bp("b_status", "status"),
            finished_at=_bp("b_finished", "finished_at"),
            duration_ms=_bp("b_duration", "duration_ms"),
            error=_bp("b_error", "error"),
            traceback=_bp("b_traceback", "traceback"),
        )
    )


@functools.cache
def bump_counters(counted: frozenset[ExecutionStatus] = COUNTED) -> Any:
    """Add ``b_<outcome>`` to each counter of ``counted`` on schedule ``b_sid`` (and take
    ``b_unlost`` runs back out of ``lost_count``, never below 0); ``b_last_status``, when not
    NULL, becomes the schedule's last outcome with ``b_last_error``. Statistics, not edits:
    ``updated_at`` is kept."""
    st = SCHEDULES
    values: dict[str, Any] = {
        counter_column(s): st.c[counter_column(s)] + bindparam(f"b_{s.value}", type_=Integer())
        for s in counted
    }
    lost = counter_column(ExecutionStatus.LOST)
    if lost in values:
        net = values[lost] - bindparam("b_unlost", type_=Integer())
        # Never below 0: a lost row written before lost_count existed (counted as a failure then).
        values[lost] = case((net < 0, 0), else_=net)
    last = bindparam("b_last_status", type_=st.c.last_status.type)
    values["last_status"] = case((last.is_(None), st.c.last_status), else_=last)
    values["last_error"] = case((last.is_(None), st.c.last_error),
                                else_=bindparam("b_last_error", type_=st.c.last_error.type))  # fmt: skip
    values["updated_at"] = st.c.updated_at
    return update(st).where(st.c.id == bindparam("b_sid", type_=Integer())).values(**values)


@functools.cache
def reap_running() -> Any:
    """Mark running row ``b_id`` ``lost`` only if it still belongs to worker ``b_worker`` (a
    redelivery that took the row over meanwhile is alive; its row is left alone). RETURNING
    its schedule id."""
    te = EXECUTIONS
    return (
        update(te)
        .where(
            te.c.id == bindparam("b_id", type_=Integer()),
            te.c.status == ExecutionStatus.RUNNING.value,
            te.c.worker == _bp("b_worker", "worker"),
        )
        .values(
            status=ExecutionStatus.LOST.value,
            finished_at=_bp("b_finished", "finished_at"),
            duration_ms=_bp("b_duration", "duration_ms"),
            error=_bp("b_error", "error"),
        )
        .returning(te.c.scheduled_task_id)
    )
