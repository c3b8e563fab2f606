"""The recorder's signal receivers: Celery's task events turned into execution records.

:mod:`dataforge.celery_signals` connects them (and is the only module that does). Each
receiver finds the runtime through the task's app, so only tasks that opt in
(``dataforge_record``) of a DataForge app are recorded. What each event writes is in the
package docstring (:mod:`dataforge.worker.recording`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from celery import states
from celery.exceptions import TimeLimitExceeded, WorkerLostError
from celery.utils.serialization import UnpickleableExceptionWrapper
from kombu.exceptions import EncodeError

from dataforge.models import utcnow
from dataforge.protocol import ExecutionStatus
from dataforge.runtime import NotConfiguredError, Runtime, get_runtime
from dataforge.schema import may_be_schema_error
from dataforge.worker.recording.recorder import truncate
from dataforge.worker.recording.records import CloseAnyAttempt, RowImage
from dataforge.worker.recording.runlog import log_run, schedule_id_of
from dataforge.worker.run_state import RunState, duplicate_reason, peek_run_state, run_state

__all__ = [
    "on_task_failure",
    "on_task_postrun",
    "on_task_prerun",
    "on_task_retry",
    "on_task_revoked",
    "on_task_success",
    "on_worker_process_init",
    "on_worker_process_shutdown",
]

log = logging.getLogger(__name__)

_RESULT_MAX = 2000
_ERROR_MAX = 4000
_TRACEBACK_MAX = 20000
#: ``task_name``, ``handler_path``, ``worker`` are VARCHAR(255).
_NAME_MAX = 255
#: What the record says when the job ran but Celery could not encode its return value.
NOT_SERIALISABLE = "ran; result not serialisable"


def _runtime_for(sender: Any, event: str) -> Runtime | None:
    """The runtime of a recorded task; None for tasks that did not opt in, and while the
    database has no schema to record into: the run itself fails at ``before_start`` with the
    fix in its message, so the event is counted as failed and the fix logged once, instead of
    queueing a record no table can take (and one more error per event)."""
    if not getattr(sender, "dataforge_record", False):
        return None
    try:
        runtime = get_runtime(sender.app)
    except NotConfiguredError:
        return None
    problem = runtime.schema.report_once("cannot record task runs")
    if problem is None:
        return runtime
    runtime.recorder.stats.failed(event, problem)
    return None


@contextmanager
def _guard(runtime: Runtime, event: str, task_id: str | None) -> Iterator[None]:
    """Recording must never fail the task: log, count, carry on."""
    try:
        yield
    except Exception as exc:
        stats = runtime.recorder.stats
        stats.failed(event, exc)
        if may_be_schema_error(exc) and runtime.schema.report_once("cannot record task runs") is not None:
            return  # one line naming the fix, not one per event
        log.warning("could not record %s of task %s (%d recording errors so far): %r",
                    event, task_id, stats.db_errors, exc)


def _summary(result: Any) -> str | None:
    if result is None:
        return None
    try:
        text = json.dumps(result, default=repr, sort_keys=True, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(result)
    return truncate(text, _RESULT_MAX)


def _error_text(exc: BaseException | None, einfo: Any = None) -> str | None:
    """``<class>: <message>``, naming the class that was raised.

    Celery hands the failure signal a *picklable* stand-in for the exception: for a class
    whose constructor cannot be rebuilt from its ``args``, the nearest base class that can
    (a ``JobArgumentError`` would become a ``DataForgeError``), or an
    ``UnpickleableExceptionWrapper``. ``einfo.type`` keeps the class that was raised.
    """
    if exc is None:
        return None
    if isinstance(exc, UnpickleableExceptionWrapper):
        message = " ".join(str(a) for a in exc.exc_args) if exc.exc_args else ""
        return truncate(f"{exc.exc_cls_name}: {message}", _ERROR_MAX)
    raised = getattr(einfo, "type", None)
    cls = type(exc)
    if isinstance(raised, type) and issubclass(raised, cls):
        cls = raised
    return truncate(f"{cls.__name__}: {exc}", _ERROR_MAX)


def _attempt(request: Any) -> int:
    return int(getattr(request, "retries", 0) or 0)


def _clip(value: Any) -> str | None:
    return value[:_NAME_MAX] if isinstance(value, str) else None


def _start_image(task: Any, task_id: str, request: Any, kwargs: Mapping[str, Any] | None, state: RunState,
                 *, reset: bool) -> RowImage:
    return RowImage(
        task_id=task_id, attempt=_attempt(request), status=ExecutionStatus.RUNNING,
        task_name=_clip(task.name), handler_path=_clip((kwargs or {}).get("handler_path")),
        schedule_id=schedule_id_of(kwargs), started_at=state.started_at, worker=_clip(state.worker), reset=reset,
    )  # fmt: skip


def _finish(runtime: Runtime, task: Any, request: Any, status: ExecutionStatus, count_as: ExecutionStatus | None,
            *, result: str | None = None, error: str | None = None, traceback: str | None = None) -> None:
    """Queue the outcome of the run this process ran (child side)."""
    state = run_state(request)
    start = state.start or _start_image(task, request.id, request, request.kwargs, state, reset=False)
    state.recorded = True
    runtime.recorder.record(RowImage(
        task_id=start.task_id, attempt=start.attempt, status=status, task_name=start.task_name,
        handler_path=start.handler_path, schedule_id=start.schedule_id, started_at=start.started_at,
        finished_at=utcnow(), duration_ms=state.duration_ms(), result=result, error=error,
        traceback=truncate(traceback, _TRACEBACK_MAX), worker=start.worker, count_as=count_as, reset=start.reset,
    ))  # fmt: skip


def _parent_record(runtime: Runtime, task: Any, task_id: str, attempt: int | None, kwargs: Mapping[str, Any] | None,
                   status: ExecutionStatus, count_as: ExecutionStatus | None, error: str | None,
                   traceback: str | None = None, *, takeover: bool = True) -> None:
    """Queue what the worker's main process learnt about a run it did not run itself."""
    now = utcnow()
    if attempt is None:
        runtime.recorder.record(CloseAnyAttempt(task_id=task_id, status=status, finished_at=now, count_as=count_as,
                                                error=error, traceback=truncate(traceback, _TRACEBACK_MAX)))
        return
    runtime.recorder.record(RowImage(
        task_id=task_id, attempt=attempt, status=status, task_name=_clip(getattr(task, "name", None)),
        handler_path=_clip((kwargs or {}).get("handler_path")), schedule_id=schedule_id_of(kwargs),
        finished_at=now, error=error, traceback=truncate(traceback, _TRACEBACK_MAX), count_as=count_as,
        takeover=takeover,
    ))  # fmt: skip


