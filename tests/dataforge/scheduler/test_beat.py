"""DatabaseScheduler in-process, on real SQLite and PostgreSQL databases.

The scheduler is the real class; only its publish seam (messages are captured) and its clocks
(moved by the test) are replaced. Real beat processes are in test_celery_scheduler_processes.py.
The intents ported from celery's and django-celery-beat's beat tests: due entries are sent and
their next time computed, a changed schedule is picked up, a bad entry does not stop the
others, tick returns how long to sleep, a send failure does not lose the entry.
"""

from __future__ import annotations

import logging
import select
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import kombu.exceptions
import pytest
from celery import Celery
from sqlalchemy import event
from sqlalchemy.engine import make_url

from dataforge.db import Database
from dataforge.legacy.names import LEGACY_TASK_NAME
from dataforge.legacy.switch import set_switch
from dataforge.models import ScheduledTask
from dataforge.models.triggers import drop_change_triggers
from dataforge.runtime import Runtime
from dataforge.scheduler.changes import PostgresChangeFeed
from dataforge.scheduler.dispatch import Message, run_task_id
from dataforge.scheduler.duties import DutyRunner, LeaderDuty, leader_duties
from dataforge.scheduler.leader import LeaderLease
from dataforge.scheduler.schedules import jitter_offset, next_run_after, parse_db_datetime, validate_cron
from dataforge.scheduler.store import Advance, ScheduleStore
from tests.conftest import create_schema
from tests.dataforge.scheduler.support import (
    OTHER_TASK,
    TEST_TASK,
    CapturingScheduler,
    FakeClock,
    TcpProxy,
    add_row,
    get_row,
    legacy_capable_schema,
    make_app,
    register,
    run_sql,
    settings_for,
)

MAX_INTERVAL = 5.0


class Env:
    """One database, one app, one fake clock, and the schedulers built on them."""

    def __init__(self, tmp_path: Path, url: str, **env: str) -> None:
        self.url = url
        self.settings = settings_for(tmp_path, url, **env)
        self.app: Celery = make_app(self.settings)
        self.db: Database = self.app.runtime.db
        self.clock = FakeClock()
        self.schedulers: list[CapturingScheduler] = []

    @property
    def postgres(self) -> bool:
        return self.url.startswith("postgres")

    def scheduler(self, **kwargs: Any) -> CapturingScheduler:
        sch = CapturingScheduler(self.app, self.clock, **kwargs)
        self.schedulers.append(sch)
        return sch

    def row(self, row_id: int) -> dict[str, Any]:
        return get_row(self.db, row_id)

    def sql(self, sql: str, **params: Any) -> int:
        return run_sql(self.url, sql, **params)

    def until_change_seen(self) -> None:
        """What a change needs to be seen: its NOTIFY reaching the leader on PostgreSQL
        (delivered just after the commit: wait for the socket, no clock moves), one
        ``max_interval`` on SQLite (beat re-reads on that period)."""
        if not self.postgres:
            self.clock.advance(MAX_INTERVAL)
            return
        for sch in self.schedulers:
            feed = sch._feed
            if isinstance(feed, PostgresChangeFeed) and feed.live:
                ready, _, _ = select.select([feed._conn.fileno()], [], [], 10)
                assert ready, "no NOTIFY reached beat within 10 s of the commit"

    def close(self) -> None:
        for sch in self.schedulers:
            sch.close()
        self.app.runtime.close()


@pytest.fixture
def env(tmp_path: Path, database_url: str) -> Iterator[Env]:
    create_schema(database_url)
    e = Env(tmp_path, database_url)
    yield e
    e.close()


@pytest.fixture
def legacy_env(tmp_path: Path, database_url: str) -> Iterator[Env]:
    legacy_capable_schema(database_url)
    e = Env(tmp_path, database_url, DATAFORGE_LEGACY_TASKS="0")
    yield e
    e.close()


def due(env: Env, seconds: float = 0) -> datetime:
    return env.clock.wall + timedelta(seconds=seconds)


# --- new rows, due rows, next due times ----------------------------------------------------------------


def test_new_rows_get_a_due_time_and_interval_rows_start_at_once(env: Env) -> None:
    interval = add_row(env.db, interval_seconds=60, handler_kwargs='{"days": 7}')
    cron = add_row(env.db, task_type="cron", interval_seconds=None, cron_expression="0 3 * * *",
                   timezone="Europe/Berlin")
    once = add_row(env.db, task_type="once", interval_seconds=None, run_at=due(env, 3600))
    sch = env.scheduler()

    delay = sch.tick_once()

    assert [m.kwargs for m in sch.sent] == [{"days": 7, "scheduled_task_id": interval}]
    assert 0 < delay <= MAX_INTERVAL
    row = env.row(interval)
    assert (row["next_run_at"], row["last_run_at"], row["run_count"]) == (due(env, 60), env.clock.wall, 1)
    expected_cron = next_run_after(validate_cron("0 3 * * *", "Europe/Berlin"), env.clock.wall)
    assert env.row(cron)["next_run_at"] == expected_cron
    assert env.row(once)["next_run_at"] == due(env, 3600)
    assert env.row(cron)["run_count"] == env.row(once)["run_count"] == 0


