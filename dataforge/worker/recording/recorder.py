"""The recorder of one app and process (``runtime.recorder``): the run's side of recording.

What a run does here, in order: :meth:`Recorder.finished_attempt` (``task_prerun``: the one
synchronous database read on a run's path: has this attempt already finished?), then
:meth:`Recorder.record` of row images (queued; the :class:`~.writer.Writer` thread writes
them in batches). None of these decides *when* to record: that is :mod:`.handlers`, from
Celery's events.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dataforge.db import Database, is_postgres
from dataforge.locks import LockBackend
from dataforge.protocol import ExecutionStatus
from dataforge.settings import Settings
from dataforge.worker.liveness import Heartbeat, new_incarnation, process_identity
from dataforge.worker.recording import statements
from dataforge.worker.recording.connections import HeldConnections
from dataforge.worker.recording.records import Record
from dataforge.worker.recording.writer import RecorderStats, Writer
from dataforge.worker.run_state import FinishedStatus

__all__ = ["READ_TIMEOUT", "Recorder", "RecorderStats", "truncate"]

#: The server cancels the read on a run's path after this long (the run then goes ahead).
READ_TIMEOUT = 1.0
#: ... and a flush after this long (it is retried).
WRITE_TIMEOUT = 10.0


_CUT = "...[truncated]"


def truncate(text: str | None, limit: int) -> str | None:
    """``text`` cut to ``limit`` characters, saying so."""
    if text is None or len(text) <= limit:
        return text
    return text[: limit - len(_CUT)] + _CUT


class Recorder:
    """Execution rows and outcome counters of one process (see the package docstring)."""

    def __init__(self, db: Database, settings: Settings, locks: Callable[[], LockBackend]) -> None:
        self.db = db
        self.settings = settings
        self.stats = RecorderStats()
        postgres = is_postgres(db.url)
        sync = settings.recorder_synchronous_commit
        #: The task thread's kept connection (the read at prerun) and the writer's.
        self.reads = HeldConnections(db.url, synchronous_commit=sync, statement_timeout=READ_TIMEOUT) if postgres \
            else None
        self.writes = HeldConnections(db.url, synchronous_commit=sync, statement_timeout=WRITE_TIMEOUT) \
            if postgres else None
        self.writer = Writer(db, self.writes, locks=locks, stats=self.stats)
        self._incarnation = new_incarnation()
        self._worker: str | None = None

    def worker_id(self, hostname: str | None) -> str:
        """This process's ``worker`` value; the first call starts its heartbeat."""
        if self._worker is None:
            self._worker = process_identity(hostname, self._incarnation)
            self.writer.set_heartbeat(Heartbeat(self._worker, self.settings.lock_ttl))
        return self._worker

    def finished_attempt(self, task_id: str, attempt: int) -> FinishedStatus | None:
        """The status of attempt ``(task_id, attempt)`` if it already finished, else ``None``
        (no row, or ``running``/``lost``: a redelivery may take it over). One read; raises if
        the database cannot answer (the caller fails open)."""
        queued = self.writer.finished_status((task_id, attempt))
        if queued is not None:
            return queued
        row: tuple[Any, ...] | None
        if self.reads is not None:
            row = self.reads.fetch_one(statements.ATTEMPT_STATE_SQL, (task_id, attempt))
        else:
            with self.db.engine.connect() as conn:
                found = conn.execute(statements.attempt_state(), {"b_tid": task_id, "b_attempt": attempt}).first()
            row = None if found is None else tuple(found)
        if row is None:
            return None
        try:
            status = ExecutionStatus(str(row[0]))
        except ValueError:
            return "unknown"
        return status if status.finished else None

    def record(self, record: Record) -> None:
        """Queue a record for the writer (never blocks, never raises)."""
        self.writer.submit(record)

    def flush(self) -> bool:
        """Write everything queued now (eager runs, tests); ``False`` if the database refused
        (the writer thread keeps trying). Returns once a batch the thread was writing is
        written too: an empty queue alone does not mean the rows are in the database."""
        while True:
            flushes = self.stats.flushes
            if self.writer.flush():  # waits for the batch in flight, if any
                return True
            if self.stats.flushes == flushes:  # nothing written: refused
                return False

    def waiting(self) -> int:
        return self.writer.waiting()

    def after_fork(self) -> None:
        self.writer.after_fork()
        for held in (self.reads, self.writes):
            if held is not None:
                held.after_fork()

    def close(self) -> None:
        self.writer.close()
        for held in (self.reads, self.writes):
            if held is not None:
                held.close()