def _free_lock_of(runtime: Runtime, task: Any, task_id: str, kwargs: Mapping[str, Any] | None) -> None:
    """Parent side: free the run lock if (and only if) a token of ``task_id`` holds it."""
    if not getattr(task, "lock_enabled", False):
        return
    try:
        key = task.lock_key_for(kwargs or {})
        if runtime.locks.release_owned_by(key, task_id):
            log.info("freed lock %s of dead run %s", key, task_id)
    except Exception:
        log.warning("could not free the lock of dead run %s; it expires within its TTL", task_id, exc_info=True)


def on_task_prerun(sender: Any = None, task_id: str | None = None, task: Any = None,
                   kwargs: Mapping[str, Any] | None = None, **_: Any) -> None:
    task = task or sender
    runtime = _runtime_for(task, "prerun")
    if runtime is None or task_id is None:
        return
    request = task.request
    state = run_state(request)
    recorder = runtime.recorder
    state.started_at = utcnow()
    eager = bool(request.is_eager)
    with _guard(runtime, "prerun", task_id):
        state.worker = recorder.worker_id(request.hostname)
        if not eager:
            finished = recorder.finished_attempt(task_id, _attempt(request))
            if finished is not None:
                # A duplicate delivery (same task id, same attempt) of an attempt that
                # finished: DataForgeTask.before_start ends it unrun; nothing is recorded.
                state.duplicate_of = finished
                return
    # If the read failed, the run goes ahead (recording fails open) and is recorded. The start
    # is queued when the job is called (DataForgeTask.__call__), not here: a delivery that
    # before_start ends unrun (a duplicate, one waiting for a dead holder's lock) must never
    # write it over the row of the delivery that owns the attempt.
    state.start = _start_image(task, task_id, request, kwargs, state, reset=eager)


