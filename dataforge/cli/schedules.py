"""``dataforge schedules``: the django-celery-beat admin, in a terminal.

A thin click layer over :mod:`dataforge.scheduler.service`, which holds every rule (validation,
due times, the run-now message). Tables for people (rich), ``--json`` for scripts. Refused
input exits 2 with the option at fault named; a missing schedule or a verb that does not apply
to the row's status exits 1. Nothing is written when a command is refused.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

import click
from kombu.exceptions import OperationalError as KombuOperationalError
from kombu.utils.url import maybe_sanitize_url
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError

from dataforge.catalog.registry import TaskCatalog, catalog_from_app
from dataforge.cli.common import CliContext, emit_json, pass_cli
from dataforge.db import Database
from dataforge.errors import DataForgeError, ScheduleError, UnknownTaskError
from dataforge.protocol import ExecutionStatus, ScheduleStatus
from dataforge.scheduler.service import (
    MISSED_RUN_CHOICES,
    OVERLAP_CHOICES,
    ScheduleEdit,
    add_schedule,
    delete_schedule,
    edit_schedule,
    get_schedule,
    history,
    list_schedules,
    pause_schedule,
    resume_schedule,
    run_now,
)

__all__ = ["schedules"]

F = TypeVar("F", bound=Callable[..., Any])

#: ScheduleError.field -> the option a user typed, so a refusal names what to fix.
_OPTION_FOR_FIELD = {
    "name": "NAME",
    "task_name": "--task",
    "task_type": "--interval / --cron / --at",
    "interval_seconds": "--interval",
    "cron_expression": "--cron",
    "timezone": "--timezone",
    "run_at": "--at",
    "handler_kwargs": "--kwargs",
    "timeout_seconds": "--timeout",
    "max_retries": "--max-retries",
    "missed_run_policy": "--missed-runs",
    "catchup_window_seconds": "--catchup-window",
    "overlap_policy": "--overlap",
    "jitter_seconds": "--jitter",
    "state": "--state",
}


@contextmanager
def _database(cli: CliContext) -> Iterator[Database]:
    db = Database(cli.settings.database_url)
    try:
        yield db
    except SQLAlchemyError as exc:
        raise click.ClickException(
            f"database {db.engine.url.render_as_string(hide_password=True)}: {exc.__class__.__name__}: "
            f"{str(exc).splitlines()[0]} (is the schema up to date? run `dataforge db upgrade`)"
        ) from exc
    finally:
        db.dispose()


def _catalog(cli: CliContext) -> tuple[Any, TaskCatalog]:
    """The Celery app built from the CLI's settings, with its task modules imported."""
    from dataforge.celery_app import create_app

    app = create_app(cli.settings)
    try:
        return app, catalog_from_app(app)
    except ImportError as exc:
        raise click.ClickException(f"cannot import the task packages {cli.settings.task_packages}: {exc}") from exc


def _refusals(f: F) -> F:
    """Turn the service's refusals into click errors: bad input exits 2 naming the option at
    fault; a missing row or a verb that does not apply to the row's status exits 1."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return f(*args, **kwargs)
        except ScheduleError as exc:
            hint = _OPTION_FOR_FIELD.get(exc.field, exc.field)
            raise click.BadParameter(f"{exc.value!r}: {exc.reason}", param_hint=hint) from exc
        except UnknownTaskError as exc:
            raise click.BadParameter(str(exc), param_hint="--task") from exc
        except DataForgeError as exc:
            raise click.ClickException(str(exc)) from exc

    wrapper.__name__ = f.__name__
    wrapper.__doc__ = f.__doc__
    return wrapper  # type: ignore[return-value]


def _row_refusals(f: F) -> F:
    """For verbs that take no schedule options (resume, run-now): a stored row that cannot run
    is not bad input to this command; exit 1 and say which edit fixes it."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return f(*args, **kwargs)
        except (ScheduleError, UnknownTaskError) as exc:
            ref = kwargs.get("ref", "ID")
            option = _OPTION_FOR_FIELD.get(exc.field, exc.field) if isinstance(exc, ScheduleError) else "--task"
            raise click.ClickException(
                f"schedule {ref!r} cannot run: {exc}; fix it with `dataforge schedules edit {ref} {option} ...`"
            ) from exc
        except DataForgeError as exc:
            raise click.ClickException(str(exc)) from exc

    wrapper.__name__ = f.__name__
    wrapper.__doc__ = f.__doc__
    return wrapper  # type: ignore[return-value]


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, str) and len(value) >= 19 and value[10:11] == "T":
        return value[:19].replace("T", " ")  # tables show seconds; --json has the full value
    return str(value)


