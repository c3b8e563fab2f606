"""Beat's leader lease: any number of beats may run, one dispatches.

The lease is a lock in the runtime's lock backend (:mod:`dataforge.locks`: Redis when
``DATAFORGE_REDIS_URL`` is set, else the ``dataforge_locks`` table), so the embedded default
needs nothing extra. Timing, from ``Settings.beat_leader_ttl`` = *T*, the promised failover
bound (docs/scheduler.md, "Several beats"):

* standby beats try to take the lease every ``poll = min(max_interval, T / 6)`` seconds;
* the lease lasts ``ttl = T - poll``, so a leader killed right after renewing is replaced at
  most ``ttl + poll = T`` seconds later;
* the leader renews every ``ttl / 3`` and believes it leads only until ``0.9 * ttl`` after the
  start of its last successful acquire/renew (measured on its own monotonic clock, so the
  store's clock and other hosts' clocks do not matter);
* a graceful stop releases the lease: a standby takes over at its next poll;
* a beat restarted on the host of a leader that was killed (kill -9, OOM) does not wait for
  that lease to run out: the dead leader's identity (``beat@<host>:<pid>``, recorded on the host
  when it became leader) names a process that no longer exists on this host
  (:func:`dead_leader_here`), so its lease is released and taken at once
  (:meth:`LeaderLease.reclaim`). A leader that is alive is never reclaimed: another host's
  leader, or a live process on this one, keeps its lease.

A lease can still be believed by two beats at once (a leader paused longer than its lease, a
network partition): the lease only keeps the common case to one dispatcher. The fence is the
compare-and-set on ``next_run_at`` (:mod:`dataforge.scheduler.store`), which makes a second
dispatcher's send of the same run impossible, whoever believes what.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

from dataforge.errors import LockUnavailableError
from dataforge.locks import LockBackend

__all__ = ["LEADER_KEY", "LeaderLease", "LeaseTiming", "beat_identity", "dead_leader_here", "lease_timing"]

log = logging.getLogger(__name__)

#: One leader per database (and lock store): the key every beat of a deployment competes for.
LEADER_KEY: Final = "dataforge:beat:leader"
#: Fraction of the lease the leader trusts, leaving room for the store's round trip.
_TRUST: Final = 0.9


def beat_identity(host: str, pid: int) -> str:
    """How a beat names itself in the lease (and in its logs)."""
    return f"beat@{host}:{pid}"


def dead_leader_here(recorded: str | None, host: str, pid: int, alive: Callable[[int], bool]) -> str | None:
    """``recorded`` (the identity the last leader of this host wrote down), if it names a beat of
    this host that is gone: no process with its pid, or its pid is this very process's (a
    container restarted with the same pid). ``None`` otherwise, the safe side: a live process
    keeps its lease, whatever it is."""
    prefix = beat_identity(host, 0)[:-1]
    if not recorded or not recorded.startswith(prefix):
        return None
    try:
        old = int(recorded[len(prefix):])
    except ValueError:
        return None
    return recorded if old == pid or not alive(old) else None


class LeaseTiming:
    """The three durations derived from the failover bound (see the module docstring)."""

    __slots__ = ("failover", "poll", "ttl", "renew_every")

    def __init__(self, failover: float, poll: float, ttl: float) -> None:
        self.failover = failover
        self.poll = poll
        self.ttl = ttl
        self.renew_every = ttl / 3

    def __repr__(self) -> str:
        return f"LeaseTiming(failover={self.failover}, poll={self.poll}, ttl={self.ttl})"


def lease_timing(failover: float, max_interval: float) -> LeaseTiming:
    """Poll, TTL and renewal period that keep takeover within ``failover`` seconds."""
    poll = min(max_interval, failover / 6)
    return LeaseTiming(failover=failover, poll=poll, ttl=failover - poll)


class LeaderLease:
    """Acquire, renew and release beat's lease; never raises on a store outage.

    :meth:`ensure` is called on every tick and costs nothing (no I/O) until a renewal or, on a
    standby, the next takeover attempt is due.
    """

    def __init__(
        self,
        backend: LockBackend,
        timing: LeaseTiming,
        identity: str,
        *,
        key: str = LEADER_KEY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backend = backend
        self.timing = timing
        self.identity = identity
        self.key = key
        self._clock = clock
        self._token: str | None = None
        self._valid_until = 0.0
        self._next_attempt = 0.0
        self._store_down = False
        self._announced_standby = False

    @property
    def is_leader(self) -> bool:
        """Leader and the lease is still trusted now."""
        return self._token is not None and self._clock() < self._valid_until

    def ensure(self) -> bool:
        """Take or renew the lease when due; whether this beat leads now."""
        now = self._clock()
        if self._token is not None:
            if now >= self._next_attempt:
                self._renew(now)
            if self._token is not None and self._clock() >= self._valid_until:
                self._lose("its lease ran out before it could be renewed")
            return self._token is not None
        if now >= self._next_attempt:
            self._acquire(now)
        return self._token is not None

    def _acquire(self, started: float) -> None:
        self._next_attempt = started + self.timing.poll
        try:
            token = self.backend.acquire(self.key, self.timing.ttl, owner=self.identity)
        except LockUnavailableError as exc:
            if not self._store_down:
                log.warning(
                    "beat leader lease: lock store unreachable (%r); retrying every %.1fs", exc.cause, self.timing.poll
                )
                self._store_down = True
            return
        if self._store_down:
            log.info("beat leader lease: lock store reachable again")
            self._store_down = False
        if token is None:
            if not self._announced_standby:
                log.info("beat: another beat holds the leader lease; %s stands by (takeover within %.0fs)",
                         self.identity, self.timing.failover)
                self._announced_standby = True
            return
        self._token = token
        self._valid_until = started + _TRUST * self.timing.ttl
        self._next_attempt = started + self.timing.renew_every
        self._announced_standby = False
        log.info("beat: %s is the leader now (lease %.1fs, renewed every %.1fs)",
                 self.identity, self.timing.ttl, self.timing.renew_every)

    def _renew(self, started: float) -> None:
        assert self._token is not None
        if self.backend.renew(self.key, self._token, self.timing.ttl):
            self._valid_until = started + _TRUST * self.timing.ttl
            self._next_attempt = started + self.timing.renew_every
            return
        # Lost to another beat, or the store is down: keep trying until the lease we had runs
        # out (another beat cannot take it before), then step down.
        self._next_attempt = started + min(self.timing.poll, self.timing.renew_every)

    def _lose(self, why: str) -> None:
        log.warning("beat: %s is no longer the leader: %s", self.identity, why)
        self._token = None
        self._next_attempt = self._clock()

    def reclaim(self, dead: str) -> bool:
        """Release a lease held by ``dead`` (a leader known to be gone, see
        :func:`dead_leader_here`) so that the next :meth:`ensure` takes it at once."""
        try:
            if not self.backend.held_by(self.key, dead) or not self.backend.release_owned_by(self.key, dead):
                return False
        except LockUnavailableError:
            return False
        log.warning("beat: the leader lease of %s, which is gone, is released; %s takes over now", dead, self.identity)
        self._next_attempt = self._clock()
        return True

    def seconds_until_attention(self) -> float:
        """How long the caller may wait before :meth:`ensure` has work to do."""
        return max(0.0, self._next_attempt - self._clock())

    def release(self) -> None:
        """Give the lease up (graceful stop) so a standby takes over at its next poll."""
        token, self._token = self._token, None
        if token is not None and self.backend.release(self.key, token):
            log.info("beat: %s released the leader lease", self.identity)
