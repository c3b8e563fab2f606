"""The legacy application keeps working on the ``0002_expand`` schema (docs/migrations.md).

An expand step is deployed while the old code still runs: the legacy beat
(``app.celery_scheduler.DatabaseScheduler``), the legacy executor and the legacy signal
handlers of ``examples/legacy_backend`` read and write the expanded tables through their own
models, which know none of the added columns. Real legacy worker and beat processes on
PostgreSQL and Redis (this suite's db number), the legacy code run as it is, from a copy.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from dataforge.db import Database
from dataforge.tools.processes import CeleryProcess, beat_command, worker_command
from tests.compat.support import wait_until
from tests.migrations.support import T0, build_legacy_db, engine_for, upgrade

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

LEGACY_BACKEND = Path(__file__).resolve().parents[2] / "examples" / "legacy_backend"
LEGACY_EXECUTOR = "app.celery_tasks.execute_scheduled_task"

#: What the legacy code writes through its own models: a schedule (the legacy API's insert) and
#: a second execution record under one Celery task id (what a legacy retry's prerun handler
#: writes). Prints one JSON line.
_LEGACY_WRITER = """
import json
from sqlalchemy.exc import IntegrityError
from app.database import SessionLocal
from app.models import ScheduledTask, TaskExecution

with SessionLocal() as session:
    row = ScheduledTask(name="created_by_legacy_code", task_type="interval",
                        handler_path="scripts.cleanup_old_rows:run", interval_seconds=2, handler_kwargs='{"days": 5}')
    session.add(row)
    session.add(TaskExecution(celery_task_id="legacy-retry", task_name="execute_scheduled_task", status="failure"))
    session.commit()
    created = row.id
retry = "recorded"
with SessionLocal() as session:
    session.add(TaskExecution(celery_task_id="legacy-retry", task_name="execute_scheduled_task", status="success"))
    try:
        session.commit()
    except IntegrityError:
        retry = "refused"
