"""The server-rendered pages: schedules, one schedule, the executions feed, tasks, the switch.

HTML from Jinja2 templates, usable without JavaScript; ``static/console.js`` only shows times
in the viewer's time zone and refreshes the live tables. Each page reads and writes through
the same service functions as the JSON API, so a refusal is the same sentence in both; on a
form it is shown next to the field at fault (status 422) with what was typed kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import timedelta
from typing import Annotated, Any, Final
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from kombu.exceptions import OperationalError as BrokerError

from dataforge.errors import DataForgeError, ScheduleError, UnknownTaskError
from dataforge.legacy.errors import LegacySwitchError
from dataforge.legacy.status import legacy_status
from dataforge.models import utcnow
from dataforge.protocol import ExecutionStatus, MissedRunPolicy, ScheduleStatus, TaskType
from dataforge.scheduler import service
from dataforge.web.auth import CSRF_FIELD, Guard, require_form, require_page
from dataforge.web.context import Console
from dataforge.web.errors import CatalogUnavailableError, problem_for
from dataforge.web.forms import edit_from_form, form_values

__all__ = ["SINCE_CHOICES", "router"]

router = APIRouter(include_in_schema=False)

#: The executions feed's "started within" choices (a preset needs no time zone).
SINCE_CHOICES: Final = {"5m": timedelta(minutes=5), "1h": timedelta(hours=1), "24h": timedelta(days=1),
                        "7d": timedelta(days=7)}
_PAGE: Final = 50
_RUNS: Final = 20


def _templates(request: Request) -> Jinja2Templates:
    templates = request.app.state.templates
    assert isinstance(templates, Jinja2Templates)
    return templates


def _console(request: Request) -> Console:
    console = request.app.state.console
    assert isinstance(console, Console)
    return console


def _guard(request: Request) -> Guard:
    guard = request.app.state.guard
    assert isinstance(guard, Guard)
    return guard


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """A page with what every page shows: the CSRF token, the flash message, the login state."""
    guard = _guard(request)
    flash = request.session.pop("flash", None) if "session" in request.scope else None
    base = {
        "csrf_field": CSRF_FIELD,
        "csrf": guard.csrf_token(request),
        "flash": flash,
        "login_required": guard.required,
        "path": request.url.path,
    }
    return _templates(request).TemplateResponse(request, template, {**base, **context}, status_code=status_code)


def _flash(request: Request, kind: str, text: str) -> None:
    request.session["flash"] = {"kind": kind, "text": text}


def _back(request: Request, form: Mapping[str, str], default: str) -> RedirectResponse:
    target = form.get("next", "")
    # Only a path of this console: never an open redirect to another site.
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        target = default
    return RedirectResponse(target, status_code=303)


async def checked_form(request: Request) -> dict[str, str]:
    """The posted form, once its session and CSRF token are checked."""
    await require_form(request)
    form = await request.form()
    return {key: value for key, value in form.items() if isinstance(value, str)}


Form = Annotated[dict[str, str], Depends(checked_form)]
LOGGED_IN = [Depends(require_page)]


# --- login ---------------------------------------------------------------------------------------


@router.get("/", dependencies=LOGGED_IN)
def home() -> RedirectResponse:
    return RedirectResponse("/schedules", status_code=303)


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str = "/schedules") -> Response:
    if not _guard(request).required:
        return RedirectResponse("/schedules", status_code=303)
    return render(request, "login.html", next=next, error=None)


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    form = await request.form()
    guard = _guard(request)
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    if not guard.csrf_ok(request, fields.get(CSRF_FIELD)):
        return render(request, "login.html", 403, next=fields.get("next", "/"),
                      error="The form expired; reload the page and log in again.")
    if not guard.required:
        return _back(request, fields, "/schedules")
    if not guard.log_in(request, fields.get("token", "")):
        return render(request, "login.html", 401, next=fields.get("next", "/"), error="Wrong token.")
    return _back(request, fields, "/schedules")


@router.post("/logout")
def logout(request: Request, form: Form) -> RedirectResponse:
    request.session.clear()
    return RedirectResponse("/login", status_code=303)


# --- schedules -------------------------------------------------------------------------------------


def _tasks_or_none(console: Console) -> list[str] | None:
    try:
        return sorted(console.catalog().tasks)
    except CatalogUnavailableError:
        return None


def _list_context(request: Request, console: Console) -> dict[str, Any]:
    q = request.query_params
    statuses = [s for s in q.getlist("status") if s]
    task = q.get("task") or None
    invalid = {"yes": True, "no": False}.get(q.get("invalid", ""))
    cursor = q.get("cursor") or None
    page = service.page_schedules(console.db, statuses=statuses, task_name=task, invalid=invalid, cursor=cursor,
                                  limit=_PAGE)
    filters = {"status": statuses, "task": task or "", "invalid": q.get("invalid", "")}
    next_url = None
    if page.next_cursor is not None:
        next_url = "/schedules?" + urlencode({**_query(filters), "cursor": page.next_cursor}, doseq=True)
    return {
        "rows": page.items, "page": page, "filters": filters, "next_url": next_url, "first_page": cursor is None,
        "first_url": "/schedules?" + urlencode(_query(filters), doseq=True),
        "total": service.count_schedules(console.db), "statuses": list(ScheduleStatus),
        "task_types": list(TaskType), "policies": ["default", *MissedRunPolicy], "task_names": _tasks_or_none(console),
    }


def _query(filters: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in filters.items() if v}


@router.get("/schedules", response_class=HTMLResponse, dependencies=LOGGED_IN)
def schedules_page(request: Request) -> HTMLResponse:
    console = _console(request)
    try:
        context = _list_context(request, console)
    except ScheduleError as exc:
        # A filter or cursor from a hand-edited URL.
        return render(request, "error.html", 422, title="Bad filter", message=f"{exc.field}: {exc.reason}")
    return render(request, "schedules.html", form=form_values(None), errors={}, **context)


def _field_error(exc: DataForgeError) -> tuple[str, str]:
    problem = problem_for(exc)
    field = problem.field or "form"
    if field == "task_type" and isinstance(exc, ScheduleError) and isinstance(exc.value, list):
        field = "form"
    message = exc.reason if isinstance(exc, ScheduleError) else problem.message.removeprefix(f"{field}: ")
    return field, message


@router.post("/schedules", response_class=HTMLResponse)
def add_schedule(request: Request, form: Form) -> Response:
    console = _console(request)
    try:
        edit = edit_from_form(form)
        if form.get("paused"):
            edit = replace(edit, status=ScheduleStatus.PAUSED)
        row = service.add_schedule(console.db, console.catalog(), edit).row
    except (ScheduleError, UnknownTaskError, CatalogUnavailableError) as exc:
        field, message = _field_error(exc)
        return render(request, "schedules.html", 422, form=form, errors={field: message},
                      **_list_context(request, console))
    _flash(request, "ok", f"Added schedule {row['id']} ({row['name']}): {row['schedule']}, {row['status']}.")
    return RedirectResponse(f"/schedules/{row['id']}", status_code=303)


def _detail(console: Console, schedule_id: int, **extra: Any) -> dict[str, Any]:
    schedule, runs = service.page_schedule_executions(console.db, schedule_id, limit=_RUNS)
    return {"s": schedule, "runs": runs.items, "statuses": list(ScheduleStatus), "task_types": list(TaskType),
            "policies": ["default", *MissedRunPolicy], "task_names": _tasks_or_none(console), **extra}


@router.get("/schedules/{schedule_id}", response_class=HTMLResponse, dependencies=LOGGED_IN)
def schedule_page(request: Request, schedule_id: int) -> HTMLResponse:
    console = _console(request)
    context = _detail(console, schedule_id)
    return render(request, "schedule.html", form=form_values(context["s"]), errors={}, **context)


@router.get("/schedules/{schedule_id}/runs", response_class=HTMLResponse, dependencies=LOGGED_IN)
def schedule_runs(request: Request, schedule_id: int) -> HTMLResponse:
    """The runs table's rows alone (the live refresh of the schedule page)."""
    _, runs = service.page_schedule_executions(_console(request).db, schedule_id, limit=_RUNS)
    return render(request, "_runs.html", runs=runs.items)


