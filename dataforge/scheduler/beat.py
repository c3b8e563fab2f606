"""``DatabaseScheduler``: celery beat driven by the ``scheduled_tasks`` table.

``celery -A dataforge.celery_app beat`` uses it (the app's default ``beat_scheduler``). The
design, guarantees and failure modes are in docs/scheduler.md; in short, each tick:

1. **Leadership.** Any number of beats may run; the one holding the leader lease
   (:mod:`dataforge.scheduler.leader`) dispatches, the others retry the lease and sleep.
2. **Changes.** Nothing is queried while nothing changed and nothing is due: the earliest due
   time is kept in memory, and the database says when rows change (PostgreSQL NOTIFY from
   triggers, raw SQL and bulk updates included; on SQLite a re-read every ``max_interval``).
   On a change, rows without a due time (new, resumed, edited, revived) get one.
3. **Dispatch.** Due rows are read in batches (``status='active' AND next_run_at <= now``,
   an index range) and ALL of them are sent in this tick. Each row's missed-run policy,
   catch-up window and jitter decide which of its runs go out
   (:mod:`dataforge.scheduler.catchup`). Per batch, in ONE transaction: a compare-and-set per
   row advances ``next_run_at`` / ``last_run_at`` / ``run_count`` / ``missed_count``, the
   rows whose CAS won are published (on Redis buffered, one pipeline per ``flush_every``
   messages), the CAS of every row not known to be in the broker is undone if a publish or
   flush fails, and the transaction commits. A failed publish is therefore retried next tick;
   a second beat's CAS on the same run matches nothing; a crash, or a flush that failed
   part-way, can only repeat (never lose) runs, and a repeat carries the same task id.
4. **Static entries** (Celery's ``beat_schedule``, ``celery.backend_cleanup``) are sent by the
   leader with Celery's own in-memory semantics (:meth:`DatabaseScheduler._tick_static`).
5. **Sleep** until the next due time, at most ``max_interval``; on PostgreSQL beat blocks on
   the LISTEN socket instead, so a committed change wakes it at once.

Bad rows (unregistered task, bad cron or time zone, kwargs that are not a JSON object, legacy
rows while the legacy switch is off) are flagged on the row (``invalid_reason``), logged
once, skipped, and revived when edited. A database or broker outage is logged once, retried
every second, and resumed without duplicates.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import accumulate
from pathlib import Path
from typing import Any, Final

from celery import Celery
from celery.beat import Scheduler
from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from dataforge.db import is_postgres, is_sqlite
from dataforge.errors import LockUnavailableError
from dataforge.models import utcnow
from dataforge.models.triggers import triggers_installed
from dataforge.protocol import DUE_AT_HEADER, PUBLISH_RETRY_POLICY
from dataforge.runtime import Runtime, get_runtime
from dataforge.scheduler.changes import ChangeFeed, PollingChangeFeed, PostgresChangeFeed
from dataforge.scheduler.dispatch import (
    DispatchContext,
    MarkInvalid,
    Message,
    Reschedule,
    RowSnapshot,
    Send,
    plan_due_row,
    plan_unscheduled_row,
)
from dataforge.scheduler.duties import DutyRunner, leader_duties
from dataforge.scheduler.leader import LeaderLease, beat_identity, dead_leader_here, lease_timing
from dataforge.scheduler.schedules import parse_db_datetime
from dataforge.scheduler.store import Advance, ScheduleStore, mark_beat_writer, store_for

__all__ = ["DatabaseScheduler", "PublishBatch"]

log = logging.getLogger(__name__)

#: Longest kwargs repr in a message header (Celery's ``kwargsrepr_maxsize``).
_REPR_MAX: Final = 1024

@dataclass(slots=True)
class _Publishing:
    """What one thread's current publish batch knows: whether publishes are buffered, whether
    task-sent events are on, the routes and queues already resolved and declared."""

    buffered: bool
    sent_events: bool
    routes: dict[str, dict[str, Any]] = field(default_factory=dict)
    declared: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class _BatchOutcome:
    """What one dispatch batch did: the broker took its messages, it was full (more may be
    due), and the counters it moved."""

    broker_ok: bool
    full: bool
    counts: Counter[str]


@dataclass(frozen=True, slots=True)
class PublishBatch:
    """Where one database batch's messages go: ``producer`` to publish, ``flush`` to write
    what is buffered; ``buffered`` says whether publishing buffers at all."""

    producer: Any
    buffered: bool
    flush: Callable[[], None]


def _alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host (one we may not signal counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Outage:
    """Logs a failure once when it starts and once when it ends, not on every tick."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.since: float | None = None

    def failed(self, exc: BaseException) -> None:
        if self.since is None:
            self.since = time.monotonic()
            log.error("beat: %s unreachable (%s); retrying, nothing is lost meanwhile", self.what, exc)

    def ok(self) -> bool:
        """Record success; ``True`` if this ends an outage."""
        if self.since is None:
            return False
        log.warning("beat: %s reachable again after %.1fs", self.what, time.monotonic() - self.since)
        self.since = None
        return True


