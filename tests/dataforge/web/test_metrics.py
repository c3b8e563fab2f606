"""/metrics: the collector on real databases (and Redis for the lease), read back as Prometheus text."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text, update

from dataforge.db import Database
from dataforge.models import LockLease, ScheduledTask, TaskExecution, utcnow
from dataforge.scheduler.leader import LEADER_KEY, lease_timing
from dataforge.settings import Settings
from dataforge.web.metrics import DURATION_BUCKETS, TOP_SCHEDULES, ConsoleCollector, RunTally, counter_columns
from tests.dataforge.web.support import add_execution, add_schedule, auth, console

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(collector: ConsoleCollector) -> Samples:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    out: Samples = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def collector(db: Database, db_settings: Settings, clock: Clock) -> Iterator[ConsoleCollector]:
    made = ConsoleCollector(db, db_settings, clock=clock)
    yield made
    made.close()


# --- the pure tally ---------------------------------------------------------------------------------


@given(st.lists(st.tuples(st.sampled_from(["a", "b"]), st.sampled_from(["success", "failure"]),
                          st.one_of(st.none(), st.integers(0, 10_000_000)))))
def test_the_tally_counts_every_run_and_buckets_every_duration(runs: list[tuple[str, str, int | None]]) -> None:
    tally = RunTally()
    for task, outcome, ms in runs:
        tally.add(task, outcome, ms)
    runs_family, hist = tally.families()
    assert sum(s.value for s in runs_family.samples) == len(runs)
    for task in ("a", "b"):
        timed = [ms / 1000 for t, _, ms in runs if t == task and ms is not None]
        buckets = {s.labels["le"]: s.value for s in hist.samples if s.name.endswith("_bucket")
                   and s.labels["task"] == task}
        if not timed:
            assert not buckets
            continue
        assert buckets["+Inf"] == len(timed)
        for bound in DURATION_BUCKETS:
            assert buckets[repr(bound)] == sum(1 for t in timed if t <= bound)
        total = next(s.value for s in hist.samples if s.name.endswith("_sum") and s.labels["task"] == task)
        assert math.isclose(total, sum(timed), rel_tol=1e-9, abs_tol=1e-9)


# --- runs, followed from the table ------------------------------------------------------------------


def test_runs_are_counted_once_as_they_finish(collector: ConsoleCollector, db: Database) -> None:
    sid = add_schedule(db)
    add_execution(db, sid, status="success", duration_ms=5)  # before the console started: not counted
    first = scrape(collector)
    assert value(first, "dataforge_runs_total", task="dataforge.example_cleanup", outcome="success") is None
    add_execution(db, sid, status="success", duration_ms=200)
    add_execution(db, sid, status="failure", duration_ms=7_000, error="boom")
    running = add_execution(db, sid, status="running", duration_ms=None)
    add_execution(db, None, status="skipped", task_name="other.task", duration_ms=None)
    second = scrape(collector)
    assert value(second, "dataforge_runs_total", task="dataforge.example_cleanup", outcome="success") == 1
    assert value(second, "dataforge_runs_total", task="dataforge.example_cleanup", outcome="failure") == 1
    assert value(second, "dataforge_runs_total", task="other.task", outcome="skipped") == 1
    assert value(second, "dataforge_runs_total", task="dataforge.example_cleanup", outcome="running") is None
    assert value(second, "dataforge_run_duration_seconds_bucket", task="dataforge.example_cleanup", le="0.25") == 1
    assert value(second, "dataforge_run_duration_seconds_bucket", task="dataforge.example_cleanup", le="10.0") == 2
    assert value(second, "dataforge_run_duration_seconds_count", task="dataforge.example_cleanup") == 2
    with db.session() as session:
        session.execute(update(TaskExecution).where(TaskExecution.id == running).values(status="success",
                                                                                      duration_ms=1_500))
    third = scrape(collector)
    assert value(third, "dataforge_runs_total", task="dataforge.example_cleanup", outcome="success") == 2
    assert value(scrape(collector), "dataforge_runs_total", task="dataforge.example_cleanup", outcome="success") == 2


def test_a_backlog_is_read_a_bounded_amount_per_scrape(db: Database, db_settings: Settings) -> None:
    collector = ConsoleCollector(db, db_settings)
    collector.follower.max_rows = 3
    collector.follower.batch = 2
    scrape(collector)
    for _ in range(7):
        add_execution(db, None, status="success")
    counted = [value(scrape(collector), "dataforge_runs_total", task="dataforge.example_cleanup", outcome="success")
               for _ in range(3)]
    assert counted == [3, 6, 7]


# --- schedules and beat -----------------------------------------------------------------------------


def test_schedules_by_status_and_invalid_refreshed_at_most_every_interval(
    collector: ConsoleCollector, db: Database, clock: Clock
) -> None:
    add_schedule(db)
    add_schedule(db, status="paused")
    add_schedule(db, invalid_reason="timezone='Mars/Base': unknown time zone")
    samples = scrape(collector)
    assert value(samples, "dataforge_schedules", status="active") == 2
    assert value(samples, "dataforge_schedules", status="paused") == 1
    assert value(samples, "dataforge_schedules", status="done") == 0
    assert value(samples, "dataforge_schedules_invalid") == 1
    add_schedule(db, status="paused")
    clock.t += collector.refresh_every / 2
    assert value(scrape(collector), "dataforge_schedules", status="paused") == 1, "cached"
    clock.t += collector.refresh_every
    assert value(scrape(collector), "dataforge_schedules", status="paused") == 2


def test_beat_lag_is_how_overdue_the_most_overdue_active_row_is(db: Database, db_settings: Settings) -> None:
    now = utcnow()
    collector = ConsoleCollector(db, db_settings, now=lambda: now)
    assert value(scrape(collector), "dataforge_beat_lag_seconds") == 0
    add_schedule(db, next_run_at=now + timedelta(seconds=30))
    add_schedule(db, status="paused", next_run_at=now - timedelta(hours=2))
    assert value(scrape(collector), "dataforge_beat_lag_seconds") == 0
    add_schedule(db, next_run_at=now - timedelta(seconds=42))
    assert value(scrape(collector), "dataforge_beat_lag_seconds") == pytest.approx(42, abs=0.01)


def _lease_settings(settings: Settings) -> tuple[Settings, float]:
    timing = lease_timing(settings.beat_leader_ttl, settings.beat_max_interval)
    return settings, timing.ttl


def test_last_tick_age_from_the_lease_table(db: Database, db_settings: Settings) -> None:
    settings, ttl = _lease_settings(db_settings)
    collector = ConsoleCollector(db, settings)
    samples = scrape(collector)
    assert value(samples, "dataforge_beat_leader") == 0
    assert value(samples, "dataforge_beat_last_tick_age_seconds") == math.inf
    # A beat renewed 4 s ago: the lease runs ttl - 4 s more (database clock on PostgreSQL).
    with db.session() as session:
        if db.engine.dialect.name == "postgresql":
            now = session.execute(text("SELECT timezone('utc', now())")).scalar_one()
        else:
            now = utcnow()
        session.add(LockLease(key=LEADER_KEY, owner="beat@host", expires_at=now + timedelta(seconds=ttl - 4)))
    samples = scrape(collector)
    assert value(samples, "dataforge_beat_leader") == 1
    assert value(samples, "dataforge_beat_last_tick_age_seconds") == pytest.approx(4, abs=1.0)
    with db.session() as session:
        session.execute(update(LockLease).values(expires_at=now - timedelta(seconds=1)))
    assert value(scrape(collector), "dataforge_beat_last_tick_age_seconds") == math.inf


@pytest.mark.redis
def test_last_tick_age_from_the_redis_lease(db: Database, db_settings: Settings, redis_url: str) -> None:
    settings, ttl = _lease_settings(db_settings.with_(redis_url=redis_url))
    collector = ConsoleCollector(db, settings)
    client = redis.Redis.from_url(redis_url)
    try:
        assert value(scrape(collector), "dataforge_beat_leader") == 0
        client.set(LEADER_KEY, "token", px=int((ttl - 3) * 1000))
        samples = scrape(collector)
        assert value(samples, "dataforge_beat_leader") == 1
        assert value(samples, "dataforge_beat_last_tick_age_seconds") == pytest.approx(3, abs=1.0)
    finally:
        client.close()
        collector.close()
    unreachable = ConsoleCollector(db, settings.with_(redis_url="redis://127.0.0.1:9/0"))
    samples = scrape(unreachable)
    assert value(samples, "dataforge_database_up") == 1
    assert value(samples, "dataforge_beat_leader") is None, "unknown, not 'no leader'"


def test_per_schedule_counters_are_exported_without_a_series_per_schedule(db: Database, db_settings: Settings) -> None:
    assert set(counter_columns(ScheduledTask.__table__)) >= {  # type: ignore[arg-type]
        "missed_count", "skipped_count", "expired_count", "lost_count"}
    ids = [add_schedule(db) for _ in range(TOP_SCHEDULES + 5)]
    with db.session() as session:
        for n, sid in enumerate(ids):
            session.execute(text("UPDATE scheduled_tasks SET missed_count = :n WHERE id = :id"), {"n": n, "id": sid})
    samples = scrape(ConsoleCollector(db, db_settings))
    assert value(samples, "dataforge_schedules_counter_total", counter="missed") == sum(range(len(ids)))
    assert value(samples, "dataforge_schedules_counter_total", counter="skipped") == 0
    top = {labels: v for (name, labels), v in samples.items() if name == "dataforge_schedule_counter"}
    assert len(top) == TOP_SCHEDULES, "never one series per schedule"
    best = dict(next(k for k, v in top.items() if v == len(ids) - 1))
    assert best["schedule_id"] == str(ids[-1]) and best["counter"] == "missed"


def test_a_database_that_cannot_be_reached_is_a_metric_not_a_failed_scrape(tmp_path: Path) -> None:
    settings = Settings.from_env({"DATAFORGE_DATABASE_URL": "postgresql://postgres@127.0.0.1:9/none"}, cwd=tmp_path)
    down = Database(settings.database_url)
    try:
        samples = scrape(ConsoleCollector(down, settings))
    finally:
        down.dispose()
    assert value(samples, "dataforge_database_up") == 0


def test_metrics_over_http(client: Any, db: Database) -> None:
    add_schedule(db)
    response = client.get("/metrics", headers=auth())
    families = {f.name for f in text_string_to_metric_families(response.text)}
    assert {"dataforge_database_up", "dataforge_runs", "dataforge_run_duration_seconds", "dataforge_beat_lag_seconds",
            "dataforge_beat_leader", "dataforge_beat_last_tick_age_seconds", "dataforge_schedules",
            "dataforge_schedules_invalid"} <= families


def test_console_wiring_uses_the_collector(db_settings: Settings) -> None:
    with console(db_settings) as (web, _):
        assert isinstance(web.state.collector, ConsoleCollector)

