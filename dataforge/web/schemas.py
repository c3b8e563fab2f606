"""The JSON shapes of the HTTP API (and so of /openapi.json).

Bodies use the ``scheduled_tasks`` column names. The models check JSON types only (a whole
number is an integer, not ``"5"`` nor ``true``) and the limits the columns themselves impose
(a ``name`` fits its ``VARCHAR``, an integer fits the column); what a value *means* (a cron that
evaluates, a registered task, kwargs that fit the task) is the schedule service's rule, the one
``dataforge schedules`` applies, so it is not repeated here.

Timestamps leave as RFC 3339 UTC (``2030-01-31T09:30:00Z``); the tables hold naive UTC.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, StrictStr
from sqlalchemy import String

from dataforge.models import ScheduledTask
from dataforge.protocol import ExecutionStatus, MissedRunPolicy, OverlapPolicy, ScheduleStatus, TaskType

__all__ = [
    "ExecutionOut",
    "ExecutionPage",
    "FieldProblem",
    "INT_MAX",
    "LegacyOut",
    "ProblemOut",
    "RegistryCheckOut",
    "RunNowOut",
    "ScheduleCreate",
    "ScheduleExecutionsPage",
    "ScheduleOut",
    "SchedulePage",
    "SchedulePatch",
    "TaskList",
    "TaskOut",
    "schedule_out",
]

#: The range of the tables' INTEGER columns (PostgreSQL ``integer``): ids and counts.
INT_MAX = 2**31 - 1


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


#: A stored naive-UTC timestamp, sent with its offset.
UtcTime = Annotated[datetime, AfterValidator(_utc)]


def _length(column: str) -> int | None:
    """The VARCHAR length of a ``scheduled_tasks`` column (``None``: unbounded text)."""
    kind = ScheduledTask.__table__.c[column].type
    return kind.length if isinstance(kind, String) else None


NameText = Annotated[StrictStr, Field(max_length=_length("name"))]
TaskNameText = Annotated[StrictStr, Field(max_length=_length("task_name"))]
CronText = Annotated[StrictStr, Field(max_length=_length("cron_expression"))]
ZoneText = Annotated[StrictStr, Field(max_length=_length("timezone"))]
#: Any value an INTEGER column holds; whether it makes sense is the service's rule.
Int32 = Annotated[StrictInt, Field(ge=-INT_MAX - 1, le=INT_MAX)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: StrictStr | None = Field(None, description="Free text; null clears it.")
    task_type: TaskType | None = Field(
        None, description="Inferred from the timing column given when left out; if given, it must agree with it."
    )
    interval_seconds: Int32 | None = Field(None, description="Run every N seconds.")
    cron_expression: CronText | None = Field(
        None, description="A 5-field crontab, read in `timezone`.", examples=["0 3 * * *"]
    )
    run_at: StrictStr | None = Field(
        None, description="Run once at this ISO 8601 time; an offset wins, a naive time is read in `timezone`.",
        examples=["2030-01-31T09:30:00+01:00"],
    )
    timezone: ZoneText | None = Field(None, description="IANA zone of cron_expression / run_at (UTC).")
    handler_kwargs: dict[str, Any] | None = Field(
        None, description="Keyword arguments of the task: a JSON object that fits its declared params."
    )
    timeout_seconds: Int32 | None = Field(
        None, description="Soft time limit of each run; null removes it."
    )
    max_retries: Int32 | None = Field(None, description="Retries of a failed run.")
    missed_run_policy: MissedRunPolicy | None = Field(
        None, description="Overdue runs after downtime: once, skip or all; null: the global DATAFORGE_MISSED_RUNS."
    )
    catchup_window_seconds: Int32 | None = Field(
        None, description="Missed runs older than this are not sent (counted missed); null: the global "
        "DATAFORGE_CATCHUP_WINDOW."
    )
    overlap_policy: OverlapPolicy | None = Field(
        None, description="A run that finds the previous one running: skip, buffer_one, allow or cancel_previous."
    )
    jitter_seconds: Int32 | None = Field(
        None, description="Send each run up to N seconds late, the same offset for every run."
    )
    status: ScheduleStatus | None = Field(None, description="active (the default) or paused...")

    def columns(self) -> dict[str, Any]:
        """The fields the client sent (``null`` included), as column values."""
        return self.model_dump(mode="json", exclude_unset=True)


class ScheduleCreate(_Body):
    """A new schedule: a name, a registered task and one timing column."""

    name: NameText = Field(description="Unique name of the schedule.")
    task_name: TaskNameText = Field(description="A registered Celery task name (GET /api/tasks).")


class SchedulePatch(_Body):
    """The columns to change; columns left out keep their value."""

    name: NameText | None = None
    task_name: TaskNameText | None = None


class ScheduleOut(BaseModel):
    """Every column of a ``scheduled_tasks`` row, ``handler_kwargs`` decoded, plus ``schedule``
    (a phrase for the timing). Columns added by later migrations appear as extra keys."""

    model_config = ConfigDict(extra="allow")

    id: int
    name: str
    description: str | None
    task_type: str
    task_name: str | None
    handler_path: str | None
    interval_seconds: int | None
    cron_expression: str | None
    run_at: UtcTime | None
    timezone: str
    handler_kwargs: dict[str, Any] | None = Field(description="null when the stored text is not a JSON object.")
    status: str
    timeout_seconds: int | None
    max_retries: int
    missed_run_policy: str | None
    catchup_window_seconds: int | None = None
    overlap_policy: str | None = None
    jitter_seconds: int | None = None
    missed_count: int = 0
    skipped_count: int = 0
    expired_count: int = 0
    lost_count: int = 0
    last_run_at: UtcTime | None
    next_run_at: UtcTime | None
    run_count: int
    success_count: int
    failure_count: int
    last_status: str | None
    last_error: str | None
    invalid_reason: str | None = Field(description="Why beat refuses this row; null when healthy.")
    invalid_at: UtcTime | None
    created_at: UtcTime
    updated_at: UtcTime
    handler_kwargs_legacy: str | None = None
    legacy_values: str | None = None
    schedule: str = Field(description="The timing in words: `every 60s`, `cron 0 3 * * * (UTC)`...")


def schedule_out(row: Mapping[str, Any]) -> ScheduleOut:
    """A row of the schedule service (``schedule_to_dict``) as the API shows it."""
    values = dict(row)
    values.pop("kwargs", None)
    try:
        decoded = json.loads(values.get("handler_kwargs") or "{}")
    except (TypeError, json.JSONDecodeError):
        decoded = None
    values["handler_kwargs"] = decoded if isinstance(decoded, dict) else None
    return ScheduleOut.model_validate(values)


class SchedulePage(BaseModel):
    items: list[ScheduleOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null: this is the last.")
    window_ended: bool = Field(
        description="The page stopped at a scan window (a filter with no index of its own): it may be short, or "
        "empty, and the search goes on from next_cursor."
    )
    total: int = Field(description="Schedules in the table (unfiltered).")
    total_exact: bool = Field(description="False: `total` is PostgreSQL's estimate (above 10,000 rows).")


class ExecutionOut(BaseModel):
    """One attempt of a run (a ``task_executions`` row) and its schedule's name."""

    model_config = ConfigDict(extra="allow")

    id: int
    scheduled_task_id: int | None
    schedule_name: str | None
    celery_task_id: str | None
    task_name: str | None
    handler_path: str | None
    status: ExecutionStatus | str
    started_at: UtcTime | None
    finished_at: UtcTime | None
    duration_ms: int | None
    result: str | None
    error: str | None
    attempt: int
    worker: str | None
    traceback: str | None


