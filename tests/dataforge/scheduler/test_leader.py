"""Beat's leader lease: timing derived from the failover bound, takeover, store outages.

Pure tests drive :class:`LeaderLease` with a fake clock and an in-memory store that expires
leases on that clock; the last tests run the same lease on the real Redis and database lock
backends of :mod:`dataforge.locks`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from dataforge.db import Database
from dataforge.errors import LockUnavailableError
from dataforge.locks import DatabaseLockBackend, LockBackend, RedisLockBackend
from dataforge.scheduler.leader import LeaderLease, beat_identity, dead_leader_here, lease_timing
from tests.conftest import create_schema


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


class MemoryStore:
    """The LockBackend contract on a dict, expiring on the test's clock; can go down."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.leases: dict[str, tuple[str, float]] = {}
        self.down = False
        self._n = 0

    def _live(self, key: str) -> tuple[str, float] | None:
        lease = self.leases.get(key)
        return lease if lease is not None and lease[1] > self.clock() else None

    def acquire(self, key: str, ttl: float, owner: str | None = None) -> str | None:
        if self.down:
            raise LockUnavailableError(key, ConnectionError("store down"))
        if self._live(key) is not None:
            return None
        self._n += 1
        token = f"t{self._n}@{owner}"
        self.leases[key] = (token, self.clock() + ttl)
        return token

    def renew(self, key: str, token: str, ttl: float) -> bool:
        lease = self._live(key)
        if self.down or lease is None or lease[0] != token:
            return False
        self.leases[key] = (token, self.clock() + ttl)
        return True

    def release(self, key: str, token: str) -> bool:
        lease = self._live(key)
        if self.down or lease is None or lease[0] != token:
            return False
        del self.leases[key]
        return True

    def release_owned_by(self, key: str, owner: str) -> bool:
        if not self.held_by(key, owner):
            return False
        del self.leases[key]
        return True

    def held_by(self, key: str, owner: str) -> bool:
        lease = self._live(key)
        return lease is not None and lease[0].split("@", 1)[1] == owner

    def close(self) -> None:
        pass

    def after_fork(self) -> None:
        pass


def test_timing_keeps_takeover_within_the_failover_bound() -> None:
    t = lease_timing(30.0, 5.0)
    assert (t.poll, t.ttl) == (5.0, 25.0) and t.renew_every == pytest.approx(25.0 / 3)
    assert t.ttl + t.poll == 30.0
    short = lease_timing(3.0, 5.0)
    assert (short.poll, short.ttl) == (0.5, 2.5)
    # The leader renews several times per lease and never sleeps through a renewal.
    assert short.renew_every < short.ttl


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def memory(clock: Clock) -> MemoryStore:
    return MemoryStore(clock)


def lease(store: LockBackend, clock: Clock, name: str) -> LeaderLease:
    return LeaderLease(store, lease_timing(30.0, 5.0), name, clock=clock)


def step(clock: Clock, leases: list[LeaderLease], seconds: float, dt: float = 0.1) -> list[tuple[float, str]]:
    """Tick every lease every ``dt`` for ``seconds``; returns (time, name) of every leader seen."""
    seen = []
    end = clock.t + seconds
    while clock.t < end:
        for ls in leases:
            if ls.ensure():
                seen.append((clock.t, ls.identity))
        clock.t += dt
    return seen


def test_one_leader_and_renewals_keep_it(clock: Clock, memory: MemoryStore) -> None:
    a, b = lease(memory, clock, "a"), lease(memory, clock, "b")
    seen = step(clock, [a, b], 120)
    assert {name for _, name in seen} == {"a"}
    assert a.is_leader and not b.is_leader


@pytest.mark.parametrize("dies_after", [0.05, 3.0, 8.3, 8.4, 20.0, 24.9])
def test_a_dead_leader_is_replaced_within_the_failover_bound(
    clock: Clock, memory: MemoryStore, dies_after: float
) -> None:
    a, b = lease(memory, clock, "a"), lease(memory, clock, "b")
    step(clock, [a, b], 50)  # steady state: a leads, b polls
    step(clock, [a, b], dies_after, dt=0.05)
    died = clock.t
    seen = step(clock, [b], 40, dt=0.05)  # a is gone: no renewals, no release
    takeover = seen[0][0] - died
    assert takeover <= 30.0 + 0.1, f"took over {takeover:.2f}s after the leader died"


def test_graceful_release_hands_over_at_the_next_poll(clock: Clock, memory: MemoryStore) -> None:
    a, b = lease(memory, clock, "a"), lease(memory, clock, "b")
    step(clock, [a, b], 10)
    a.release()
    assert not a.is_leader
    released = clock.t
    seen = step(clock, [b], 10, dt=0.05)
    assert seen and seen[0][0] - released <= a.timing.poll + 0.1


