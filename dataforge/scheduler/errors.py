"""Errors of the schedule service (the verbs of ``dataforge schedules`` and the HTTP API).

A definition that cannot be evaluated is :class:`dataforge.errors.ScheduleError` (beat flags
rows with it too); these are about the request, not the definition.
"""

from __future__ import annotations

from dataforge.errors import DataForgeError, ScheduleError, UnknownTaskError

__all__ = ["ScheduleCannotRunError", "ScheduleNotFoundError", "ScheduleStateError"]


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


class ScheduleCannotRunError(DataForgeError):
    """``resume`` or ``run-now`` of a row whose stored definition cannot run (edited by raw
    SQL, a task removed by a deploy...). Nothing was changed; ``field`` is the column to fix
    (``task_name`` for an unregistered task) and ``cause`` the refusal of that column."""

    def __init__(self, schedule_id: int, name: str, verb: str, cause: ScheduleError | UnknownTaskError) -> None:
        self.schedule_id = schedule_id
        self.name = name
        self.verb = verb
        self.cause = cause
        self.field = cause.field if isinstance(cause, ScheduleError) else "task_name"
        reason = cause.reason if isinstance(cause, ScheduleError) else str(cause)
        super().__init__(f"schedule {schedule_id} ({name}) cannot {verb}: its {self.field} is refused: {reason}")
