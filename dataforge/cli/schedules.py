"""``dataforge schedules``: the django-celery-beat admin, in a terminal.

A thin click layer over :mod:`dataforge.scheduler.service`, which holds every rule (validation,
due times, the run-now message, idempotency). Tables for people (rich), ``--json`` for scripts.
Errors are raised, never printed here: the root group gives each its exit status and message
(:mod:`dataforge.cli.failures`), naming the option at fault. Nothing is written when a
command is refused.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import click
from rich.markup import escape
from rich.table import Table

from dataforge.cli.common import CliContext, emit_json, json_option, pass_cli
from dataforge.cli.failures import about, one_line, stored_fault
from dataforge.protocol import ExecutionStatus, ScheduleStatus
from dataforge.scheduler.limits import INT32_MAX
from dataforge.scheduler.service import (
    MISSED_RUN_CHOICES,
    OVERLAP_CHOICES,
    Fault,
    ScheduleEdit,
    Written,
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
from dataforge.schema import OLDEST_SUPPORTED

__all__ = ["schedules"]

F = TypeVar("F", bound=Callable[..., Any])


_SUBJECT_MAX = 60


def _subject(ref: str) -> None:
    shown = ref if len(ref) <= _SUBJECT_MAX else ref[:_SUBJECT_MAX] + "..."
    about(click.get_current_context(), f"schedule '{shown}'")


#: An ISO timestamp as schedule_to_dict writes them: tables show it to the second, without the T.
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}")


def _fmt(value: Any) -> str:
    """A value for rich output: one line, and stored text never read as rich markup."""
    if value is None:
        return "-"
    if isinstance(value, str) and _TIMESTAMP.match(value):
        return value[:19].replace("T", " ")  # --json has the full value
    return escape(one_line(str(value)))


def _next_run(row: Mapping[str, Any]) -> str:
    """A paused, disabled or done row has no next run: beat sends nothing for it. An active
    row without a due time gets one from beat on its next pass."""
    if row["status"] != ScheduleStatus.ACTIVE:
        return "-"
    return _fmt(row["next_run_at"]) if row["next_run_at"] is not None else "pending (beat plans it)"


def _print_row(cli: CliContext, row: Mapping[str, Any], title: str) -> None:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for key in sorted(row):
        if key == "kwargs":
            continue
        value = _next_run(row) if key == "next_run_at" else _fmt(row[key])
        table.add_row(key, value)
    cli.console.print(table)


_json = json_option("Print JSON (for scripts) instead of a table; errors too.")


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
@click.option("--limit", type=click.IntRange(min=1, max=INT32_MAX), metavar="N",
              help="At most N rows (lowest ids first).")
@_json
@pass_cli
def list_cmd(cli: CliContext, statuses: tuple[str, ...], task_name: str | None, invalid: bool,
             limit: int | None, as_json: bool) -> None:
    """List schedules with their timing, status, due times and counters."""
    with cli.database(OLDEST_SUPPORTED) as db:
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
            str(row["id"]), _fmt(row["name"]), _fmt(row["task_name"] or row["handler_path"]), _fmt(row["schedule"]),
            _fmt(row["status"]), _next_run(row), last, f"{row['success_count']}/{row['failure_count']}",
            _fmt(row["invalid_reason"]),
        )
    cli.console.print(table)


@schedules.command("show")
@click.argument("ref", metavar="ID|NAME")
@_json
@pass_cli
def show(cli: CliContext, ref: str, as_json: bool) -> None:
    """Show every column of one schedule (invalid_reason, due times, policies), its run
    counters and its last 10 runs."""
    _subject(ref)
    with cli.database(OLDEST_SUPPORTED) as db:
        row, runs = history(db, ref, limit=_SHOWN_RUNS)
    if as_json:
        emit_json({**row, "last_runs": runs})
        return
    _print_row(cli, row, f"schedule {row['id']}: {_fmt(row['name'])}")
    counts = f"runs: {row['run_count']} sent, {row['success_count']} succeeded, {row['failure_count']} failed"
    if row["missed_count"] is not None:  # None: a database below 0008_schedule_policies
        counts += (f", {row['missed_count']} missed (not sent: policy, catch-up window), {row['skipped_count']} "
                   f"skipped (previous run still running), {row['expired_count']} expired in the queue, "
                   f"{row['lost_count']} lost with their worker")
    cli.console.print(counts, highlight=False)
    _print_runs(cli, f"last {len(runs)} run(s), newest first", runs)


def _write_options(f: F) -> F:
    """The options add and edit share (edit: each one given replaces the stored value)."""
    options = [
        click.option("--task", "task_name", metavar="TASK", help="Registered Celery task name to send."),
        click.option("--interval", "interval_seconds", type=click.IntRange(min=1, max=INT32_MAX), metavar="SECONDS",
                     help="Run every SECONDS."),
        click.option("--cron", "cron_expression", metavar="EXPR",
                     help="Run on a 5-field crontab, read in --timezone."),
        click.option("--at", "run_at", metavar="ISO-DATETIME",
                     help="Run once at this time (an offset wins; a naive time is read in --timezone)."),
        click.option("--timezone", metavar="TZ", help="IANA time zone of --cron / --at (default UTC)."),
        click.option("--kwargs", "kwargs_json", metavar="JSON",
                     help="JSON object of keyword arguments for the task (replaces the stored ones)."),
        click.option("--timeout", "timeout_seconds", type=click.IntRange(min=1, max=INT32_MAX), metavar="SECONDS",
                     help="Soft time limit of each run."),
        click.option("--max-retries", type=click.IntRange(min=0, max=INT32_MAX), metavar="N",
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


def _problem_line(row: Mapping[str, Any], fault: Fault) -> str:
    _option, text = stored_fault(row["id"], fault)
    return f"warning: schedule {row['id']} ({row['name']}) still cannot run: {text}"


def _report_write(cli: CliContext, written: Written, verb: str, as_json: bool, unchanged: str) -> None:
    """The row as written; ``unchanged`` is said instead of ``verb`` when nothing was written."""
    row = written.row
    for fault in written.problems:
        click.echo(one_line(_problem_line(row, fault)), err=True)
    if as_json:
        emit_json(row)
        return
    head = (f"{verb} schedule {row['id']} [bold]{_fmt(row['name'])}[/bold]" if written.changed
            else f"schedule {row['id']} [bold]{_fmt(row['name'])}[/bold] {unchanged}")
    when = ""
    if row["status"] == ScheduleStatus.ACTIVE:
        when = f", next run {_next_run(row)}" + (" UTC" if row["next_run_at"] is not None else "")
    cli.console.print(f"{head}: {_fmt(row['task_name'])}, {_fmt(row['schedule'])}, {row['status']}{when}",
                      highlight=False, soft_wrap=True)


@schedules.command("add")
@click.argument("name")
@_write_options
@click.option("--paused", is_flag=True, help="Create it paused (resume it later).")
@_json
@pass_cli
def add(cli: CliContext, name: str, paused: bool, as_json: bool, **options: Any) -> None:
    """Add a schedule NAME that sends --task on --interval, --cron or --at."""
    _subject(name)
    edit = _edit_from(options, name=name, status=ScheduleStatus.PAUSED if paused else None)
    _app, catalog = cli.app_and_catalog()
    with cli.database() as db:
        written = add_schedule(db, catalog, edit)
    _report_write(cli, written, "added", as_json, "")


@schedules.command("edit")
@click.argument("ref", metavar="ID|NAME")
@click.option("--name", "new_name", metavar="NAME", help="Rename the schedule.")
@_write_options
@click.option("--no-timeout", is_flag=True, help="Remove the time limit.")
@_json
@pass_cli
def edit(cli: CliContext, ref: str, new_name: str | None, no_timeout: bool, as_json: bool,
         **options: Any) -> None:
    """Change a schedule; options not given keep their value. A timing change re-plans the next run.

    Only what is given is checked: a fault stored in another column (kwargs edited by raw SQL,
    a task removed by a deploy) does not block the edit; it is printed as a warning naming the
    option that fixes it.
    """
    _subject(ref)
    if no_timeout and options.get("timeout_seconds") is not None:
        raise click.UsageError("give --timeout or --no-timeout, not both")
    change = _edit_from(options, name=new_name, clear_timeout=no_timeout)
    _app, catalog = cli.app_and_catalog()
    with cli.database() as db:
        written = edit_schedule(db, catalog, ref, change)
    _report_write(cli, written, "edited", as_json, "unchanged: every value given is already set")


@schedules.command("pause")
@click.argument("ref", metavar="ID|NAME")
@_json
@pass_cli
def pause(cli: CliContext, ref: str, as_json: bool) -> None:
    """Stop sending a schedule until it is resumed (a run in progress finishes). Pausing a
    paused schedule changes nothing and succeeds."""
    _subject(ref)
    with cli.database() as db:
        written = pause_schedule(db, ref)
    _report_write(cli, written, "paused", as_json, "is already paused")


@schedules.command("delete")
@click.argument("ref", metavar="ID|NAME")
@click.option("--yes", is_flag=True, help="Delete without asking (required when not on a terminal).")
@_json
@pass_cli
def delete(cli: CliContext, ref: str, yes: bool, as_json: bool) -> None:
    """Delete a schedule for good (`pause` keeps it). Its run history stays, detached from
    it; a run already queued still runs. Without --yes, shows the row and asks first."""
    _subject(ref)
    with cli.database() as db:
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
        f"deleted schedule {gone['id']} [bold]{_fmt(gone['name'])}[/bold] ({_fmt(gone['task_name'])}, "
        f"{_fmt(gone['schedule'])}); its run history stays in task_executions, detached from it",
        highlight=False,
    )


@schedules.command("resume")
@click.argument("ref", metavar="ID|NAME")
@_json
@pass_cli
def resume(cli: CliContext, ref: str, as_json: bool) -> None:
    """Re-activate a paused or disabled schedule; the next run is the first due time from now
    (runs missed while paused are not replayed). Resuming an active schedule changes nothing
    and succeeds; a schedule that cannot run is refused, naming the option that fixes it."""
    _subject(ref)
    _app, catalog = cli.app_and_catalog()
    with cli.database() as db:
        written = resume_schedule(db, catalog, ref)
    _report_write(cli, written, "resumed", as_json, "is already active")


@schedules.command("run-now")
@click.argument("ref", metavar="ID|NAME")
@_json
@pass_cli
def run_now_cmd(cli: CliContext, ref: str, as_json: bool) -> None:
    """Send one run now, the same message beat sends; the schedule's timing is unchanged."""
    _subject(ref)
    app, catalog = cli.app_and_catalog()
    with cli.database() as db:
        sent = run_now(app, catalog, db, ref)
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
@click.option("--limit", type=click.IntRange(min=1, max=INT32_MAX), default=20, show_default=True,
              help="Newest N executions.")