def test_store_outage_leader_keeps_its_trusted_lease_then_steps_down(
    clock: Clock, memory: MemoryStore, caplog: pytest.LogCaptureFixture
) -> None:
    a = lease(memory, clock, "a")
    assert a.ensure()
    memory.down = True
    with caplog.at_level(logging.INFO):
        trusted = step(clock, [a], 30, dt=0.1)
    # Led until 90 % of the lease after its last renewal, never beyond the lease itself.
    last = max(t for t, _ in trusted)
    trusted_until = 100.0 + 0.9 * a.timing.ttl  # acquired at 100.0, never renewed since
    assert trusted_until - 0.1 - 1e-9 <= last < trusted_until, (last, trusted_until)
    assert not a.is_leader
    assert caplog.text.count("lock store unreachable") == 1
    assert caplog.text.count("no longer the leader") == 1


def test_after_a_store_outage_some_beat_leads_again_within_the_bound(clock: Clock, memory: MemoryStore) -> None:
    a, b = lease(memory, clock, "a"), lease(memory, clock, "b")
    assert a.ensure()
    memory.down = True
    step(clock, [a, b], 60)
    assert not a.is_leader and not b.is_leader
    memory.down = False
    back = clock.t
    seen = step(clock, [a, b], 40, dt=0.05)
    assert seen[0][0] - back <= a.timing.failover
    assert len({name for _, name in seen}) == 1


def test_seconds_until_attention_bounds_the_sleep(clock: Clock, memory: MemoryStore) -> None:
    a, b = lease(memory, clock, "a"), lease(memory, clock, "b")
    a.ensure()
    b.ensure()
    assert a.seconds_until_attention() == pytest.approx(a.timing.renew_every)
    assert b.seconds_until_attention() == pytest.approx(b.timing.poll)


# --- the real lock backends ---------------------------------------------------------------------------------


@pytest.fixture(params=["redis", "sqlite", "postgres"])
def real_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LockBackend]:
    if request.param == "redis":
        backend: LockBackend = RedisLockBackend(request.getfixturevalue("redis_url"))
        yield backend
        backend.close()
        return
    url = f"sqlite:///{tmp_path / 'locks.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    create_schema(url)
    db = Database(url)
    yield DatabaseLockBackend(db)
    db.dispose()


def test_real_backends_one_leader_and_handover(real_backend: LockBackend) -> None:
    a = LeaderLease(real_backend, lease_timing(30.0, 5.0), "beat-a")
    b = LeaderLease(real_backend, lease_timing(30.0, 5.0), "beat-b")
    assert a.ensure()
    assert not b.ensure()
    a.release()
    b._next_attempt = 0.0  # its next poll, now
    assert b.ensure()
    assert not a.ensure()


# --- a beat restarted on the host of a dead leader ------------------------------------------------------------


@pytest.mark.parametrize(
    ("recorded", "alive_pids", "expected"),
    [
        ("beat@web-1:4242", set(), "beat@web-1:4242"),  # gone: reclaim
        ("beat@web-1:4242", {4242}, None),  # alive: never
        ("beat@web-1:77", {77}, "beat@web-1:77"),  # this very pid (a container restarted): the old one is gone
        ("beat@web-2:4242", set(), None),  # another host: nothing is known about its processes
        ("beat@web-10:4242", set(), None),  # a host whose name starts like ours
        ("beat@web-1:", set(), None),
        ("beat@web-1:x", set(), None),
        ("", set(), None),
        (None, set(), None),
    ],
)
def test_only_a_dead_leader_of_this_host_is_reclaimed(
    recorded: str | None, alive_pids: set[int], expected: str | None
) -> None:
    assert dead_leader_here(recorded, "web-1", 77, alive_pids.__contains__) == expected


def test_a_reclaimed_lease_is_taken_at_once_not_after_it_runs_out(clock: Clock, memory: MemoryStore) -> None:
    dead = lease(memory, clock, beat_identity("web-1", 4242))
    assert dead.ensure()  # then killed: no release
    clock.t += 1
    restarted = lease(memory, clock, beat_identity("web-1", 4300))
    assert not restarted.ensure(), "the dead leader's lease still runs"
    assert restarted.reclaim(beat_identity("web-1", 4242))
    assert restarted.ensure(), "taken at the next ensure, not one lease later"
    # A lease that is not the dead one's (taken meanwhile by another beat) is left alone.
    other = lease(memory, clock, beat_identity("web-2", 9))
    assert not other.reclaim(beat_identity("web-1", 4242))
    assert restarted.is_leader