class DatabaseScheduler(Scheduler):  # type: ignore[misc]
    """Celery beat scheduler whose schedule is the ``scheduled_tasks`` table.

    Overrides :meth:`tick` entirely: the base class compares the whole schedule on every tick
    and sends one entry per tick, which is O(N) idle and minutes for a burst of due rows.
    """

    #: Rows read and written per transaction (SQLite holds its write lock meanwhile, so its
    #: batches are smaller and workers' writes are not held up for long). Also the most runs a
    #: crash between publish and commit can make beat send twice (docs/scheduler.md).
    batch_size = 1000
    sqlite_batch_size = 200
    #: Re-read the due time and re-validate flagged rows at least this often, whatever the
    #: change feed says (a deploy that registers a task revives its rows within this bound).
    full_refresh_every = 60.0
    #: Messages buffered between two flushes to the broker: one round trip each, and a bound
    #: on the memory a burst of due rows takes.
    flush_every = 200
    #: Batches in flight at once on PostgreSQL (see :meth:`_dispatch_due`): one waits for the
    #: database while the other builds messages. More would only queue on the GIL.
    dispatch_threads = 2
    #: Broker commands kombu may buffer before flushing on its own (one per message on Redis,
    #: more if the queue has an expiry): kept above ``flush_every`` so that flushes happen
    #: only where :meth:`_dispatch_batch` counts them.
    publish_buffer = 10_000
    #: Sleep after a database, lock store or broker failure.
    retry_after_failure = 1.0
    #: Longest sleep between ticks (``Settings.beat_max_interval`` via beat_max_loop_interval).
    max_interval: float

    def __init__(self, app: Celery, *args: Any, **kwargs: Any) -> None:
        self.runtime: Runtime = get_runtime(app)
        self.identity = beat_identity(socket.gethostname(), os.getpid())
        #: Where this host's leader writes its identity, next to the state file ``celery beat``
        #: names (``-s``, ``beat_schedule_filename``), so that a beat restarted after kill -9
        #: reclaims the dead one's lease at once. ``None`` for a scheduler built outside
        #: ``celery beat`` (tests, an embedded beat): a restart then waits out the lease.
        schedule_file = kwargs.get("schedule_filename")
        self.leader_file = Path(schedule_file).with_suffix(".leader") if schedule_file else None
        self._lease: LeaderLease | None = None
        self._feed: ChangeFeed | None = None
        self._leading = False
        self._next_due: datetime | None = None
        self._need_refresh = True
        self._last_refresh = float("-inf")
        self._last_full = float("-inf")
        self._db_outage = _Outage("database")
        self._broker_outage = _Outage("broker")
        self._closed = False
        self._static_due_at = float("-inf")
        self._duties = DutyRunner(leader_duties(self.runtime), clock=self.monotonic)
        self._store: ScheduleStore | None = None
        #: The publish state of the batch this thread is publishing (:class:`_Publishing`).
        self._publishing = threading.local()
        #: Dispatch threads (PostgreSQL), created on the first burst that needs them.
        self._pool: ThreadPoolExecutor | None = None
        self._origin = f"{socket.gethostname()}:{os.getpid()}"
        #: Counters since start (tests, benchmarks, `celery inspect`-style introspection).
        #: ``missed``: runs not sent (policy, catch-up window, or a catch-up that took their place).
        self.stats: dict[str, int] = dict.fromkeys(
            ("sent", "lost_cas", "publish_failed", "missed", "flagged", "revived", "done", "scheduled"), 0
        )
        super().__init__(app, *args, **kwargs)
        self.max_interval = float(self.max_interval)
        if is_sqlite(self.runtime.db.url):
            self.batch_size = self.sqlite_batch_size

    # -- celery.beat.Scheduler API ----------------------------------------------------------------
    def setup_schedule(self) -> None:
        # Exit with one line on a database without the schema, instead of retrying forever.
        self.runtime.schema.refuse_to_start("beat")
        # Beat's loader imports the task modules too; doing it here makes an in-process
        # scheduler (tests, embedded beat) see the same registry.
        self.app.loader.import_default_modules()
        # Celery's in-memory schedule (``self.schedule``) holds only the static entries:
        # ``beat_schedule`` and Celery's default ``celery.backend_cleanup``. See _tick_static.
        # (Merge first: merge_inplace drops every entry that beat_schedule does not name.)
        self.merge_inplace(self.app.conf.beat_schedule)
        self.install_default_entries(self.schedule)

    def install_default_entries(self, data: dict[str, Any]) -> None:
        """Celery's rule (``celery.backend_cleanup`` daily when the result backend cannot
        expire results itself), without importing the Redis result backend just to learn that
        it can: that import alone would grow beat by ~7 MB."""
        if str(self.app.conf.result_backend or "").split("://", 1)[0] in ("redis", "rediss"):
            return
        super().install_default_entries(data)

    def _tick_static(self) -> float:
        """Send the static entries that are due; seconds until the next one is.

        Celery's own semantics (in memory, ``entry.is_due()``), run by the leader only, and
        looked at only when the earliest of them is due: an idle tick stays free of work.
        Names that are not registered are dropped with one error, as unregistered rows are
        never sent. Being in memory, an entry has no exactly-once guarantee across a leader
        change (the new leader's clock for it starts when it started); schedules that need
        one belong in the table.
        """
        mono = self.monotonic()
        if mono < self._static_due_at:
            return self._static_due_at - mono
        next_in = self.max_interval
        for name, entry in list(self.schedule.items()):
            if not self._is_registered(entry.task):
                del self.schedule[name]
                log.error("beat: static entry %r names task %r, which is not registered; dropped "
                          "(fix beat_schedule, or add a scheduled_tasks row)", name, entry.task)
                continue
            try:
                is_due, secs = entry.is_due()
            except Exception:  # a bad schedule object must not stop beat
                del self.schedule[name]
                log.exception("beat: static entry %r: its schedule cannot be evaluated; dropped", name)
                continue
            if is_due:
                self.reserve(entry)
                self.apply_entry(entry)  # Celery's: logs and swallows a failed send
            next_in = min(next_in, secs)
        self._static_due_at = mono + next_in
        return next_in

    def should_sync(self) -> bool:
        return False

    def sync(self) -> None:
        """Nothing to flush: run state is written at dispatch, never batched."""

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._step_down(release=True)
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
        super().close()

    @property
    def info(self) -> str:
        url = self.runtime.db.engine.url.render_as_string(hide_password=True)
        return f"database: {url}; leader lease: {self._timing_text()}"

    def _timing_text(self) -> str:
        timing = lease_timing(self.runtime.settings.beat_leader_ttl, self.max_interval)
        return f"failover <= {timing.failover:.0f}s (ttl {timing.ttl:.1f}s, standby poll {timing.poll:.1f}s)"

    # -- seams --------------------------------------------------------------------------------------
    def publish(self, message: Message, producer: Any) -> None:
        """Publish one message (tests override this to capture sends). Raises on failure.

        The message Celery's ``send_task`` would build (same routing, headers, limits, expiry,
        ``task-sent`` event when ``task_send_sent_event`` is on), published through the app's
        amqp layer directly: ``send_task`` also subscribes to each task's result channel on a
        Redis result backend (beat never reads results, and the subscriptions would pile up
        for the life of the process) and builds an AsyncResult per message, which together
        cost more than the publish itself.
        """
        amqp = self.app.amqp
        kwargs = message.kwargs
        state = self._publishing.state
        routing = state.routes.get(message.task_name)
        if routing is None:
            routing = amqp.router.route({}, message.task_name, (), kwargs)
            if not amqp.router.routes:
                # Without task_routes the route depends on the name alone (the default queue).
                state.routes[message.task_name] = routing
        # Declared once per batch, not once per message (kombu copies the entity each time).
        queue = routing.get("queue")
        if queue is not None and queue.name not in state.declared:
            producer.maybe_declare(queue)
            state.declared.add(queue.name)
        kwargs_text = repr(kwargs)
        body = amqp.create_task_message(
            message.task_id,
            message.task_name,
            (),
            kwargs,
            expires=message.expires,
            time_limit=message.time_limit,
            soft_time_limit=message.soft_time_limit,
            create_sent_event=state.sent_events,
            origin=self._origin,
            # What Flower and `celery events` show: plain repr, cut like Celery's saferepr.
            argsrepr="()",
            kwargsrepr=kwargs_text if len(kwargs_text) <= _REPR_MAX else kwargs_text[: _REPR_MAX - 3] + "...",
        )
        # A buffered publish only appends to the batch: nothing to retry until its flush, where
        # a failure rolls the unsent rows back. An unbuffered one talks to the broker now.
        amqp.send_task_message(
            producer,
            message.task_name,
            body,
            headers=message.headers,
            retry=not state.buffered,
            retry_policy=PUBLISH_RETRY_POLICY,
            declare=[],
            **routing,
        )

    @contextmanager
    def producer_for_batch(self) -> Iterator[PublishBatch]:
        """One pooled producer (one broker connection) for a whole batch of sends.

        On Redis the messages are buffered (kombu's ``Producer.batch``) and written by
        :meth:`PublishBatch.flush` in one pipeline: one round trip per flush instead of one per
        message. A flush is where a broker failure surfaces, and whether any of the flushed
        messages arrived is then unknown, so :meth:`_dispatch_batch` sends them again (same task
        ids). Transports without batching (RabbitMQ, the embedded SQL broker) publish each
        message at once and ``flush`` does nothing.
        """
        with self.app.producer_or_acquire() as producer:
            # Connect (a pooled connection that is up: no round trip) under the publish retry
            # policy. Left to itself, the first use of the channel would connect with kombu's
            # defaults (tries 2 and 4 s apart, up to the 4 s connect timeout): beat stuck ~6 s
            # per tick on a dead broker instead of giving up after ~1 s.
            producer.connection.ensure_connection(**PUBLISH_RETRY_POLICY)
            buffered = bool(producer.supports_batch_publish)
            self._publishing.state = _Publishing(buffered, bool(self.app.conf.task_send_sent_event))
            with producer.batch(max_size=self.publish_buffer) as batch:
                yield PublishBatch(producer, buffered, batch.flush)

    def now(self) -> datetime:
        """Naive UTC, the tables' convention."""
        return utcnow()

    def monotonic(self) -> float:
        """The clock of intervals (re-reads, the lease): immune to wall-clock steps."""
        return time.monotonic()

    # -- tick -------------------------------------------------------------------------------------
    def tick(self, *args: Any, **kwargs: Any) -> float:
        """One pass, then wait for the next due time or a change (see :meth:`tick_once`).

        With a live change feed (PostgreSQL) the wait happens here, on the LISTEN socket, and
        the return value is 0 (the next pass is due now); otherwise the return value is the
        sleep, never above ``max_interval``.
        """
        delay = self.tick_once()
        feed = self._feed
        if delay > 0 and self._leading and feed is not None and feed.live:
            if feed.wait(delay):
                self._need_refresh = True
            return 0.0
        return delay

    def tick_once(self) -> float:
        """One non-blocking pass; the seconds until the next one is needed (<= max_interval)."""
        if self._closed:
            return self.max_interval
        try:
            delay = self._pass()
        except (SQLAlchemyError, LockUnavailableError) as exc:
            self._db_outage.failed(exc)
            self._need_refresh = True
            self._store = None  # the schema may have changed too (an upgrade or a rollback)
            return min(self.retry_after_failure, self.max_interval)
        if self._db_outage.ok():
            self._need_refresh = True
        return max(0.0, min(delay, self.max_interval))

    def _pass(self) -> float:
        lease = self._lease_for()
        if not lease.ensure():
            if self._leading:
                self._step_down(release=False)
            return lease.seconds_until_attention()
        if not self._leading:
            self._start_leading()
        feed = self._feed
        assert feed is not None
        mono = self.monotonic()
        if feed.poll():
            self._need_refresh = True
        if not feed.live and mono - self._last_refresh >= self.max_interval:
            self._need_refresh = True
        full = mono - self._last_full >= self.full_refresh_every
        if full or self._need_refresh:
            self._refresh(include_flagged=full)
        static_in = self._tick_static()
        duties_in = self._duties.run_due(self.runtime)
        now = self.now()
        if self._next_due is not None and self._next_due <= now:
            if not self._dispatch_due(now, lease):
                return self.retry_after_failure
            self._next_due = self._read_next_due()
        delay = self.max_interval
        if self._next_due is not None:
            delay = (self._next_due - self.now()).total_seconds()
        return min(delay, static_in, duties_in, lease.seconds_until_attention())

    # -- leadership ---------------------------------------------------------------------------------
    def _lease_for(self) -> LeaderLease:
        if self._lease is None:
            timing = lease_timing(self.runtime.settings.beat_leader_ttl, self.max_interval)
            self._lease = LeaderLease(self.runtime.locks, timing, self.identity, clock=self.monotonic)
            dead = dead_leader_here(self._recorded_leader(), socket.gethostname(), os.getpid(), _alive)
            if dead is not None:
                self._lease.reclaim(dead)
        return self._lease

    def _recorded_leader(self) -> str | None:
        if self.leader_file is None:
            return None
        try:
            return self.leader_file.read_text(encoding="utf-8").strip() or None
        except OSError:
            return None

    def _record_leader(self) -> None:
        """Write this beat's identity where a successor on this host looks (atomically: a
        reader never sees half a name). Best effort: without it a restart waits the lease."""
        if self.leader_file is None:
            return
        tmp = self.leader_file.with_name(f"{self.leader_file.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(self.identity, encoding="utf-8")
            os.replace(tmp, self.leader_file)
        except OSError as exc:
            log.debug("beat: cannot record the leader in %s (%s)", self.leader_file, exc)

    def _start_leading(self) -> None:
        self._feed = self._make_feed()  # may fail (database down): then we start again next tick
        self._record_leader()
        self._store = None
        self._leading = True
        self._duties.reset()
        self._need_refresh = True
        self._last_full = float("-inf")

    def _step_down(self, *, release: bool) -> None:
        self._leading = False
        self._next_due = None
        self._static_due_at = float("-inf")
        if self._feed is not None:
            self._feed.close()
            self._feed = None
        if release and self._lease is not None:
            self._lease.release()

    def _make_feed(self) -> ChangeFeed:
        url = self.runtime.db.url
        if not is_postgres(url):
            return PollingChangeFeed()
        with self.runtime.db.engine.connect() as conn:
            installed = triggers_installed(conn)
        if not installed:
            log.warning(
                "beat: the scheduled_tasks triggers are missing (run `dataforge db upgrade`); edits are "
                "picked up every %.1fs by polling, and edited or fixed rows are not realigned/revived at once",
                self.max_interval,
            )
            return PollingChangeFeed()
        return PostgresChangeFeed(url, retry_every=self.max_interval)

    # -- reading ------------------------------------------------------------------------------------
    def _context(self) -> DispatchContext:
        settings = self.runtime.settings
        window = settings.catchup_window
        return DispatchContext(
            is_registered=self._is_registered,
            resolvers=tuple(plugin.resolve_row for plugin in self.runtime.plugins),
            missed_runs=settings.missed_runs,
            catchup_window=None if window is None else timedelta(seconds=window),
        )

    def _is_registered(self, name: str) -> bool:
        return name in self.app.tasks

    @contextmanager
    def _transaction(self) -> Iterator[tuple[Connection, ScheduleStore]]:
        with self.runtime.db.engine.begin() as conn:
            mark_beat_writer(conn)
            if self._store is None:
                self._store = store_for(conn)
                if not self._store.policies:
                    log.warning("beat: scheduled_tasks has no policy columns (a schema below 0008_schedule_policies); "
                                "every row runs with the default overlap, catch-up window and jitter, and "
                                "missed runs are not counted (run `dataforge db upgrade`)")
            yield conn, self._store

    def _refresh(self, *, include_flagged: bool) -> None:
        """Give active rows without a due time one (re-validating flagged rows on a full
        refresh), then re-read the earliest due time."""
        mono = self.monotonic()
        if include_flagged:
            for plugin in self.runtime.plugins:
                plugin.on_beat_refresh(self.runtime)
        ctx = self._context()
        after_id = 0
        while True:
            now = self.now()
            with self._transaction() as (conn, table):
                rows = table.fetch_unscheduled(
                    conn, after_id=after_id, limit=self.batch_size, include_flagged=include_flagged
                )
                for row in rows:
                    self._apply_unscheduled(conn, table, row, plan_unscheduled_row(row, now, ctx), now)
            if len(rows) < self.batch_size:
                break
            after_id = rows[-1].id
        self._next_due = self._read_next_due()
        self._need_refresh = False
        self._last_refresh = mono
        if include_flagged:
            self._last_full = mono

    def _apply_unscheduled(
        self, conn: Connection, table: ScheduleStore, row: RowSnapshot, decision: Reschedule | MarkInvalid,
        now: datetime,
    ) -> None:
        if isinstance(decision, MarkInvalid):
            if decision.reason != row.invalid_reason:
                self._flag(conn, table, row, decision.reason, now)
            return
        if not table.reschedule(conn, row, next_run_at=decision.next_run_at):
            return
        if row.invalid_reason is not None:
            self.stats["revived"] += 1
            log.warning("beat: schedule %d (%s) is valid again and runs from %s", row.id, row.name,
                        decision.next_run_at)
        if decision.next_run_at is None:
            self.stats["done"] += 1
            log.info("beat: once schedule %d (%s) already ran; marked done", row.id, row.name)
        else:
            self.stats["scheduled"] += 1
            log.debug("beat: schedule %d (%s) first due at %s", row.id, row.name, decision.next_run_at)

    def _flag(
        self, conn: Connection, table: ScheduleStore, row: RowSnapshot, reason: str, now: datetime,
        counts: Counter[str] | None = None,
    ) -> None:
        if table.flag(conn, row, reason=reason, now=now):
            (self.stats if counts is None else counts)["flagged"] += 1
            log.warning("beat: schedule %d (%s) is invalid and will not run until it is fixed: %s",
                        row.id, row.name, reason)

    def _read_next_due(self) -> datetime | None:
        """The earliest due time; an unreadable stored value flags its row and is skipped."""
        while True:
            with self._transaction() as (conn, table):
                found = table.fetch_next_due(conn)
                if found is None:
                    return None
                row_id, raw = found
                try:
                    return parse_db_datetime(raw)
                except ValueError:
                    bad = table.fetch_row(conn, row_id)
                    if bad is None or bad.next_run_at != raw:
                        continue
                    self._flag(conn, table, bad, f"next_run_at={raw!r}: not a timestamp; set it to NULL", self.now())

    # -- dispatch -----------------------------------------------------------------------------------
    def _dispatch_due(self, now: datetime, lease: LeaderLease) -> bool:
        """Send every due row, batch by batch; ``False`` if the broker failed (retry soon).

        On PostgreSQL, after a full first batch (a burst), ``dispatch_threads`` batches are in
        flight at once, each on its own connection and broker connection: each batch's rows are
        locked as they are read (``FOR UPDATE SKIP LOCKED``), so the batches are disjoint, and
        while one waits for the database (its read, its compare-and-set, its commit) another
        builds and publishes its messages. Every batch is still one transaction with the
        guarantees above.
        """
        ctx = self._context()
        # One batch first: most passes have fewer due rows than a batch, and need no thread.
        while True:
            outcome = self._dispatch_batch(now, ctx)
            self._count(outcome)
            if not outcome.broker_ok:
                return False
            if not outcome.full or not lease.ensure():
                return True
            if self.dispatch_threads > 1 and is_postgres(self.runtime.db.url):
                return self._dispatch_concurrently(now, ctx, lease)

    def _dispatch_concurrently(self, now: datetime, ctx: DispatchContext, lease: LeaderLease) -> bool:
        """The rest of a burst, ``dispatch_threads`` batches in flight (see :meth:`_dispatch_due`)."""
        threads = self.dispatch_threads
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="beat-dispatch")
        pool = self._pool
        running = {pool.submit(self._dispatch_batch, now, ctx) for _ in range(threads)}
        more, broker_ok = True, True
        try:
            while running:
                finished, running = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    outcome = future.result()  # a database error ends the pass (tick_once handles it)
                    self._count(outcome)
                    broker_ok = broker_ok and outcome.broker_ok
                    more = more and outcome.full
                if more and broker_ok and lease.ensure():
                    running |= {pool.submit(self._dispatch_batch, now, ctx) for _ in finished}
        finally:
            # A signal (SIGTERM's SystemExit) or an error: the other batches finish (publish and
            # commit, or roll back) before the pass ends, never half-done.
            for future in running:
                try:
                    self._count(future.result())
                except Exception:
                    log.debug("beat: a dispatch batch failed while the pass ended", exc_info=True)
        return broker_ok

    def _count(self, outcome: _BatchOutcome) -> None:
        for key, value in outcome.counts.items():
            self.stats[key] += value

    def _dispatch_batch(self, now: datetime, ctx: DispatchContext) -> _BatchOutcome:
        """One batch in one transaction (see the module docstring, "Dispatch"). Thread-safe:
        everything it changes is its own (its connection, its producer, its outcome)."""
        interrupted: BaseException | None = None
        broker_ok = True
        counts: Counter[str] = Counter()
        with self._transaction() as (conn, table):
            rows = table.fetch_due(conn, now, self.batch_size, lock=True)
            pending: list[tuple[Advance, Send]] = []
            for row in rows:
                decision = plan_due_row(row, now, ctx)
                if isinstance(decision, MarkInvalid):
                    self._flag(conn, table, row, decision.reason, now, counts)
                elif isinstance(decision, Reschedule):
                    if table.reschedule(conn, row, next_run_at=decision.next_run_at, missed=decision.missed):
                        counts["missed"] += decision.missed
                        log.warning("beat: schedule %d (%s): %s", row.id, row.name, decision.why)
                else:
                    advance = Advance(row, decision.next_run_at, len(decision.messages), decision.missed)
                    pending.append((advance, decision))
            won = table.advance_many(conn, [advance for advance, _ in pending], now=now)
            sends = [(advance, send) for advance, send in pending if advance.row.id in won]
            for advance, _ in pending:
                if advance.row.id not in won:
                    counts["lost_cas"] += 1
                    log.info("beat: schedule %d (%s) was advanced by someone else; not sent",
                             advance.row.id, advance.row.name)
            # Rows whose messages are all known to be in the broker (a row's messages are
            # published together, in order, so a failure cuts the list at one row).
            progress = [0]
            try:
                if sends:
                    self._publish_all(sends, progress)
            except BaseException as exc:  # SIGTERM's SystemExit included: undo what was not sent
                # Messages of a failed flush may or may not have arrived: they are sent
                # again next tick, with the same task ids (never lost; see docs/scheduler.md).
                for advance, _send in sends[progress[0]:]:
                    table.revert(conn, advance)
                if not isinstance(exc, Exception):
                    interrupted = exc
                else:
                    broker_ok = False
                    counts["publish_failed"] += sum(len(send.messages) for _, send in sends[progress[0]:])
                    self._broker_outage.failed(exc)
        if interrupted is not None:
            raise interrupted
        for advance, send in sends[: progress[0]]:
            self._log_sent(advance, send)
            counts["sent"] += len(send.messages)
            counts["missed"] += send.missed
        if broker_ok and sends:
            self._broker_outage.ok()
        return _BatchOutcome(broker_ok, len(rows) >= self.batch_size, counts)

    def _publish_all(self, sends: list[tuple[Advance, Send]], progress: list[int]) -> None:
        """Publish every message of ``sends``; ``progress[0]`` is kept at the number of rows
        whose messages are all known to be in the broker (all of them when this returns)."""
        ends = list(accumulate(len(send.messages) for _, send in sends))  # messages up to each row
        with self.producer_for_batch() as batch:
            total = 0
            for _advance, send in sends:
                for message in send.messages:
                    self.publish(message, batch.producer)
                    total += 1
                    if total % self.flush_every == 0:
                        batch.flush()
                        progress[0] = bisect_right(ends, total)
                    elif not batch.buffered:
                        progress[0] = bisect_right(ends, total)
            batch.flush()
            progress[0] = len(ends)

    def _log_sent(self, advance: Advance, send: Send) -> None:
        if not log.isEnabledFor(logging.INFO):
            return  # a burst of 100,000 runs: not even the arguments of 100,000 lines
        row = advance.row
        note = f" (catch-up; {send.missed} missed run(s) not sent)" if send.catch_up else ""
        for msg in send.messages:
            log.info(
                "Scheduler: Sending due task %s (%s) schedule=%d due=%s id=%s%s",
                row.name, msg.task_name, row.id, msg.headers.get(DUE_AT_HEADER, "").replace("T", " "), msg.task_id,
                note,
            )
