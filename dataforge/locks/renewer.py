"""Keeping held locks alive: one renewal thread per worker process."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from dataforge.locks.backend import LockBackend

__all__ = ["LockRenewer"]

log = logging.getLogger(__name__)


@dataclass
class _Held:
    backend: LockBackend
    key: str
    token: str
    ttl: float
    due: float


class LockRenewer:
    """Renews every lock this process holds, every ttl/3, from ONE daemon thread.

    A thread per task would double the threads of a busy worker and cost a thread start per
    run; one thread that sleeps until the earliest renewal is due costs a dict insert per
    run. The thread starts on first use (so it is created in the prefork child, never
    inherited across a fork). A renewal that fails (lock taken over, store down) drops the
    lock from the set and logs a warning: the run goes on, but is no longer exclusive.
    """

    def __init__(self) -> None:
        self._held: dict[tuple[str, str], _Held] = {}
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._wake_at = 0.0
        #: How many locks this process lost while their run was still going.
        self.lost = 0

    def hold(self, backend: LockBackend, key: str, token: str, ttl: float) -> None:
        """Keep ``key`` alive until :meth:`drop`."""
        due = time.monotonic() + ttl / 3
        with self._cond:
            self._held[(key, token)] = _Held(backend, key, token, ttl, due)
            if self._thread is None or not self._thread.is_alive():
                self._stopped = False
                self._thread = threading.Thread(target=self._run, name="dataforge-lock-renewer", daemon=True)
                self._thread.start()
            elif due < self._wake_at:
                # Wake the thread only if this lock is due before its current sleep ends (with
                # one TTL for all runs, never): no thread switch per run in the steady state.
                self._cond.notify()

    def drop(self, key: str, token: str) -> None:
        with self._cond:
            self._held.pop((key, token), None)

    def holding(self) -> list[str]:
        with self._cond:
            return [h.key for h in self._held.values()]

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._stopped:
                    return
                now = time.monotonic()
                due = [h for h in self._held.values() if h.due <= now]
                if not due:
                    self._wake_at = min((h.due for h in self._held.values()), default=now + 60.0)
                    self._cond.wait(max(self._wake_at - now, 0.01))
                    continue
                for h in due:
                    h.due = now + h.ttl / 3
            for h in due:
                if h.backend.renew(h.key, h.token, h.ttl):
                    continue
                with self._cond:
                    still_held = self._held.pop((h.key, h.token), None) is not None
                if still_held:
                    self.lost += 1
                    log.warning("lost lock %s while its run was still going (taken over or store down)", h.key)

    def close(self) -> None:
        with self._cond:
            self._stopped = True
            self._held.clear()
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def after_fork(self) -> None:
        # The thread did not survive the fork; forget the parent's bookkeeping.
        self._thread = None
        self._held.clear()