def _print_row(cli: CliContext, row: Mapping[str, Any], title: str) -> None:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for key in sorted(row):
        if key == "kwargs":
            continue
        table.add_row(key, _fmt(row[key]))
    cli.console.print(table)


def _json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts) instead of a table.")(f)


# --- the group -----------------------------------------------------------------------------------


@click.group("schedules")
def schedules() -> None:
    """List, inspect, add, edit, pause, resume and run schedules (the scheduled_tasks table).

    ID|NAME arguments take a schedule's id or its unique name. Every write is checked before
    anything is written: the task must be registered, the schedule must evaluate and the kwargs
    must match the task's declared params.
    """


@schedules.command("list")
@click.option("--status", "statuses", type=click.Choice([s.value for s in ScheduleStatus]), multiple=True,
              help="Only rows in this status (repeatable).")
@click.option("--task", "task_name", metavar="TASK", help="Only rows sending this task name.")
@click.option("--invalid", is_flag=True, help="Only rows beat refuses (invalid_reason set).")
@click.option("--limit", type=click.IntRange(min=1), metavar="N", help="At most N rows (lowest ids first).")
@_json_option
@pass_cli
@_refusals
def list_cmd(cli: CliContext, statuses: tuple[str, ...], task_name: str | None, invalid: bool,
             limit: int | None, as_json: bool) -> None:
    """List schedules with their timing, status, due times and counters."""
    with _database(cli) as db:
        rows = list_schedules(db, statuses=statuses, task_name=task_name, invalid=invalid, limit=limit)
    if as_json:
        emit_json(rows)
        return
    table = Table(title=f"{len(rows)} schedule(s)", title_justify="left")
    for name in ("id", "name", "task", "schedule", "status", "next run (UTC)", "last run (UTC)", "ok/failed",
                 "invalid"):
        table.add_column(name, overflow="fold")
    for row in rows:
        last = _fmt(row["last_run_at"]) + (f" {row['last_status']}" if row["last_status"] else "")
        table.add_row(
            str(row["id"]), row["name"], _fmt(row["task_name"] or row["handler_path"]), row["schedule"],
            row["status"], _fmt(row["next_run_at"]), last, f"{row['success_count']}/{row['failure_count']}",
            _fmt(row["invalid_reason"]),
        )
    cli.console.print(table)


@schedules.command("show")
@click.argument("ref", metavar="ID|NAME")
@_json_option
@pass_cli
@_refusals
def show(cli: CliContext, ref: str, as_json: bool) -> None:
    """Show every column of one schedule (invalid_reason, due times, policies), its run
    counters and its last 10 runs."""
    with _database(cli) as db:
        row, runs = history(db, ref, limit=_SHOWN_RUNS)
    if as_json:
        emit_json({**row, "last_runs": runs})
        return
    _print_row(cli, row, f"schedule {row['id']}: {row['name']}")
    cli.console.print(
        f"runs: {row['run_count']} sent, {row['success_count']} succeeded, {row['failure_count']} failed, "
        f"{row['missed_count']} missed (not sent: policy, catch-up window), {row['skipped_count']} skipped "
        f"(previous run still running), {row['expired_count']} expired in the queue, {row['lost_count']} lost "
        "with their worker",
        highlight=False,
    )
    _print_runs(cli, f"last {len(runs)} run(s), newest first", runs)


