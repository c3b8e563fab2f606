"""The rollback drill, with real beat and worker processes (PostgreSQL + Redis).

upgrade -> run the schedules (new tasks) -> downgrade to 0002_expand -> switch on -> the same
schedules run through ``execute_scheduled_task`` (the compat shim runs the legacy scripts) ->
upgrade again, switch off -> new tasks again. Nothing lost (every schedule runs in every
phase, no row changes identity), nothing run twice (every message beat sent ran exactly once).

Between phases beat is stopped first and the queue is drained before the worker stops, as
docs/rollback-notes.md tells operators to do, so each phase's runs are its own.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import text

from dataforge.db import Database
from dataforge.legacy.names import LEGACY_TASK_NAME
from dataforge.legacy.switch import set_switch
from dataforge.settings import Settings
from tests.compat.support import JOBS, Backend, make_backend, wait_until
from tests.migrations.support import T0, build_legacy_db, downgrade, upgrade

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

SENT = re.compile(r"Scheduler: Sending due task \S+ \(([^)\s]+)\)")
IDENTITY = ("id", "name", "handler_path", "task_type", "interval_seconds", "timezone")


@pytest.fixture
def drill(tmp_path: Path, pg_url: str, redis_url: str) -> Iterator[tuple[Settings, Backend]]:
    schedules = [
        (1, "alpha_every_2s", "interval", None, "scripts:alpha", 2, None, None, "UTC", "{'days': 2}", "active",
         None, None, 0, T0, T0),
        (2, "beta_every_2s", "interval", None, "scripts.beta:run", 2, None, None, "UTC", "", "active",
         None, None, 0, T0, T0),
    ]  # fmt: skip
    build_legacy_db(pg_url, schedules, [])
    settings = Settings.from_env(
        {"DATAFORGE_DATABASE_URL": pg_url, "DATAFORGE_BROKER_URL": redis_url, "DATAFORGE_RESULT_BACKEND": redis_url,
         "DATAFORGE_REDIS_URL": redis_url, "DATAFORGE_BEAT_MAX_INTERVAL": "0.5"},
        cwd=tmp_path,
    )  # fmt: skip
    yield settings, make_backend(tmp_path / "backend")


def _query(settings: Settings, sql: str) -> list[dict[str, Any]]:
    db = Database(settings.database_url)
    with db.engine.connect() as conn:
        out = [dict(r._mapping) for r in conn.execute(text(sql))]
    db.dispose()
    return out


def _queue_empty(settings: Settings) -> bool:
    client = redis.Redis.from_url(settings.broker_url)
    try:
        waiting = int(client.llen("celery"))
    finally:
        client.close()
    running = _query(settings, "SELECT count(*) AS n FROM task_executions WHERE status = 'running'")[0]["n"]
    return waiting == 0 and running == 0


def _phase(settings: Settings, backend: Backend, via: str, label: str) -> Counter[str]:
    """Run beat + worker until every job ran twice more by ``via``; return what beat sent."""
    start = len(backend.runs())

    def done() -> bool:
        runs = backend.runs()[start:]
        return all(sum(r["job"] == job for r in runs) >= 2 for job in JOBS)

    with backend.worker(settings, f"worker-{label}"):
        with backend.beat(settings, f"beat-{label}") as beat:
            wait_until(done, 90, f"two runs of every job in phase {label}")
            sent = Counter(SENT.findall(beat.log))
        wait_until(lambda: _queue_empty(settings), 60, f"the queue to drain after phase {label}")
    runs = backend.runs()[start:]
    assert {r["via"] for r in runs} == {via}, (label, runs)
    assert sum(sent.values()) == len(runs), (label, sent, runs)  # each message sent ran once
    return sent


def test_rollback_drill(drill: tuple[Settings, Backend]) -> None:
    settings, backend = drill
    url = settings.database_url
    db = Database(url)

    upgrade(url)
    identity = _query(settings, f"SELECT {', '.join(IDENTITY)}, task_name FROM scheduled_tasks ORDER BY id")
    sent = _phase(settings, backend, "task", "upgraded")
    assert set(sent) == {f"dataforge.{job}" for job in JOBS}

    downgrade(url, "0002_expand")
    assert [r["task_name"] for r in _query(settings, "SELECT task_name FROM scheduled_tasks ORDER BY id")] == [
        None,
        None,
    ]
    set_switch(db, settings, True, by="drill")
    sent = _phase(settings, backend, "script", "rolled-back")
    assert set(sent) == {LEGACY_TASK_NAME}
    days = {r["job"]: r["days"] for r in backend.runs() if r["via"] == "script"}
    assert days == {"alpha": 2, "beta": 1}  # the legacy kwargs text ("{'days': 2}", '') reached the script

    upgrade(url)
    set_switch(db, settings, False, by="drill")
    sent = _phase(settings, backend, "task", "upgraded-again")
    assert set(sent) == {f"dataforge.{job}" for job in JOBS}

    # Nothing lost: same rows, same identity; every run recorded exactly once.
    after = _query(settings, f"SELECT {', '.join(IDENTITY)}, task_name FROM scheduled_tasks ORDER BY id")
    assert after == identity
    executions = _query(settings, "SELECT celery_task_id, attempt, task_name, status FROM task_executions")
    assert len(executions) == len(backend.runs())
    assert {e["status"] for e in executions} == {"success"}
    assert len({(e["celery_task_id"], e["attempt"]) for e in executions}) == len(executions)
    counters = _query(settings, "SELECT id, run_count, success_count FROM scheduled_tasks ORDER BY id")
    per_job = Counter(r["job"] for r in backend.runs())
    assert [(c["run_count"], c["success_count"]) for c in counters] == [
        (per_job["alpha"], per_job["alpha"]),
        (per_job["beta"], per_job["beta"]),
    ]
    db.dispose()