def test_every_due_row_is_sent_in_one_tick_across_batches(env: Env) -> None:
    ids = [add_row(env.db, next_run_at=due(env, -1), interval_seconds=60) for _ in range(23)]
    not_due = add_row(env.db, next_run_at=due(env, 30))
    sch = env.scheduler()
    sch.batch_size = 5

    sch.tick_once()

    assert sorted(m.kwargs["scheduled_task_id"] for m in sch.sent) == ids
    assert len({m.task_id for m in sch.sent}) == 23
    assert sch.stats["sent"] == 23
    sch.tick_once()
    assert len(sch.sent) == 23, "a second tick must not resend"
    env.clock.advance(30)
    sch.tick_once()
    assert [m.kwargs["scheduled_task_id"] for m in sch.sent[23:]] == [not_due]
    env.clock.advance(30)
    sch.tick_once()
    assert len(sch.sent) == 23 + 1 + 23
    assert all(env.row(i)["run_count"] == 2 for i in ids)


def test_interval_rows_keep_their_grid(env: Env) -> None:
    row_id = add_row(env.db, interval_seconds=10, next_run_at=due(env, 0))
    sch = env.scheduler()
    for _ in range(4):
        sch.tick_once()
        env.clock.advance(10.7)  # beat is always a little late...
    sch.tick_once()
    start = env.clock.wall - timedelta(seconds=4 * 10.7)
    # ...but the due times stay on the grid: no drift.
    assert sch.due_times(row_id) == [
        (start + timedelta(seconds=10 * k)).isoformat() for k in range(5)
    ]


def test_tick_never_sleeps_longer_than_max_interval(env: Env) -> None:
    sch = env.scheduler()
    # Empty table: until the next lease renewal (every ttl/3, 2.8 s with the default 10 s bound).
    assert sch.tick_once() == pytest.approx(min(MAX_INTERVAL, sch._lease_for().timing.renew_every))
    row_id = add_row(env.db, next_run_at=due(env, 3600))
    lag = 0.0 if env.postgres else MAX_INTERVAL  # SQLite sees the edit one max_interval later
    for offset in (0.5, 1, 4.99, 5, 5.01, 60, 86400 * 30):
        env.sql("UPDATE scheduled_tasks SET next_run_at = :t WHERE id = :i", t=due(env, offset + lag), i=row_id)
        env.until_change_seen()
        # Until the row is due or the leader lease needs renewing, never longer than max_interval.
        delay = sch.tick_once()
        assert sch._lease is not None
        assert delay == pytest.approx(min(offset, MAX_INTERVAL, sch._lease.seconds_until_attention()), abs=0.001)
        assert 0 < delay <= MAX_INTERVAL
    env.sql("UPDATE scheduled_tasks SET next_run_at = :t WHERE id = :i", t=due(env, -1), i=row_id)
    env.until_change_seen()
    assert 0 < sch.tick_once() <= MAX_INTERVAL  # right after a dispatch
    assert len(sch.sent) == 1
    standby = env.scheduler()
    assert 0 < standby.tick_once() <= MAX_INTERVAL


# --- exactly once ----------------------------------------------------------------------------------------


#: What the workers' recorder owns on a schedule row, and a value of each that no beat path writes.
WORKER_OWNED = {"success_count": 3, "failure_count": 4, "skipped_count": 5, "expired_count": 6, "lost_count": 7,
                "last_status": "failure", "last_error": "boom"}  # fmt: skip
LAST_EDITED = datetime(2001, 2, 3, 4, 5, 6)


def test_beat_never_writes_updated_at_nor_the_workers_counters(env: Env) -> None:
    """Every kind of write beat makes (first due time, dispatch, a rolled-back publish, a flag,
    a missed run, a once row marked done) leaves ``updated_at`` ("last edited") and the
    recorder's columns as they were."""
    w = env.clock.wall
    kept = {**WORKER_OWNED, "updated_at": LAST_EDITED}
    rows = {
        "first due time": add_row(env.db, **kept),
        "publish fails once": add_row(env.db, next_run_at=due(env, -1), **kept),
        "flagged": add_row(env.db, task_name="sched_test.not_deployed", **kept),
        "once, missed, done": add_row(env.db, task_type="once", interval_seconds=None, run_at=w - timedelta(hours=3),
                                      missed_run_policy="skip", **kept),
        "catch-up": add_row(env.db, interval_seconds=600, next_run_at=w - timedelta(hours=3), **kept),
    }
    sch = env.scheduler()
    failing = rows["publish fails once"]

    def fail_once(message: Message) -> None:
        if message.kwargs["scheduled_task_id"] == failing and sch.stats["publish_failed"] == 0:
            raise kombu.exceptions.OperationalError("connection refused")

    sch.before_publish = fail_once
    sch.tick_once()
    sch.tick_once()
    env.clock.advance(sch.full_refresh_every)  # a full re-read (flagged rows too) and the next runs
    sch.tick_once()
    assert sch.stats["publish_failed"] >= 1 and sch.stats["flagged"] == 1
    assert sch.stats["missed"] > 0 and sch.stats["scheduled"] >= 1
    assert env.row(rows["once, missed, done"])["status"] == "done"
    assert all(sch.sent_for(rows[what]) for what in ("first due time", "publish fails once", "catch-up"))
    for what, row_id in rows.items():
        row = env.row(row_id)
        assert {k: row[k] for k in kept} == kept, what