def _write_options(f: F) -> F:
    """The options add and edit share (edit: each one given replaces the stored value)."""
    options = [
        click.option("--task", "task_name", metavar="TASK", help="Registered Celery task name to send."),
        click.option("--interval", "interval_seconds", type=click.IntRange(min=1), metavar="SECONDS",
                     help="Run every SECONDS."),
        click.option("--cron", "cron_expression", metavar="EXPR",
                     help="Run on a 5-field crontab, read in --timezone."),
        click.option("--at", "run_at", metavar="ISO-DATETIME",
                     help="Run once at this time (an offset wins; a naive time is read in --timezone)."),
        click.option("--timezone", metavar="TZ", help="IANA time zone of --cron / --at (default UTC)."),
        click.option("--kwargs", "kwargs_json", metavar="JSON",
                     help="JSON object of keyword arguments for the task (replaces the stored ones)."),
        click.option("--timeout", "timeout_seconds", type=click.IntRange(min=1), metavar="SECONDS",
                     help="Soft time limit of each run."),
        click.option("--max-retries", type=click.IntRange(min=0), metavar="N",
                     help="Retries of a failed run (default 0)."),
        click.option("--description", metavar="TEXT", help="Free text shown in list/show."),
        click.option("--missed-runs", "missed_run_policy", type=click.Choice(MISSED_RUN_CHOICES),
                     help="Runs missed while beat was down: one catch-up (once), none (skip), each one (all), "
                          "or the global default."),
        click.option("--catchup-window", "catchup_window", metavar="SECONDS|default",
                     help="Missed runs older than this are never sent (counted missed); default: the global "
                          "setting."),
        click.option("--overlap", "overlap_policy", type=click.Choice(OVERLAP_CHOICES),
                     help="When the previous run still runs: skip this one, let one wait (buffer_one), run both "
                          "(allow), or stop the previous one (cancel_previous)."),
        click.option("--jitter", "jitter_seconds", type=int, metavar="SECONDS",
                     help="Send each run up to SECONDS after its due time (a fixed delay per schedule)."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _edit_from(options: Mapping[str, Any], **extra: Any) -> ScheduleEdit:
    return ScheduleEdit(
        task_name=options.get("task_name"),
        interval_seconds=options.get("interval_seconds"),
        cron_expression=options.get("cron_expression"),
        run_at=options.get("run_at"),
        timezone=options.get("timezone"),
        handler_kwargs=options.get("kwargs_json"),
        description=options.get("description"),
        timeout_seconds=options.get("timeout_seconds"),
        max_retries=options.get("max_retries"),
        missed_run_policy=options.get("missed_run_policy"),
        catchup_window=options.get("catchup_window"),
        overlap_policy=options.get("overlap_policy"),
        jitter_seconds=options.get("jitter_seconds"),
        **extra,
    )


def _report_write(cli: CliContext, row: Mapping[str, Any], verb: str, as_json: bool) -> None:
    if as_json:
        emit_json(row)
        return
    next_run = _fmt(row["next_run_at"])
    cli.console.print(
        f"{verb} schedule {row['id']} [bold]{row['name']}[/bold]: {row['task_name']}, {row['schedule']}, "
        f"{row['status']}, next run {next_run} UTC",
        highlight=False,
    )


@schedules.command("add")
@click.argument("name")
@_write_options
@click.option("--paused", is_flag=True, help="Create it paused (resume it later).")
@_json_option
@pass_cli
@_refusals
def add(cli: CliContext, name: str, paused: bool, as_json: bool, **options: Any) -> None:
    """Add a schedule NAME that sends --task on --interval, --cron or --at."""
    edit = _edit_from(options, name=name, status=ScheduleStatus.PAUSED if paused else None)
    app, catalog = _catalog(cli)
    with _database(cli) as db:
        row = add_schedule(db, catalog, edit)
    _report_write(cli, row, "added", as_json)


@schedules.command("edit")
@click.argument("ref", metavar="ID|NAME")
@click.option("--name", "new_name", metavar="NAME", help="Rename the schedule.")
@_write_options
@click.option("--no-timeout", is_flag=True, help="Remove the time limit.")
@_json_option
@pass_cli
@_refusals
def edit(cli: CliContext, ref: str, new_name: str | None, no_timeout: bool, as_json: bool,
         **options: Any) -> None:
    """Change a schedule; options not given keep their value. A timing change re-plans the next run."""
    if no_timeout and options.get("timeout_seconds") is not None:
        raise click.UsageError("give --timeout or --no-timeout, not both")
    change = _edit_from(options, name=new_name, clear_timeout=no_timeout)
    app, catalog = _catalog(cli)
    with _database(cli) as db:
        row = edit_schedule(db, catalog, ref, change)
    _report_write(cli, row, "edited", as_json)


@schedules.command("pause")
@click.argument("ref", metavar="ID|NAME")
@_json_option
@pass_cli
@_refusals
def pause(cli: CliContext, ref: str, as_json: bool) -> None:
    """Stop sending a schedule until it is resumed (a run in progress finishes)."""
    with _database(cli) as db:
        row = pause_schedule(db, ref)
    _report_write(cli, row, "paused", as_json)


@schedules.command("delete")
@click.argument("ref", metavar="ID|NAME")
@click.option("--yes", is_flag=True, help="Delete without asking (required when not on a terminal).")
@_json_option
@pass_cli
@_refusals
def delete(cli: CliContext, ref: str, yes: bool, as_json: bool) -> None:
    """Delete a schedule for good (`pause` keeps it). Its run history stays, detached from
    it; a run already queued still runs. Without --yes, shows the row and asks first."""
    with _database(cli) as db:
        row = get_schedule(db, ref)
        if not yes:
            if not sys.stdin.isatty():
                raise click.UsageError(f"deleting schedule {row['id']} ({row['name']}) needs --yes when not "
                                       "run on a terminal; `dataforge schedules pause` keeps it instead")
            _print_row(cli, row, f"schedule {row['id']}")
            click.confirm(f"Delete schedule {row['id']} ({row['name']})?", abort=True)
        gone = delete_schedule(db, row["id"])
    if as_json:
        emit_json(gone)
        return
    cli.console.print(
        f"deleted schedule {gone['id']} [bold]{gone['name']}[/bold] ({gone['task_name']}, {gone['schedule']}); "
        "its run history stays in task_executions, detached from it",
        highlight=False,
    )


@schedules.command("resume")
@click.argument("ref", metavar="ID|NAME")
@_json_option
@pass_cli
@_row_refusals
def resume(cli: CliContext, ref: str, as_json: bool) -> None:
    """Re-activate a paused or disabled schedule; the next run is the first due time from now
    (runs missed while paused are not replayed)."""
    app, catalog = _catalog(cli)
    with _database(cli) as db:
        row = resume_schedule(db, catalog, ref)
    _report_write(cli, row, "resumed", as_json)


@schedules.command("run-now")
@click.argument("ref", metavar="ID|NAME")
@_json_option
@pass_cli
@_row_refusals
def run_now_cmd(cli: CliContext, ref: str, as_json: bool) -> None:
    """Send one run now, the same message beat sends; the schedule's timing is unchanged."""
    app, catalog = _catalog(cli)
    with _database(cli) as db:
        try:
            sent = run_now(app, catalog, db, ref)
        except KombuOperationalError as exc:
            raise click.ClickException(
                f"could not send to the broker {maybe_sanitize_url(cli.settings.broker_url)} ({exc}); is it running? "
                "(DATAFORGE_BROKER_URL)"
            ) from exc
    if as_json:
        emit_json({"schedule_id": sent.schedule_id, "task_name": sent.task_name,
                   "celery_task_id": sent.celery_task_id, "kwargs": sent.kwargs})
        return
    cli.console.print(
        f"sent {sent.task_name} for schedule {sent.schedule_id} as task {sent.celery_task_id}; "
        f"follow it with `dataforge schedules history {sent.schedule_id}`",
        highlight=False,
    )


@schedules.command("history")
@click.argument("ref", metavar="ID|NAME")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True,
              help="Newest N executions.")
@click.option("--state", type=click.Choice([s.value for s in ExecutionStatus]), help="Only executions in this state.")
@_json_option
@pass_cli
@_refusals
def history_cmd(cli: CliContext, ref: str, limit: int, state: str | None, as_json: bool) -> None:
    """Executions of a schedule, newest first: state, attempt, start, duration, worker, error."""
    with _database(cli) as db:
        schedule, runs = history(db, ref, limit=limit, state=state)
    if as_json:
        emit_json({"schedule": schedule, "executions": runs})
        return
    _print_runs(cli, f"schedule {schedule['id']} {schedule['name']}: {len(runs)} execution(s)", runs)


#: Runs `show` lists.
_SHOWN_RUNS = 10


def _print_runs(cli: CliContext, title: str, runs: list[dict[str, Any]]) -> None:
    table = Table(title=title, title_justify="left")
    for name in ("id", "state", "attempt", "started (UTC)", "duration", "worker", "celery task id", "error"):
        table.add_column(name, overflow="fold")
    for run in runs:
        duration = f"{run['duration_ms'] / 1000:.3f}s" if run["duration_ms"] is not None else "-"
        error = (run["error"] or "").splitlines()[0] if run["error"] else "-"
        table.add_row(str(run["id"]), run["status"], str(run["attempt"]), _fmt(run["started_at"]), duration,
                      _fmt(run["worker"]), _fmt(run["celery_task_id"]), error)
    cli.console.print(table)
