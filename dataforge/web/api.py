"""The JSON API under ``/api``: the verbs of ``dataforge schedules`` over HTTP.

Every write goes through :mod:`dataforge.scheduler.service`, the code path of the CLI:
validated in full before anything is written, refusals naming the column (422), unknown ids
404, verbs that do not apply to the row 409. Listings are keyset pages (``cursor`` /
``next_cursor``) on indexes, usable at a million schedules (see the service's paging section).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from kombu.exceptions import OperationalError as BrokerError
from kombu.utils.url import maybe_sanitize_url

from dataforge.errors import ScheduleError, UnknownTaskError
from dataforge.legacy.status import legacy_status
from dataforge.protocol import ExecutionStatus, ScheduleStatus
from dataforge.scheduler import service
from dataforge.scheduler.schedules import to_naive_utc
from dataforge.web.auth import require_api
from dataforge.web.context import Console
from dataforge.web.errors import HTTPProblem, Problem, problem_for
from dataforge.web.schemas import (
    INT_MAX,
    ExecutionOut,
    ExecutionPage,
    LegacyOut,
    ProblemOut,
    RegistryCheckOut,
    RunNowOut,
    ScheduleCreate,
    ScheduleExecutionsPage,
    ScheduleOut,
    SchedulePage,
    SchedulePatch,
    TaskList,
    TaskOut,
    schedule_out,
)

__all__ = ["console_of", "documented", "router"]

_MEANING = {
    400: "The request is malformed (a body that is not JSON, a Host this console does not answer).",
    401: "No or a wrong bearer token.",
    403: "A cross-site write.",
    404: "No schedule has this id.",
    409: "The verb does not apply to the row as it is (resume an active row, run a row that cannot run), or a "
         "concurrent write took the name first.",
    422: "A value is refused; `field` names it. Nothing was written.",
    503: "The database, the broker or the task packages cannot be reached.",
}


def documented(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The refusals a route may answer, for /openapi.json."""
    return {code: {"model": ProblemOut, "description": _MEANING[code]} for code in (400, 401, 403, 503, *codes)}


router = APIRouter(prefix="/api", dependencies=[Depends(require_api)], tags=["api"])


def console_of(request: Request) -> Console:
    console = request.app.state.console
    assert isinstance(console, Console)
    return console


ConsoleDep = Annotated[Console, Depends(console_of)]
ScheduleId = Annotated[int, Path(ge=1, le=INT_MAX, description="The schedule's id.")]
Limit = Annotated[int, Query(ge=1, le=service.MAX_PAGE, description="Rows per page.")]
Cursor = Annotated[str | None, Query(max_length=64, description="The next_cursor of the previous page.")]


def _naive_utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return to_naive_utc(value) if value.tzinfo is not None else value


def _stored_row(exc: ScheduleError | UnknownTaskError) -> HTTPProblem:
    return HTTPProblem(problem_for(exc, stored_row=True))


@router.get("/tasks", response_model=TaskList, responses=documented())
def list_tasks(console: ConsoleDep) -> TaskList:
    """Every task of DATAFORGE_TASK_PACKAGES: REGISTERED_TASKS joined with Celery's registry."""
    tasks, check = console.tasks()
    return TaskList(items=[TaskOut.model_validate(t) for t in tasks.values()],
                    check=RegistryCheckOut.model_validate(check.to_json()))


