"""The recorder's per-process writer: records queued by the run, written in batches off its path.

A run queues its row images (:mod:`.records`) and goes on; ONE daemon thread per process
writes them:

* **Batches.** The first record queued starts a batch; the batch is written
  :attr:`Writer.interval` (50 ms) later, or at once when it holds :attr:`Writer.max_batch`
  records. A run that ends before its batch is written is written once, already finished.
  On PostgreSQL a batch is ONE statement (a multi-row upsert that also moves the counters,
  :func:`~.statements.write_images_pg`); on SQLite one transaction.
* **Outages.** A batch that cannot be written (database down, restarting, schema not there
  yet) stays queued and is retried every second at most (backoff from 0.1 s); the first
  failure and the recovery are logged once each. The queue is bounded
  (:attr:`Writer.capacity` records): when it is full, new records are dropped, counted
  (``stats.dropped``) and logged; the ones queued first (the runs that were in flight when
  the outage began) are kept.
* **Bad records.** A batch refused for what it contains (a value the column cannot hold) is
  written record by record; a record that still fails is dropped, logged and counted, and
  the others are written.
* **Exit.** :meth:`Writer.close` (worker process shutdown, interpreter exit) writes what is
  queued, for at most a few seconds; what cannot be written then is logged as lost.
* **Heartbeat.** Before the first image of a process is written, and every ttl/3 after, the
  thread renews the process's liveness lease (:mod:`dataforge.worker.liveness`).

:meth:`Writer.finished_status` answers the duplicate-delivery check for attempts whose final
image is queued or being written: the database does not have them yet, this process does.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, ProgrammingError

from dataforge.db import Database
from dataforge.locks import LockBackend
from dataforge.protocol import ExecutionStatus
from dataforge.worker.liveness import Heartbeat
from dataforge.worker.recording import statements
from dataforge.worker.recording.connections import HeldConnections
from dataforge.worker.recording.counters import Tally, apply_tallies, counted_outcomes
from dataforge.worker.recording.records import CloseAnyAttempt, Record, RowImage

__all__ = ["RecorderStats", "Writer"]

log = logging.getLogger("dataforge.recorder")

_Key = tuple[str, ...] | tuple[str, int]


@dataclass
class RecorderStats:
    """Per-process counts: what was written, what waited, what was lost and why."""

    #: Records written, and the flushes that wrote them.
    written: int = 0
    flushes: int = 0
    #: Records that could not be kept (queue full) or written (refused by the database).
    dropped: int = 0
    #: Failed database operations (reads on a run's path, failed flushes), by event.
    db_errors: int = 0
    by_event: dict[str, int] = field(default_factory=dict)
    last_error: str | None = None

    def failed(self, event: str, exc: BaseException) -> None:
        self.db_errors += 1
        self.last_error = repr(exc)
        self.by_event[event] = self.by_event.get(event, 0) + 1


def _transient(exc: BaseException) -> bool:
    """A failure that says nothing about the records: keep them and try again later."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    # ProgrammingError: table or column missing (a deploy before its migration).
    return isinstance(exc, (OperationalError, InterfaceError, ProgrammingError))


def _duration(started: datetime | None, finished: datetime | None) -> int | None:
    if started is None or finished is None:
        return None
    return max(0, int((finished - started).total_seconds() * 1000))