def test_compare_and_set_fences_a_stale_reader(env: Env) -> None:
    """What a second beat that read the row before the first one committed would do."""
    row_id = add_row(env.db, next_run_at=due(env, -1))
    with env.db.engine.connect() as conn:
        stale = ScheduleStore().fetch_due(conn, env.clock.wall, 10)
    sch = env.scheduler()
    sch.tick_once()
    assert len(sch.sent) == 1
    with env.db.engine.begin() as conn:
        assert ScheduleStore().advance(conn, Advance(stale[0], due(env, 60)), now=env.clock.wall) is False
    assert env.row(row_id)["run_count"] == 1


class _AlwaysGrant:
    """A lock store that grants every request: two beats that both believe they lead."""

    def acquire(self, key: str, ttl: float, owner: str | None = None) -> str:
        return "granted"

    def renew(self, key: str, token: str, ttl: float) -> bool:
        return True

    def release(self, key: str, token: str) -> bool:
        return True

    def release_owned_by(self, key: str, owner: str) -> bool:
        return False

    def held_by(self, key: str, owner: str) -> bool:
        return False

    def close(self) -> None:
        pass

    def after_fork(self) -> None:
        pass


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_two_leaders_on_postgres_send_each_run_once(env: Env) -> None:
    """Both beats dispatch at the same moment. The second one reads the due rows while the
    first one holds them (between its compare-and-set and its commit): it skips the rows the
    first one locked instead of waiting for them, and sends nothing; every run is sent once."""
    ids = [add_row(env.db, next_run_at=due(env, -1)) for _ in range(5)]
    a = env.scheduler()
    b = env.scheduler()
    for sch in (a, b):
        sch._lease = LeaderLease(_AlwaysGrant(), sch._lease_for().timing, sch.identity)
    b_ticked = threading.Event()

    def second_beat_ticks_meanwhile(message: Message) -> None:
        if not b_ticked.is_set():
            b_ticked.set()
            started = time.monotonic()
            b.tick_once()
            assert time.monotonic() - started < 5, "the second beat waited for the first one's row locks"

    a.before_publish = second_beat_ticks_meanwhile
    a.tick_once()
    assert b_ticked.is_set()
    assert sorted(m.kwargs["scheduled_task_id"] for m in a.sent) == ids
    assert b.sent == [] and b.stats["lost_cas"] == 0
    b.tick_once()  # after the first one committed: nothing is due any more
    assert b.sent == []
    assert all(env.row(i)["run_count"] == 1 for i in ids)


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_burst_is_dispatched_by_concurrent_batches_each_run_once(env: Env) -> None:
    """PostgreSQL: after a full first batch, two batches in flight at once, on disjoint rows
    (each locks what it reads)."""
    ids = [add_row(env.db, next_run_at=due(env, -1)) for _ in range(230)]
    sch = env.scheduler()
    sch.batch_size = 20
    threads: set[str] = set()

    def note_thread(message: Message) -> None:
        threads.add(threading.current_thread().name)

    sch.before_publish = note_thread
    sch.tick_once()
    assert sorted(m.kwargs["scheduled_task_id"] for m in sch.sent) == ids
    assert len({m.task_id for m in sch.sent}) == len(ids)
    # The first batch in beat's own thread, the rest of the burst two at a time.
    assert len({name for name in threads if name.startswith("beat-dispatch")}) == sch.dispatch_threads, threads
    assert sch.stats["sent"] == len(ids) and sch.stats["lost_cas"] == 0
    assert {env.row(i)["run_count"] for i in ids} == {1}