@click.option("--state", type=click.Choice([s.value for s in ExecutionStatus]), help="Only executions in this state.")
@_json
@pass_cli
def history_cmd(cli: CliContext, ref: str, limit: int, state: str | None, as_json: bool) -> None:
    """Executions of a schedule, newest first: state, attempt, start, duration, worker, error."""
    _subject(ref)
    with cli.database(OLDEST_SUPPORTED) as db:
        schedule, runs = history(db, ref, limit=limit, state=state)
    if as_json:
        emit_json({"schedule": schedule, "executions": runs})
        return
    _print_runs(cli, f"schedule {schedule['id']} {_fmt(schedule['name'])}: {len(runs)} execution(s)", runs)


#: Runs `show` lists.
_SHOWN_RUNS = 10


def _print_runs(cli: CliContext, title: str, runs: list[dict[str, Any]]) -> None:
    table = Table(title=title, title_justify="left")
    for name in ("id", "state", "attempt", "started (UTC)", "duration", "worker", "celery task id", "error"):
        table.add_column(name, overflow="fold")
    for run in runs:
        duration = f"{run['duration_ms'] / 1000:.3f}s" if run["duration_ms"] is not None else "-"
        error = _fmt((run["error"] or "").splitlines()[0]) if run["error"] else "-"
        table.add_row(str(run["id"]), run["status"], str(run["attempt"]), _fmt(run["started_at"]), duration,
                      _fmt(run["worker"]), _fmt(run["celery_task_id"]), error)
    cli.console.print(table)
