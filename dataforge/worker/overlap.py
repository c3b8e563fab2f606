"""What a run does when its schedule's previous run still holds the run lock (the overlap policy).

Beat puts the schedule's :class:`~dataforge.protocol.OverlapPolicy` in the message
(:data:`~dataforge.protocol.OVERLAP_HEADER`, absent for ``skip``);
:meth:`DataForgeTask.before_start <dataforge.worker.task.DataForgeTask.before_start>` reads it
with :func:`overlap_policy` and, when the lock is held, asks :func:`resolve_held_lock`. Every
decision is taken in the lock store (the same one beat's lease and the run locks use) or the
database, never in a process's memory, so it holds across workers and hosts:

* ``skip``: the run is skipped (recorded ``skipped``).
* ``buffer_one``: the run takes the schedule's single *waiting slot* (a second lock,
  :func:`waiting_key`) and waits, in its worker process, until the running one releases the run
  lock, then runs. A run that finds the slot taken is skipped: at most one run waits. The wait
  counts towards the run's own time limit: it gives up (skipped) a second before its soft limit.
* ``allow``: no lock is taken at all (the task never calls this module).
* ``cancel_previous``: the runs of the schedule that the execution records show running and the
  lock store shows holding the lock are revoked with ``terminate`` (SIGTERM to their worker
  child, through the broker's broadcast: Redis or RabbitMQ; the embedded SQL broker has none),
  then the run waits for the lock the worker's parent frees (within the lock's TTL if that
  worker is gone too) and runs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import select

from dataforge.models import TaskExecution
from dataforge.protocol import OVERLAP_HEADER, SCHEDULE_ID_KWARG, ExecutionStatus, OverlapPolicy

if TYPE_CHECKING:
    from dataforge.locks import LockBackend
    from dataforge.runtime import Runtime

__all__ = ["WAIT_POLL", "HeldLock", "overlap_policy", "resolve_held_lock", "waiting_key"]

log = logging.getLogger(__name__)

#: How often a waiting run asks the lock store whether the lock is free (seconds).
WAIT_POLL: Final = 0.2
#: A waiting run gives up this long before its soft time limit, so it ends skipped rather than
#: failed by the limit in the middle of waiting.
_LIMIT_MARGIN: Final = 1.0
#: After revoking the running run, how long beyond the lock's TTL to wait for the lock.
_CANCEL_SLACK: Final = 5.0


def overlap_policy(request: Any) -> OverlapPolicy:
    """The policy beat sent in the message headers; ``skip`` when absent or unreadable."""
    headers = getattr(request, "headers", None) or {}
    raw = headers.get(OVERLAP_HEADER)
    if raw is None:
        raw = getattr(request, OVERLAP_HEADER, None)  # Celery also copies headers onto the request
    if raw is None:
        return OverlapPolicy.SKIP
    try:
        return OverlapPolicy(str(raw))
    except ValueError:
        log.warning("ignoring invalid %s header %r; the run is skipped if the lock is held", OVERLAP_HEADER, raw)
        return OverlapPolicy.SKIP


def waiting_key(key: str) -> str:
    """The lock that holds a schedule's one waiting run (``buffer_one``)."""
    return f"{key}:waiting"


@dataclass(frozen=True, slots=True)
class HeldLock:
    """What to do with a run whose lock was held: run with ``token``, or skip because ``reason``;
    ``duplicate``: the holder is this very run (another delivery of the same task id)."""

    token: str | None
    reason: str
    duplicate: bool = False


def _deadline(request: Any, clock: Callable[[], float], cap: float | None) -> float | None:
    """When a wait must end: before the run's own soft (else hard) time limit, and ``cap``."""
    limits = getattr(request, "timelimit", None) or (None, None)
    hard, soft = (list(limits) + [None, None])[:2]
    limit = soft or hard
    bounds = [b for b in (None if not limit else float(limit) - _LIMIT_MARGIN, cap) if b is not None]
    return clock() + min(bounds) if bounds else None


def _wait_for(backend: LockBackend, key: str, owner: str, ttl: float, deadline: float | None,
              clock: Callable[[], float], sleep: Callable[[float], None]) -> str | None:
    while True:
        token = backend.acquire(key, ttl, owner=owner)
        if token is not None:
            return token
        if deadline is not None and clock() + WAIT_POLL > deadline:
            return None
        sleep(WAIT_POLL)


def _running_holders(runtime: Runtime, backend: LockBackend, key: str, kwargs: Mapping[str, Any],
                     task_id: str) -> list[str]:
    """Task ids of the schedule's runs that the records show running and that hold ``key``."""
    schedule_id = kwargs.get(SCHEDULE_ID_KWARG)
    if schedule_id is None:
        return []
    te = TaskExecution
    query = select(te.celery_task_id).where(
        te.scheduled_task_id == int(schedule_id), te.status == ExecutionStatus.RUNNING.value,
        te.celery_task_id.is_not(None), te.celery_task_id != task_id,
    )  # fmt: skip
    with runtime.db.engine.connect() as conn:
        candidates = [str(tid) for tid in conn.execute(query).scalars()]
    return [tid for tid in candidates if backend.held_by(key, tid)]


def resolve_held_lock(
    runtime: Runtime,
    policy: OverlapPolicy,
    *,
    key: str,
    task_id: str,
    kwargs: Mapping[str, Any],
    request: Any,
    revoke: Callable[[str], None],
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> HeldLock:
    """The run lock ``key`` is held by another run: apply ``policy`` (``allow`` never gets here).

    Raises :class:`~dataforge.errors.LockUnavailableError` if the lock store fails meanwhile
    (the caller's lock-unavailable policy applies).
    """
    backend, ttl = runtime.locks, runtime.settings.lock_ttl
    if policy == OverlapPolicy.BUFFER_ONE:
        slot = waiting_key(key)
        slot_token = backend.acquire(slot, ttl, owner=task_id)
        if slot_token is None:
            if backend.held_by(slot, task_id):
                return HeldLock(None, f"lock {slot} is held by another delivery of this run", duplicate=True)
            return HeldLock(None, f"lock {key} is held and another run already waits for it (overlap buffer_one)")
        runtime.lock_renewer.hold(backend, slot, slot_token, ttl)
        started = clock()
        try:
            token = _wait_for(backend, key, task_id, ttl, _deadline(request, clock, None), clock, sleep)
        finally:
            runtime.lock_renewer.drop(slot, slot_token)
            backend.release(slot, slot_token)
        if token is None:
            return HeldLock(None, f"waited {clock() - started:.1f}s for lock {key}, up to this run's time limit "
                                  "(overlap buffer_one)")
        log.info("run %s waited %.1fs for the previous run to end (overlap buffer_one)", task_id, clock() - started)
        return HeldLock(token, "")
    if policy == OverlapPolicy.CANCEL_PREVIOUS:
        holders = _running_holders(runtime, backend, key, kwargs, task_id)
        for holder in holders:
            log.warning("run %s: terminating the previous run %s of its schedule (overlap cancel_previous)",
                        task_id, holder)
            revoke(holder)
        started = clock()
        token = _wait_for(backend, key, task_id, ttl, _deadline(request, clock, ttl + _CANCEL_SLACK), clock, sleep)
        if token is None:
            cancelled = ", ".join(holders) or "none found running"
            return HeldLock(None, f"lock {key} still held {clock() - started:.1f}s after cancelling the previous run "
                                  f"({cancelled}; overlap cancel_previous)")
        return HeldLock(token, "")
    return HeldLock(None, f"lock {key} is held by another run")
