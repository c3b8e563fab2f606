"""``dataforge legacy enable|disable|status``: the one switch of the rollback path.

The switch is persisted in the database (``dataforge_flags``, row ``legacy_tasks``), so beat
and every worker read the same value; ``DATAFORGE_LEGACY_TASKS=1`` forces it on for the
processes started with it. What flipping it does and when: docs/rollback-notes.md, and the
message each verb prints.
"""

from __future__ import annotations

import click

from dataforge.cli.common import CliContext, emit_json, json_option, pass_cli
from dataforge.legacy.status import LegacyStatus, legacy_status
from dataforge.legacy.switch import read_switch, set_switch
from dataforge.schema import OLDEST_SUPPORTED

__all__ = ["legacy"]

_AFTER_ENABLE = (
    "beat sends legacy rows (no registered task_name, a legacy handler_path) to the compat shim from its next "
    "full refresh (within a minute); RESTART the workers so they register the shim instead of the forwarder"
)
_AFTER_DISABLE = (
    "beat stops sending legacy messages from its next full refresh; restart the workers to drop the shim "
    "(legacy messages still queued are then run by the forwarder, as the new task)"
)


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


_json = json_option()


@legacy.command("status")
@_json
@pass_cli
def status(cli: CliContext, as_json: bool) -> None:
    """Show the switch, where it comes from, and how much the legacy path is still used."""
    with cli.database(OLDEST_SUPPORTED) as db:
        _show(cli, legacy_status(db, cli.settings), as_json)


def _flip(cli: CliContext, enabled: bool, as_json: bool, after: str) -> None:
    """Persist the switch unless it already is so (then nothing is written, not even the
    audit columns, and the command says so)."""
    word = "enabled" if enabled else "disabled"
    with cli.database(OLDEST_SUPPORTED) as db:
        already = read_switch(db, cli.settings).persisted is enabled
        if not already:
            set_switch(db, cli.settings, enabled)
        state = legacy_status(db, cli.settings)
    note = f"the legacy switch is already {word}; nothing changed" if already else after
    if not enabled and state.switch.env:
        note += "; DATAFORGE_LEGACY_TASKS=1 is set in this environment and keeps it on where it is set"
    _show(cli, state, as_json, note)


@legacy.command("enable")
@_json
@pass_cli
def enable(cli: CliContext, as_json: bool) -> None:
    """Turn the legacy switch on (persisted: beat and all workers see it). Enabling it when it
    is on changes nothing and succeeds."""
    _flip(cli, True, as_json, _AFTER_ENABLE)


@legacy.command("disable")
@_json
@pass_cli
def disable(cli: CliContext, as_json: bool) -> None:
    """Turn the persisted legacy switch off (DATAFORGE_LEGACY_TASKS=1 still forces it on).
    Disabling it when it is off changes nothing and succeeds."""
    _flip(cli, False, as_json, _AFTER_DISABLE)