@router.post("/schedules/{schedule_id}/edit", response_class=HTMLResponse)
def edit_schedule(request: Request, schedule_id: int, form: Form) -> Response:
    console = _console(request)
    current = service.find_schedule(console.db, schedule_id)
    try:
        edit = edit_from_form(form, service.schedule_to_dict(current))
        row = service.edit_schedule(console.db, console.catalog(), schedule_id, edit).row
    except (ScheduleError, UnknownTaskError, CatalogUnavailableError) as exc:
        field, message = _field_error(exc)
        return render(request, "schedule.html", 422, form=form, errors={field: message},
                      **_detail(console, schedule_id))
    _flash(request, "ok", f"Saved schedule {row['id']} ({row['name']}): {row['schedule']}, {row['status']}.")
    return RedirectResponse(f"/schedules/{schedule_id}", status_code=303)


def _verb(request: Request, form: Mapping[str, str], schedule_id: int, verb: str) -> RedirectResponse:
    console = _console(request)
    try:
        if verb == "pause":
            written = service.pause_schedule(console.db, schedule_id)
            row = written.row
            text = (f"Paused schedule {schedule_id} ({row['name']})." if written.changed
                    else f"Schedule {schedule_id} ({row['name']}) is already paused.")
        elif verb == "resume":
            written = service.resume_schedule(console.db, console.catalog(), schedule_id)
            row = written.row
            text = (f"Resumed schedule {schedule_id} ({row['name']}): next run {row['next_run_at'] or 'pending'} UTC."
                    if written.changed else f"Schedule {schedule_id} ({row['name']}) is already active.")
        elif verb == "run-now":
            sent = service.run_now(console.app, console.catalog(), console.db, schedule_id)
            text = f"Sent {sent.task_name} for schedule {schedule_id} as task {sent.celery_task_id}."
        else:
            gone = service.delete_schedule(console.db, schedule_id)
            _flash(request, "ok", f"Deleted schedule {schedule_id} ({gone['name']}); its runs stay in the feed.")
            return RedirectResponse("/schedules", status_code=303)
        _flash(request, "ok", text)
    except BrokerError as exc:
        _flash(request, "error", f"The broker cannot be reached, nothing was sent: {exc}")
    except DataForgeError as exc:
        _flash(request, "error", problem_for(exc, stored_row=True).message)
    return _back(request, form, f"/schedules/{schedule_id}")


