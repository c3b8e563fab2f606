"""Every reason beat would refuse a row's schedule, by the scheduler's own rules.

The data step migrates schedule columns unchanged; a row whose cron expression, time zone,
interval... beat refuses simply stops running after the upgrade (it was "silently never run"
by the legacy code). Only Python can evaluate a cron expression, so the report asks
:mod:`dataforge.scheduler.schedules` (the functions beat itself validates with), one column
at a time, so that a row with a bad cron expression AND an unknown time zone is reported with
both, not only the first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from dataforge.errors import ScheduleError
from dataforge.scheduler.schedules import validate_definition, validate_schedule, validate_timezone

__all__ = ["SCHEDULE_COLUMNS", "ScheduleProblem", "schedule_problems"]

#: The columns read for the checks (legacy columns: they exist before and after 0002).
SCHEDULE_COLUMNS = (
    "task_type", "interval_seconds", "cron_expression", "run_at", "timezone", "timeout_seconds", "max_retries",
)  # fmt: skip
#: ScheduleError.field -> report reason; every other field is ``invalid_schedule``.
_REASON_FOR_FIELD = {"cron_expression": "invalid_cron", "timezone": "unknown_timezone"}


@dataclass(frozen=True)
class ScheduleProblem:
    """One column beat refuses: the report reason, the column, its value and why."""

    code: str
    field: str
    value: object
    reason: str

    @property
    def detail(self) -> str:
        return f"{self.field}={self.value!r}: {self.reason}"


def schedule_problems(row: Any, schedule_id: int | None = None) -> list[ScheduleProblem]:
    """Every problem of ``row`` (an object with :data:`SCHEDULE_COLUMNS` as attributes), one
    per column; empty when beat would accept the schedule."""
    found: list[ScheduleProblem] = []
    _collect(lambda: validate_timezone(row.timezone, schedule_id), found)
    # The schedule itself, read in UTC when the zone is already reported (so a bad cron
    # expression is reported beside it instead of hiding behind it).
    zone = "UTC" if found else row.timezone
    _collect(
        lambda: validate_schedule(
            row.task_type, interval_seconds=row.interval_seconds, cron_expression=row.cron_expression,
            run_at=row.run_at, timezone=zone, schedule_id=schedule_id,
        ),
        found,
    )  # fmt: skip
    # The other columns beat checks, each on its own (validate_definition stops at the first).
    once = partial(validate_definition, task_type="once", run_at="2000-01-01 00:00:00", schedule_id=schedule_id)
    _collect(partial(once, timeout_seconds=row.timeout_seconds), found)
    _collect(partial(once, max_retries=row.max_retries), found)
    return found


def _collect(check: Callable[[], object], found: list[ScheduleProblem]) -> None:
    try:
        check()
    except ScheduleError as exc:
        found.append(ScheduleProblem(_REASON_FOR_FIELD.get(exc.field, "invalid_schedule"), exc.field, exc.value,
                                     exc.reason))  # fmt: skip
