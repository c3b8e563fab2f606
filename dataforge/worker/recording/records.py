"""What the recorder writes: pure values, built by the handlers, queued, written by the writer.

Two kinds:

* :class:`RowImage`: the row of one attempt ``(celery_task_id, attempt)`` as this process
  knows it: ``running`` when it starts, then its outcome. A later image of the same attempt
  replaces a queued earlier one (:meth:`RowImage.then`), so a run that finishes before the
  next flush is written once, already finished. Writing an image is an upsert that only
  takes over a ``running`` or ``lost`` row (never a finished one), and moves the schedule's
  counters once, only if it was written.
* :class:`CloseAnyAttempt`: the worker's parent process closing whatever attempt of a task
  id is still running, when it cannot know which attempt it was.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Final

from dataforge.protocol import ExecutionStatus

__all__ = ["COUNTED", "LAST_STATUS_OF", "CloseAnyAttempt", "Record", "RowImage", "counter_column"]

#: Outcomes with a counter on ``scheduled_tasks`` (``<status>_count``): every run beat sent
#: ends in exactly one of them (``retry`` is not an outcome: the next attempt is).
COUNTED: Final = frozenset(
    {ExecutionStatus.SUCCESS, ExecutionStatus.FAILURE, ExecutionStatus.SKIPPED, ExecutionStatus.EXPIRED,
     ExecutionStatus.LOST}
)  # fmt: skip
#: Outcomes that also set ``last_status``/``last_error``: runs that ran. A run that did not
#: run (skipped, expired) leaves the last outcome of the schedule as it was.
LAST_STATUS_OF: Final = frozenset({ExecutionStatus.SUCCESS, ExecutionStatus.FAILURE, ExecutionStatus.LOST})


def counter_column(outcome: ExecutionStatus) -> str:
    """The ``scheduled_tasks`` column counting ``outcome``."""
    if outcome not in COUNTED:
        raise ValueError(f"{outcome} has no counter")
    return f"{outcome.value}_count"


@dataclass(frozen=True, slots=True)
class RowImage:
    """One attempt's row as this process knows it (see the module docstring)."""

    task_id: str
    attempt: int
    status: ExecutionStatus
    task_name: str | None = None
    handler_path: str | None = None
    schedule_id: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_ms: int | None = None
    result: str | None = None
    error: str | None = None
    traceback: str | None = None
    worker: str | None = None
    #: The counter this image moves when it is written (``None``: none, e.g. ``running``, ``retry``).
    count_as: ExecutionStatus | None = None
    #: May replace the attempt's row while that is ``running`` or ``lost`` (a redelivery takes
    #: its own attempt over). ``False``: only ever inserted (an expired message never touches
    #: a run that exists).
    takeover: bool = True
    #: Replaces the row whatever its status (eager mode: an explicit in-process call always runs).
    reset: bool = False

    @property
    def key(self) -> tuple[str, int]:
        return (self.task_id, self.attempt)

    @property
    def finished(self) -> bool:
        return self.status.finished

    @property
    def from_the_run(self) -> bool:
        """Written by the process that ran the attempt (it knows the start): the common case,
        which PostgreSQL writes as one multi-row statement per flush."""
        return self.started_at is not None and self.takeover and not self.reset

    def then(self, later: RowImage) -> RowImage:
        """``later`` replacing this queued image of the same attempt, keeping what only the
        earlier one knew (the start, and the right to reset an eager row)."""
        return replace(
            later,
            task_name=later.task_name or self.task_name,
            handler_path=later.handler_path or self.handler_path,
            schedule_id=later.schedule_id if later.schedule_id is not None else self.schedule_id,
            started_at=later.started_at or self.started_at,
            worker=later.worker or self.worker,
            reset=self.reset or later.reset,
        )


@dataclass(frozen=True, slots=True)
class CloseAnyAttempt:
    """Close every still-running attempt of ``task_id`` (parent side, attempt unknown)."""

    task_id: str
    status: ExecutionStatus
    finished_at: datetime
    count_as: ExecutionStatus | None = None
    error: str | None = None
    traceback: str | None = None


Record = RowImage | CloseAnyAttempt
