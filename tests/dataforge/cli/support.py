"""What the CLI tests share: run a verb with given settings, read and poke the table."""

from __future__ import annotations

import json
from typing import Any

from click.testing import CliRunner, Result
from sqlalchemy import select, update

from dataforge.cli.main import cli
from dataforge.db import Database
from dataforge.models import ScheduledTask
from dataforge.settings import Settings

__all__ = ["OTHER_TASK", "TASK", "add", "invoke", "ok_json", "refused", "set_columns", "snapshot", "strict_json"]

TASK = "dataforge.example_cleanup"
OTHER_TASK = "dataforge.example_sync_accounts"


# --- helpers -----------------------------------------------------------------------------------


def invoke(settings: Settings, *args: str) -> Result:
    """Run `dataforge ARGS` with ``settings`` as its environment (the CLI reads nothing else).

    COLUMNS: rich wraps tables to the terminal width; a wide one keeps cell text on one line.
    """
    env = {**settings.as_env(), "COLUMNS": "250"}
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def strict_json(text: str) -> Any:
    """``json.loads`` that fails on ``NaN`` / ``Infinity`` (Python's json accepts them)."""

    def refuse(name: str) -> None:
        raise AssertionError(f"{name} in JSON output: {text[:300]}")

    return json.loads(text, parse_constant=refuse)


def ok_json(settings: Settings, *args: str) -> Any:
    result = invoke(settings, *args, "--json")
    assert result.exit_code == 0, result.output
    return strict_json(result.stdout)


def snapshot(settings: Settings) -> list[dict[str, Any]]:
    """Every column of every schedule row, to prove a refused write changed nothing."""
    db = Database(settings.database_url)
    try:
        with db.session() as session:
            return [
                {c.key: getattr(row, c.key) for c in ScheduledTask.__table__.columns}
                for row in session.scalars(select(ScheduledTask).order_by(ScheduledTask.id))
            ]
    finally:
        db.dispose()


def set_columns(settings: Settings, schedule_id: int, **values: Any) -> None:
    db = Database(settings.database_url)
    try:
        with db.session() as session:
            session.execute(update(ScheduledTask).where(ScheduledTask.id == schedule_id).values(**values))
    finally:
        db.dispose()


def add(settings: Settings, name: str, *extra: str) -> dict[str, Any]:
    args = extra if any(a in extra for a in ("--interval", "--cron", "--at")) else (*extra, "--interval", "3600")
    if "--task" not in args:
        args = (*args, "--task", TASK)
    return ok_json(settings, "schedules", "add", name, *args)  # type: ignore[no-any-return]


def refused(settings: Settings, args: list[str], *needles: str, code: int = 2) -> Result:
    """Run a command that must be refused: exit ``code``, message with ``needles``, table unchanged."""
    before = snapshot(settings)
    result = invoke(settings, *args)
    assert result.exit_code == code, result.output
    for needle in needles:
        assert needle in result.output, f"{needle!r} not in:\n{result.output}"
    assert snapshot(settings) == before, "a refused command changed the table"
    return result