class Writer:
    """See the module docstring. One per recorder (so one per app and process)."""

    #: Seconds a batch collects records before it is written.
    interval: float = 0.05
    #: Records per statement; a fuller queue is written at once.
    max_batch: int = 500
    #: Records kept while the database is unreachable; more are dropped (counted, logged).
    capacity: int = 10_000
    #: Longest wait between two tries while the database is unreachable.
    max_backoff: float = 1.0
    #: How long :meth:`close` keeps trying to write what is queued.
    exit_timeout: float = 5.0
    #: Seconds between two looks at which counter columns the schema has (and after any
    #: failed flush): a migration or a rollback under a running worker is picked up.
    schema_every: float = 300.0

    def __init__(
        self,
        db: Database,
        held: HeldConnections | None,
        *,
        locks: Callable[[], LockBackend],
        stats: RecorderStats,
    ) -> None:
        self.db = db
        self.held = held
        self.stats = stats
        self._locks = locks
        self._heartbeat: Heartbeat | None = None
        self._cond = threading.Condition()
        #: Queued records in order; a row image is keyed by its attempt, so a later image of
        #: the same attempt replaces the queued one in place.
        self._pending: dict[_Key, Record] = {}
        #: Final images of the batch being written: still "finished" for the duplicate check.
        self._inflight: dict[tuple[str, int], ExecutionStatus] = {}
        self._first_at = 0.0
        self._retry_at = 0.0
        self._backoff = 0.0
        self._outage_since: float | None = None
        self._full_logged = False
        self._seq = 0
        self._flush_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._pid = os.getpid()
        self._atexit: Callable[[], None] | None = None
        self._counted: frozenset[ExecutionStatus] | None = None
        self._counted_at = 0.0

    # -- queueing (the run's side) ----------------------------------------------------------
    def submit(self, record: Record) -> None:
        """Queue ``record`` (never blocks on the database, never raises)."""
        if self._pid != os.getpid():
            self.after_fork()
        with self._cond:
            if isinstance(record, RowImage):
                key: _Key = record.key
                queued = self._pending.get(key)
                if isinstance(queued, RowImage):
                    # A second start of a queued attempt is a concurrent delivery in this
                    # process (threads pool): the first one's start stays.
                    if record.status is not ExecutionStatus.RUNNING:
                        self._pending[key] = queued.then(record)
                    return
            else:
                self._seq += 1
                key = ("close-any", str(self._seq))
            if len(self._pending) >= self.capacity:
                self.stats.dropped += 1
                if not self._full_logged:
                    self._full_logged = True
                    log.error("recorder: %d execution records are waiting for the database; dropping new ones "
                              "(counted in stats.dropped) until it is back", len(self._pending))
                return
            was_empty = not self._pending
            self._pending[key] = record
            if was_empty:
                self._first_at = time.monotonic()
            if was_empty or len(self._pending) == self.max_batch:
                self._ensure_thread()
                self._cond.notify()

    def finished_status(self, key: tuple[str, int]) -> ExecutionStatus | None:
        """The status of attempt ``key`` if this process queued or is writing its outcome."""
        with self._cond:
            queued = self._pending.get(key)
            if isinstance(queued, RowImage) and queued.finished:
                return queued.status
            return self._inflight.get(key)

    def waiting(self) -> int:
        with self._cond:
            return len(self._pending)

    def set_heartbeat(self, heartbeat: Heartbeat) -> None:
        with self._cond:
            self._heartbeat = heartbeat

    # -- the thread ---------------------------------------------------------------------------
    def _ensure_thread(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="dataforge-recorder", daemon=True)
        self._thread.start()
        if self._atexit is None:
            ref = weakref.ref(self)

            def at_exit() -> None:
                writer = ref()
                if writer is not None:
                    writer.close()

            self._atexit = at_exit
            atexit.register(at_exit)

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._stopped:
                        return
                    now = time.monotonic()
                    wait = self._heartbeat.due_in() if self._heartbeat is not None else 60.0
                    due = False
                    if self._pending:
                        ready = max(self._first_at + self.interval, self._retry_at)
                        if len(self._pending) >= self.max_batch:
                            ready = self._retry_at
                        due = now >= ready
                        wait = min(wait, ready - now)
                    if due or wait <= 0:
                        break
                    self._cond.wait(wait)
            self._beat()
            if due:
                self.flush()

    def _beat(self) -> None:
        heartbeat = self._heartbeat
        if heartbeat is not None:
            try:
                heartbeat.beat(self._locks())
            except Exception:  # building the lock store failed: the next round tries again
                log.warning("recorder: heartbeat failed", exc_info=True)

    # -- writing ------------------------------------------------------------------------------
    def flush(self) -> bool:
        """Write one batch now (from any thread; batches are written one at a time, in order).
        ``True`` when nothing is left queued."""
        with self._flush_lock:
            with self._cond:
                if not self._pending:
                    return True
                keys = list(self._pending)[: self.max_batch]
                batch = [self._pending.pop(k) for k in keys]
                self._inflight = {
                    r.key: r.status for r in batch if isinstance(r, RowImage) and r.finished
                }
                if not self._pending:
                    self._first_at = 0.0
                else:
                    self._first_at = time.monotonic() - self.interval  # the rest is due too
            if self._heartbeat is not None and any(isinstance(r, RowImage) for r in batch):
                self._beat()  # the lease exists before a row naming this process does
            try:
                written = self._write(batch)
            except Exception as exc:
                self._failed(keys, batch, exc)
                return False
            finally:
                with self._cond:
                    self._inflight = {}
            self._succeeded(written)
            with self._cond:
                return not self._pending

    def _succeeded(self, written: int) -> None:
        self.stats.written += written
        self.stats.flushes += 1
        with self._cond:
            self._backoff = 0.0
            self._retry_at = 0.0
            self._full_logged = False
            since, self._outage_since = self._outage_since, None
        if since is not None:
            log.warning("recorder: database reachable again; execution records that waited %.1f s are being "
                        "written (%d still queued)", time.monotonic() - since, self.waiting())

    def _failed(self, keys: list[_Key], batch: list[Record], exc: BaseException) -> None:
        self.stats.failed("flush", exc)
        self._counted = None  # the schema may be what changed
        with self._cond:
            # Back at the front, in order; an image queued meanwhile for the same attempt
            # follows its earlier one.
            merged: dict[_Key, Record] = dict(zip(keys, batch, strict=True))
            for key, record in self._pending.items():
                earlier = merged.get(key)
                if isinstance(earlier, RowImage) and isinstance(record, RowImage):
                    merged[key] = earlier.then(record)
                else:
                    merged[key] = record
            self._pending = merged
            self._first_at = time.monotonic()
            self._backoff = min(self.max_backoff, max(0.1, self._backoff * 2))
            self._retry_at = time.monotonic() + self._backoff
            first = self._outage_since is None
            if first:
                self._outage_since = time.monotonic()
        if first:
            log.warning("recorder: could not write %d execution record(s) (%s: %s); they wait in memory (up to %d) "
                        "and are written when the database is back", len(batch), type(exc).__name__,
                        str(exc).splitlines()[0] if str(exc) else "", self.capacity)

    def _write(self, batch: list[Record]) -> int:
        """Write ``batch`` in order; how many rows were written. Raises on a transient failure
        (nothing was written); isolates records the database refuses."""
        try:
            return self._write_all(batch)
        except Exception as exc:
            if _transient(exc):
                raise
            log.warning("recorder: a batch of %d record(s) was refused (%r); writing them one by one",
                        len(batch), exc)
        written = 0
        for record in batch:
            try:
                written += self._write_all([record])
            except Exception as exc:
                if _transient(exc):
                    raise
                self.stats.dropped += 1
                log.error("recorder: dropped an execution record the database refuses: %r (%r)", record, exc)
        return written

    def _counters(self) -> frozenset[ExecutionStatus]:
        """The outcomes whose counter column the schema has (looked up now and then)."""
        if self._counted is None or time.monotonic() - self._counted_at > self.schema_every:
            with self.db.engine.connect() as conn:
                self._counted = counted_outcomes(conn)
            self._counted_at = time.monotonic()
        return self._counted

    def _write_all(self, batch: list[Record]) -> int:
        engine = self.db.engine
        counted = self._counters()
        if engine.dialect.name != "postgresql" or self.held is None:
            with engine.begin() as conn:
                return _write_one_by_one(conn, batch, counted)
        written = 0
        run: list[RowImage] = []
        for record in [*batch, None]:
            if isinstance(record, RowImage) and record.from_the_run:
                run.append(record)
                continue
            if run:
                written += self._write_images_pg(run, counted)
                run = []
            if record is not None:
                with engine.begin() as conn:
                    written += _write_one_by_one(conn, [record], counted)
        return written

    def _write_images_pg(self, images: list[RowImage], counted: frozenset[ExecutionStatus]) -> int:
        assert self.held is not None
        params: dict[str, list[Any]] = {name: [] for name in (
            "tid", "attempt", "task", "handler", "sid", "status", "started", "finished", "duration", "result",
            "error", "traceback", "worker", "count_as", "ord")}  # fmt: skip
        for ord_, image in enumerate(images):
            params["tid"].append(image.task_id)
            params["attempt"].append(image.attempt)
            params["task"].append(image.task_name)
            params["handler"].append(image.handler_path)
            params["sid"].append(image.schedule_id)
            params["status"].append(image.status.value)
            params["started"].append(image.started_at)
            params["finished"].append(image.finished_at)
            params["duration"].append(image.duration_ms)
            params["result"].append(image.result)
            params["error"].append(image.error)
            params["traceback"].append(image.traceback)
            params["worker"].append(image.worker)
            params["count_as"].append(None if image.count_as is None else image.count_as.value)
            params["ord"].append(ord_)
        return int(self.held.execute(statements.write_images_pg(counted), params).scalar_one())

    # -- lifecycle ----------------------------------------------------------------------------
    def close(self, timeout: float | None = None) -> None:
        """Write what is queued (for at most ``timeout`` s), stop the thread, drop the lease."""
        if self._pid != os.getpid():
            return
        deadline = time.monotonic() + (self.exit_timeout if timeout is None else timeout)
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(max(0.0, deadline - time.monotonic()))
        self._thread = None
        while self.waiting() and time.monotonic() < deadline:
            if not self.flush():
                time.sleep(min(self._backoff or 0.1, max(0.0, deadline - time.monotonic())))
        left = self.waiting()
        if left:
            self.stats.dropped += left
            log.error("recorder: %d execution record(s) could not be written before the process exits (%s); "
                      "the reaper records their runs as lost", left, self.stats.last_error)
            with self._cond:
                self._pending.clear()
        if self._heartbeat is not None:
            try:
                self._heartbeat.stop(self._locks())
            except Exception:
                log.debug("releasing the heartbeat failed", exc_info=True)
        if self._atexit is not None:
            atexit.unregister(self._atexit)
            self._atexit = None

    def after_fork(self) -> None:
        """In a forked child: the thread did not survive and the queue is the parent's to write."""
        self._cond = threading.Condition()
        self._flush_lock = threading.Lock()
        self._pending = {}
        self._inflight = {}
        self._thread = None
        self._heartbeat = None
        self._atexit = None
        self._pid = os.getpid()


