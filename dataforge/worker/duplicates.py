"""Duplicate deliveries: how a delivery learns that its attempt already ran, and what it says.

A message can arrive twice with the same task id and attempt (beat's crash window, a failed
broker flush, a redelivery after a worker crash). The recorder's ``task_prerun`` finds the
attempt's row and marks the request with its status when the attempt already finished;
:class:`~dataforge.worker.task.DataForgeTask` marks it ``running`` when another delivery of
the same task id holds the run lock. The task then ends the delivery without running it.
This module is the contract between the two, so neither imports the other.
"""

from __future__ import annotations

from typing import Any

from dataforge.protocol import ExecutionStatus

__all__ = ["FinishedStatus", "already_finished", "duplicate_reason"]


class FinishedStatus(str):
    """The mark on a duplicate delivery: ``request.dataforge_already_finished``, the status of
    the attempt's row (put by ``task_prerun``), or ``running`` (put by
    ``DataForgeTask.before_start`` when another delivery of the attempt holds the run lock).

    A ``str`` subclass on purpose: Celery copies message headers onto the request, and a JSON
    header can never produce this type, so only ``task_prerun`` can mark a request.
    """

    __slots__ = ()


def already_finished(request: Any) -> FinishedStatus | None:
    """The mark of a duplicate delivery, or ``None`` (also for anything a header put there)."""
    mark = getattr(request, "dataforge_already_finished", None)
    return mark if isinstance(mark, FinishedStatus) else None


def duplicate_reason(task_id: str, attempt: int, status: str) -> str:
    """Why a duplicate delivery is not run (Ignore, warning, run log): its attempt already
    finished with ``status``, or (``running``) another delivery of it holds the run lock."""
    if status == ExecutionStatus.RUNNING:
        return f"duplicate delivery: attempt {attempt} of task {task_id} is running in another delivery"
    return f"duplicate delivery: attempt {attempt} of task {task_id} already finished ({status})"
