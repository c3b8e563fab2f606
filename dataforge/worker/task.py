"""``DataForgeTask``: the one base class of every DataForge job.

A task is written as::

    @celery_app.task(base=DataForgeTask, bind=True, name="dataforge.sync_accounts")
    def sync_accounts(self, **kwargs):
        return self.run_job(run, kwargs)

What the base class adds to a plain Celery task, and where (hook order, real worker and
eager alike: ``task_prerun`` → ``before_start`` → ``__call__`` → result stored →
``task_success``/``task_failure`` → ``task_postrun``):

* **Run lock** (``before_start``): taken when the run starts, never at enqueue, under
  :meth:`DataForgeTask.lock_key_for` (``lock_name`` or the task name, plus the schedule id or
  a kwargs hash). Held: the run is *skipped*: ``Ignore`` is raised, the execution is recorded
  ``skipped``, the counters do not move, and the result backend gets state ``IGNORED`` (see
  docs/runtime.md for what ``AsyncResult`` callers see). Never retried.
* **Renewal**: one thread per worker process renews every held lock every ttl/3.
* **Release** on every outcome: in ``__call__``'s ``finally`` (success, failure, soft time
  limit, ``Ignore``/``Reject`` from the job), in :meth:`retry` *before* the retry message is
  published (so the retry cannot find its own lock held), and from the worker's parent
  process when the child died or was terminated (``release_owned_by`` the task id, in
  :mod:`dataforge.worker.recording`). Release never raises.
* **Overlap policy** (``before_start``): the schedule's policy, from the message header beat sets
  (:mod:`dataforge.worker.overlap`): ``skip`` (above), ``buffer_one`` (one run waits for the
  held lock), ``allow`` (no lock), ``cancel_previous`` (the holder is terminated, then this runs).
* **Lock store unreachable**: ``Settings.lock_unavailable`` (``retry`` | ``run`` | ``skip``).
* **Retries**: class-level autoretry (``autoretry_for = (Exception,)`` with exponential
  backoff); the count comes from the schedule's ``max_retries``, which beat sends in the
  :data:`MAX_RETRIES_HEADER` message header (default :attr:`DataForgeTask.max_retries` = 0,
  the legacy column's default).
* **Jobs** (:meth:`DataForgeTask.run_job`): kwargs bound to the job's signature
  (:func:`dataforge.worker.kwargs.bind_kwargs`), coroutines run on the process's one persistent loop
  (:mod:`dataforge.worker.loop`).
* **Recording**: ``dataforge_record = True`` opts the task into :mod:`dataforge.worker.recording`
  (one ``task_executions`` row per attempt, counters, one log line per run).
* **Duplicate deliveries** (``before_start``, first): a message whose attempt (task id,
  ``request.retries``) already finished (``task_prerun`` found its row ``success``,
  ``failure``, ``retry``, ``skipped`` or ``expired`` and marked the run's state a duplicate)
  is ended with ``Ignore`` before the lock: the job does not run, the first run's row,
  counters and result-backend entry stay as they are (see :attr:`DataForgeTask.backend`).
* **Redelivery of a dead worker's run** (``before_start``): a delivery that finds the lock
  held under its own task id by a delivery that is gone (the message was *redelivered*: the
  broker gave it back because the consumer that had it died) re-queues itself with a
  countdown until that lock expires, then runs. It is never acknowledged unrun. A delivery of
  the same run that was *not* redelivered (beat re-sent it) while the lock is held under its
  task id is a live concurrent duplicate and ends unrun, as before.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, NoReturn

from celery import Task, states
from celery.exceptions import Ignore, SoftTimeLimitExceeded
from celery.utils.time import get_exponential_backoff_interval

from dataforge.errors import LockUnavailableError
from dataforge.locks import lock_key
from dataforge.protocol import (
    DUE_AT_HEADER,
    LEGACY_LOCK_KEY,
    MAX_RETRIES_HEADER,
    OVERLAP_HEADER,
    SCHEDULE_ID_HEADER,
    ExecutionStatus,
    LockUnavailablePolicy,
    OverlapPolicy,
)
from dataforge.runtime import Runtime, get_runtime
from dataforge.worker.errors import JobArgumentError
from dataforge.worker.kwargs import bind_kwargs, with_legacy_lock_key
from dataforge.worker.overlap import overlap_policy, resolve_held_lock
from dataforge.worker.run_state import FinishedStatus, duplicate_reason, peek_run_state, run_state

__all__ = [
    "LOCK_UNAVAILABLE_MAX_RETRIES",
    "LOCK_WAIT_HEADER",
    "DataForgeTask",
    "schedule_max_retries",
]

log = logging.getLogger("dataforge.tasks")

#: Policy ``retry``: how many times a run is re-queued while the lock store is unreachable
#: (backoff 1, 2, 4 ... capped at 60 s: about 6 minutes) before it fails with
#: ``LockUnavailableError``. A run never goes ahead unlocked under this policy.
LOCK_UNAVAILABLE_MAX_RETRIES = 10
_LOCK_UNAVAILABLE_BACKOFF_MAX = 60
#: Header of a delivery re-queued to wait for the lock of a dead delivery of the same run:
#: how many times it waited. It keeps waiting (rather than being taken for a live duplicate)
#: when it comes back, since a re-queued message is a new message, not a redelivered one.
LOCK_WAIT_HEADER = "dataforge_lock_waits"
#: Headers a re-queued delivery carries over (Celery puts custom headers on the request).
_CARRIED_HEADERS = (MAX_RETRIES_HEADER, SCHEDULE_ID_HEADER, DUE_AT_HEADER, OVERLAP_HEADER)


def _header(request: Any, name: str) -> Any:
    """A custom message header: Celery keeps it in ``request.headers`` or on the request."""
    headers = getattr(request, "headers", None) or {}
    value = headers.get(name)
    return getattr(request, name, None) if value is None else value


def schedule_max_retries(request: Any) -> int | None:
    """The ``max_retries`` beat put in the message headers, or ``None`` when absent/invalid."""
    raw = _header(request, MAX_RETRIES_HEADER)
    if raw is None or isinstance(raw, bool):
        return None
    try:
        value = int(raw)
    except (TypeError, ValueError):
        log.warning("ignoring invalid %s header %r", MAX_RETRIES_HEADER, raw)
        return None
    return value if value >= 0 else None


def _lock_waits(request: Any) -> int | None:
    """How many times this delivery already waited for a dead holder (``None``: never)."""
    raw = _header(request, LOCK_WAIT_HEADER)
    if raw is None or isinstance(raw, bool):
        return None
    try:
        return max(0, int(raw))
    except (TypeError, ValueError):
        return None


def _no_write(*args: Any, **kwargs: Any) -> None:
    return None


class _KeptResults:
    """A result backend seen by a duplicate delivery of a finished attempt: it reads through
    to the real backend and writes nothing, so the first run's stored outcome stays."""

    __slots__ = ("_backend",)

    def __init__(self, backend: Any) -> None:
        self._backend = backend

    def __getattr__(self, name: str) -> Any:
        if name in ("store_result", "forget") or name.startswith("mark_as_"):
            return _no_write
        return getattr(self._backend, name)


