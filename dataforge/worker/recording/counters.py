"""Moving the schedules' outcome counters: what one batch of written rows adds, per schedule.

The one rule (PostgreSQL's multi-row statement applies the same one in SQL,
:func:`~dataforge.worker.recording.statements.write_images_pg`): a row that was really
written with an outcome adds one to that outcome's counter; a row that took over a ``lost``
row takes that ``lost`` back out (the run was not lost after all, or runs again), so every run
is counted once; the last written outcome of a run that ran becomes the schedule's
``last_status``/``last_error``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from sqlalchemy import Connection, inspect

from dataforge.protocol import ExecutionStatus
from dataforge.worker.recording import statements
from dataforge.worker.recording.records import COUNTED, LAST_STATUS_OF, counter_column

__all__ = ["Tally", "apply_tallies", "counted_outcomes"]


@dataclass
class Tally:
    """What one schedule's counters gain from a batch."""

    outcomes: Counter[ExecutionStatus] = field(default_factory=Counter)
    unlost: int = 0
    last_status: ExecutionStatus | None = None
    last_error: str | None = None

    def add(self, count_as: ExecutionStatus | None, error: str | None, *, was: str | None) -> None:
        """A row written in order: its outcome (if any) and the status it replaced."""
        if was == ExecutionStatus.LOST:
            self.unlost += 1
        if count_as in COUNTED:
            self.outcomes[count_as] += 1
        if count_as in LAST_STATUS_OF:
            self.last_status, self.last_error = count_as, error

    @property
    def empty(self) -> bool:
        return not self.outcomes and not self.unlost


def counted_outcomes(conn: Connection) -> frozenset[ExecutionStatus]:
    """The outcomes whose counter column ``scheduled_tasks`` has. All of them at head; a
    database rolled back (the rollback drill: the legacy system runs again on the expanded
    schema) has ``success_count`` and ``failure_count`` only, and recording goes on with those."""
    columns = {c["name"] for c in inspect(conn).get_columns(statements.SCHEDULES.name)}
    return frozenset(s for s in COUNTED if counter_column(s) in columns)


def apply_tallies(conn: Connection, tallies: dict[int, Tally], counted: frozenset[ExecutionStatus] = COUNTED) -> None:
    """One counters UPDATE per schedule, in id order (two writers never wait on each other in
    opposite orders), for the counters of ``counted``."""
    for sid in sorted(tallies):
        tally = tallies[sid]
        if tally.empty:
            continue
        params: dict[str, object] = {f"b_{s.value}": tally.outcomes.get(s, 0) for s in counted}
        params.update(
            b_sid=sid, b_unlost=tally.unlost,
            b_last_status=None if tally.last_status is None else tally.last_status.value,
            b_last_error=tally.last_error,
        )  # fmt: skip
        conn.execute(statements.bump_counters(counted), params)