@router.post("/schedules/{schedule_id}/pause")
def pause(request: Request, schedule_id: int, form: Form) -> RedirectResponse:
    return _verb(request, form, schedule_id, "pause")


@router.post("/schedules/{schedule_id}/resume")
def resume(request: Request, schedule_id: int, form: Form) -> RedirectResponse:
    return _verb(request, form, schedule_id, "resume")


@router.post("/schedules/{schedule_id}/run-now")
def run_now(request: Request, schedule_id: int, form: Form) -> RedirectResponse:
    return _verb(request, form, schedule_id, "run-now")


@router.post("/schedules/{schedule_id}/delete")
def delete(request: Request, schedule_id: int, form: Form) -> RedirectResponse:
    return _verb(request, form, schedule_id, "delete")


# --- executions ------------------------------------------------------------------------------------


def _feed(request: Request) -> dict[str, Any]:
    q = request.query_params
    statuses = [s for s in q.getlist("status") if s]
    task = q.get("task") or None
    since_key = q.get("since", "")
    since = utcnow() - SINCE_CHOICES[since_key] if since_key in SINCE_CHOICES else None
    cursor = q.get("cursor") or None
    page = service.page_executions(_console(request).db, statuses=statuses, task_name=task, since=since,
                                   cursor=cursor, limit=_PAGE)
    filters = {"status": statuses, "task": task or "", "since": since_key if since else ""}
    query = urlencode(_query(filters), doseq=True)
    next_url = None
    if page.next_cursor is not None:
        next_url = "/executions?" + urlencode({**_query(filters), "cursor": page.next_cursor}, doseq=True)
    return {"runs": page.items, "page": page, "filters": filters, "next_url": next_url, "live": cursor is None,
            "rows_url": f"/executions/rows?{query}", "first_url": f"/executions?{query}",
            "states": list(ExecutionStatus), "since_choices": list(SINCE_CHOICES)}


@router.get("/executions", response_class=HTMLResponse, dependencies=LOGGED_IN)
def executions_page(request: Request) -> HTMLResponse:
    try:
        return render(request, "executions.html", **_feed(request))
    except ScheduleError as exc:
        return render(request, "error.html", 422, title="Bad filter", message=f"{exc.field}: {exc.reason}")


@router.get("/executions/rows", response_class=HTMLResponse, dependencies=LOGGED_IN)
def executions_rows(request: Request) -> HTMLResponse:
    """The feed's rows alone (its live refresh)."""
    return render(request, "_feed_rows.html", runs=_feed(request)["runs"])


# --- tasks and the legacy switch -------------------------------------------------------------------


@router.get("/tasks", response_class=HTMLResponse, dependencies=LOGGED_IN)
def tasks_page(request: Request) -> HTMLResponse:
    try:
        tasks, check = _console(request).tasks()
    except CatalogUnavailableError as exc:
        return render(request, "error.html", 503, title="Task packages unavailable", message=str(exc))
    return render(request, "tasks.html", tasks=list(tasks.values()), problems=check.problems())


@router.get("/legacy", response_class=HTMLResponse, dependencies=LOGGED_IN)
def legacy_page(request: Request) -> HTMLResponse:
    console = _console(request)
    try:
        status = legacy_status(console.db, console.settings)
    except LegacySwitchError as exc:
        return render(request, "error.html", 503, title="Legacy switch unavailable", message=str(exc))
    return render(request, "legacy.html", status=status, shown=status.to_json())