class DataForgeTask(Task):  # type: ignore[misc]
    """Base class of DataForge tasks: run lock, retries, job runner, execution recording."""

    #: Opt-in flag read by :mod:`dataforge.worker.recording`: only tasks that set it are
    #: recorded (Celery's internal tasks and plain tasks are not).
    dataforge_record: ClassVar[bool] = True
    #: ``False`` for tasks that may run in parallel with themselves (no lock taken).
    lock_enabled: ClassVar[bool] = True
    #: Replaces the task name in the lock key. The legacy compat shim sets it (or overrides
    #: :meth:`lock_key_for`) so a legacy message and the new task of the same schedule take
    #: the same key and exclude each other during a deploy.
    lock_name: ClassVar[str | None] = None

    # Class-level retry policy; the count is the schedule's (header), else max_retries.
    autoretry_for: ClassVar[tuple[type[BaseException], ...]] = (Exception,)
    #: Retrying cannot fix a job that does not accept its kwargs, and a run that hit its soft
    #: time limit would most likely hit it again.
    dont_autoretry_for: ClassVar[tuple[type[BaseException], ...]] = (JobArgumentError, SoftTimeLimitExceeded)
    retry_backoff: ClassVar[bool | int] = True
    retry_backoff_max: ClassVar[int] = 600
    retry_jitter: ClassVar[bool] = True
    max_retries: ClassVar[int | None] = 0

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        run = cls.__dict__.get("run")
        func = getattr(run, "__func__", run)
        if func is not None and inspect.iscoroutinefunction(func):
            raise TypeError(
                f"task {cls.__dict__.get('name') or cls.__name__!r}: {func.__module__}.{func.__qualname__} is an "
                "`async def`; Celery would return an un-awaited coroutine. Register a sync function that calls "
                "`return self.run_job(<your async job>, kwargs)` (bind=True) instead."
            )

    # -- locking --------------------------------------------------------------------------------
    def lock_key_for(self, kwargs: Mapping[str, Any]) -> str:
        """The run lock key for ``kwargs`` (override to share keys across task names)."""
        return lock_key(self.lock_name or self.name, kwargs)

    def before_start(self, task_id: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
        """Refuse a database without the schema; end a duplicate delivery of a finished
        attempt; else take the run lock, skip (held), or apply the lock-unavailable policy."""
        runtime = get_runtime(self.app)
        # A database without the schema fails the run at once with the fix in the message
        # (SchemaError is not retried: an exception here takes the failure path).
        runtime.schema.require()
        request = self.request
        state = run_state(request)
        state.lock_token = None
        if state.duplicate_of is not None:
            self._end_duplicate(task_id, int(request.retries or 0), state.duplicate_of)
        policy = overlap_policy(request)
        if not self.lock_enabled or policy == OverlapPolicy.ALLOW:
            return
        key = self.lock_key_for(kwargs or {})
        state.lock_key = key
        backend = runtime.locks
        ttl = runtime.settings.lock_ttl
        try:
            token = backend.acquire(key, ttl, owner=task_id)
        except LockUnavailableError as exc:
            self._on_lock_unavailable(runtime.settings.lock_unavailable, exc)
            return
        if token is None:
            if backend.held_by(key, task_id):
                delivery_info = getattr(request, "delivery_info", None) or {}
                if delivery_info.get("redelivered") or _lock_waits(request) is not None:
                    # The broker gave this message back because the consumer that had it
                    # died (RabbitMQ does so at once): the holder is that dead delivery,
                    # whose lock expires within one TTL. Wait for it, then run.
                    self._wait_for_dead_holder(runtime, key)
                # The holder is a delivery of this very task id, still running: a re-send
                # of the same run (beat's crash window, a failed flush). Not a skipped run:
                # the row and the counters stay the running delivery's to close.
                state.duplicate_of = ExecutionStatus.RUNNING
                self._end_duplicate(task_id, int(request.retries or 0), ExecutionStatus.RUNNING)
            try:
                held = resolve_held_lock(runtime, policy, key=key, task_id=task_id, kwargs=kwargs or {},
                                         request=request, revoke=self._terminate)
            except LockUnavailableError as exc:
                self._on_lock_unavailable(runtime.settings.lock_unavailable, exc)
                return
            if held.duplicate:
                state.duplicate_of = ExecutionStatus.RUNNING
                self._end_duplicate(task_id, int(request.retries or 0), ExecutionStatus.RUNNING)
            if held.token is None:
                self._skip(held.reason)
            token = held.token
        state.lock_token = token
        runtime.lock_renewer.hold(backend, key, token, ttl)

    def _wait_for_dead_holder(self, runtime: Runtime, key: str) -> NoReturn:
        """Re-queue this delivery (same task id, same attempt) to run when the dead holder's
        lock has expired; end this one unrun, without a record (the row is the run's)."""
        request = self.request
        state = run_state(request)
        waits = _lock_waits(request) or 0
        countdown = float(min(2**waits, max(1.0, runtime.settings.lock_ttl / 4)))
        headers = {name: value for name in _CARRIED_HEADERS if (value := _header(request, name)) is not None}
        headers[LOCK_WAIT_HEADER] = waits + 1
        self.signature_from_request(request, headers=headers, countdown=countdown).apply_async()
        state.waiting = True
        state.lock_key = key
        state.skip_reason = (f"lock {key} is held by a delivery of this run whose worker is gone; "
                             f"re-queued to run once it expires (retry in {countdown:g}s, wait {waits + 1})")
        log.warning("%s[%s]: %s", self.name, request.id, state.skip_reason)
        raise Ignore(state.skip_reason)

    def _terminate(self, task_id: str) -> None:
        """Stop a running run of this task (overlap ``cancel_previous``): revoke it with
        SIGTERM to the worker child that runs it."""
        self.app.control.revoke(task_id, terminate=True, signal="SIGTERM")

    def _on_lock_unavailable(self, policy: LockUnavailablePolicy, exc: LockUnavailableError) -> None:
        request = self.request
        if policy == LockUnavailablePolicy.RUN:
            log.warning("lock store unreachable, running %s[%s] WITHOUT its lock (policy run): %s",
                        self.name, request.id, exc)
            run_state(request).lock_key = None
            return
        if policy == LockUnavailablePolicy.SKIP:
            self._skip(f"lock store unreachable (policy skip): {exc}")
        countdown = get_exponential_backoff_interval(
            factor=1, retries=request.retries, maximum=_LOCK_UNAVAILABLE_BACKOFF_MAX, full_jitter=False
        )
        raise self.retry(exc=exc, countdown=countdown, max_retries=LOCK_UNAVAILABLE_MAX_RETRIES)

    def _skip(self, reason: str) -> NoReturn:
        """Record why, tell the result backend, and end the run without running it."""
        request = self.request
        state = run_state(request)
        state.skip_reason = reason
        if not request.is_eager and not self.ignore_result and request.id:
            # Without this, a skipped run's AsyncResult would stay STARTED (task_track_started)
            # or PENDING forever. IGNORED is the state eager mode reports too.
            try:
                self.backend.store_result(
                    request.id,
                    {"skipped": reason, "lock_key": state.lock_key},
                    states.IGNORED,
                    request=request,
                )
            except Exception:
                log.warning("could not store IGNORED for %s[%s]", self.name, request.id, exc_info=True)
        raise Ignore(reason)

    def _end_duplicate(self, task_id: str, attempt: int, status: FinishedStatus) -> NoReturn:
        """A duplicate delivery of an attempt that already finished: end it, unrun.

        No lock is taken and nothing is stored in the result backend: it holds the first
        run's real outcome (an IGNORED written over it would be wrong). The execution row and
        the counters are not touched either (see ``dataforge.worker.recording``).
        """
        reason = duplicate_reason(task_id, attempt, status)
        state = run_state(self.request)
        state.skip_reason = reason
        log.warning("%s[%s]: %s; not running it again", self.name, task_id, reason)
        raise Ignore(reason)

    @property
    def backend(self) -> Any:
        """The task's result backend; read-only while a duplicate delivery is being ended.

        Celery stores ``STARTED`` (``task_track_started``) between ``task_prerun`` and
        ``before_start``, so it would replace the first run's stored outcome before
        ``before_start`` can end the duplicate. Celery's backends only protect a stored
        ``SUCCESS`` from later writes, not ``FAILURE`` or ``IGNORED``: for a delivery marked a
        duplicate, writes to the backend are dropped instead.
        """
        backend = self._backend
        if backend is None:
            backend = self.app.backend
        stack = self.request_stack
        request = stack.top if stack is not None else None
        state = peek_run_state(request)
        if state is not None and (state.duplicate_of is not None or state.waiting):
            return _KeptResults(backend)
        return backend

    @backend.setter
    def backend(self, value: Any) -> None:
        self._backend = value

    def release_lock(self) -> None:
        """Release this run's lock now (idempotent, never raises)."""
        request = self.request
        state = peek_run_state(request)
        if state is None or not state.lock_token or not state.lock_key:
            return
        key, token = state.lock_key, state.lock_token
        state.lock_token = None
        try:
            runtime = get_runtime(self.app)
            runtime.lock_renewer.drop(key, token)
            if not runtime.locks.release(key, token):
                log.warning("lock %s not released by %s[%s]: expired and taken over, or the store is down "
                            "(it expires within its TTL)", key, self.name, request.id)
        except Exception:  # a release problem must never change the run's outcome
            log.warning("releasing lock %s failed; it expires within its TTL", key, exc_info=True)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        request = self.request_stack.top
        if request is None or request.called_directly:
            # Called as a plain function (`task(...)`): no trace, no lock, Celery's semantics.
            return super().__call__(*args, **kwargs)
        try:
            self._queue_start(request)
            result = self.run(*args, **kwargs)
        finally:
            self.release_lock()
        run_state(request).returned = True
        return result

    def _queue_start(self, request: Any) -> None:
        """The job is about to run: queue the attempt's ``running`` row (built at ``task_prerun``).

        Queued here rather than at ``task_prerun``: the writer writes a batch 50 ms after its
        first record, and ``before_start`` (the result backend's ``STARTED``, the lock) can take
        longer, so a start queued at prerun could be written, taking the row over, before
        ``before_start`` ended the delivery unrun (a duplicate, or one waiting for a dead
        holder's lock). A delivery that does not run never writes a start.
        """
        state = peek_run_state(request)
        if state is not None and state.start is not None:
            get_runtime(self.app).recorder.record(state.start)

    # -- retries --------------------------------------------------------------------------------
    def retry(
        self,
        args: Any = None,
        kwargs: Any = None,
        exc: BaseException | None = None,
        throw: bool = True,
        eta: Any = None,
        countdown: float | None = None,
        max_retries: int | None = None,
        **options: Any,
    ) -> Any:
        """Celery's retry, with the lock released first and the schedule's max_retries."""
        self.release_lock()
        if max_retries is None:
            max_retries = schedule_max_retries(self.request)
        try:
            return super().retry(args, kwargs, exc, throw, eta, countdown, max_retries, **options)
        finally:
            # Task.retry stores an explicit max_retries on the (shared) task instance and
            # Celery's autoretry wrapper only deletes it when retry() returns, which it never
            # does with throw=True: the next run would inherit another schedule's limit.
            self.__dict__.pop("override_max_retries", None)

    # -- jobs -----------------------------------------------------------------------------------
    def run_job(self, func: Callable[..., Any], kwargs: Mapping[str, Any], legacy_lock_key: bool = False) -> Any:
        """Call ``func`` with the kwargs its signature accepts; await it if it is a coroutine.

        ``scheduled_task_id`` and internal keys (``_lock_key``...) reach the job only if it
        declares them (``scheduled_task_id`` also through ``**kwargs``). ``legacy_lock_key``
        (set by ``dataforge convert`` for jobs that read it) gives the job the legacy executor's
        ``_lock_key="scheduled_task:<id>"`` wherever its signature can take it, as before. A
        coroutine runs on the worker process's one persistent event loop, so loop-bound clients
        kept between runs keep working.
        """
        if legacy_lock_key:
            bound = bind_kwargs(func, with_legacy_lock_key(kwargs), frozenset({LEGACY_LOCK_KEY}))
        else:
            bound = bind_kwargs(func, kwargs)
        if bound.unaccepted:
            run_state(self.request).dropped = bound.unaccepted
        result = func(**bound.kwargs)
        if inspect.isawaitable(result):
            return get_runtime(self.app).job_loop.run(result)
        return result
