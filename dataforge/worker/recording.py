"""The project's only Celery signal handlers: one ``task_executions`` row per attempt.

Only tasks that opt in (``dataforge_record = True``, set by
:class:`~dataforge.worker.task.DataForgeTask`) are recorded; Celery's internal tasks and plain
tasks are not. Handlers reach settings and the database through ``get_runtime(sender.app)``.

Round trips per run (the worker-overhead benchmark measures them):

* ``task_prerun``: ONE upsert on ``(celery_task_id, attempt)``: the row, state ``running``
  (a redelivered message resets its own row instead of adding one, if that row is ``running``
  or ``lost``). An attempt that already finished (``success``, ``failure``, ``retry``,
  ``skipped``) is never reset: the upsert leaves its row alone and the request is marked
  ``dataforge_already_finished = <status>``, so :class:`~dataforge.worker.task.DataForgeTask`
  ends that duplicate delivery without running it (and postrun writes nothing for it).
* ``task_success`` / ``task_failure``: ONE transaction: the execution row goes from
  ``running`` to its outcome and, only if that UPDATE hit a running row, the schedule's
  counters move with atomic ``col = col + 1`` SQL (so a duplicate event never counts twice).
* ``task_retry``: the attempt becomes ``retry``; counters wait for the run's final outcome.
* ``task_postrun``: closes ``skipped`` runs (state ``IGNORED``) and anything else still
  running, and writes the one structured log line of the run.

Parent-side events (the worker's main process, where no postrun follows): ``task_failure``
with ``WorkerLostError`` (child killed: SIGKILL, OOM) marks the attempt ``lost``; a hard time
limit (``TimeLimitExceeded``) or a terminating ``revoke`` mark it ``failure``. Each frees the
run lock with ``release_owned_by(key, task_id)``: only if the lock is still held by a token
of that task id, so a lock that another, live run took meanwhile is never freed.

Who writes which column of ``scheduled_tasks`` (so the worker never races the scheduler):
beat owns ``next_run_at``, ``last_run_at`` and ``run_count`` (advanced together by its
compare-and-set at dispatch; the run's task id is derived from ``run_count``). The worker owns
the outcome columns: ``success_count``, ``failure_count``, ``last_status``, ``last_error``,
bumped once per finished run (not per attempt; a skipped run bumps nothing). So
``run_count - success_count - failure_count`` is the runs dispatched but not finished
(queued, running, skipped or lost with no parent left to report them).

A database outage never fails a task: every handler catches, logs and counts
(:func:`recorder_stats`). Handlers connect once however often this module is imported
(``dispatch_uid``), and hold strong references (``weak=False``).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from celery import states
from celery.exceptions import TimeLimitExceeded, WorkerLostError
from sqlalchemy import Boolean, Connection, Integer, Table, bindparam, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError

from dataforge.locks import lock_backend_for
from dataforge.models import ScheduledTask, TaskExecution, utcnow
from dataforge.protocol import SCHEDULE_ID_KWARG, ExecutionStatus
from dataforge.runtime import Runtime, get_runtime
from dataforge.worker.duplicates import FinishedStatus, already_finished, duplicate_reason

__all__ = [
    "RUN_LOGGER",
    "RecorderStats",
    "on_task_failure",
    "on_task_postrun",
    "on_task_prerun",
    "on_task_retry",
    "on_task_revoked",
    "on_task_success",
    "on_worker_process_init",
    "record_execution_started",
    "recorder_stats",
]

log = logging.getLogger(__name__)
#: The logger of the one structured line per run.
RUN_LOGGER = "dataforge.runs"
run_log = logging.getLogger(RUN_LOGGER)

_EXECUTIONS: Table = TaskExecution.__table__  # type: ignore[assignment]
_SCHEDULES: Table = ScheduledTask.__table__  # type: ignore[assignment]
_RESULT_MAX = 2000
_ERROR_MAX = 4000
_TRACEBACK_MAX = 20000

_OUTCOMES = {
    states.SUCCESS: "success",
    states.FAILURE: "failure",
    states.RETRY: "retry",
    states.IGNORED: "skipped",
    states.REJECTED: "failure",
}


@dataclass
class RecorderStats:
    """Per-process count of recording failures (database down, schema missing...)."""

    db_errors: int = 0
    last_error: str | None = None
    by_event: dict[str, int] = field(default_factory=dict)


def recorder_stats(runtime: Runtime) -> RecorderStats:
    stats: RecorderStats = runtime.component("recorder_stats", lambda _rt: RecorderStats())
    return stats


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _runtime_for(sender: Any) -> Runtime | None:
    """The runtime of a recorded task, or None for tasks that did not opt in."""
    if not getattr(sender, "dataforge_record", False):
        return None
    try:
        return get_runtime(sender.app)
    except RuntimeError:
        return None


@contextmanager
def _guard(runtime: Runtime, event: str, task_id: str | None) -> Iterator[None]:
    """Recording must never fail the task: log, count, carry on."""
    try:
        yield
    except Exception as exc:
        stats = recorder_stats(runtime)
        stats.db_errors += 1
        stats.last_error = repr(exc)
        stats.by_event[event] = stats.by_event.get(event, 0) + 1
        log.warning("could not record %s of task %s (%d recording errors so far): %r",
                    event, task_id, stats.db_errors, exc)


def _schedule_id(kwargs: Mapping[str, Any] | None) -> int | None:
    raw = (kwargs or {}).get(SCHEDULE_ID_KWARG)
    if raw is None or isinstance(raw, bool):
        return None
    try:
        return int(raw)
    except (TypeError, ValueError):
        return None


def _truncate(text: str | None, limit: int) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 15] + "...[truncated]"


def _summary(result: Any) -> str | None:
    if result is None:
        return None
    try:
        text = json.dumps(result, default=repr, sort_keys=True, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(result)
    return _truncate(text, _RESULT_MAX)


def _error_text(exc: BaseException | None) -> str | None:
    if exc is None:
        return None
    return _truncate(f"{type(exc).__name__}: {exc}", _ERROR_MAX)


def _duration_ms(request: Any) -> int | None:
    started = getattr(request, "dataforge_started", None)
    if started is None:
        return None
    return int((time.monotonic() - started) * 1000)


# Statements are built once per dialect with bind parameters: building SQLAlchemy constructs
# per event costs more Python time than the round trip itself (worker-overhead benchmark).
_STATEMENTS: dict[tuple[str, str], Any] = {}


def _bp(name: str, column: str) -> Any:
    return bindparam(name, type_=_EXECUTIONS.c[column].type)


def _statement(dialect: str, which: str) -> Any:
    key = (dialect, which)
    stmt = _STATEMENTS.get(key)
    if stmt is None:
        stmt = _STATEMENTS[key] = _build(dialect, which)
    return stmt


def _status_of_attempt() -> Any:
    """The status of the ``(b_tid, b_attempt)`` row (no row: nothing)."""
    te = _EXECUTIONS
    return select(te.c.status).where(
        te.c.celery_task_id == _bp("b_tid", "celery_task_id"), te.c.attempt == _bp("b_attempt", "attempt")
    )


def _build(dialect: str, which: str) -> Any:
    te, st = _EXECUTIONS, _SCHEDULES
    if which == "start":
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
            status="running",
            started_at=_bp("b_started", "started_at"),
            worker=_bp("b_worker", "worker"),
            # A schedule deleted meanwhile (or a bogus id in a manual call) records NULL
            # instead of failing the foreign key.
            scheduled_task_id=select(st.c.id).where(st.c.id == bindparam("b_sid", type_=Integer())).scalar_subquery(),
        ).on_conflict_do_update(
            index_elements=[te.c.celery_task_id, te.c.attempt],
            set_={
                "status": "running",
                "started_at": ins.excluded.started_at,
                "worker": ins.excluded.worker,
                "finished_at": None,
                "duration_ms": None,
                "error": None,
                "traceback": None,
                "result": None,
            },
            # Only a redelivery of an attempt that did not finish (acks_late after a worker
            # crash: `running`; a killed child: `lost`) takes its row over. A finished attempt
            # keeps its row; RETURNING then gives nothing. `b_reset` (eager mode) resets any row.
            where=or_(
                *(te.c.status == s.value for s in ExecutionStatus if not s.finished),
                bindparam("b_reset", type_=Boolean()),
            ),
        ).returning(te.c.id)
        if dialect == "sqlite":
            return upsert  # then, only if refused, "status" in the same transaction
        # PostgreSQL: one statement, one round trip, whatever happened: the id of the row this
        # delivery now owns (NULL if refused) and the status the row had before the statement.
        started = upsert.cte("started")
        return select(
            select(started.c.id).scalar_subquery().label("owned"),
            _status_of_attempt().scalar_subquery().label("existing"),
        )
    if which == "status":
        return _status_of_attempt()
    close = (
        update(te)
        .where(
            te.c.celery_task_id == _bp("b_tid", "celery_task_id"),
            te.c.attempt == _bp("b_attempt", "attempt"),
            te.c.status == "running",
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
    if which == "close":
        return close
    # "count-<outcome>": close + counters; "bump-<outcome>": counters of one schedule id.
    outcome = which.split("-", 1)[1]
    counter = st.c[f"{outcome}_count"]
    values = {
        counter.key: counter + 1,
        "last_status": outcome,
        "last_error": bindparam("b_last_error", type_=st.c.last_error.type),
        # Statistics are not edits: keep updated_at (the model's onupdate would bump it).
        "updated_at": st.c.updated_at,
    }
    if dialect == "postgresql" and which.startswith("count-"):
        # ONE statement closes the execution and bumps the counters (a data-modifying CTE),
        # and only if the execution was still running: a duplicate event never counts twice.
        closed = close.cte("closed")
        return update(st).where(st.c.id == closed.c.scheduled_task_id).values(**values)
    return update(st).where(st.c.id == bindparam("b_sid", type_=Integer())).values(**values)


# The recorder's PostgreSQL connections commit with ``synchronous_commit = off`` unless
# ``Settings.recorder_synchronous_commit``: a commit then does not wait for its WAL flush (worth
# ~35% of the recording cost when the disk is busy, see docs/benchmarks.md). If
# the PostgreSQL *server* crashes, the last ~0.6 s (3 x wal_writer_delay) of execution rows and
# outcome counters may be lost; nothing is ever inconsistent, and the setting never applies to
# other writes (beat's dispatch, lock leases, the CLI): it is set on these dedicated
# connections only, which are discarded, never returned to the pool with it.


class _HeldConnections:
    """One autocommit connection per worker thread for the PostgreSQL hot path.

    Each single-statement event (prerun's upsert, the close-and-count CTE) then costs exactly
    one round trip: no pool checkout with its pre-ping ``SELECT 1``, no ``BEGIN``/``COMMIT``.
    A connection that fails is discarded and the next event opens a new one through the
    pool, pre-ping included. SQLite and the parent-side events use ordinary short
    transactions instead.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._local = threading.local()
        self._pid = os.getpid()

    def execute(self, stmt: Any, params: Mapping[str, Any]) -> Any:
        if self._pid != os.getpid():
            self.after_fork()
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is None or conn.closed or conn.invalidated:
            conn = self.runtime.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            if not self.runtime.settings.recorder_synchronous_commit:
                conn.exec_driver_sql("SET synchronous_commit TO off")
            self._local.conn = conn
        try:
            return conn.execute(stmt, params)
        except DBAPIError:
            self._local.conn = None
            self._discard(conn)
            raise

    @staticmethod
    def _discard(conn: Connection) -> None:
        """Close the DBAPI connection for good: it must not go back to the pool carrying this
        session's settings."""
        try:
            if not conn.invalidated:
                conn.invalidate()
            conn.close()
        except Exception:  # already broken: nothing more to release
            log.debug("discarding a recorder connection failed", exc_info=True)

    def after_fork(self) -> None:
        # A connection inherited across a fork shares its socket with the parent: never close
        # it (or let it be garbage-collected, which would roll back on that socket); forget it.
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            _INHERITED.append(conn)
        self._local = threading.local()
        self._pid = os.getpid()

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local = threading.local()
        if conn is not None and self._pid == os.getpid():
            self._discard(conn)


#: Connections inherited from a parent process, kept referenced on purpose (see after_fork).
_INHERITED: list[Any] = []


def _held(runtime: Runtime) -> _HeldConnections:
    held: _HeldConnections = runtime.component("recorder_connections", _HeldConnections)
    return held


def record_execution_started(
    runtime: Runtime,
    *,
    task_id: str,
    task_name: str,
    attempt: int,
    kwargs: Mapping[str, Any] | None,
    worker: str | None,
    started_at: datetime,
    reset_finished: bool = False,
) -> str | None:
    """Upsert the ``running`` row of one attempt (one statement, one round trip on PostgreSQL).

    Returns ``None`` when this delivery owns the attempt's ``running`` row: a new row, or the
    reset row of an attempt that was ``running`` (redelivered after a worker crash) or
    ``lost``. Returns the row's status when the attempt already finished (``success``,
    ``failure``, ``retry``, ``skipped``): the row is left exactly as it was and the caller must
    not run the attempt again. (``"unknown"`` if the finished row could not be read: committed
    by a concurrent delivery after this statement's snapshot, or deleted meanwhile.)
    ``reset_finished`` restores the unconditional reset (eager mode: an explicit in-process
    call always runs).
    """
    handler_path = (kwargs or {}).get("handler_path")
    engine = runtime.db.engine
    dialect = engine.dialect.name
    params = {
        "b_tid": task_id,
        "b_attempt": attempt,
        "b_task": task_name,
        "b_handler": handler_path if isinstance(handler_path, str) else None,
        "b_started": started_at,
        "b_worker": worker,
        "b_sid": _schedule_id(kwargs),
        "b_reset": reset_finished,
    }
    if dialect == "postgresql":
        row = _held(runtime).execute(_statement(dialect, "start"), params).one()
        if row.owned is not None:
            return None
        return str(row.existing or "unknown")
    with engine.begin() as conn:
        if conn.execute(_statement(dialect, "start"), params).first() is not None:
            return None
        existing = conn.execute(_statement(dialect, "status"), params).scalar()
    return str(existing or "unknown")


def _close(
    runtime: Runtime,
    *,
    task_id: str,
    attempt: int | None,
    status: str,
    count_as: str | None,
    result: str | None = None,
    error: str | None = None,
    traceback: str | None = None,
    duration_ms: int | None = None,
) -> bool:
    """Move the attempt's row from ``running`` to ``status``; bump counters if ``count_as``.

    In the worker child (``attempt`` known) this is one transaction: on PostgreSQL one
    statement, on SQLite an UPDATE ... RETURNING plus the counters UPDATE. Parent-side events
    (``attempt=None``: they may not know it, nor the start time) close whatever row of the
    task id is still running, computing its duration from the stored start. Returns whether
    a running row was closed (``True`` without checking on the PostgreSQL one-statement path,
    whose callers do not use it).
    """
    now = utcnow()
    engine = runtime.db.engine
    dialect = engine.dialect.name
    params: dict[str, Any] = {
        "b_tid": task_id,
        "b_attempt": attempt,
        "b_status": status,
        "b_finished": now,
        "b_duration": duration_ms,
        "b_result": result,
        "b_error": error,
        "b_traceback": _truncate(traceback, _TRACEBACK_MAX),
        "b_last_error": error,
    }
    if attempt is not None and count_as is not None and dialect == "postgresql":
        _held(runtime).execute(_statement(dialect, f"count-{count_as}"), params)
        return True
    with engine.begin() as conn:
        if attempt is not None:
            closed = [row.scheduled_task_id for row in conn.execute(_statement(dialect, "close"), params)]
        else:
            closed = _close_any_attempt(conn, task_id, now, params)
        if count_as is not None:
            for schedule_id in closed:
                if schedule_id is not None:
                    conn.execute(_statement(dialect, f"bump-{count_as}"), {**params, "b_sid": schedule_id})
    return bool(closed)


def _close_any_attempt(conn: Connection, task_id: str, now: datetime, params: dict[str, Any]) -> list[int | None]:
    """Parent side: close every still-running attempt of ``task_id`` (normally one)."""
    te = _EXECUTIONS
    running = conn.execute(
        select(te.c.id, te.c.scheduled_task_id, te.c.started_at).where(
            te.c.celery_task_id == task_id, te.c.status == "running"
        )
    ).all()
    closed: list[int | None] = []
    for row in running:
        took = None if row.started_at is None else max(0, int((now - row.started_at).total_seconds() * 1000))
        res = conn.execute(
            update(te)
            .where(te.c.id == row.id, te.c.status == "running")
            .values(
                status=params["b_status"], finished_at=now, duration_ms=took, result=params["b_result"],
                error=params["b_error"], traceback=params["b_traceback"],
            )  # fmt: skip
        )
        if res.rowcount:
            closed.append(row.scheduled_task_id)
    return closed


def _log_run(task: Any, task_id: str, kwargs: Mapping[str, Any] | None, attempt: int | None,
             lock: str | None, outcome: str, duration_ms: int | None, reason: str | None = None) -> None:
    fields = {
        "task_id": task_id,
        "task": getattr(task, "name", None),
        "schedule": _schedule_id(kwargs),
        "attempt": attempt,
        "lock": lock,
        "outcome": outcome,
        "duration_ms": duration_ms,
    }
    if reason:
        fields["reason"] = reason
    run_log.info(
        "run " + " ".join(f"{k}={v}" for k, v in fields.items()),
        extra={"dataforge_run": fields},
    )


def _free_lock_of(runtime: Runtime, task: Any, task_id: str, kwargs: Mapping[str, Any] | None) -> None:
    """Parent side: free the run lock if (and only if) a token of ``task_id`` holds it."""
    if not getattr(task, "lock_enabled", False):
        return
    try:
        key = task.lock_key_for(kwargs or {})
        if lock_backend_for(runtime).release_owned_by(key, task_id):
            log.info("freed lock %s of dead run %s", key, task_id)
    except Exception:
        log.warning("could not free the lock of dead run %s; it expires within its TTL", task_id, exc_info=True)


# --------------------------------------------------------------------------------------------
# handlers
# --------------------------------------------------------------------------------------------


def on_task_prerun(sender: Any = None, task_id: str | None = None, task: Any = None,
                   kwargs: Mapping[str, Any] | None = None, **_: Any) -> None:
    task = task or sender
    runtime = _runtime_for(task)
    if runtime is None or task_id is None:
        return
    request = task.request
    request.dataforge_started = time.monotonic()
    with _guard(runtime, "prerun", task_id):
        finished = record_execution_started(
            runtime,
            task_id=task_id,
            task_name=task.name,
            attempt=int(request.retries or 0),
            kwargs=kwargs,
            worker=f"{request.hostname or 'local'}:{os.getpid()}",
            started_at=utcnow(),
            reset_finished=bool(request.is_eager),
        )
        if finished is not None:
            # A duplicate delivery (same task id, same attempt) of an attempt that finished:
            # DataForgeTask.before_start ends it without running it; postrun writes nothing.
            # (If the upsert failed, nothing is marked: recording fails open, the run goes on.)
            request.dataforge_already_finished = FinishedStatus(finished)


def on_task_success(sender: Any = None, result: Any = None, **_: Any) -> None:
    runtime = _runtime_for(sender)
    if runtime is None:
        return
    request = sender.request
    with _guard(runtime, "success", request.id):
        _close(runtime, task_id=request.id, attempt=int(request.retries or 0), status="success",
               count_as="success", result=_summary(result), duration_ms=_duration_ms(request))


def on_task_failure(sender: Any = None, task_id: str | None = None, exception: BaseException | None = None,
                    kwargs: Mapping[str, Any] | None = None, einfo: Any = None, **_: Any) -> None:
    runtime = _runtime_for(sender)
    if runtime is None or task_id is None:
        return
    request = sender.request
    parent_side = isinstance(exception, (WorkerLostError, TimeLimitExceeded)) or request.id != task_id
    tb = getattr(einfo, "traceback", None)
    with _guard(runtime, "failure", task_id):
        if parent_side:
            status = "lost" if isinstance(exception, WorkerLostError) else "failure"
            closed = _close(runtime, task_id=task_id, attempt=None, status=status, count_as="failure",
                            error=_error_text(exception), traceback=tb)
            if closed:
                _log_run(sender, task_id, kwargs, None, None, status, None, _error_text(exception))
        else:
            _close(runtime, task_id=task_id, attempt=int(request.retries or 0), status="failure",
                   count_as="failure", error=_error_text(exception), traceback=tb,
                   duration_ms=_duration_ms(request))
    if parent_side:
        _free_lock_of(runtime, sender, task_id, kwargs)


def on_task_retry(sender: Any = None, request: Any = None, reason: Any = None, einfo: Any = None, **_: Any) -> None:
    runtime = _runtime_for(sender)
    if runtime is None or request is None:
        return
    exc = getattr(reason, "exc", None) or reason
    error = _error_text(exc) if isinstance(exc, BaseException) else _truncate(str(reason), _ERROR_MAX)
    parent_side = sender.request.id != request.id
    with _guard(runtime, "retry", request.id):
        _close(runtime, task_id=request.id, attempt=None if parent_side else int(request.retries or 0),
               status="retry", count_as=None, error=error, traceback=getattr(einfo, "traceback", None),
               duration_ms=None if parent_side else _duration_ms(request))
    if parent_side:  # cancelled by the worker (connection lost): the child was terminated
        _free_lock_of(runtime, sender, request.id, request.kwargs)


def on_task_postrun(sender: Any = None, task_id: str | None = None, task: Any = None,
                    kwargs: Mapping[str, Any] | None = None, state: str | None = None, **_: Any) -> None:
    task = task or sender
    runtime = _runtime_for(task)
    if runtime is None or task_id is None:
        return
    request = task.request
    duration = _duration_ms(request)
    attempt = int(request.retries or 0)
    finished = already_finished(request)
    if finished is not None and state == states.IGNORED:
        # A duplicate delivery that DataForgeTask ended unrun: it never owned a row, so the
        # finished attempt's row and the counters stay as the first delivery left them (the
        # close would only match a `running` row anyway: no statement at all).
        reason = getattr(request, "dataforge_skip_reason", None) or duplicate_reason(task_id, attempt, finished)
        _log_run(task, task_id, kwargs, attempt, None, "duplicate", duration, reason)
        return
    outcome = _OUTCOMES.get(state or "", "failure")
    reason = getattr(request, "dataforge_skip_reason", None)
    if state not in (states.SUCCESS, states.FAILURE, states.RETRY):
        # IGNORED (lock held / policy skip / the job raised Ignore), REJECTED, anything else:
        # no success/failure event closed the row, so close it here; counters do not move.
        if reason is None and state != states.IGNORED:
            reason = f"ended in state {state}"
        with _guard(runtime, "postrun", task_id):
            _close(runtime, task_id=task_id, attempt=attempt, status=outcome, count_as=None,
                   error=_truncate(reason, _ERROR_MAX), duration_ms=duration)
    dropped = getattr(request, "dataforge_dropped", None)
    if dropped:
        reason = f"{reason + '; ' if reason else ''}kwargs not accepted by the job: {', '.join(dropped)}"
    _log_run(task, task_id, kwargs, attempt, getattr(request, "dataforge_lock_key", None), outcome, duration, reason)


def on_task_revoked(sender: Any = None, request: Any = None, terminated: bool = False, signum: Any = None,
                    expired: bool = False, **_: Any) -> None:
    runtime = _runtime_for(sender)
    if runtime is None or request is None or not terminated:
        # Revoked before it started (or expired): nothing ran, no row, no lock of its own.
        return
    error = f"revoked: terminated by signal {signum}"
    with _guard(runtime, "revoked", request.id):
        if _close(runtime, task_id=request.id, attempt=None, status="failure", count_as="failure", error=error):
            _log_run(sender, request.id, request.kwargs, None, None, "failure", None, error)
    _free_lock_of(runtime, sender, request.id, request.kwargs)


def on_worker_process_init(**_: Any) -> None:
    """In each prefork child: drop pools and per-process components inherited from the parent."""
    from celery import current_app

    runtime = getattr(current_app, "dataforge", None)
    if isinstance(runtime, Runtime):
        runtime.after_fork()