@router.get("/schedules", response_model=SchedulePage, responses=documented(422))
def list_schedules(
    console: ConsoleDep,
    status: Annotated[list[ScheduleStatus] | None, Query(description="Only rows in these statuses.")] = None,
    task: Annotated[str | None, Query(max_length=255, description="Only rows sending this task.")] = None,
    invalid: Annotated[bool | None, Query(description="true: rows beat refuses; false: rows it accepts.")] = None,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> SchedulePage:
    """Schedules by id, a page at a time."""
    page = service.page_schedules(console.db, statuses=status or (), task_name=task, invalid=invalid, cursor=cursor,
                                  limit=limit)
    total = service.count_schedules(console.db)
    return SchedulePage(items=[schedule_out(row) for row in page.items], next_cursor=page.next_cursor,
                        window_ended=page.window_ended, total=total.value, total_exact=total.exact)


@router.post("/schedules", status_code=201, response_model=ScheduleOut, responses=documented(409, 422))
def create_schedule(console: ConsoleDep, body: ScheduleCreate, response: Response) -> ScheduleOut:
    """Add a schedule: validated like `dataforge schedules add` (task, timing, kwargs), then written."""
    row = service.add_schedule(console.db, console.catalog(), service.edit_from_columns(body.columns())).row
    response.headers["Location"] = f"/api/schedules/{row['id']}"
    return schedule_out(row)


@router.get("/schedules/{schedule_id}", response_model=ScheduleOut, responses=documented(404))
def get_schedule(console: ConsoleDep, schedule_id: ScheduleId) -> ScheduleOut:
    return schedule_out(service.get_schedule(console.db, schedule_id))


@router.patch("/schedules/{schedule_id}", response_model=ScheduleOut, responses=documented(404, 409, 422))
def patch_schedule(console: ConsoleDep, schedule_id: ScheduleId, body: SchedulePatch) -> ScheduleOut:
    """Change the columns given; a timing change re-plans the next run (`dataforge schedules edit`)."""
    edit = service.edit_from_columns(body.columns())
    return schedule_out(service.edit_schedule(console.db, console.catalog(), schedule_id, edit).row)


@router.delete("/schedules/{schedule_id}", response_model=ScheduleOut, responses=documented(404))
def delete_schedule(console: ConsoleDep, schedule_id: ScheduleId) -> ScheduleOut:
    """Delete for good (pause keeps it); returns the row as it was. Its executions stay."""
    return schedule_out(service.delete_schedule(console.db, schedule_id))


@router.post("/schedules/{schedule_id}/pause", response_model=ScheduleOut, responses=documented(404, 409))
def pause_schedule(console: ConsoleDep, schedule_id: ScheduleId) -> ScheduleOut:
    """Stop sending it (a run in progress finishes). Pausing a paused row changes nothing."""
    return schedule_out(service.pause_schedule(console.db, schedule_id).row)


@router.post("/schedules/{schedule_id}/resume", response_model=ScheduleOut, responses=documented(404, 409))
def resume_schedule(console: ConsoleDep, schedule_id: ScheduleId) -> ScheduleOut:
    """Send it again from the next due time after now (runs missed while paused are not replayed)."""
    try:
        return schedule_out(service.resume_schedule(console.db, console.catalog(), schedule_id).row)
    except (ScheduleError, UnknownTaskError) as exc:
        raise _stored_row(exc) from exc


@router.post("/schedules/{schedule_id}/run-now", status_code=202, response_model=RunNowOut,
             responses=documented(404, 409))
def run_schedule_now(console: ConsoleDep, schedule_id: ScheduleId) -> RunNowOut:
    """Send one run now, the message beat would send; the schedule's timing is untouched."""
    try:
        sent = service.run_now(console.app, console.catalog(), console.db, schedule_id)
    except (ScheduleError, UnknownTaskError) as exc:
        raise _stored_row(exc) from exc
    except BrokerError as exc:
        broker = maybe_sanitize_url(console.settings.broker_url)
        raise HTTPProblem(Problem(503, "unavailable", f"broker {broker} unreachable: {exc}")) from exc
    return RunNowOut(schedule_id=sent.schedule_id, task_name=sent.task_name, celery_task_id=sent.celery_task_id,
                     kwargs=sent.kwargs)


@router.get("/schedules/{schedule_id}/executions", response_model=ScheduleExecutionsPage,
            responses=documented(404, 422))
def schedule_executions(
    console: ConsoleDep,
    schedule_id: ScheduleId,
    status: Annotated[list[ExecutionStatus] | None, Query(description="Only attempts in these states.")] = None,
    cursor: Cursor = None,
    limit: Limit = 20,
) -> ScheduleExecutionsPage:
    """The schedule and its executions, newest first."""
    schedule, page = service.page_schedule_executions(console.db, schedule_id, statuses=status or (), cursor=cursor,
                                                      limit=limit)
    return ScheduleExecutionsPage(schedule=schedule_out(schedule),
                                  items=[ExecutionOut.model_validate(r) for r in page.items],
                                  next_cursor=page.next_cursor, window_ended=page.window_ended)


@router.get("/executions", response_model=ExecutionPage, responses=documented(422))
def list_executions(
    console: ConsoleDep,
    status: Annotated[list[ExecutionStatus] | None, Query(description="Only attempts in these states.")] = None,
    task: Annotated[str | None, Query(max_length=255, description="Only attempts of this task.")] = None,
    since: Annotated[datetime | None, Query(description="Only attempts started at or after (naive: UTC).")] = None,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> ExecutionPage:
    """Every execution, newest first."""
    page = service.page_executions(console.db, statuses=status or (), task_name=task, since=_naive_utc(since),
                                   cursor=cursor, limit=limit)
    return ExecutionPage(items=[ExecutionOut.model_validate(r) for r in page.items], next_cursor=page.next_cursor,
                         window_ended=page.window_ended)


@router.get("/legacy", response_model=LegacyOut, responses=documented())
def legacy(console: ConsoleDep) -> LegacyOut:
    """The legacy switch (`dataforge legacy status`): where it comes from and who still uses it."""
    return LegacyOut.model_validate(legacy_status(console.db, console.settings).to_json())
