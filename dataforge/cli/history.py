"""``dataforge history``: the execution history (``task_executions``).

``prune`` deletes finished rows older than N days (default ``DATAFORGE_HISTORY_RETENTION_DAYS``),
as the leading beat does hourly, in short batches (:mod:`dataforge.scheduler.retention`).
``running`` rows are never deleted. Exit codes: 0 done (also when nothing was old enough), 2 bad
input, 3 the database is unreachable or has no ``task_executions`` table.
"""

from __future__ import annotations

from datetime import timedelta

import click
from sqlalchemy.exc import SQLAlchemyError

from dataforge.cli.common import EXIT_OK, CliContext, emit_json, pass_cli, stderr_console
from dataforge.db import Database

__all__ = ["EXIT_UNAVAILABLE", "history"]

#: The database cannot be reached, or its schema is missing (``dataforge db upgrade``).
EXIT_UNAVAILABLE = 3


@click.group("history")
def history() -> None:
    """The execution history: one row per attempt of every recorded run."""


@history.command("prune")
@click.option("--older-than-days", "days", type=click.IntRange(min=0), default=None,
              help="Delete finished rows that ended more than N days ago "
                   "[default: DATAFORGE_HISTORY_RETENTION_DAYS]. 0: every finished row.")  # fmt: skip
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON document.")
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
            raise SystemExit(EXIT_OK)
    db = Database(cli.settings.database_url)
    try:
        result = prune(db, timedelta(days=days), dry_run=dry_run)
    except SQLAlchemyError as exc:
        where = db.engine.url.render_as_string(hide_password=True)
        cause = getattr(exc, "orig", None) or exc
        first = (str(cause).strip().splitlines() or [""])[0]
        stderr_console().print(
            f"[red]database {where}: {type(exc).__name__}: {first}[/red]\n"
            "Check DATAFORGE_DATABASE_URL and that the schema is at head (`dataforge db upgrade`)."
        )
        raise SystemExit(EXIT_UNAVAILABLE) from exc
    finally:
        db.dispose()
    if as_json:
        emit_json({"deleted": result.deleted, "dry_run": dry_run, "older_than_days": days,
                   "cutoff": result.cutoff.isoformat(sep=" ", timespec="seconds"), "batches": result.batches})
    else:
        verb = "would delete" if dry_run else "deleted"
        cli.console.print(f"{verb} {result.deleted} finished execution row(s) that ended before "
                          f"{result.cutoff.isoformat(sep=' ', timespec='seconds')} UTC ({days} days)")
