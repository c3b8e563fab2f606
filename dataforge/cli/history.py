"""``dataforge history``: the execution history (``task_executions``).

``prune`` deletes finished rows older than N days (default ``DATAFORGE_HISTORY_RETENTION_DAYS``),
as the leading beat does hourly, in short batches (:mod:`dataforge.scheduler.retention`).
``running`` rows are never deleted. Exit codes: the CLI's table (:mod:`dataforge.cli.exits`): 0
done (also when nothing was old enough), 2 bad input, 3 the database unreachable or without the
schema.
"""

from __future__ import annotations

from datetime import timedelta

import click

from dataforge.cli.common import CliContext, emit_json, json_option, pass_cli
from dataforge.schema import OLDEST_SUPPORTED

__all__ = ["history"]


@click.group("history")
def history() -> None:
    """The execution history: one row per attempt of every recorded run."""


@history.command("prune")
@click.option("--older-than-days", "days", type=click.IntRange(min=0, max=36500), default=None,
              help="Delete finished rows that ended more than N days ago "
                   "[default: DATAFORGE_HISTORY_RETENTION_DAYS]. 0: every finished row.")  # fmt: skip
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
@json_option()
@pass_cli
def prune_command(cli: CliContext, days: int | None, dry_run: bool, as_json: bool) -> None:
    """Delete old finished executions (running ones are never deleted)."""
    from dataforge.scheduler.retention import prune

    if days is None:
        days = cli.settings.history_retention_days
        if days == 0:
            message = ("history retention is off (DATAFORGE_HISTORY_RETENTION_DAYS=0): nothing deleted; "
                       "pass --older-than-days N to prune anyway")  # fmt: skip
            if as_json:
                emit_json({"deleted": 0, "dry_run": dry_run, "older_than_days": None, "reason": message})
            else:
                cli.console.print(message)
            return
    with cli.database(OLDEST_SUPPORTED) as db:
        result = prune(db, timedelta(days=days), dry_run=dry_run)
    if as_json:
        emit_json({"deleted": result.deleted, "dry_run": dry_run, "older_than_days": days,
                   "cutoff": result.cutoff.isoformat(sep=" ", timespec="seconds"), "batches": result.batches})
    else:
        verb = "would delete" if dry_run else "deleted"
        cli.console.print(f"{verb} {result.deleted} finished execution row(s) that ended before "
                          f"{result.cutoff.isoformat(sep=' ', timespec='seconds')} UTC ({days} days)")
