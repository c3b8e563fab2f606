"""``dataforge tasks``: the registered tasks, and a check that both registries agree.

``REGISTERED_TASKS`` (what people and ``dataforge schedules`` read) and Celery's registry (what
a worker runs) are kept by hand in different places; ``--check`` makes CI fail when they drift
(exit 1), before a schedule is created for a task no worker would run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from dataforge.cli.common import CliContext, emit_json, json_option, pass_cli, stderr_console
from dataforge.cli.exits import Exit
from dataforge.errors import ConfigurationError, JsonValueError
from dataforge.strict_json import check_value

__all__ = ["tasks"]


def _json_entry(entry: Mapping[str, Any]) -> dict[str, Any]:
    """An entry for ``--json``: a param default that is not strict JSON (``float("inf")`` in a
    hand-written REGISTERED_TASKS) is given as ``default_expr`` source text instead."""
    out = dict(entry)
    params = out.get("params")
    if isinstance(params, list):
        fixed: list[Any] = []
        for p in params:
            if isinstance(p, Mapping) and "default" in p:
                try:
                    check_value(p["default"])
                except JsonValueError:
                    p = {**{k: v for k, v in p.items() if k != "default"}, "default_expr": repr(p["default"])}
            fixed.append(p)
        out["params"] = fixed
    return out


def _params_text(params: list[object]) -> str:
    parts: list[str] = []
    for p in params:
        if isinstance(p, dict):
            name = str(p.get("name", "?"))
            if p.get("required"):
                parts.append(f"{name}*")
            elif "default" in p:
                parts.append(f"{name}={p['default']!r}")
            else:
                parts.append(name)
        else:
            parts.append(str(p))
    return ", ".join(parts)


@click.command("tasks")
@json_option("Print the tasks and the check as one JSON document (errors too).")
@click.option("--check", is_flag=True, help="Exit 1 when REGISTERED_TASKS and Celery's registry disagree.")
@pass_cli
def tasks(cli: CliContext, as_json: bool, check: bool) -> None:
    """List the tasks of DATAFORGE_TASK_PACKAGES (REGISTERED_TASKS joined with Celery's registry)."""
    from dataforge.catalog.registry import check_registry, get_registered_tasks

    try:
        # Importing the app module builds the app from the environment, task packages included.
        from dataforge.celery_app import celery_app, configure

        # The app the worker runs (`celery -A dataforge.celery_app`): task modules register on
        # it, so this is exactly the worker's view of the registry.
        app = celery_app
        if app.runtime.settings != cli.settings:
            configure(app, cli.settings)
        entries = get_registered_tasks(app)
        report = check_registry(app)
    except ImportError as exc:
        raise ConfigurationError(
            "DATAFORGE_TASK_PACKAGES", ",".join(cli.settings.task_packages),
            f"cannot import the task packages ({exc}); check the names and that they are on PYTHONPATH",
        ) from exc

    if as_json:
        emit_json({"tasks": [_json_entry(e) for e in entries.values()], "check": report.to_json()})
    else:
        table = Table(title=f"Tasks of {', '.join(cli.settings.task_packages)}")
        table.add_column("Task", no_wrap=True)
        for column in ("Name", "Category", "Params", "Status"):
            table.add_column(column)
        for name, entry in entries.items():
            if entry["in_registry"] and entry["in_celery"]:
                status = "[green]ok[/green]"
            elif entry["in_celery"]:
                status = "[yellow]not in REGISTERED_TASKS[/yellow]"
            else:
                status = "[red]not registered with Celery[/red]"
            table.add_row(escape(name), escape(str(entry["name"])), escape(str(entry["category"])),
                          escape(_params_text(entry["params"])), status)
        cli.console.print(table)
        if not report.ok:
            err = stderr_console()
            for problem in report.problems():
                err.print(f"[yellow]warning:[/yellow] {problem}")
    if check and not report.ok:
        raise SystemExit(Exit.NO)
