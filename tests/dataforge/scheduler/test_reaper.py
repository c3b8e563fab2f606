"""The reaper on real databases and lock stores: dead workers' running rows become lost, once."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from dataforge.errors import LockUnavailableError
from dataforge.models import ScheduledTask, TaskExecution, utcnow
from dataforge.runtime import Runtime
from dataforge.scheduler.reaper import CONFIRM, REAP_EVERY, Reaper
from dataforge.settings import Settings
from dataforge.worker.liveness import Heartbeat
from tests.dataforge.locks.test_locks import lease_left

DEAD = "w@host:11#deadbeef"
ALIVE = "w@host:12#cafef00d"
OLD_FORM = "w@host:13"


@pytest.fixture(params=["embedded", "server"])
def runtime(request: pytest.FixtureRequest) -> Iterator[Runtime]:
    settings: Settings = request.getfixturevalue(f"{request.param}_settings")
    rt = Runtime(settings)
    yield rt
    rt.close()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _schedule(rt: Runtime) -> int:
    with rt.db.session() as s:
        row = ScheduledTask(name="s", task_type="interval", interval_seconds=60, task_name="t.job")
        s.add(row)
        s.flush()
        return row.id


def _running(rt: Runtime, tid: str, worker: str | None, sid: int, status: str = "running") -> None:
    with rt.db.session() as s:
        s.add(TaskExecution(celery_task_id=tid, attempt=0, status=status, worker=worker, scheduled_task_id=sid,
                            task_name="t.job", started_at=utcnow() - timedelta(seconds=30)))  # fmt: skip


def _status(rt: Runtime) -> dict[str, tuple[str, str | None]]:
    with rt.db.session() as s:
        return {r.celery_task_id: (r.status, r.error) for r in s.scalars(select(TaskExecution))}  # type: ignore[misc]


def _round(reaper: Reaper, rt: Runtime, clock: Clock, advance: float) -> None:
    clock.now += advance
    assert reaper.run(rt) == REAP_EVERY


def test_a_dead_workers_run_is_reaped_after_two_looks_and_counted_once(runtime: Runtime) -> None:
    sid = _schedule(runtime)
    _running(runtime, "old", DEAD, sid)  # running before the reaper started: found by the sweep
    heartbeat = Heartbeat(ALIVE, ttl=30)
    heartbeat.beat(runtime.locks)
    clock = Clock()
    reaper = Reaper(clock=clock)
    _round(reaper, runtime, clock, 0)
    _running(runtime, "alive", ALIVE, sid)
    _running(runtime, "unjudged", OLD_FORM, sid)
    _running(runtime, "new-dead", DEAD, sid)
    _running(runtime, "done", DEAD, sid, status="success")
    assert _status(runtime)["old"][0] == "running"  # seen dead once: not yet
    _round(reaper, runtime, clock, REAP_EVERY)
    assert _status(runtime)["old"][0] == "running"
    _round(reaper, runtime, clock, REAP_EVERY)  # CONFIRM after the first look
    status = _status(runtime)
    assert status["old"][0] == "lost" and "stopped renewing its liveness lease" in (status["old"][1] or "")
    assert status["new-dead"][0] == "running"  # first seen one round later
    _round(reaper, runtime, clock, REAP_EVERY)
    status = _status(runtime)
    assert {k: v[0] for k, v in status.items()} == {
        "old": "lost", "new-dead": "lost", "alive": "running", "unjudged": "running", "done": "success",
    }  # fmt: skip
    with runtime.db.session() as s:
        sched = s.get(ScheduledTask, sid)
        assert sched is not None and (sched.lost_count, sched.failure_count, sched.last_status) == (2, 0, "lost")
    for _ in range(3):
        _round(reaper, runtime, clock, REAP_EVERY)
    assert reaper.reaped == 2
    with runtime.db.session() as s:
        sched = s.get(ScheduledTask, sid)
        assert sched is not None and sched.lost_count == 2
    heartbeat.stop(runtime.locks)


def test_a_row_taken_over_by_a_live_delivery_is_not_reaped(runtime: Runtime) -> None:
    sid = _schedule(runtime)
    _running(runtime, "moved", DEAD, sid)
    clock = Clock()
    reaper = Reaper(clock=clock)
    _round(reaper, runtime, clock, 0)
    _round(reaper, runtime, clock, REAP_EVERY)  # seen dead
    heartbeat = Heartbeat(ALIVE, ttl=30)
    heartbeat.beat(runtime.locks)
    with runtime.db.session() as s:  # a redelivery took the row over
        s.execute(update(TaskExecution).where(TaskExecution.celery_task_id == "moved").values(worker=ALIVE))
    _round(reaper, runtime, clock, CONFIRM)
    _round(reaper, runtime, clock, CONFIRM)
    assert _status(runtime)["moved"][0] == "running"
    heartbeat.stop(runtime.locks)


class _Unreachable:
    """A lock store that cannot be reached (pure logic of the probe: nothing is judged)."""

    def acquire(self, key: str, ttl: float, owner: str | None = None) -> str | None:
        raise LockUnavailableError(key)

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"{name} must not be called when the store is unreachable")


def test_nothing_is_judged_while_the_lock_store_is_unreachable(runtime: Runtime, monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:  # fmt: skip
    sid = _schedule(runtime)
    _running(runtime, "r", DEAD, sid)
    monkeypatch.setattr(runtime, "_locks", _Unreachable())
    clock = Clock()
    reaper = Reaper(clock=clock)
    for _ in range(5):
        _round(reaper, runtime, clock, CONFIRM)
    assert _status(runtime)["r"][0] == "running"


@pytest.mark.parametrize("phase", [0.001, 1.0, 2.5, 4.999])
def test_a_dead_processs_run_is_lost_within_its_lease_ttl_plus_15s(runtime: Runtime, phase: float) -> None:
    """docs/runtime.md: the reaper runs every 5 s and reaps a process seen without its lease for
    9 s (two looks); a dead process's lease expires within one lock TTL, so its runs are lost
    within TTL + 15 s. The lease lasts its TTL and no longer (checked here and, per backend,
    in tests/dataforge/locks/); the reaper's share is then 15 s from the moment the lease is
    gone, whichever point between two rounds that is (``phase`` after the last round that
    saw it; just after a round is the worst case). Rounds come as often as the reaper asks,
    as beat's duty runner calls it, on a fake clock."""
    assert (REAP_EVERY, CONFIRM) == (5.0, 9.0), "the documented bound is built from these two values"
    sid = _schedule(runtime)
    heartbeat = Heartbeat(DEAD, ttl=runtime.settings.lock_ttl)
    heartbeat.beat(runtime.locks)
    assert 0 < lease_left(runtime.locks, heartbeat.key or "") <= runtime.settings.lock_ttl
    _running(runtime, "doomed", DEAD, sid)
    clock = Clock()
    reaper = Reaper(clock=clock)
    delay = reaper.run(runtime)
    assert _status(runtime)["doomed"][0] == "running"  # alive at this round
    gone = clock.now + phase
    heartbeat.stop(runtime.locks)  # the lease expires `phase` seconds after that round
    while _status(runtime)["doomed"][0] == "running":
        clock.now += delay
        assert clock.now - gone <= 15.0, f"still running {clock.now - gone:g}s after the lease expired"
        delay = reaper.run(runtime)
    assert _status(runtime)["doomed"][0] == "lost"
    assert clock.now - gone >= CONFIRM, "reaped before the lease had been seen gone for CONFIRM seconds"