print(json.dumps({"created": created, "retry": retry}))
"""


def _query(url: str, sql: str) -> list[dict[str, Any]]:
    engine = engine_for(url)
    with engine.connect() as conn:
        out = [dict(r._mapping) for r in conn.execute(text(sql))]
    engine.dispose()
    return out


@pytest.fixture
def legacy(tmp_path: Path, pg_url: str, redis_url: str) -> tuple[Path, dict[str, str]]:
    """A copy of the legacy backend and its environment, on a legacy database at 0002_expand."""
    schedules = [
        (1, "cleanup_every_2s", "interval", None, "scripts:cleanup_old_rows", 2, None, None, "UTC", '{"days": 3}',
         "active", None, None, 0, T0, T0),
        (2, "vacuum_every_2s", "interval", "dataforge.vacuum_stats", None, 2, None, None, "UTC", "{}", "active",
         None, None, 0, T0, T0),
        (3, "paused_cleanup", "interval", None, "scripts:cleanup_old_rows", 2, None, None, "UTC", "{}", "paused",
         None, None, 0, T0, T0),
    ]  # fmt: skip
    build_legacy_db(pg_url, schedules, [])
    upgrade(pg_url, "0002_expand")
    root = tmp_path / "backend"
    shutil.copytree(LEGACY_BACKEND, root)
    env = dict(os.environ)
    env.update(
        # The legacy settings (app/config.py); the deployment's driver is psycopg 3.
        DATABASE_URL=Database(pg_url).url,
        CELERY_BROKER_URL=redis_url,
        CELERY_RESULT_BACKEND=redis_url,
        REDIS_URL=redis_url,
        PYTHONPATH=os.pathsep.join([str(root), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    )
    return root, env


def test_legacy_beat_worker_and_models_run_on_the_expand_schema(
    legacy: tuple[Path, dict[str, str]], pg_url: str
) -> None:
    """Legacy beat sends its handler_path and task_name rows, the legacy worker runs them and
    its signal handlers record every run and count it on the schedule; the legacy models
    insert a schedule that then runs too. Nothing logs an error."""
    root, env = legacy
    written = subprocess.run(
        [sys.executable, "-c", _LEGACY_WRITER], env=env, cwd=root, capture_output=True, text=True, timeout=60
    )
    assert written.returncode == 0, written.stderr
    legacy_writes = json.loads(written.stdout)
    created = legacy_writes["created"]
    # The one thing legacy code cannot write at 0002: a second record under one task id
    # (attempt defaults to 0, and (celery_task_id, attempt) is unique from 0002 on).
    assert legacy_writes["retry"] == "refused"

    ran = f"SELECT id, run_count FROM scheduled_tasks WHERE id IN (1, 2, {created}) AND run_count >= 2"
    worker = CeleryProcess(
        "legacy-worker", worker_command("app.celery_app", concurrency=2, hostname="legacy@%h"), env=env, cwd=root,
        log_file=root / "worker.log",
    )  # fmt: skip
    beat = CeleryProcess(
        "legacy-beat", beat_command("app.celery_app", extra=[f"--schedule={root / 'celerybeat-schedule'}"]),
        env=env, cwd=root, log_file=root / "beat.log",
    )  # fmt: skip
    with worker:
        worker.wait_ready(90)
        with beat:
            beat.wait_ready(90)
            wait_until(lambda: len(_query(pg_url, ran)) == 3, 60, "two legacy runs of each active schedule")
        # Beat is stopped: let the runs it sent finish and be recorded.
        wait_until(
            lambda: not _query(pg_url, "SELECT id FROM task_executions WHERE status = 'running'"), 30,
            "the legacy runs to finish",
        )  # fmt: skip
    assert "Signal handler" not in worker.log and "Traceback" not in worker.log, worker.log

    executions = _query(
        pg_url,
        "SELECT scheduled_task_id, task_name, handler_path, status, result, attempt, worker, traceback "
        "FROM task_executions WHERE celery_task_id <> 'legacy-retry' ORDER BY id",
    )
    by_schedule = {sid: [e for e in executions if e["scheduled_task_id"] == sid] for sid in (1, 2, created)}
    assert {e["scheduled_task_id"] for e in executions} == {1, 2, created}  # the paused row never ran
    for sid, task, handler, days in ((1, LEGACY_EXECUTOR, "scripts:cleanup_old_rows", 3),
                                     (2, "dataforge.vacuum_stats", None, None),
                                     (created, LEGACY_EXECUTOR, "scripts.cleanup_old_rows:run", 5)):  # fmt: skip
        assert len(by_schedule[sid]) >= 2, sid
        for e in by_schedule[sid]:
            # Recorded by the legacy signal handlers; the columns 0002 added keep their defaults.
            assert (e["task_name"], e["handler_path"], e["status"]) == (task, handler, "success"), e
            assert (e["attempt"], e["worker"], e["traceback"]) == (0, None, None), e
            if days is not None:
                assert json.loads(e["result"])["days"] == days, e
    counters = {
        r["id"]: r
        for r in _query(
            pg_url,
            "SELECT id, run_count, success_count, last_status, next_run_at, handler_kwargs_legacy, invalid_reason, "
            "legacy_values FROM scheduled_tasks",
        )
    }
    for sid in (1, 2, created):
        row = counters[sid]
        assert row["success_count"] == len(by_schedule[sid]) and row["last_status"] == "success", row
        assert row["next_run_at"] is not None
        assert (row["handler_kwargs_legacy"], row["invalid_reason"], row["legacy_values"]) == (None, None, None)
    assert counters[3]["run_count"] == 0

    # The way on from there: the data step takes up what the legacy code wrote.
    upgrade(pg_url)
    (row,) = _query(pg_url, f"SELECT task_name, status FROM scheduled_tasks WHERE id = {created}")
    assert row == {"task_name": "dataforge.cleanup_old_rows", "status": "active"}
