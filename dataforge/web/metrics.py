"""``/metrics``: what an operator alerts on, read from the database at scrape time.

A custom prometheus-client collector; every query is bounded or cached:

* **runs by task and outcome** and the **run duration histogram** follow ``task_executions``
  forward by primary key from where the last scrape stopped (at most
  :data:`MAX_ROWS_PER_SCRAPE` new rows per scrape; rows still running are re-read by id until
  they finish). Counting starts when the console starts, as a Prometheus counter does; use
  ``rate()`` / ``increase()``.
* **beat**: the lag (how overdue the most overdue active row is: beat's own due-time query,
  one index probe) and the age of the leader's last lease renewal, which the leading beat
  writes from its tick every ``ttl / 3`` seconds (the lease table or Redis key it competes
  for). Without a leader the age is +Inf.
* **schedules by status**, **invalid schedules** and the per-schedule counters that later
  migrations add to ``scheduled_tasks`` (any ``*_count`` column beyond ``run_count``,
  ``success_count``, ``failure_count``: missed, skipped, expired... as they land) are
  re-read at most every ``refresh_every`` seconds, whatever the scrape rate: the status counts
  are an index-only scan, the counters a scan of the table (the top
  :data:`TOP_SCHEDULES` schedules per counter are exported, never one series per schedule).

A database that cannot be reached gives ``dataforge_database_up 0`` and no other database
metric, never a failed scrape.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any, Final

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Connection, String, Table, func, select, type_coerce
from sqlalchemy.exc import SQLAlchemyError

from dataforge.db import Database
from dataforge.models import LockLease, ScheduledTask, TaskExecution, utcnow
from dataforge.protocol import ExecutionStatus, ScheduleStatus
from dataforge.scheduler.leader import LEADER_KEY, lease_timing
from dataforge.scheduler.schedules import parse_db_datetime
from dataforge.settings import Settings

__all__ = [
    "DURATION_BUCKETS",
    "KNOWN_COUNTERS",
    "MAX_ROWS_PER_SCRAPE",
    "TOP_SCHEDULES",
    "ConsoleCollector",
    "ExecutionFollower",
    "RunTally",
    "counter_columns",
]

log = logging.getLogger("dataforge.web")

#: Seconds. Scheduled jobs run from milliseconds to an hour.
DURATION_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
MAX_ROWS_PER_SCRAPE: Final = 50_000
_BATCH: Final = 5_000
#: Rows seen running and re-read until they finish; beyond this the oldest are given up.
_MAX_PENDING: Final = 20_000
_IN_CHUNK: Final = 500
TOP_SCHEDULES: Final = 20
#: The counter columns ``scheduled_tasks`` had from the start (exported as runs by outcome).
KNOWN_COUNTERS: Final = ("run_count", "success_count", "failure_count")


class RunTally:
    """Runs by (task, outcome) and the durations of finished runs by task. Pure."""

    def __init__(self, buckets: Sequence[float] = DURATION_BUCKETS) -> None:
        self.buckets = tuple(buckets)
        self.runs: Counter[tuple[str, str]] = Counter()
        #: task -> per-bucket counts (not cumulative), the last one for +Inf.
        self.durations: dict[str, list[int]] = {}
        self.sums: defaultdict[str, float] = defaultdict(float)

    def add(self, task: str | None, outcome: str, duration_ms: int | None) -> None:
        name = task or ""
        self.runs[(name, outcome)] += 1
        if duration_ms is None or duration_ms < 0:
            return
        seconds = duration_ms / 1000
        counts = self.durations.setdefault(name, [0] * (len(self.buckets) + 1))
        index = next((i for i, bound in enumerate(self.buckets) if seconds <= bound), len(self.buckets))
        counts[index] += 1
        self.sums[name] += seconds

    def families(self) -> list[Metric]:
        runs = CounterMetricFamily("dataforge_runs", "Finished run attempts by task and outcome (since the console "
                                   "started).", labels=["task", "outcome"])
        for (task, outcome), count in sorted(self.runs.items()):
            runs.add_metric([task, outcome], count)
        hist = HistogramMetricFamily("dataforge_run_duration_seconds", "Duration of finished run attempts.",
                                     labels=["task"])
        for task, counts in sorted(self.durations.items()):
            cumulative, total = [], 0
            for bound, count in zip((*self.buckets, math.inf), counts, strict=True):
                total += count
                cumulative.append((_bound(bound), total))
            hist.add_metric([task], cumulative, sum_value=self.sums[task])
        return [runs, hist]


def _bound(value: float) -> str:
    return "+Inf" if math.isinf(value) else repr(value)


class ExecutionFollower:
    """Feeds a :class:`RunTally` with execution rows as they finish, reading forward by id."""

    def __init__(self, *, max_rows: int = MAX_ROWS_PER_SCRAPE, batch: int = _BATCH,
                 max_pending: int = _MAX_PENDING) -> None:
        self.max_rows = max_rows
        self.batch = batch
        self.max_pending = max_pending
        self.cursor: int | None = None
        self.pending: set[int] = set()

    def poll(self, conn: Connection, tally: RunTally) -> None:
        te = TaskExecution
        if self.cursor is None:
            self.cursor = int(conn.execute(select(func.coalesce(func.max(te.id), 0))).scalar_one())
            return
        self._recheck(conn, tally)
        columns = (te.id, te.task_name, te.status, te.duration_ms)
        read = 0
        while read < self.max_rows:
            rows = conn.execute(
                select(*columns).where(te.id > self.cursor).order_by(te.id).limit(min(self.batch, self.max_rows - read))
            ).all()
            for row_id, task, status, duration in rows:
                if status == ExecutionStatus.RUNNING:
                    self.pending.add(row_id)
                else:
                    tally.add(task, status, duration)
            read += len(rows)
            if not rows:
                break
            self.cursor = rows[-1][0]
            if len(rows) < self.batch:
                break
        if len(self.pending) > self.max_pending:
            for row_id in sorted(self.pending)[: len(self.pending) - self.max_pending]:
                self.pending.discard(row_id)

    def _recheck(self, conn: Connection, tally: RunTally) -> None:
        te = TaskExecution
        waiting = sorted(self.pending)
        for start in range(0, len(waiting), _IN_CHUNK):
            chunk = waiting[start : start + _IN_CHUNK]
            found = {r[0]: r for r in conn.execute(
                select(te.id, te.task_name, te.status, te.duration_ms).where(te.id.in_(chunk))
            )}
            for row_id in chunk:
                row = found.get(row_id)
                if row is None:
                    self.pending.discard(row_id)  # deleted meanwhile
                elif row[2] != ExecutionStatus.RUNNING:
                    tally.add(row[1], row[2], row[3])
                    self.pending.discard(row_id)


def counter_columns(table: Table) -> tuple[str, ...]:
    """The per-schedule counters of ``table`` beyond :data:`KNOWN_COUNTERS`."""
    return tuple(c.name for c in table.columns if c.name.endswith("_count") and c.name not in KNOWN_COUNTERS)


class ConsoleCollector(Collector):
    """The console's metrics (see the module docstring). Thread-safe: one scrape at a time."""

    def __init__(self, db: Database, settings: Settings, *, table: Table | None = None,
                 refresh_every: float = 15.0, clock: Callable[[], float] = time.monotonic,
                 now: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.settings = settings
        self.table: Table = table if table is not None else ScheduledTask.__table__  # type: ignore[assignment]
        self.refresh_every = refresh_every
        self.clock = clock
        self.now = now
        self.tally = RunTally()
        self.follower = ExecutionFollower()
        self._lock = threading.Lock()
        self._slow: list[Metric] = []
        self._slow_at = -math.inf
        self._redis: Any = None

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            up = GaugeMetricFamily("dataforge_database_up", "1 when the console could read the database.")
            try:
                with self.db.engine.connect() as conn:
                    self.follower.poll(conn, self.tally)
                    fast = [*self._beat(conn), *self._lease(conn)]
                    if self.clock() - self._slow_at >= self.refresh_every:
                        self._slow = self._schedules(conn)
                        self._slow_at = self.clock()
            except SQLAlchemyError as exc:
                log.warning("metrics: cannot read the database: %s", str(exc).splitlines()[0])
                up.add_metric([], 0)
                yield up
                yield from self.tally.families()
                return
            up.add_metric([], 1)
            yield up
            yield from self.tally.families()
            yield from fast
            yield from self._slow

    def close(self) -> None:
        if self._redis is not None:
            self._redis.close()
            self._redis = None

    # -- beat -----------------------------------------------------------------------------------
    def _beat(self, conn: Connection) -> list[Metric]:
        t = self.table.c
        raw = conn.execute(
            select(type_coerce(t.next_run_at, String))
            .where(t.status == ScheduleStatus.ACTIVE, t.next_run_at.is_not(None))
            .order_by(t.next_run_at)
            .limit(1)
        ).scalar()
        lag = GaugeMetricFamily("dataforge_beat_lag_seconds", "How overdue the most overdue active schedule is "
                                "(0 when none is due): beat sends due rows within its tick, so this grows when "
                                "no beat runs or it cannot keep up.")
        try:
            due = parse_db_datetime(raw)
        except ValueError:
            due = None
        lag.add_metric([], max(0.0, (self.now() - due).total_seconds()) if due is not None else 0.0)
        return [lag]

    def _lease(self, conn: Connection) -> list[Metric]:
        timing = lease_timing(self.settings.beat_leader_ttl, self.settings.beat_max_interval)
        remaining = self._lease_remaining(conn)
        leader = GaugeMetricFamily("dataforge_beat_leader", "1 while a beat holds the leader lease.")
        age = GaugeMetricFamily(
            "dataforge_beat_last_tick_age_seconds",
            f"Seconds since the leading beat last renewed its lease, which it does from its tick every "
            f"{timing.renew_every:.1f}s; +Inf without a leader.",
        )
        if remaining is None:
            return []
        held = remaining > 0
        leader.add_metric([], 1 if held else 0)
        age.add_metric([], max(0.0, timing.ttl - remaining) if held else math.inf)
        return [leader, age]

    def _lease_remaining(self, conn: Connection) -> float | None:
        """Seconds the leader lease has left (<= 0: no leader); ``None``: the store is unreadable."""
        if self.settings.redis_url:
            import redis

            try:
                if self._redis is None:
                    self._redis = redis.Redis.from_url(self.settings.redis_url, socket_timeout=2,
                                                       socket_connect_timeout=2)
                millis = int(self._redis.pttl(LEADER_KEY))
            except redis.RedisError as exc:
                log.warning("metrics: cannot read the leader lease from Redis: %s", exc)
                return None
            return millis / 1000 if millis > 0 else 0.0
        lease = LockLease.__table__.c
        expires = conn.execute(select(lease.expires_at).where(lease.key == LEADER_KEY)).scalar()
        if expires is None:
            return 0.0
        # The database backend computes expiry with the database clock on PostgreSQL.
        current = self.now()
        if conn.dialect.name == "postgresql":
            current = conn.execute(select(func.timezone("utc", func.now()))).scalar_one()
        return float((expires - current).total_seconds())

    # -- schedules --------------------------------------------------------------------------------
    def _schedules(self, conn: Connection) -> list[Metric]:
        t = self.table.c
        by_status = GaugeMetricFamily("dataforge_schedules", "Schedules by status.", labels=["status"])
        counts: dict[str, int] = {str(s): int(n) for s, n in conn.execute(
            select(t.status, func.count()).group_by(t.status))}
        for status in sorted({*ScheduleStatus, *counts}):
            by_status.add_metric([str(status)], counts.get(status, 0))
        invalid = GaugeMetricFamily("dataforge_schedules_invalid", "Schedules beat refuses (invalid_reason set; "
                                    "they do not run until fixed).")
        invalid.add_metric([], int(conn.execute(
            select(func.count()).where(t.status == ScheduleStatus.ACTIVE, t.next_run_at.is_(None),
                                       t.invalid_reason.is_not(None))
        ).scalar_one()))
        return [by_status, invalid, *self._counters(conn)]

    def _counters(self, conn: Connection) -> Iterable[Metric]:
        names = counter_columns(self.table)
        if not names:
            return []
        t = self.table.c
        totals = GaugeMetricFamily("dataforge_schedules_counter_total", "Per-schedule counters summed over every "
                                   "schedule (missed, skipped, expired... runs).", labels=["counter"])
        top = GaugeMetricFamily("dataforge_schedule_counter", f"Per-schedule counters of the {TOP_SCHEDULES} "
                                "schedules with the highest value of each.", labels=["counter", "schedule_id",
                                                                                      "schedule"])
        # Every total in one scan of the table; the top schedules need one (ordered) scan each.
        sums = conn.execute(select(*(func.coalesce(func.sum(t[name]), 0) for name in names))).one()
        for name, total in zip(names, sums, strict=True):
            column = t[name]
            label = name.removesuffix("_count")
            totals.add_metric([label], int(total))
            rows = conn.execute(select(t.id, t.name, column).where(column > 0).order_by(column.desc(), t.id)
                                .limit(TOP_SCHEDULES)).all()
            for row_id, schedule, value in rows:
                top.add_metric([label, str(row_id), str(schedule)], int(value))
        return [totals, top]
