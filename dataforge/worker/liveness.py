"""Which worker process runs an attempt, and whether that process is still alive.

Every execution row carries ``worker`` = ``<celery hostname>:<pid>#<incarnation>``: the
process that runs (or ran) the attempt, plus 8 random hex characters drawn when the process
started recording. The incarnation is what makes the identity safe to test for liveness: a
restarted container gives its worker children the same pids again, and without it a run of
the killed container would look alive for as long as the new one runs.

A process that records keeps a lease ``dataforge:worker:<worker>`` in the lock store (Redis,
or the ``dataforge_locks`` table), taken before its first row is written and renewed every
ttl/3 (at most every 4 s) by its recorder's writer thread (:class:`Heartbeat`). When the process dies, nobody
renews it and the lease expires within one ``DATAFORGE_LOCK_TTL``: that is how the leading
beat's reaper (:mod:`dataforge.scheduler.reaper`) tells a ``running`` row of a dead process
from one that is still running.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import threading
import time
from typing import Final

from dataforge.errors import LockUnavailableError
from dataforge.locks import LockBackend

__all__ = ["HEARTBEAT_PREFIX", "Heartbeat", "heartbeat_key", "new_incarnation", "process_identity", "renew_every"]

log = logging.getLogger(__name__)

HEARTBEAT_PREFIX: Final = "dataforge:worker:"
#: Separates the incarnation from ``<hostname>:<pid>`` in the ``worker`` column.
_INCARNATION_MARK: Final = "#"
#: ``dataforge_locks.key`` is VARCHAR(255).
_MAX_KEY: Final = 255
#: Longest time between two renewals: a lease the store lost (a restart without persistence)
#: is taken again within this, well inside the reaper's confirmation delay.
_RENEW_MAX: Final = 4.0


def renew_every(ttl: float) -> float:
    """Seconds between two renewals of a lease of ``ttl`` seconds."""
    return min(ttl / 3, _RENEW_MAX)


def process_identity(hostname: str | None, incarnation: str) -> str:
    """The ``worker`` value of this process: ``<hostname>:<pid>#<incarnation>``."""
    return f"{hostname or 'local'}:{os.getpid()}{_INCARNATION_MARK}{incarnation}"


def new_incarnation() -> str:
    return secrets.token_hex(4)


def heartbeat_key(worker: str | None) -> str | None:
    """The lease key of ``worker``; ``None`` for a ``worker`` value without an incarnation
    (rows written before heartbeats existed, or by hand): its liveness cannot be told."""
    if not worker or _INCARNATION_MARK not in worker:
        return None
    key = f"{HEARTBEAT_PREFIX}{worker}"
    if len(key) > _MAX_KEY:
        key = f"{HEARTBEAT_PREFIX}sha256-{hashlib.sha256(worker.encode('utf-8')).hexdigest()}"
    return key


class Heartbeat:
    """The lease that says "this process is alive"; :meth:`beat` keeps it (never raises).

    The lease is owned by the ``worker`` string itself, so a reader checks it with
    ``LockBackend.held_by(key, worker)``. A renewal that finds the lease gone (the store
    restarted empty, or was unreachable for longer than the TTL) takes it again at once.
    """

    def __init__(self, worker: str, ttl: float) -> None:
        self.worker = worker
        self.ttl = ttl
        self.key = heartbeat_key(worker)
        self._token: str | None = None
        self._due = 0.0
        self._failing = False
        self._lock = threading.Lock()

    def due_in(self) -> float:
        """Seconds until the next renewal is due (0 when it is due now)."""
        return max(0.0, self._due - time.monotonic())

    def beat(self, locks: LockBackend) -> None:
        """Take or renew the lease if it is due (from any thread)."""
        with self._lock:
            self._beat(locks)

    def _beat(self, locks: LockBackend) -> None:
        if self.key is None or time.monotonic() < self._due:
            return
        try:
            if self._token is not None and locks.renew(self.key, self._token, self.ttl):
                ok = True
            else:
                token = locks.acquire(self.key, self.ttl, owner=self.worker)
                if token is not None:
                    self._token = token
                ok = token is not None or locks.held_by(self.key, self.worker)
        except LockUnavailableError as exc:
            ok = False
            if not self._failing:
                log.warning("heartbeat %s: lock store unreachable (%s); retrying every second", self.key, exc)
        except Exception:  # the heartbeat must never take the writer down
            ok = False
            log.warning("heartbeat %s failed", self.key, exc_info=True)
        if ok and self._failing:
            log.info("heartbeat %s restored", self.key)
        self._failing = not ok
        self._due = time.monotonic() + (renew_every(self.ttl) if ok else min(1.0, self.ttl / 3))

    def stop(self, locks: LockBackend) -> None:
        """Release the lease (graceful exit): the process is gone, not lost."""
        with self._lock:
            if self.key is not None and self._token is not None:
                locks.release(self.key, self._token)
                self._token = None
            self._due = float("inf")
