"""What one run carries from hook to hook: the task's own hooks and the recorder's handlers.

Celery hands every hook of a run the same request object (``task_prerun``, ``before_start``,
the task body, ``task_postrun``). The runtime keeps ONE :class:`RunState` on it, under
:data:`ATTRIBUTE`, instead of loose attributes: the lock it holds, why it was skipped, the
keys the job did not accept, and whether the delivery is a duplicate.

Celery also copies message headers onto the request, so a header named like the attribute
could put any JSON value there. :func:`run_state` only ever returns a :class:`RunState`
(replacing anything else), and JSON cannot produce one: a message cannot mark itself.

Duplicate deliveries: a message can arrive twice with the same task id and attempt (beat's
crash window, a failed broker flush, a redelivery after a worker crash). The recorder's
``task_prerun`` sets :attr:`RunState.duplicate_of` to the attempt's status when the attempt
already finished; :class:`~dataforge.worker.task.DataForgeTask` sets it to ``running`` when
another delivery of the same task id holds the run lock. The task then ends the delivery
without running it, and writes neither the result backend nor the execution row.

A redelivery of a run whose worker died (RabbitMQ gives an unacknowledged message back at
once) finds the run lock still held under its own task id by the dead delivery: it is not a
duplicate but a run that must wait for that lock (:attr:`RunState.waiting`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from dataforge.protocol import ExecutionStatus

if TYPE_CHECKING:
    from dataforge.worker.recording.records import RowImage

__all__ = ["ATTRIBUTE", "FinishedStatus", "RunState", "duplicate_reason", "peek_run_state", "run_state"]

#: The status a duplicate delivery found: the attempt's row status, or ``"unknown"`` when the
#: row could not be read back (the delivery is still not run: the safe side).
FinishedStatus = ExecutionStatus | Literal["unknown"]

#: The request attribute that holds the run's state.
ATTRIBUTE = "dataforge_run"


@dataclass(slots=True)
class RunState:
    """The state of one delivery of one attempt."""

    #: ``time.monotonic()`` when the run started (``task_prerun``).
    started: float = field(default_factory=time.monotonic)
    #: The attempt's ``running`` row image, queued at ``task_prerun`` (``None``: not recorded,
    #: e.g. a duplicate delivery, which owns no row).
    start: RowImage | None = None
    #: Wall-clock start (naive UTC) and the process that runs it (``worker`` column).
    started_at: datetime | None = None
    worker: str | None = None
    #: The outcome of this delivery was queued for recording (so ``task_postrun`` adds none).
    recorded: bool = False
    #: The job returned: a failure after that (an unserialisable result) is not the job's.
    returned: bool = False
    #: Ended to wait for the run lock of a dead delivery of the same run (re-queued).
    waiting: bool = False
    #: The run lock this delivery holds (key and owner token), if any.
    lock_key: str | None = None
    lock_token: str | None = None
    #: Why the run did not run (lock held, policy skip, duplicate delivery).
    skip_reason: str | None = None
    #: Message kwargs the job's signature did not accept.
    dropped: tuple[str, ...] = ()
    #: Set on a duplicate delivery: the status of the attempt that already ran (or runs).
    duplicate_of: FinishedStatus | None = None

    def duration_ms(self) -> int:
        return int((time.monotonic() - self.started) * 1000)


def run_state(request: Any) -> RunState:
    """The run's state on ``request``, created on first use."""
    state = getattr(request, ATTRIBUTE, None)
    if not isinstance(state, RunState):
        state = RunState()
        setattr(request, ATTRIBUTE, state)
    return state


def peek_run_state(request: Any) -> RunState | None:
    """The run's state if a hook created one, without creating it."""
    state = getattr(request, ATTRIBUTE, None) if request is not None else None
    return state if isinstance(state, RunState) else None


def duplicate_reason(task_id: str, attempt: int, status: FinishedStatus) -> str:
    """Why a duplicate delivery is not run (Ignore, warning, run log): its attempt already
    finished with ``status``, or (``running``) another delivery of it holds the run lock."""
    if status == ExecutionStatus.RUNNING:
        return f"duplicate delivery: attempt {attempt} of task {task_id} is running in another delivery"
    return f"duplicate delivery: attempt {attempt} of task {task_id} already finished ({status})"