def _write_one_by_one(conn: Connection, batch: Iterable[Record], counted: frozenset[ExecutionStatus]) -> int:
    """Write records one at a time in ``conn``'s transaction, then the counters they move."""
    tallies: dict[int, Tally] = {}
    written = 0
    for record in batch:
        if isinstance(record, RowImage):
            hit = _write_image(conn, record)
            if hit is not None:
                written += 1
                sid, was = hit
                if sid is not None:
                    tallies.setdefault(sid, Tally()).add(record.count_as, record.error, was=was)
        else:
            for sid in _close_any(conn, record):
                written += 1
                if sid is not None:
                    tallies.setdefault(sid, Tally()).add(record.count_as, record.error, was=None)
    apply_tallies(conn, tallies, counted)
    return written


def _image_params(image: RowImage) -> dict[str, Any]:
    return {
        "b_tid": image.task_id, "b_attempt": image.attempt, "b_task": image.task_name,
        "b_handler": image.handler_path, "b_sid": image.schedule_id, "b_status": image.status.value,
        "b_started": image.started_at, "b_finished": image.finished_at, "b_duration": image.duration_ms,
        "b_result": image.result, "b_error": image.error, "b_traceback": image.traceback, "b_worker": image.worker,
    }  # fmt: skip


def _write_image(conn: Connection, image: RowImage) -> tuple[int | None, str | None] | None:
    """Insert or take over the attempt's row; ``(schedule id, replaced status)`` if written."""
    params = _image_params(image)
    row = conn.execute(statements.row_of_attempt(), params).first()
    if row is None:
        te = statements.EXECUTIONS
        sid = conn.execute(statements.insert_image().returning(te.c.scheduled_task_id), params).scalar()
        return (sid, None)
    if not (image.reset or (image.takeover and not ExecutionStatus(row.status).finished)):
        return None
    if params["b_duration"] is None:
        params["b_duration"] = _duration(image.started_at or row.started_at, image.finished_at)
    params.update(b_id=row.id, b_was=row.status)
    if conn.execute(statements.update_image(), params).rowcount != 1:
        return None
    return (row.scheduled_task_id, row.status)


def _close_any(conn: Connection, close: CloseAnyAttempt) -> list[int | None]:
    """Close every running attempt of the task id; their schedule ids."""
    closed: list[int | None] = []
    for row in conn.execute(statements.running_attempts(), {"b_tid": close.task_id}).all():
        res = conn.execute(statements.close_by_id(), {
            "b_id": row.id, "b_status": close.status.value, "b_finished": close.finished_at,
            "b_duration": _duration(row.started_at, close.finished_at), "b_error": close.error,
            "b_traceback": close.traceback,
        })  # fmt: skip
        if res.rowcount:
            closed.append(row.scheduled_task_id)
    return closed

