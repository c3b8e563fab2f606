"""``dataforge legacy enable|disable|status``: the one switch of the rollback path.

The switch is persisted in the database (``dataforge_flags``, row ``legacy_tasks``), so beat
and every worker read the same value; ``DATAFORGE_LEGACY_TASKS=1`` forces it on for the
processes started with it. What flipping it does and when: docs/rollback-notes.md, and the
message each verb prints.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import click

from dataforge.cli.common import EXIT_FAILED, CliContext, emit_json, pass_cli
from dataforge.db import Database
from dataforge.legacy.errors import LegacySwitchError
from dataforge.legacy.status import LegacyStatus, legacy_status
from dataforge.legacy.switch import set_switch

__all__ = ["legacy"]

_AFTER_ENABLE = (
    "beat sends legacy rows (no registered task_name, a legacy handler_path) to the compat shim from its next "
    "full refresh (within a minute); RESTART the workers so they register the shim instead of the forwarder"
)
_AFTER_DISABLE = (
    "beat stops sending legacy messages from its next full refresh; restart the workers to drop the shim "
    "(legacy messages still queued are then run by the forwarder, as the new task)"
)


@contextmanager
def _database(cli: CliContext) -> Iterator[Database]:
    db = Database(cli.settings.database_url)
    try:
        yield db
    except LegacySwitchError as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(EXIT_FAILED) from exc
    finally:
        db.dispose()


def _show(cli: CliContext, status: LegacyStatus, as_json: bool, note: str | None = None) -> None:
    if as_json:
        emit_json({**status.to_json(), **({"next": note} if note else {})})
        return
    s = status.switch
    source = "DATAFORGE_LEGACY_TASKS=1" if s.env else "dataforge_flags"
    persisted = "not set" if s.persisted is None else ("on" if s.persisted else "off")
    lines = [
        f"legacy switch: {'ON' if s.effective else 'off'} (database: {persisted}; env: {'1' if s.env else 'unset/0'};"
        f" deciding: {source if s.effective else 'both off'})",
        f"last changed: {s.updated_at or '-'} by {s.updated_by or '-'}",
        f"legacy-path runs counted: {s.hits} (last at {s.last_hit_at or '-'})",
        f"executions recorded under the legacy name: {status.legacy_executions}"
        f" (last started {status.last_legacy_execution or '-'})",
        f"active rows that only the shim can run (no task_name): {len(status.rows_needing_shim)}"
        + (f" ids={status.rows_needing_shim[:50]}" if status.rows_needing_shim else ""),
    ]
    if not s.effective and s.hits and not status.rows_needing_shim:
        lines.append("the switch is off and no row needs it: once the count stops rising, the shim can be removed")
    if note:
        lines.append(f"next: {note}")
    click.echo("\n".join(lines))


@click.group("legacy")
def legacy() -> None:
    """The legacy switch: run legacy handler_path rows through the compat shim (rollback)."""


@legacy.command("status")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@pass_cli
def status(cli: CliContext, as_json: bool) -> None:
    """Show the switch, where it comes from, and how much the legacy path is still used."""
    with _database(cli) as db:
        _show(cli, legacy_status(db, cli.settings), as_json)


@legacy.command("enable")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@pass_cli
def enable(cli: CliContext, as_json: bool) -> None:
    """Turn the legacy switch on (persisted: beat and all workers see it)."""
    with _database(cli) as db:
        set_switch(db, cli.settings, True)
        _show(cli, legacy_status(db, cli.settings), as_json, _AFTER_ENABLE)


@legacy.command("disable")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@pass_cli
def disable(cli: CliContext, as_json: bool) -> None:
    """Turn the persisted legacy switch off (DATAFORGE_LEGACY_TASKS=1 still forces it on)."""
    with _database(cli) as db:
        set_switch(db, cli.settings, False)
        state = legacy_status(db, cli.settings)
        note = _AFTER_DISABLE
        if state.switch.env:
            note = "DATAFORGE_LEGACY_TASKS=1 is set in this environment and keeps the switch on where it is set"
        _show(cli, state, as_json, note)
