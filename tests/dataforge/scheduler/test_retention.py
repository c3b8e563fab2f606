"""History retention: old finished rows deleted in batches, running rows never, counters kept."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from dataforge.db import Database
from dataforge.models import ScheduledTask, TaskExecution, utcnow
from dataforge.runtime import Runtime
from dataforge.scheduler.duties import leader_duties
from dataforge.scheduler.reaper import Reaper
from dataforge.scheduler.retention import PRUNE_EVERY, Retention, prune
from dataforge.settings import Settings

NOW = utcnow()


@pytest.fixture(params=["embedded", "server"])
def db(request: pytest.FixtureRequest) -> Database:
    settings: Settings = request.getfixturevalue(f"{request.param}_settings")
    database = Database(settings.database_url)
    request.addfinalizer(database.dispose)
    return database


def _fill(db: Database) -> dict[str, int]:
    """Rows of every kind, in id order as the recorder writes them (oldest first)."""
    def ago(days: int) -> datetime:
        return NOW - timedelta(days=days)

    kinds = [
        ("old-success", "success", ago(40), ago(40)),
        ("old-running", "running", ago(41), None),  # a run that has been going for 41 days
        ("old-expired", "expired", None, ago(39)),  # never started
        ("old-lost", "lost", ago(35), ago(35)),
        ("old-failure", "failure", ago(31), ago(31)),
        ("edge", "success", ago(29), ago(29)),
        ("new", "success", ago(1), ago(1)),
        ("new-running", "running", NOW, None),
    ]
    with db.session() as s:
        sched = ScheduledTask(name="kept", task_type="interval", interval_seconds=60, task_name="t.job",
                              success_count=5, failure_count=1)  # fmt: skip
        s.add(sched)
        s.flush()
        for tid, status, started, finished in kinds:
            s.add(TaskExecution(celery_task_id=tid, attempt=0, status=status, started_at=started, finished_at=finished,
                                scheduled_task_id=sched.id))  # fmt: skip
        return {"schedule": sched.id}


def _left(db: Database) -> list[str]:
    with db.session() as s:
        return list(s.scalars(select(TaskExecution.celery_task_id).order_by(TaskExecution.id)))


def test_prune_deletes_finished_rows_older_than_the_cutoff_in_batches(db: Database) -> None:
    ids = _fill(db)
    dry = prune(db, timedelta(days=30), now=NOW, dry_run=True, batch=2)
    assert (dry.deleted, dry.dry_run, dry.complete) == (4, True, True)
    assert len(_left(db)) == 8  # a dry run deletes nothing
    done = prune(db, timedelta(days=30), now=NOW, batch=2)
    assert done.deleted == 4 and done.batches >= 3 and done.complete
    assert _left(db) == ["old-running", "edge", "new", "new-running"]
    with db.session() as s:  # totals stay totals
        sched = s.get(ScheduledTask, ids["schedule"])
        assert sched is not None and (sched.success_count, sched.failure_count) == (5, 1)
    assert prune(db, timedelta(days=30), now=NOW).deleted == 0


def test_a_bounded_round_says_more_is_left(db: Database) -> None:
    _fill(db)
    first = prune(db, timedelta(days=30), now=NOW, batch=2, max_batches=1)
    assert not first.complete and first.deleted == 1  # old-success (old-running is kept)
    assert prune(db, timedelta(days=30), now=NOW, batch=2).deleted == 3


def test_the_leader_duties_follow_the_retention_setting(tmp_path: Path) -> None:
    settings = Settings.from_env({}, cwd=tmp_path)
    assert [type(d) for d in leader_duties(Runtime(settings))] == [Reaper, Retention]
    assert [type(d) for d in leader_duties(Runtime(settings.with_(history_retention_days=0)))] == [Reaper]
    with pytest.raises(ValueError, match="keeps everything"):
        Retention(0)


def test_the_duty_prunes_then_waits_an_hour(embedded_settings: Settings) -> None:
    runtime = Runtime(embedded_settings)
    try:
        _fill(runtime.db)
        assert Retention(30).run(runtime) == PRUNE_EVERY
        assert _left(runtime.db) == ["old-running", "edge", "new", "new-running"]
    finally:
        runtime.close()


@pytest.mark.parametrize("raw, days", [("0", 0), ("7", 7), (" 30 ", 30)])
def test_the_retention_setting(tmp_path: Path, raw: str, days: int) -> None:
    settings = Settings.from_env({"DATAFORGE_HISTORY_RETENTION_DAYS": raw}, cwd=tmp_path)
    assert settings.history_retention_days == days
    assert Settings.from_env(settings.as_env(), cwd=tmp_path) == settings


@pytest.mark.parametrize("raw", ["-1", "thirty", "1.5"])
def test_a_bad_retention_setting_names_the_variable(tmp_path: Path, raw: str) -> None:
    from dataforge.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="DATAFORGE_HISTORY_RETENTION_DAYS"):
        Settings.from_env({"DATAFORGE_HISTORY_RETENTION_DAYS": raw}, cwd=tmp_path)