def test_failed_publish_is_retried_next_tick_and_never_lost(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    ids = [add_row(env.db, next_run_at=due(env, -1)) for _ in range(5)]
    before = {i: env.row(i) for i in ids}
    sch = env.scheduler()
    calls = 0

    def broker_down_on_third(message: Message) -> None:
        nonlocal calls
        calls += 1
        if calls >= 3:
            raise kombu.exceptions.OperationalError("connection refused")

    sch.before_publish = broker_down_on_third
    with caplog.at_level(logging.WARNING):
        # The failed tick is retried one second later (docs/scheduler.md, Outages).
        assert sch.tick_once() == 1.0
        assert sch.tick_once() == 1.0
    assert len(sch.sent) == 2
    sent_ids = [m.kwargs["scheduled_task_id"] for m in sch.sent]
    for i in ids:
        if i in sent_ids:
            assert env.row(i)["run_count"] == 1
        else:  # rolled back: exactly as before, due again
            assert env.row(i) == before[i]
    assert caplog.text.count("broker unreachable") == 1

    sch.before_publish = None
    sch.tick_once()
    assert sorted(m.kwargs["scheduled_task_id"] for m in sch.sent) == ids
    assert "broker reachable again" in caplog.text
    # The retried run is the same run: same deterministic id as the failed attempt had.
    for m in sch.sent[2:]:
        sid = m.kwargs["scheduled_task_id"]
        assert m.task_id == run_task_id(sid, 1, parse_db_datetime(before[sid]["next_run_at"]) or datetime.min)


def test_shutdown_during_publish_keeps_sent_runs_and_rolls_back_the_rest(env: Env) -> None:
    ids = [add_row(env.db, next_run_at=due(env, -1)) for _ in range(4)]
    sch = env.scheduler()

    def sigterm_on_third(message: Message) -> None:
        if len(sch.sent) == 2:
            raise SystemExit()

    sch.before_publish = sigterm_on_third
    with pytest.raises(SystemExit):
        sch.tick_once()
    sent = {m.kwargs["scheduled_task_id"] for m in sch.sent}
    assert len(sent) == 2
    assert {i: env.row(i)["run_count"] for i in ids} == {i: int(i in sent) for i in ids}


def test_idle_ticks_run_no_query(env: Env) -> None:
    for k in range(50):
        add_row(env.db, next_run_at=due(env, 3600 + k))
    sch = env.scheduler()
    sch._duties = DutyRunner([], clock=sch.monotonic)  # duties poll on their own cadence (the reaper: 5 s)
    sch.tick_once()
    statements: list[str] = []
    event.listen(env.db.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    for _ in range(300):
        env.clock.advance(0.02)
        sch.tick_once()
    schedule_reads = [s for s in statements if "scheduled_tasks" in s]
    lease = [s for s in statements if "dataforge_locks" in s]
    # The lease (in the database here) is renewed every ttl/3: two or three times in 6 s.
    assert lease and len(lease) <= 6 / sch._lease_for().timing.renew_every + 1, lease
    assert len(lease) + len(schedule_reads) == len(statements), statements
    if env.postgres:
        assert schedule_reads == []  # 6 s of idle ticks: NOTIFY would have told us about a change
    else:
        # SQLite has no NOTIFY: at most one re-read per max_interval, a handful of statements.
        assert 0 < len(schedule_reads) <= 4, schedule_reads


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_committed_change_wakes_a_waiting_tick(tmp_path: Path, database_url: str) -> None:
    """PostgreSQL: a commit wakes beat at once, not at its next timeout. Beat's only other
    reason to wake is 10 s away (max_interval; the lease and the duties are further), so a
    wake by the NOTIFY is told from a timeout by what the wait returns and by the time from
    the commit to the message: measured at 10 to 22 ms (docs/benchmarks.md); 1 s is the
    margin of a loaded machine, a tenth of the timeout."""
    create_schema(database_url)
    e = Env(tmp_path, database_url, DATAFORGE_BEAT_MAX_INTERVAL="10", DATAFORGE_BEAT_LEADER_TTL="600")
    try:
        sch = CapturingScheduler(e.app)  # real clocks: the wait is real
        sch._duties = DutyRunner([], clock=sch.monotonic)  # the reaper would wake it every 5 s
        e.schedulers.append(sch)
        assert sch.tick_once() == 10.0
        feed = sch._feed
        assert feed is not None and feed.live
        waiting = threading.Event()
        woken: list[tuple[bool, float]] = []
        real_wait = feed.wait

        def observed_wait(timeout: float) -> bool:
            waiting.set()
            changed = real_wait(timeout)
            woken.append((changed, time.monotonic()))
            return changed

        feed.wait = observed_wait  # type: ignore[method-assign]
        added: list[int] = []
        committed: list[float] = []

        def write() -> None:
            if waiting.wait(20):
                added.append(add_row(e.db))  # returns after the commit
                committed.append(time.monotonic())

        writer = threading.Thread(target=write)
        writer.start()
        assert sch.tick() == 0.0
        writer.join(20)
        assert added and committed, "the writer never saw beat waiting"
        [(changed, woke_at)] = woken
        assert changed, "beat's wait ended by its timeout, not by the committed change"
        sch.tick_once()
        sent_at = time.monotonic()
        assert [m.kwargs["scheduled_task_id"] for m in sch.sent] == added
        assert woke_at - committed[0] < 1.0, f"beat woke {woke_at - committed[0]:.2f}s after the commit"
        assert sent_at - committed[0] < 1.0, f"the run was sent {sent_at - committed[0]:.2f}s after the commit"
    finally:
        e.close()


# --- changes without restart ------------------------------------------------------------------------------


def test_raw_sql_and_bulk_updates_take_effect_at_the_next_tick(env: Env) -> None:
    ids = [add_row(env.db, interval_seconds=3600) for _ in range(10)]
    sch = env.scheduler()
    sch.tick_once()
    assert len(sch.sent) == 10
    start = env.clock.wall

    # Bulk edit of the timing by raw SQL: every row realigns on its grid from last_run_at.
    assert env.sql("UPDATE scheduled_tasks SET interval_seconds = 60") == 10
    env.until_change_seen()
    sch.tick_once()
    assert all(env.row(i)["next_run_at"] == start + timedelta(seconds=60) for i in ids)

    # A row inserted by raw SQL, without a due time, as the legacy system wrote them.
    env.sql(
        "INSERT INTO scheduled_tasks (name, task_type, task_name, interval_seconds, timezone, handler_kwargs, "
        "status, max_retries, run_count, success_count, failure_count, created_at, updated_at) VALUES "
        "('raw', 'interval', :task, 600, 'UTC', '{}', 'active', 0, 0, 0, 0, :now, :now)",
        task=TEST_TASK, now=env.clock.wall,
    )
    # Bulk pause, a delete, and a "run now" by SQL.
    env.sql("UPDATE scheduled_tasks SET status = 'paused' WHERE id IN (:a, :b)", a=ids[0], b=ids[1])
    env.sql("DELETE FROM scheduled_tasks WHERE id = :a", a=ids[2])
    env.sql("UPDATE scheduled_tasks SET next_run_at = :now WHERE id = :a", a=ids[3], now=env.clock.wall)
    sent_before = len(sch.sent)
    env.until_change_seen()
    sch.tick_once()
    new = [m.kwargs["scheduled_task_id"] for m in sch.sent[sent_before:]]
    raw_id = max(new)
    assert sorted(new) == sorted([ids[3], raw_id])
    assert env.row(raw_id)["name"] == "raw"

    env.clock.advance(60)
    sch.tick_once()
    later = {m.kwargs["scheduled_task_id"] for m in sch.sent[sent_before + 2:]}
    # The row run "now" by SQL continues its grid from that run.
    assert later == set(ids[3:]), "paused and deleted rows must not run; the others must"


def test_pause_and_resume_realigns_without_firing_the_backlog(env: Env) -> None:
    row_id = add_row(env.db, interval_seconds=60)
    sch = env.scheduler()
    sch.tick_once()
    first = env.clock.wall
    env.sql("UPDATE scheduled_tasks SET status = 'paused' WHERE id = :i", i=row_id)
    env.clock.advance(3600 + 15)
    sch.tick_once()
    assert len(sch.sent) == 1
    env.sql("UPDATE scheduled_tasks SET status = 'active' WHERE id = :i", i=row_id)
    env.until_change_seen()
    sch.tick_once()
    assert len(sch.sent) == 1, "resuming must not replay the paused hour"
    row = env.row(row_id)
    assert row["next_run_at"] > env.clock.wall
    assert (row["next_run_at"] - first).total_seconds() % 60 == 0
    env.clock.advance(60)
    sch.tick_once()
    assert len(sch.sent) == 2


def test_editing_a_cron_expression_moves_the_due_time(env: Env) -> None:
    row_id = add_row(env.db, task_type="cron", interval_seconds=None, cron_expression="0 3 * * *")
    sch = env.scheduler()
    sch.tick_once()
    env.sql("UPDATE scheduled_tasks SET cron_expression = '*/5 * * * *' WHERE id = :i", i=row_id)
    env.until_change_seen()
    sch.tick_once()
    expected = next_run_after(validate_cron("*/5 * * * *"), env.clock.wall)
    assert env.row(row_id)["next_run_at"] == expected


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_postgresql_without_the_triggers_warns_once_and_re_reads_every_max_interval(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    """No triggers, no NOTIFY: beat says so once and polls, so an edit is seen at the first
    tick one ``max_interval`` after the last re-read, and not before."""
    drop_change_triggers(env.db.engine)
    row_id = add_row(env.db, next_run_at=due(env, 3600))
    sch = env.scheduler()
    sch._duties = DutyRunner([], clock=sch.monotonic)  # the reaper's 5 s would shorten the sleep
    with caplog.at_level(logging.WARNING):
        assert 0 < sch.tick_once() <= MAX_INTERVAL
        env.sql("UPDATE scheduled_tasks SET next_run_at = :t WHERE id = :i", t=due(env), i=row_id)  # "run now"
        for step in (1.0, 1.0, 1.0, 1.0, 0.75):  # binary fractions: exactly 4.75 s, then 5 s
            env.clock.advance(step)
            assert 0 < sch.tick_once() <= MAX_INTERVAL
        assert sch.sent == [], "an edit was seen before max_interval without a change feed"
        env.clock.advance(MAX_INTERVAL - 4.75)
        sch.tick_once()
    assert [m.kwargs["scheduled_task_id"] for m in sch.sent] == [row_id]
    assert caplog.text.count("the scheduled_tasks triggers are missing") == 1


# --- bad rows ---------------------------------------------------------------------------------------------


def test_bad_rows_are_flagged_once_and_every_other_row_keeps_running(
    legacy_env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    env = legacy_env
    good = add_row(env.db, interval_seconds=60)
    bad = {
        "task_name": add_row(env.db, task_name="sched_test.not_deployed"),
        "cron_expression": add_row(env.db, task_type="cron", interval_seconds=None, cron_expression="0 25 * * *"),
        "timezone": add_row(env.db, task_type="cron", interval_seconds=None, cron_expression="0 3 * * *",
                            timezone="Mars/Olympus_Mons"),
        "handler_kwargs": add_row(env.db, handler_kwargs="{'days': 7}"),
        "legacy": add_row(env.db, task_name=None, handler_path="scripts:sync_accounts"),
    }
    # A bad row that was already due, as on a database beat has never seen.
    bad["due"] = add_row(env.db, handler_kwargs="[]", next_run_at=due(env, -5))
    sch = env.scheduler()
    with caplog.at_level(logging.WARNING):
        for _ in range(5):
            sch.tick_once()
            env.clock.advance(60)
        env.clock.advance(sch.full_refresh_every)
        sch.tick_once()
    assert [m.kwargs["scheduled_task_id"] for m in sch.sent] == [good] * 6
    for what, row_id in bad.items():
        row = env.row(row_id)
        assert row["invalid_reason"], what
        assert row["invalid_at"] is not None and row["next_run_at"] is None
        assert row["status"] == "active" and row["run_count"] == 0
        # Logged once, with the id, however many ticks and full re-reads happened.
        assert caplog.text.count(f"schedule {row_id} (") == 1, what
    assert env.row(bad["legacy"])["invalid_reason"].startswith("task_name=None: missing; this legacy")
    assert "cron_expression='0 25 * * *'" in env.row(bad["cron_expression"])["invalid_reason"]

    # Fixed by raw SQL: the trigger clears the flag, beat schedules the row again.
    env.sql("UPDATE scheduled_tasks SET cron_expression = '*/10 * * * *' WHERE id = :i", i=bad["cron_expression"])
    env.sql("UPDATE scheduled_tasks SET handler_kwargs = '{}' WHERE id = :i", i=bad["due"])
    env.until_change_seen()
    sch.tick_once()
    fixed = env.row(bad["cron_expression"])
    assert fixed["invalid_reason"] is None and fixed["next_run_at"] > env.clock.wall
    assert bad["due"] in [m.kwargs["scheduled_task_id"] for m in sch.sent]

    # Fixed by a deploy (the task gets registered): revived on the next full re-read.
    register(env.app, "sched_test.not_deployed")
    env.clock.advance(sch.full_refresh_every)
    with caplog.at_level(logging.WARNING):
        sch.tick_once()
    assert env.row(bad["task_name"])["invalid_reason"] is None
    assert bad["task_name"] in [m.kwargs["scheduled_task_id"] for m in sch.sent]
    assert sch.stats["revived"] == 1
    assert f"schedule {bad['task_name']} (" in caplog.text.split("valid again")[0].splitlines()[-1]


def test_legacy_rows_are_sent_to_the_shim_when_the_switch_is_on(legacy_env: Env) -> None:
    e = legacy_env
    # The persisted switch on, and the legacy executor's name registered (by the compat shim in
    # real deployments; a stand-in here, since what beat sends is the subject, not the shim).
    set_switch(e.db, e.settings, True, by="test")
    register(e.app, LEGACY_TASK_NAME)
    legacy = add_row(e.db, task_name=None, handler_path="scripts/sync_accounts.py", handler_kwargs='{"days": 1}')
    new_way = add_row(e.db, task_name=OTHER_TASK, handler_path="scripts:other")
    sch = e.scheduler()
    sch.tick_once()
    by_id = {m.kwargs["scheduled_task_id"]: m for m in sch.sent}
    assert by_id[legacy].task_name == LEGACY_TASK_NAME
    assert by_id[legacy].kwargs == {"days": 1, "scheduled_task_id": legacy, "handler_path": "scripts/sync_accounts.py"}
    assert by_id[new_way].task_name == OTHER_TASK


# --- missed runs ------------------------------------------------------------------------------------------


def test_overdue_rows_fire_once_then_realign(env: Env) -> None:
    env.clock.wall = env.clock.wall.replace(minute=10, second=0)  # ten minutes past an hour
    three_hours_ago = due(env, -3 * 3600)
    interval = add_row(env.db, interval_seconds=600, next_run_at=three_hours_ago)
    cron = add_row(env.db, task_type="cron", interval_seconds=None, cron_expression="0 * * * *",
                   next_run_at=three_hours_ago)
    # Off the clock's grid by 5 minutes: its newest missed run is late, so `skip` sends nothing.
    skip = add_row(env.db, interval_seconds=600, next_run_at=three_hours_ago - timedelta(minutes=5),
                   missed_run_policy="skip")
    once = add_row(env.db, task_type="once", interval_seconds=None, run_at=three_hours_ago)
    once_skip = add_row(env.db, task_type="once", interval_seconds=None, run_at=three_hours_ago,
                        missed_run_policy="skip")
    sch = env.scheduler()
    sch.tick_once()
    sch.tick_once()
    assert sorted(m.kwargs["scheduled_task_id"] for m in sch.sent) == sorted([interval, cron, once])
    assert env.row(interval)["next_run_at"] == three_hours_ago + timedelta(seconds=600 * 19)
    assert env.row(cron)["next_run_at"] == next_run_after(validate_cron("0 * * * *"), env.clock.wall)
    assert env.row(skip)["next_run_at"] == env.clock.wall + timedelta(minutes=5)
    assert env.row(skip)["run_count"] == 0
    assert (env.row(once)["status"], env.row(once)["run_count"]) == ("done", 1)
    assert (env.row(once_skip)["status"], env.row(once_skip)["run_count"]) == ("done", 0)
    # Every due time passed is sent or counted: 19 interval runs (1 sent), the cron row's own
    # due time and 3 hours (1 sent), 19 skipped, the skipped once row.
    missed = {i: env.row(i)["missed_count"] for i in (interval, cron, skip, once, once_skip)}
    assert missed == {interval: 18, cron: 3, skip: 19, once: 0, once_skip: 1}
    assert sch.stats["missed"] == sum(missed.values())


def test_a_takeover_late_in_the_period_sends_one_run_in_place_of_the_next_regular_one(env: Env) -> None:
    """The reported case, in process: a 3 s schedule, its beat gone after sending the run due
    at W+3, a new beat at W+20.77. Before, it sent the catch-up and the W+21 run 0.23 s later."""
    w = env.clock.wall
    row_id = add_row(env.db, interval_seconds=3, next_run_at=w)
    a = env.scheduler()
    a.tick_once()
    env.clock.advance(3)
    a.tick_once()
    assert a.due_times(row_id) == [w.isoformat(), (w + timedelta(seconds=3)).isoformat()]
    a.close()
    env.clock.advance(17.77)
    b = env.scheduler()
    b.tick_once()
    assert b.due_times(row_id) == [(w + timedelta(seconds=18)).isoformat()]
    row = env.row(row_id)
    # W+6 ... W+18 passed (one sent), W+21 is 0.23 s away: the catch-up stands for it too.
    assert (row["next_run_at"], row["missed_count"], row["run_count"]) == (w + timedelta(seconds=24), 5, 3)
    env.clock.advance(0.23)
    b.tick_once()
    assert len(b.sent) == 1, "the regular run next to the catch-up was sent"
    env.clock.advance(3)
    b.tick_once()
    assert b.due_times(row_id)[-1] == (w + timedelta(seconds=24)).isoformat()


def test_an_hourly_cron_row_reached_just_before_the_hour_runs_once_not_twice(env: Env) -> None:
    env.clock.wall = env.clock.wall.replace(minute=59, second=50)
    hour = env.clock.wall.replace(minute=0, second=0)
    row_id = add_row(env.db, task_type="cron", interval_seconds=None, cron_expression="0 * * * *", next_run_at=hour)
    sch = env.scheduler()
    sch.tick_once()
    assert sch.due_times(row_id) == [hour.isoformat()]
    assert (env.row(row_id)["next_run_at"], env.row(row_id)["missed_count"]) == (hour + timedelta(hours=2), 1)
    env.clock.advance(15)  # past the top of the hour
    sch.tick_once()
    assert len(sch.sent) == 1


def test_all_replays_each_missed_run_with_its_own_id_and_the_window_bounds_it(env: Env) -> None:
    w = env.clock.wall
    row_id = add_row(env.db, interval_seconds=600, next_run_at=w - timedelta(minutes=50), missed_run_policy="all",
                     catchup_window_seconds=1800)
    sch = env.scheduler()
    sch.tick_once()
    dues = [w - timedelta(minutes=m) for m in (30, 20, 10, 0)]
    assert sch.due_times(row_id) == [d.isoformat() for d in dues]
    assert [m.task_id for m in sch.sent] == [run_task_id(row_id, k + 1, d) for k, d in enumerate(dues)]
    row = env.row(row_id)
    assert (row["run_count"], row["missed_count"], row["next_run_at"]) == (4, 2, w + timedelta(minutes=10))
    assert sch.stats["sent"] == 4 and sch.stats["missed"] == 2


def test_jitter_delays_each_send_by_the_schedules_offset(env: Env) -> None:
    w = env.clock.wall
    row_id = add_row(env.db, interval_seconds=60, jitter_seconds=45, next_run_at=None)
    sch = env.scheduler()
    sch.tick_once()
    offset = jitter_offset(row_id, 45)
    assert offset > timedelta(0), "the first row of a fresh table has a non-zero offset for a 45 s jitter"
    assert env.row(row_id)["next_run_at"] == w + offset and sch.sent == []
    env.clock.advance(offset.total_seconds())
    sch.tick_once()
    assert sch.due_times(row_id) == [w.isoformat()], "the due time, not the send time, is the run's"
    assert env.row(row_id)["next_run_at"] == w + timedelta(seconds=60) + offset


def test_global_skip_policy(tmp_path: Path, database_url: str) -> None:
    create_schema(database_url)
    e = Env(tmp_path, database_url, DATAFORGE_MISSED_RUNS="skip")
    try:
        # 62 minutes late: the newest missed run (2 minutes ago) is late too.
        skipped = add_row(e.db, interval_seconds=600, next_run_at=due(e, -3720))
        fired = add_row(e.db, interval_seconds=600, next_run_at=due(e, -3720), missed_run_policy="once")
        on_time = add_row(e.db, interval_seconds=600, next_run_at=due(e, -10))
        sch = e.scheduler()
        sch.tick_once()
        assert sorted(m.kwargs["scheduled_task_id"] for m in sch.sent) == sorted([fired, on_time])
        assert e.row(skipped)["next_run_at"] > e.clock.wall
    finally:
        e.close()


# --- leadership and outages -------------------------------------------------------------------------------


def test_one_leader_at_a_time_and_takeover_after_release(env: Env) -> None:
    row_id = add_row(env.db, interval_seconds=60)
    a = env.scheduler()
    b = env.scheduler()
    a.tick_once()
    b.tick_once()
    env.clock.advance(60)
    a.tick_once()
    b.tick_once()
    assert len(a.sent) == 2 and b.sent == []
    a.close()  # graceful stop releases the lease
    env.clock.advance(60)
    b.tick_once()
    assert [m.kwargs["scheduled_task_id"] for m in b.sent] == [row_id]
    assert a.due_times(row_id)[-1] < b.due_times(row_id)[0]


class _Noted:
    """A real leader duty whose every run is noted."""

    def __init__(self, duty: LeaderDuty, runs: list[str]) -> None:
        self.duty, self.name, self.runs = duty, duty.name, runs

    def run(self, runtime: Runtime) -> float:
        self.runs.append(self.name)
        return self.duty.run(runtime)


def test_a_standby_runs_neither_the_reaper_nor_retention(env: Env) -> None:
    leader, standby = env.scheduler(), env.scheduler()
    runs: dict[str, list[str]] = {"leader": [], "standby": []}
    for sch, who in ((leader, "leader"), (standby, "standby")):
        sch._duties = DutyRunner([_Noted(d, runs[who]) for d in leader_duties(sch.runtime)], clock=sch.monotonic)
    for _ in range(3):
        leader.tick_once()
        standby.tick_once()
        env.clock.advance(3600)  # past the reaper's 5 s and retention's hour
    assert set(runs["leader"]) == {"reaper", "history retention"}
    assert runs["standby"] == [], "a standby ran the leader's duties"
    leader.close()  # the standby takes over, and its duties with it
    standby.tick_once()
    assert set(runs["standby"]) == {"reaper", "history retention"}


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_database_outage_is_survived_and_resumed_without_duplicates(
    tmp_path: Path, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    create_schema(database_url)
    target = make_url(database_url)
    proxy = TcpProxy(target.host or "127.0.0.1", target.port or 5432)
    through_proxy = target.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    # The lease is in the same database: a lease longer than the outage keeps this beat the leader.
    e = Env(tmp_path, through_proxy, DATAFORGE_BEAT_LEADER_TTL="30")
    try:
        row_id = add_row(e.db, interval_seconds=10)
        sch = e.scheduler()
        sch.tick_once()
        assert len(sch.sent) == 1
        proxy.cut()
        e.clock.advance(10)
        with caplog.at_level(logging.WARNING):
            for _ in range(3):
                assert sch.tick_once() == 1.0  # retried every second
            assert caplog.text.count("database unreachable") == 1
            proxy.restore()
            sch.tick_once()
        assert "database reachable again" in caplog.text
        assert sch.due_times(row_id) == [
            (e.clock.wall - timedelta(seconds=10)).isoformat(), e.clock.wall.isoformat()
        ]
        assert get_row(e.db, row_id)["run_count"] == 2
    finally:
        e.close()
        proxy.close()


def test_scheduled_task_rows_written_by_the_orm_round_trip(env: Env) -> None:
    """Naive UTC in, naive UTC out: no hour shift between the ORM, raw SQL and beat."""
    at = datetime(2030, 7, 1, 12, 0, 0)
    row_id = add_row(env.db, task_type="once", interval_seconds=None, run_at=at)
    sch = env.scheduler()
    sch.tick_once()
    assert env.row(row_id)["next_run_at"] == at
    with env.db.session() as session:
        stored = session.get(ScheduledTask, row_id)
        assert stored is not None and stored.next_run_at == at


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_database_down_when_beat_becomes_leader(
    tmp_path: Path, database_url: str, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The lease (Redis) is taken while the database is unreachable: beat keeps retrying."""
    create_schema(database_url)
    target = make_url(database_url)
    proxy = TcpProxy(target.host or "127.0.0.1", target.port or 5432)
    through_proxy = target.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    e = Env(tmp_path, through_proxy, DATAFORGE_REDIS_URL=redis_url)
    try:
        row_id = add_row(e.db, interval_seconds=60)
        proxy.cut()
        sch = e.scheduler()
        with caplog.at_level(logging.WARNING):
            for _ in range(3):
                assert sch.tick_once() == 1.0  # retried every second
        assert caplog.text.count("database unreachable") == 1
        proxy.restore()
        sch.tick_once()
        assert [m.kwargs["scheduled_task_id"] for m in sch.sent] == [row_id]
    finally:
        e.close()
        proxy.close()
