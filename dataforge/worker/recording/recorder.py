"""The recorder's writes: open an attempt's row, close it, move the schedule's counters once.

One :class:`Recorder` per app and process (``runtime.recorder``). Every method is one short
transaction (one statement, one round trip, on PostgreSQL's hot path); none of them decides
*when* to write: that is :mod:`.handlers`, from Celery's events.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select, update

from dataforge.db import Database
from dataforge.models import utcnow
from dataforge.protocol import ExecutionStatus
from dataforge.worker.recording import statements
from dataforge.worker.recording.connections import HeldConnections
from dataforge.worker.recording.runlog import schedule_id_of
from dataforge.worker.run_state import FinishedStatus

__all__ = ["Recorder", "RecorderStats", "truncate"]

_TRACEBACK_MAX = 20000


def truncate(text: str | None, limit: int) -> str | None:
    """``text`` cut to ``limit`` characters, saying so."""
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 15] + "...[truncated]"


@dataclass
class RecorderStats:
    """Per-process count of recording failures (database down, schema missing...)."""

    db_errors: int = 0
    last_error: str | None = None
    by_event: dict[str, int] = field(default_factory=dict)

    def failed(self, event: str, exc: BaseException) -> None:
        self.db_errors += 1
        self.last_error = repr(exc)
        self.by_event[event] = self.by_event.get(event, 0) + 1


class Recorder:
    """Writes ``task_executions`` rows and the outcome counters of ``scheduled_tasks``."""

    def __init__(self, db: Database, *, synchronous_commit: bool) -> None:
        self.db = db
        self.stats = RecorderStats()
        self.connections = HeldConnections(db, synchronous_commit=synchronous_commit)

    def after_fork(self) -> None:
        self.connections.after_fork()

    def close(self) -> None:
        self.connections.close()

    def start(
        self,
        *,
        task_id: str,
        task_name: str,
        attempt: int,
        kwargs: Mapping[str, Any] | None,
        worker: str | None,
        started_at: datetime,
        reset_finished: bool = False,
    ) -> FinishedStatus | None:
        """Upsert the ``running`` row of one attempt (one statement, one round trip on PostgreSQL).

        Returns ``None`` when this delivery owns the attempt's ``running`` row: a new row, or the
        reset row of an attempt that was ``running`` (redelivered after a worker crash) or
        ``lost``. Returns the row's status when the attempt already finished (``success``,
        ``failure``, ``retry``, ``skipped``): the row is left exactly as it was and the caller
        must not run the attempt again (``"unknown"`` if the finished row could not be read:
        committed by a concurrent delivery after this statement's snapshot, or deleted
        meanwhile; not running it is the safe side). ``reset_finished`` restores the
        unconditional reset (eager mode: an explicit in-process call always runs).
        """
        handler_path = (kwargs or {}).get("handler_path")
        engine = self.db.engine
        dialect = engine.dialect.name
        params = {
            "b_tid": task_id,
            "b_attempt": attempt,
            "b_task": task_name,
            "b_handler": handler_path if isinstance(handler_path, str) else None,
            "b_started": started_at,
            "b_worker": worker,
            "b_sid": schedule_id_of(kwargs),
            "b_reset": reset_finished,
        }
        if dialect == "postgresql":
            row = self.connections.execute(statements.start_attempt(dialect), params).one()
            if row.owned is not None:
                return None
            return _finished_status(row.existing)
        with engine.begin() as conn:
            if conn.execute(statements.start_attempt(dialect), params).first() is not None:
                return None
            existing = conn.execute(statements.attempt_status(), params).scalar()
        return _finished_status(existing)

    def finish(
        self,
        *,
        task_id: str,
        attempt: int | None,
        status: ExecutionStatus,
        count_as: ExecutionStatus | None,
        result: str | None = None,
        error: str | None = None,
        traceback: str | None = None,
        duration_ms: int | None = None,
    ) -> bool:
        """Move the attempt's row from ``running`` to ``status``; bump counters if ``count_as``.

        In the worker child (``attempt`` known) this is one transaction: on PostgreSQL one
        statement, on SQLite an UPDATE ... RETURNING plus the counters UPDATE. Parent-side
        events (``attempt=None``: they may not know it, nor the start time) close whatever row
        of the task id is still running, computing its duration from the stored start. Returns
        whether a running row was closed (``True`` without checking on the PostgreSQL
        one-statement path, whose callers do not use it).
        """
        now = utcnow()
        engine = self.db.engine
        dialect = engine.dialect.name
        params: dict[str, Any] = {
            "b_tid": task_id,
            "b_attempt": attempt,
            "b_status": status.value,
            "b_finished": now,
            "b_duration": duration_ms,
            "b_result": result,
            "b_error": error,
            "b_traceback": truncate(traceback, _TRACEBACK_MAX),
            "b_last_error": error,
        }
        if attempt is not None and count_as is not None and dialect == "postgresql":
            self.connections.execute(statements.close_attempt_and_count(count_as), params)
            return True
        with engine.begin() as conn:
            if attempt is not None:
                closed = [row.scheduled_task_id for row in conn.execute(statements.close_attempt(), params)]
            else:
                closed = _finish_any_attempt(conn, task_id, now, params)
            if count_as is not None:
                for schedule_id in closed:
                    if schedule_id is not None:
                        conn.execute(statements.bump_counters(count_as), {**params, "b_sid": schedule_id})
        return bool(closed)


def _finish_any_attempt(conn: Connection, task_id: str, now: datetime, params: dict[str, Any]) -> list[int | None]:
    """Parent side: close every still-running attempt of ``task_id`` (normally one)."""
    te = statements.EXECUTIONS
    running = conn.execute(
        select(te.c.id, te.c.scheduled_task_id, te.c.started_at).where(
            te.c.celery_task_id == task_id, te.c.status == ExecutionStatus.RUNNING.value
        )
    ).all()
    closed: list[int | None] = []
    for row in running:
        took = None if row.started_at is None else max(0, int((now - row.started_at).total_seconds() * 1000))
        res = conn.execute(
            update(te)
            .where(te.c.id == row.id, te.c.status == ExecutionStatus.RUNNING.value)
            .values(
                status=params["b_status"], finished_at=now, duration_ms=took, result=params["b_result"],
                error=params["b_error"], traceback=params["b_traceback"],
            )  # fmt: skip
        )
        if res.rowcount:
            closed.append(row.scheduled_task_id)
    return closed


def _finished_status(raw: object) -> FinishedStatus:
    try:
        return ExecutionStatus(str(raw))
    except ValueError:
        return "unknown"
