"""The recorder's signal receivers: Celery's task events turned into execution records.

:mod:`dataforge.celery_signals` connects them (and is the only module that does). Each
receiver finds the runtime through the task's app, so only tasks that opt in
(``dataforge_record``) of a DataForge app are recorded. What each event writes is in the
package docstring (:mod:`dataforge.worker.recording`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from celery import states
from celery.exceptions import TimeLimitExceeded, WorkerLostError

from dataforge.models import utcnow
from dataforge.protocol import ExecutionStatus
from dataforge.runtime import NotConfiguredError, Runtime, get_runtime
from dataforge.schema import may_be_schema_error
from dataforge.worker.recording.recorder import truncate
from dataforge.worker.recording.runlog import log_run
from dataforge.worker.run_state import duplicate_reason, peek_run_state, run_state

__all__ = [
    "on_task_failure",
    "on_task_postrun",
    "on_task_prerun",
    "on_task_retry",
    "on_task_revoked",
    "on_task_success",
    "on_worker_process_init",
]

log = logging.getLogger(__name__)

_RESULT_MAX = 2000
_ERROR_MAX = 4000

#: The execution status of a run that ended in a Celery state without a success/failure event.
_OUTCOMES = {
    states.SUCCESS: ExecutionStatus.SUCCESS,
    states.FAILURE: ExecutionStatus.FAILURE,
    states.RETRY: ExecutionStatus.RETRY,
    states.IGNORED: ExecutionStatus.SKIPPED,
    states.REJECTED: ExecutionStatus.FAILURE,
}


def _runtime_for(sender: Any) -> Runtime | None:
    """The runtime of a recorded task, or None for tasks that did not opt in."""
    if not getattr(sender, "dataforge_record", False):
        return None
    try:
        return get_runtime(sender.app)
    except NotConfiguredError:
        return None


@contextmanager
def _guard(runtime: Runtime, event: str, task_id: str | None) -> Iterator[None]:
    """Recording must never fail the task: log, count, carry on."""
    try:
        yield
    except Exception as exc:
        stats = runtime.recorder.stats
        stats.failed(event, exc)
        if may_be_schema_error(exc) and runtime.schema.report_once("cannot record task runs"):
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


def _error_text(exc: BaseException | None) -> str | None:
    if exc is None:
        return None
    return truncate(f"{type(exc).__name__}: {exc}", _ERROR_MAX)


def _duration_ms(request: Any) -> int | None:
    state = peek_run_state(request)
    return None if state is None else state.duration_ms()


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
    runtime = _runtime_for(task)
    if runtime is None or task_id is None:
        return
    request = task.request
    state = run_state(request)
    with _guard(runtime, "prerun", task_id):
        finished = runtime.recorder.start(
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
            state.duplicate_of = finished


def on_task_success(sender: Any = None, result: Any = None, **_: Any) -> None:
    runtime = _runtime_for(sender)
    if runtime is None:
        return
    request = sender.request
    with _guard(runtime, "success", request.id):
        runtime.recorder.finish(
            task_id=request.id, attempt=int(request.retries or 0), status=ExecutionStatus.SUCCESS,
            count_as=ExecutionStatus.SUCCESS, result=_summary(result), duration_ms=_duration_ms(request),
        )


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
            status = ExecutionStatus.LOST if isinstance(exception, WorkerLostError) else ExecutionStatus.FAILURE
            closed = runtime.recorder.finish(task_id=task_id, attempt=None, status=status,
                                             count_as=ExecutionStatus.FAILURE, error=_error_text(exception),
                                             traceback=tb)
            if closed:
                log_run(sender, task_id, kwargs, None, None, status, None, _error_text(exception))
        else:
            runtime.recorder.finish(task_id=task_id, attempt=int(request.retries or 0),
                                    status=ExecutionStatus.FAILURE, count_as=ExecutionStatus.FAILURE,
                                    error=_error_text(exception), traceback=tb, duration_ms=_duration_ms(request))
    if parent_side:
        _free_lock_of(runtime, sender, task_id, kwargs)


def on_task_retry(sender: Any = None, request: Any = None, reason: Any = None, einfo: Any = None, **_: Any) -> None:
    runtime = _runtime_for(sender)
    if runtime is None or request is None:
        return
    exc = getattr(reason, "exc", None) or reason
    error = _error_text(exc) if isinstance(exc, BaseException) else truncate(str(reason), _ERROR_MAX)
    parent_side = sender.request.id != request.id
    with _guard(runtime, "retry", request.id):
        runtime.recorder.finish(
            task_id=request.id, attempt=None if parent_side else int(request.retries or 0),
            status=ExecutionStatus.RETRY, count_as=None, error=error, traceback=getattr(einfo, "traceback", None),
            duration_ms=None if parent_side else _duration_ms(request),
        )
    if parent_side:  # cancelled by the worker (connection lost): the child was terminated
        _free_lock_of(runtime, sender, request.id, request.kwargs)


def on_task_postrun(sender: Any = None, task_id: str | None = None, task: Any = None,
                    kwargs: Mapping[str, Any] | None = None, state: str | None = None, **_: Any) -> None:
    task = task or sender
    runtime = _runtime_for(task)
    if runtime is None or task_id is None:
        return
    request = task.request
    run = peek_run_state(request)
    duration = None if run is None else run.duration_ms()
    attempt = int(request.retries or 0)
    if run is not None and run.duplicate_of is not None and state == states.IGNORED:
        # A duplicate delivery that DataForgeTask ended unrun: it never owned a row, so the
        # finished attempt's row and the counters stay as the first delivery left them (the
        # close would only match a `running` row anyway: no statement at all).
        log_run(task, task_id, kwargs, attempt, None, "duplicate", duration,
                run.skip_reason or duplicate_reason(task_id, attempt, run.duplicate_of))
        return
    outcome = _OUTCOMES.get(state or "", ExecutionStatus.FAILURE)
    reason: str | None = None if run is None else run.skip_reason
    if state not in (states.SUCCESS, states.FAILURE, states.RETRY):
        # IGNORED (lock held / policy skip / the job raised Ignore), REJECTED, anything else:
        # no success/failure event closed the row, so close it here; counters do not move.
        if reason is None and state != states.IGNORED:
            reason = f"ended in state {state}"
        with _guard(runtime, "postrun", task_id):
            runtime.recorder.finish(task_id=task_id, attempt=attempt, status=outcome, count_as=None,
                                    error=truncate(reason, _ERROR_MAX), duration_ms=duration)
    if run is not None and run.dropped:
        reason = f"{reason + '; ' if reason else ''}kwargs not accepted by the job: {', '.join(run.dropped)}"
    log_run(task, task_id, kwargs, attempt, None if run is None else run.lock_key, outcome, duration, reason)


def on_task_revoked(sender: Any = None, request: Any = None, terminated: bool = False, signum: Any = None,
                    expired: bool = False, **_: Any) -> None:
    runtime = _runtime_for(sender)
    if runtime is None or request is None or not terminated:
        # Revoked before it started (or expired): nothing ran, no row, no lock of its own.
        return
    error = f"revoked: terminated by signal {signum}"
    with _guard(runtime, "revoked", request.id):
        if runtime.recorder.finish(task_id=request.id, attempt=None, status=ExecutionStatus.FAILURE,
                                   count_as=ExecutionStatus.FAILURE, error=error):
            log_run(sender, request.id, request.kwargs, None, None, ExecutionStatus.FAILURE, None, error)
    _free_lock_of(runtime, sender, request.id, request.kwargs)


def on_worker_process_init(**_: Any) -> None:
    """In each prefork child: drop pools and per-process resources inherited from the parent."""
    from celery import current_app

    try:
        runtime = get_runtime(current_app._get_current_object())
    except NotConfiguredError:
        return
    runtime.after_fork()