class ExecutionPage(BaseModel):
    items: list[ExecutionOut]
    next_cursor: str | None
    window_ended: bool


class ScheduleExecutionsPage(ExecutionPage):
    schedule: ScheduleOut


class RunNowOut(BaseModel):
    schedule_id: int
    task_name: str
    celery_task_id: str = Field(description="Follow it in GET /api/schedules/{id}/executions.")
    kwargs: dict[str, Any]


class TaskOut(BaseModel):
    task_name: str
    name: str
    description: str
    category: str
    params: list[Any]
    in_registry: bool = Field(description="Listed in REGISTERED_TASKS.")
    in_celery: bool = Field(description="Registered with Celery: a worker runs it, a schedule may send it.")
    dataforge_task: bool


class RegistryCheckOut(BaseModel):
    ok: bool
    only_in_registry: list[str]
    only_in_celery: list[str]


class TaskList(BaseModel):
    items: list[TaskOut]
    check: RegistryCheckOut


class LegacyOut(BaseModel):
    """The legacy switch and what still depends on the legacy path (``dataforge legacy status``)."""

    effective: bool
    persisted: bool | None
    env: bool
    legacy_runs_counted: int
    last_legacy_run_at: UtcTime | None
    updated_at: UtcTime | None
    updated_by: str | None
    rows_needing_shim: list[int]
    legacy_executions_recorded: int
    last_legacy_execution: UtcTime | None


class FieldProblem(BaseModel):
    field: str | None
    message: str


class ProblemOut(BaseModel):
    """Every refusal: a code, a sentence, and the field at fault when there is one."""

    error: str = Field(examples=["invalid"])
    message: str
    field: str | None = Field(None, description="The column (or parameter) at fault.")
    problems: list[FieldProblem] = Field(default_factory=list)
