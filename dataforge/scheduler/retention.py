"""Retention of the execution history: finished rows older than N days are deleted, in batches.

``task_executions`` grows by one row per attempt forever unless something deletes it. The
leading beat runs :class:`Retention` when it starts leading and then hourly
(``DATAFORGE_HISTORY_RETENTION_DAYS``, default 30; 0 keeps everything), and ``dataforge
history prune`` runs :func:`prune` on demand.

What is deleted: rows whose run has ended (any status but ``running``) and whose end
(``finished_at``, else ``started_at``) is older than the cutoff. A ``running`` row is never
deleted, however old. Counters on ``scheduled_tasks`` are totals and are not touched.

How: in id order (the primary key; ids grow with time), :data:`BATCH` rows per short
transaction, so the recorder's writes (new rows at the top of the id range) never wait behind
a long delete; a round stops at the first batch with no row older than the cutoff (the rest
is younger). docs/runtime.md says how PostgreSQL time-partitioning would replace this at a
scale where deleting rows costs too much.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Final

from sqlalchemy import Connection, delete, select

from dataforge.db import Database
from dataforge.models import utcnow
from dataforge.protocol import ExecutionStatus
from dataforge.worker.recording.statements import EXECUTIONS

if TYPE_CHECKING:
    from dataforge.runtime import Runtime

__all__ = ["BATCH", "PRUNE_EVERY", "PruneResult", "Retention", "prune"]

log = logging.getLogger("dataforge.retention")

#: Rows examined (and at most deleted) per transaction.
BATCH: Final = 2000
#: Seconds between two prunes by the leading beat.
PRUNE_EVERY: Final = 3600.0
#: Batches per round of the leader duty; a longer backlog is worked through one round per second.
_ROUND_BATCHES: Final = 5


@dataclass(frozen=True)
class PruneResult:
    """What one prune did (or, with ``dry_run``, would do)."""

    cutoff: datetime
    deleted: int
    batches: int
    #: ``False`` when the round stopped at ``max_batches`` with older rows left.
    complete: bool
    dry_run: bool = False


def _old_ids(conn: Connection, after: int, cutoff: datetime, limit: int) -> tuple[list[int], int | None, bool]:
    """Ids of prunable rows among the next ``limit`` rows after ``after``; the last id read;
    whether any of them was older than the cutoff."""
    te = EXECUTIONS
    rows = conn.execute(
        select(te.c.id, te.c.status, te.c.finished_at, te.c.started_at)
        .where(te.c.id > after).order_by(te.c.id).limit(limit)
    ).all()  # fmt: skip
    old = [r for r in rows if (r.finished_at or r.started_at) is not None and (r.finished_at or r.started_at) < cutoff]
    ids = [r.id for r in old if r.status != ExecutionStatus.RUNNING.value]
    return ids, (rows[-1].id if rows else None), bool(old)


def prune(
    db: Database,
    older_than: timedelta,
    *,
    now: datetime | None = None,
    dry_run: bool = False,
    max_batches: int | None = None,
    batch: int = BATCH,
) -> PruneResult:
    """Delete (or count, ``dry_run``) finished rows that ended before ``now - older_than``."""
    cutoff = (now or utcnow()) - older_than
    te = EXECUTIONS
    after, deleted, batches = 0, 0, 0
    while max_batches is None or batches < max_batches:
        with db.engine.begin() as conn:
            ids, last, any_old = _old_ids(conn, after, cutoff, batch)
            if ids and not dry_run:
                conn.execute(delete(te).where(te.c.id.in_(ids)))
        batches += 1
        deleted += len(ids)
        if last is None or not any_old:
            return PruneResult(cutoff, deleted, batches, complete=True, dry_run=dry_run)
        after = last
    return PruneResult(cutoff, deleted, batches, complete=False, dry_run=dry_run)


class Retention:
    """The leader duty: prune at the start of a term, then every :data:`PRUNE_EVERY` seconds."""

    name = "history retention"

    def __init__(self, days: int) -> None:
        if days <= 0:
            raise ValueError("retention of 0 days keeps everything: do not install the duty")
        self.older_than = timedelta(days=days)

    def run(self, runtime: Runtime) -> float:
        result = prune(runtime.db, self.older_than, max_batches=_ROUND_BATCHES)
        if result.deleted:
            log.info("retention: deleted %d execution row(s) that ended before %s%s", result.deleted,
                     result.cutoff.isoformat(sep=" ", timespec="seconds"), "" if result.complete else "; more next")
        return PRUNE_EVERY if result.complete else 1.0