def on_task_success(sender: Any = None, result: Any = None, **_: Any) -> None:
    runtime = _runtime_for(sender, "success")
    if runtime is None:
        return
    request = sender.request
    with _guard(runtime, "success", request.id):
        _finish(runtime, sender, request, ExecutionStatus.SUCCESS, ExecutionStatus.SUCCESS, result=_summary(result))


def on_task_failure(sender: Any = None, task_id: str | None = None, exception: BaseException | None = None,
                    kwargs: Mapping[str, Any] | None = None, einfo: Any = None, **_: Any) -> None:
    runtime = _runtime_for(sender, "failure")
    if runtime is None or task_id is None:
        return
    request = sender.request
    # The worker's main process reports a child it lost, a hard time limit, or a rejected
    # message; it may have pushed the failed request's context (then the attempt is known).
    parent_side = isinstance(exception, (WorkerLostError, TimeLimitExceeded)) or request.id != task_id
    tb = getattr(einfo, "traceback", None)
    error = _error_text(exception, einfo)
    with _guard(runtime, "failure", task_id):
        if parent_side:
            status = ExecutionStatus.LOST if isinstance(exception, WorkerLostError) else ExecutionStatus.FAILURE
            attempt = _attempt(request) if request.id == task_id else None
            _parent_record(runtime, sender, task_id, attempt, kwargs, status, status, error, tb)
            log_run(sender, task_id, kwargs, attempt, None, status, None, error)
        else:
            state = peek_run_state(request)
            if state is not None and state.returned and isinstance(exception, EncodeError):
                # The job did its work; Celery could not store its return value.
                error = truncate(f"{NOT_SERIALISABLE}: {error}", _ERROR_MAX)
            _finish(runtime, sender, request, ExecutionStatus.FAILURE, ExecutionStatus.FAILURE, error=error,
                    traceback=tb)
    if parent_side:
        _free_lock_of(runtime, sender, task_id, kwargs)


def on_task_retry(sender: Any = None, request: Any = None, reason: Any = None, einfo: Any = None, **_: Any) -> None:
    runtime = _runtime_for(sender, "retry")
    if runtime is None or request is None:
        return
    exc = getattr(reason, "exc", None) or reason
    error = _error_text(exc, einfo) if isinstance(exc, BaseException) else truncate(str(reason), _ERROR_MAX)
    parent_side = sender.request.id != request.id
    with _guard(runtime, "retry", request.id):
        if parent_side:
            # Cancelled by the worker (its broker connection was lost): the child was
            # terminated and the message, still unacknowledged, comes back as the SAME
            # attempt. So the attempt is recorded unfinished (lost), which its redelivery
            # takes over, instead of "retry", which would make the redelivery a duplicate.
            _parent_record(runtime, sender, request.id, _attempt(request), request.kwargs, ExecutionStatus.LOST,
                           ExecutionStatus.LOST, f"cancelled by the worker: {error}")
        else:
            _finish(runtime, sender, request, ExecutionStatus.RETRY, None, error=error,
                    traceback=getattr(einfo, "traceback", None))
    if parent_side:
        _free_lock_of(runtime, sender, request.id, request.kwargs)


#: The outcome of a run that ended in a Celery state without a success/failure/retry event.
_UNSIGNALLED = {states.IGNORED: ExecutionStatus.SKIPPED}


