"""The reaper: ``running`` rows whose worker process is gone become ``lost``, counted once.

A run's row says ``running`` until its outcome is written. When the whole worker dies (kill
-9 of the parent and its children, a lost host, a container killed), nobody is left to write
it: without the reaper the row would say ``running`` forever and the schedule's counters
would never account for the run.

Every worker process that records holds a liveness lease in the lock store, renewed every few
seconds (:mod:`dataforge.worker.liveness`); each row names its process (``worker``). The
leading beat runs :class:`Reaper` every :data:`REAP_EVERY` seconds:

1. **Which rows are running**, without an index on ``status`` (every close would have to
   update it): rows added since the last round (``id >`` the highest seen, on the primary
   key), the rows already known to be running (re-read by id), and a background sweep of the
   older ids in chunks (a term's first rounds, then again every :data:`SWEEP_EVERY`), which
   finds rows that were running before this beat led.
2. **Whose process is alive**: its lease is held. The lock store is probed first; when it
   cannot be reached, nothing is judged in that round.
3. **Reap**: a row whose process has been seen without a lease for :data:`CONFIRM` seconds
   (two looks, so a lock store that restarted empty, or recovered from an outage, has given
   the live workers time to take their leases again) becomes ``lost``, with the reason, and
   its schedule's ``lost_count`` moves once (the UPDATE only hits a row still ``running``
   under the same worker).

Bound: a dead process's lease expires within one ``DATAFORGE_LOCK_TTL``; the reaper sees it
at its next round and reaps it :data:`CONFIRM` later: **lost within TTL + 15 s**.

Rows whose ``worker`` carries no incarnation (written before liveness leases existed) cannot
be judged and are left alone (logged once).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import Connection, select

from dataforge.errors import LockUnavailableError
from dataforge.locks import LockBackend
from dataforge.models import utcnow
from dataforge.protocol import ExecutionStatus
from dataforge.worker.liveness import heartbeat_key
from dataforge.worker.recording import statements
from dataforge.worker.recording.counters import Tally, apply_tallies, counted_outcomes

if TYPE_CHECKING:
    from dataforge.runtime import Runtime

__all__ = ["CONFIRM", "REAP_EVERY", "SWEEP_EVERY", "Reaper"]

log = logging.getLogger("dataforge.reaper")

#: Seconds between two rounds.
REAP_EVERY: Final = 5.0
#: A process must be seen without its lease for this long before its rows are reaped. Longer
#: than a worker's lease renewal interval, so a lease lost by the store itself is back first.
CONFIRM: Final = 9.0
#: A whole-table sweep for running rows starts again this often (seconds).
SWEEP_EVERY: Final = 3600.0
#: Rows read per query (new rows, a sweep chunk, known rows re-read).
_CHUNK: Final = 5000
_PROBE_KEY: Final = "dataforge:reaper:probe"


@dataclass
class _Running:
    worker: str | None
    started_at: Any
    #: When the worker was first seen without its lease (monotonic), and last looked at.
    dead_since: float | None = None
    looked_at: float = 0.0


class Reaper:
    """The leader duty (see the module docstring)."""

    name = "reaper"

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._running: dict[int, _Running] = {}
        self._high: int | None = None
        self._sweep_from = 0
        self._sweep_to = 0
        self._next_sweep = float("-inf")
        self._unjudged: set[str] = set()
        #: Rows reaped since start.
        self.reaped = 0

    def run(self, runtime: Runtime) -> float:
        with runtime.db.engine.connect() as conn:
            self._scan(conn)
        if not self._running:
            return REAP_EVERY
        dead = self._dead(runtime.locks)
        if dead:
            self._reap(runtime, dead)
        return REAP_EVERY

    # -- which rows are running -------------------------------------------------------------------
    def _scan(self, conn: Connection) -> None:
        te = statements.EXECUTIONS
        columns = (te.c.id, te.c.status, te.c.worker, te.c.started_at)
        now = self._clock()
        if self._high is None:
            self._high = conn.execute(select(te.c.id).order_by(te.c.id.desc()).limit(1)).scalar() or 0
            self._next_sweep = float("-inf")
        if now >= self._next_sweep and self._sweep_from >= self._sweep_to:
            self._sweep_from, self._sweep_to = 0, self._high
            self._next_sweep = now + SWEEP_EVERY
        rows = list(conn.execute(select(*columns).where(te.c.id > self._high).order_by(te.c.id).limit(_CHUNK)))
        if rows:
            self._high = rows[-1].id
        if self._sweep_from < self._sweep_to:
            chunk = conn.execute(
                select(*columns).where(te.c.id > self._sweep_from, te.c.id <= self._sweep_to,
                                       te.c.status == ExecutionStatus.RUNNING.value)
                .order_by(te.c.id).limit(_CHUNK)
            ).all()  # fmt: skip
            self._sweep_from = chunk[-1].id if len(chunk) == _CHUNK else self._sweep_to
            rows.extend(chunk)
        known = list(self._running)
        for start in range(0, len(known), _CHUNK):
            rows.extend(conn.execute(select(*columns).where(te.c.id.in_(known[start : start + _CHUNK]))).all())
        seen_running: set[int] = set()
        for row in rows:
            if row.status != ExecutionStatus.RUNNING.value:
                continue
            seen_running.add(row.id)
            tracked = self._running.get(row.id)
            if tracked is None or tracked.worker != row.worker:  # new, or taken over by another delivery
                self._running[row.id] = _Running(row.worker, row.started_at)
        for row_id in [i for i in self._running if i not in seen_running]:
            del self._running[row_id]  # closed (or deleted) meanwhile

    # -- whose process is alive -------------------------------------------------------------------
    def _dead(self, locks: LockBackend) -> list[tuple[int, _Running]]:
        try:
            token = locks.acquire(_PROBE_KEY, 5.0, owner="reaper")
        except LockUnavailableError as exc:
            log.warning("reaper: lock store unreachable (%s); not judging any run this round", exc)
            return []
        if token is not None:
            locks.release(_PROBE_KEY, token)
        now = self._clock()
        alive: dict[str, bool] = {}
        dead: list[tuple[int, _Running]] = []
        for row_id, tracked in self._running.items():
            worker = tracked.worker
            key = heartbeat_key(worker)
            if worker is None or key is None:
                if worker not in self._unjudged:
                    self._unjudged.add(worker or "")
                    log.info("reaper: cannot tell whether worker %r of running row %d is alive (no liveness lease "
                             "for that form of worker name); leaving it", worker, row_id)
                continue
            if worker not in alive:
                alive[worker] = locks.held_by(key, worker)
            if now - tracked.looked_at > 3 * REAP_EVERY:
                tracked.dead_since = None  # not looked at for a while (another leader's term): look again
            tracked.looked_at = now
            if alive[worker]:
                tracked.dead_since = None
            elif tracked.dead_since is None:
                tracked.dead_since = now
            elif now - tracked.dead_since >= CONFIRM:
                dead.append((row_id, tracked))
        return dead

    # -- reap -------------------------------------------------------------------------------------
    def _reap(self, runtime: Runtime, dead: Iterable[tuple[int, _Running]]) -> None:
        now = utcnow()
        tallies: dict[int, Tally] = {}
        reaped: list[tuple[int, str | None]] = []
        with runtime.db.engine.begin() as conn:
            for row_id, tracked in dead:
                reason = (f"lost: worker {tracked.worker} stopped renewing its liveness lease (the process died); "
                          "reaped by beat")
                took = None
                if tracked.started_at is not None:
                    took = max(0, int((now - tracked.started_at).total_seconds() * 1000))
                hit = conn.execute(statements.reap_running(), {
                    "b_id": row_id, "b_worker": tracked.worker, "b_finished": now, "b_duration": took,
                    "b_error": reason,
                }).first()  # fmt: skip
                if hit is None:
                    continue
                reaped.append((row_id, tracked.worker))
                if hit.scheduled_task_id is not None:
                    tallies.setdefault(hit.scheduled_task_id, Tally()).add(ExecutionStatus.LOST, reason, was=None)
            apply_tallies(conn, tallies, counted_outcomes(conn))
        for row_id, worker in reaped:
            self._running.pop(row_id, None)
            log.warning("reaper: execution %d of worker %s marked lost (its worker is gone)", row_id, worker)
        self.reaped += len(reaped)
