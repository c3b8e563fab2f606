"""`dataforge history prune`: through click's runner on a real database; exit codes 0/2/3."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import func, select

from dataforge.cli.exits import Exit
from dataforge.cli.main import cli
from dataforge.db import Database
from dataforge.models import TaskExecution, utcnow
from dataforge.settings import Settings


def invoke(settings: Settings, *args: str) -> Result:
    return CliRunner().invoke(cli, ["history", "prune", *args], env={**settings.as_env(), "COLUMNS": "200"},
                              catch_exceptions=False)  # fmt: skip


def _rows(settings: Settings, *ages: int, running: int = 0) -> None:
    db = Database(settings.database_url)
    now = utcnow()
    with db.session() as s:
        for n, days in enumerate(ages):
            at = now - timedelta(days=days)
            s.add(TaskExecution(celery_task_id=f"t{n}", attempt=0, status="success", started_at=at, finished_at=at))
        for n in range(running):
            s.add(TaskExecution(celery_task_id=f"r{n}", attempt=0, status="running",
                                started_at=now - timedelta(days=400)))  # fmt: skip
    db.dispose()


def _count(settings: Settings) -> int:
    db = Database(settings.database_url)
    with db.session() as s:
        n = s.scalar(select(func.count()).select_from(TaskExecution))
    db.dispose()
    return int(n or 0)


def test_prune_defaults_to_the_retention_setting_and_reports(embedded_settings: Settings) -> None:
    _rows(embedded_settings, 90, 45, 31, 2, running=1)
    dry = invoke(embedded_settings, "--dry-run")
    assert dry.exit_code == 0 and "would delete 3 finished execution row(s)" in dry.output and "(30 days)" in dry.output
    assert _count(embedded_settings) == 5
    done = invoke(embedded_settings, "--json")
    assert done.exit_code == 0
    report = json.loads(done.output)
    assert (report["deleted"], report["dry_run"], report["older_than_days"]) == (3, False, 30)
    assert _count(embedded_settings) == 2  # the recent row and the running one


def test_prune_with_an_explicit_age(embedded_settings: Settings) -> None:
    _rows(embedded_settings, 90, 45, 2)
    assert json.loads(invoke(embedded_settings, "--older-than-days", "60", "--json").output)["deleted"] == 1
    assert json.loads(invoke(embedded_settings, "--older-than-days", "0", "--json").output)["deleted"] == 2


def test_retention_off_prunes_nothing_unless_asked(embedded_settings: Settings) -> None:
    _rows(embedded_settings, 90)
    off = embedded_settings.with_(history_retention_days=0)
    result = invoke(off)
    assert result.exit_code == 0 and "retention is off" in result.output and _count(off) == 1
    assert json.loads(invoke(off, "--json").output)["deleted"] == 0
    assert json.loads(invoke(off, "--older-than-days", "30", "--json").output)["deleted"] == 1


@pytest.mark.parametrize("bad", ["-1", "soon"])
def test_bad_input_is_exit_2(embedded_settings: Settings, bad: str) -> None:
    result = invoke(embedded_settings, "--older-than-days", bad)
    assert result.exit_code == 2 and "--older-than-days" in result.output


def test_a_missing_schema_or_database_is_exit_3(tmp_path: Path) -> None:
    empty = Settings.from_env({}, cwd=tmp_path)  # a SQLite file without the schema
    result = invoke(empty)
    assert result.exit_code == Exit.ENVIRONMENT
    assert "dataforge db upgrade" in result.output
    down = empty.with_(database_url="postgresql://nobody@127.0.0.1:1/none")
    result = invoke(down, "--older-than-days", "3")
    assert result.exit_code == 3 and "Connection refused" in result.output