def on_task_postrun(sender: Any = None, task_id: str | None = None, task: Any = None,
                    kwargs: Mapping[str, Any] | None = None, state: str | None = None, **_: Any) -> None:
    task = task or sender
    runtime = _runtime_for(task, "postrun")
    if runtime is None or task_id is None:
        return
    request = task.request
    run = peek_run_state(request)
    duration = None if run is None else run.duration_ms()
    attempt = _attempt(request)
    if run is not None and run.duplicate_of is not None and state == states.IGNORED:
        # A duplicate delivery that DataForgeTask ended unrun: it owns no row; the finished
        # attempt's row and the counters stay as the first delivery left them.
        log_run(task, task_id, kwargs, attempt, None, "duplicate", duration,
                run.skip_reason or duplicate_reason(task_id, attempt, run.duplicate_of))
        return
    if run is not None and run.waiting:
        log_run(task, task_id, kwargs, attempt, run.lock_key, "waiting", duration, run.skip_reason)
        return
    reason: str | None = None if run is None else run.skip_reason
    recorded = run is not None and run.recorded
    outcome = {states.SUCCESS: ExecutionStatus.SUCCESS, states.FAILURE: ExecutionStatus.FAILURE,
               states.RETRY: ExecutionStatus.RETRY}.get(state or "", ExecutionStatus.FAILURE)  # fmt: skip
    if not recorded:
        # IGNORED (lock held, policy skip, the job raised Ignore), REJECTED, anything else:
        # no success/failure event recorded the outcome, so it is recorded here.
        outcome = _UNSIGNALLED.get(state or "", ExecutionStatus.FAILURE)
        if reason is None and state != states.IGNORED:
            reason = f"ended in state {state}"
        with _guard(runtime, "postrun", task_id):
            _finish(runtime, task, request, outcome, outcome, error=truncate(reason, _ERROR_MAX))
    if request.is_eager:
        # apply() is an in-process call: its caller reads the row right after it returns.
        with _guard(runtime, "postrun", task_id):
            runtime.recorder.flush()
    if run is not None and run.dropped:
        reason = f"{reason + '; ' if reason else ''}kwargs not accepted by the job: {', '.join(run.dropped)}"
    log_run(task, task_id, kwargs, attempt, None if run is None else run.lock_key, outcome, duration, reason)


def on_task_revoked(sender: Any = None, request: Any = None, terminated: bool = False, signum: Any = None,
                    expired: bool = False, **_: Any) -> None:
    runtime = _runtime_for(sender, "revoked")
    if runtime is None or request is None:
        return
    if expired:
        # The message expired in the queue: the job never ran. Recorded (and counted once:
        # an attempt that has any row already is left alone) instead of vanishing.
        error = f"expired: not started by {getattr(request, 'expires', None)}"
        with _guard(runtime, "revoked", request.id):
            _parent_record(runtime, sender, request.id, _attempt(request), request.kwargs, ExecutionStatus.EXPIRED,
                           ExecutionStatus.EXPIRED, error, takeover=False)
        log_run(sender, request.id, request.kwargs, _attempt(request), None, ExecutionStatus.EXPIRED, None, error)
        return
    if not terminated:
        # Revoked by id before it started: an operator's decision; nothing ran, no lock.
        return
    error = f"revoked: terminated by signal {signum}"
    with _guard(runtime, "revoked", request.id):
        _parent_record(runtime, sender, request.id, _attempt(request), request.kwargs, ExecutionStatus.FAILURE,
                       ExecutionStatus.FAILURE, error)
    log_run(sender, request.id, request.kwargs, _attempt(request), None, ExecutionStatus.FAILURE, None, error)
    _free_lock_of(runtime, sender, request.id, request.kwargs)


def _current_runtime() -> Runtime | None:
    from celery import current_app

    try:
        return get_runtime(current_app._get_current_object())
    except NotConfiguredError:
        return None


def on_worker_process_init(**_: Any) -> None:
    """In each prefork child: drop pools and per-process resources inherited from the parent."""
    runtime = _current_runtime()
    if runtime is not None:
        runtime.after_fork()


def on_worker_process_shutdown(**_: Any) -> None:
    """A worker process (a prefork child, or the main process at ``worker_shutdown``) exits:
    write its queued records first. Children leave with ``os._exit``, so ``atexit`` would
    not run there."""
    runtime = _current_runtime()
    if runtime is not None:
        runtime.recorder.close()
