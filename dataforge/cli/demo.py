"""``dataforge demo``: the README's main job (see :mod:`dataforge.tools.demo`)."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from dataforge.cli.common import CliContext, pass_cli
from dataforge.tools.demo import Demo, DemoOptions, DemoReport, StepResult, find_examples

__all__ = ["demo"]


class _RichObserver:
    """Renders demo events: a rule per step, command output dimmed, a live executions table."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live: Live | None = None
        self.last_table: Table | None = None
        self.index = 0

    def on_step_started(self, name: str, command: str | None) -> None:
        self.index += 1
        self.console.rule(f"[bold]{self.index}. {name}")
        if command:
            self.console.print(Text(f"$ {command}", style="cyan"))

    def on_output(self, text: str) -> None:
        if text:
            self.console.print(Text(text, style="dim"))

    def on_executions(self, mode: str, rows: list[dict[str, object]], remaining: float) -> None:
        table = _executions_table(mode, rows, remaining)
        self.last_table = table
        if not self.console.is_terminal:
            return  # a log gets the final table only (printed in on_step_finished)
        if self.live is None:
            self.live = Live(table, console=self.console, refresh_per_second=4, transient=False)
            self.live.start()
        else:
            self.live.update(table)

    def on_step_finished(self, result: StepResult) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
        elif self.last_table is not None:
            self.console.print(self.last_table)
        self.last_table = None
        mark = "[green]ok[/]" if result.ok else "[red]FAILED[/]"
        first_line = result.detail.splitlines()[0] if result.detail else ""
        self.console.print(f"{mark} {result.name} ({result.seconds:.1f}s): {first_line}")
        if not result.ok and "\n" in result.detail:
            self.console.print(Text(result.detail, style="red"))


def _executions_table(mode: str, rows: list[dict[str, object]], remaining: float) -> Table:
    table = Table(title=f"executions — {mode} mode ({remaining:.0f}s left)", expand=False)
    for col in ("id", "schedule", "task", "attempt", "state", "ms", "error"):
        table.add_column(col)
    style = {"success": "green", "failure": "red", "skipped": "yellow", "retry": "magenta", "running": "blue"}
    for row in rows:
        state = str(row["status"])
        table.add_row(
            str(row["id"]), str(row["schedule"] or "-"), str(row["task_name"]), str(row["attempt"]),
            Text(state, style=style.get(state, "")), str(row["duration_ms"] or ""),
            (str(row["error"] or ""))[:50],
        )  # fmt: skip
    return table


def _summary(report: DemoReport) -> Table:
    table = Table(title="what ran in each mode")
    for col in ("mode", "task", "state", "runs"):
        table.add_column(col)
    for mode in report.modes:
        for (task, state), count in sorted(mode.counts.items()):
            table.add_row(mode.mode, task, state, str(count))
    return table


@click.command("demo")
@click.option("--seconds", "seconds", type=click.FloatRange(3, 600), default=20.0, show_default=True,
              help="How long each mode (unified, legacy, unified again) runs.")
@click.option("--database-url", help="Run on this database instead of a SQLite file in the workspace.")
@click.option("--broker-url", help="Broker (and result backend) URL, e.g. redis://127.0.0.1:6379/0.")
@click.option("--redis-url", help="Keep locks and the beat leader lease in this Redis.")
@click.option("--examples", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Legacy backend to migrate (default: examples/legacy_backend of this checkout).")
@click.option("--workspace", type=click.Path(file_okay=False, path_type=Path),
              help="Work here instead of a temporary directory (kept afterwards).")
@click.option("--keep", is_flag=True, help="Keep the temporary workspace (logs, databases) for inspection.")
@click.option("--serve", is_flag=True,
              help="At the end, leave worker, beat and the web console (dataforge serve) up until Ctrl-C.")
@click.option("--serve-port", type=click.IntRange(1, 65535), default=8080, show_default=True,
              help="Port of the console left up by --serve (loopback only).")
@pass_cli
def demo(
    cli: CliContext, seconds: float, database_url: str | None, broker_url: str | None, redis_url: str | None,
    examples: Path | None, workspace: Path | None, keep: bool, serve: bool, serve_port: int,
) -> None:
    """Migrate the example legacy backend end to end, roll back, and upgrade again.

    Copies examples/legacy_backend to a workspace, builds its legacy database, shows and applies
    the conversion, checks and upgrades the database, runs a real worker and beat, rolls back to
    the legacy path, upgrades again, and prints what ran in each mode. Needs no server unless
    the URL options point it at PostgreSQL / Redis. Exits non-zero naming the step that failed.
    """  # fmt: skip
    source = examples or find_examples()
    if source is None:
        raise click.UsageError("examples/legacy_backend not found next to this package; pass --examples DIR")
    console = cli.console
    options = DemoOptions(
        examples=source, seconds_per_mode=seconds, database_url=database_url, broker_url=broker_url,
        redis_url=redis_url, workspace=workspace, keep_workspace=keep or workspace is not None,
        serve_port=serve_port if serve else None,
    )  # fmt: skip
    report = Demo(options, _RichObserver(console)).run()
    console.rule("[bold]summary")
    console.print(_summary(report))
    if report.workspace is not None and options.keep_workspace:
        console.print(f"workspace kept: {report.workspace}")
    failed = report.failed_step
    if failed is not None:
        console.print(Panel(f"step failed: {failed.name}\n{failed.detail}", style="red"))
        raise SystemExit(1)
    console.print("[green]demo finished: every step succeeded[/]")
