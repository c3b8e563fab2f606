"""The contract between beat, workers, the schedule writers and the database: one definition each.

Everything two components must agree on without importing each other lives here: the kwarg
and header names of a scheduled message, the prefix of runtime-internal keys, the publish
retry policy, and the values of the enumerated columns (schedule status, task type, execution
status) and of the policies. Imports nothing from the project, so any layer may import it.

The enums are :class:`~enum.StrEnum`: a member *is* its string, so it compares equal to the
value a row or a message holds and goes into SQL and JSON unchanged.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

__all__ = [
    "DUE_AT_HEADER",
    "HARD_LIMIT_GRACE_SECONDS",
    "INTERNAL_PREFIX",
    "LEGACY_LOCK_KEY",
    "MAX_RETRIES_HEADER",
    "MIN_CATCHUP_WINDOW_SECONDS",
    "OVERLAP_HEADER",
    "PUBLISH_RETRY_POLICY",
    "SCHEDULE_ID_HEADER",
    "SCHEDULE_ID_KWARG",
    "ExecutionStatus",
    "LockUnavailablePolicy",
    "MissedRunPolicy",
    "OverlapPolicy",
    "ScheduleStatus",
    "TaskType",
]

# -- the scheduled message ---------------------------------------------------------------------

#: The kwarg beat adds to every scheduled message: the id of the ``scheduled_tasks`` row.
SCHEDULE_ID_KWARG: Final = "scheduled_task_id"
#: Keys starting with this are plumbing of the runtime or of the legacy executor (``_lock_key``),
#: never job input: a schedule may not set them and a job gets them only if it names them.
INTERNAL_PREFIX: Final = "_"
#: The key the legacy executor added to every call of a job: ``scheduled_task:<schedule id>``. A
#: converted job that reads it gets that value back (``run_job(..., legacy_lock_key=True)``).
LEGACY_LOCK_KEY: Final = "_lock_key"
#: Header carrying the row's ``max_retries`` (the retry count is the schedule's, not the task's).
MAX_RETRIES_HEADER: Final = "dataforge_max_retries"
#: Headers saying which schedule and which due time a message is a run of (logs,
#: ``celery events``, and telling a re-sent run from a new one).
SCHEDULE_ID_HEADER: Final = "dataforge_schedule_id"
DUE_AT_HEADER: Final = "dataforge_due_at"
#: Header carrying the schedule's :class:`OverlapPolicy` when it is not ``skip`` (the worker's
#: default when the header is absent), so the run lock is taken the way the schedule asks.
OVERLAP_HEADER: Final = "dataforge_overlap"
#: The hard time limit is the row's ``timeout_seconds`` plus this, so the soft limit's cleanup
#: can finish before the child is killed.
HARD_LIMIT_GRACE_SECONDS: Final = 30
#: A publish gives up after about a second (beat then rolls the batch's unsent runs back and
#: retries them on the next tick) instead of Celery's default of blocking for many seconds.
PUBLISH_RETRY_POLICY: Final = {"max_retries": 2, "interval_start": 0.0, "interval_step": 0.5, "interval_max": 0.5}


# -- enumerated columns ------------------------------------------------------------------------


class ScheduleStatus(StrEnum):
    """``scheduled_tasks.status``. Beat runs ``active`` rows only."""

    ACTIVE = "active"
    PAUSED = "paused"
    DISABLED = "disabled"
    #: A ``once`` row that has run stays in the table, marked done.
    DONE = "done"


class TaskType(StrEnum):
    """``scheduled_tasks.task_type``: which timing column is the schedule."""

    INTERVAL = "interval"
    CRON = "cron"
    ONCE = "once"


class ExecutionStatus(StrEnum):
    """``task_executions.status``: ``running``, then one of the others."""

    RUNNING = "running"
    SUCCESS = "success"
    FAILURE = "failure"
    #: This attempt failed and a retry (the next attempt, same task id) was queued.
    RETRY = "retry"
    #: The run lock was held (or a policy said skip): the job did not run.
    SKIPPED = "skipped"
    #: The worker process died mid-run (SIGKILL, OOM): nobody knows how far it got.
    LOST = "lost"
    #: The message expired in the queue before any worker started it: the job did not run.
    EXPIRED = "expired"

    @property
    def finished(self) -> bool:
        """A finished attempt is never run again; an unfinished one may be taken over by a
        redelivery of the same attempt."""
        return self not in (ExecutionStatus.RUNNING, ExecutionStatus.LOST)


# -- policies ----------------------------------------------------------------------------------

#: The shortest catch-up window a schedule or the global setting may have: beat under load (a
#: burst of due rows, a failover) reaches runs seconds late, and a shorter window would drop
#: runs that were merely late (Temporal has the same floor).
MIN_CATCHUP_WINDOW_SECONDS: Final = 10


class MissedRunPolicy(StrEnum):
    """What beat does with runs whose due time passed while it (or the database) was down."""

    #: Fire one catch-up run for all of them, then realign to the schedule.
    ONCE = "once"
    #: Realign without firing (a run reached within the grace still fires: beat's own latency).
    SKIP = "skip"
    #: Replay each missed run inside the catch-up window, then realign.
    ALL = "all"


class OverlapPolicy(StrEnum):
    """What a run does when the previous run of its schedule still holds the run lock."""

    #: Do not run; recorded ``skipped``.
    SKIP = "skip"
    #: Wait for the running one and start when it ends; at most one run waits, others skip.
    BUFFER_ONE = "buffer_one"
    #: Run alongside it: no lock is taken.
    ALLOW = "allow"
    #: Terminate the running one, then run.
    CANCEL_PREVIOUS = "cancel_previous"


class LockUnavailablePolicy(StrEnum):
    """What a run does when the lock store cannot be reached when it starts."""

    #: Re-queue with backoff; the run never goes ahead unlocked.
    RETRY = "retry"
    #: Run without the lock.
    RUN = "run"
    #: Record the run as skipped.
    SKIP = "skip"
