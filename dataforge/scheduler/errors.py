"""Errors of the schedule service (the verbs of ``dataforge schedules`` and the HTTP API).

A definition that cannot be evaluated is :class:`dataforge.errors.ScheduleError` (beat flags
rows with it too); these are about the request, not the definition.
"""

from __future__ import annotations

from dataforge.errors import DataForgeError

__all__ = ["ScheduleNotFoundError", "ScheduleStateError"]


class ScheduleNotFoundError(DataForgeError):
    """No schedule has this id or name."""

    def __init__(self, ref: str) -> None:
        self.ref = ref
        super().__init__(f"no schedule with id or name {ref!r}; `dataforge schedules list` shows them")


class ScheduleStateError(DataForgeError):
    """The verb does not apply to the row in its current status (resume a done ``once`` row...)."""

    def __init__(self, schedule_id: int, status: str, reason: str) -> None:
        self.schedule_id = schedule_id
        self.status = status
        super().__init__(f"schedule {schedule_id} is {status}: {reason}")
