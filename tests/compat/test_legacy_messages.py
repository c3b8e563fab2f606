"""Legacy messages in real workers: the shim (switch on) and the forwarder (switch off).

PostgreSQL schedules at head (migrated), Redis broker/results on this suite's db number.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from celery.exceptions import TimeoutError as CeleryTimeout
from sqlalchemy import text

from dataforge.celery_app import create_app
from dataforge.db import Database
from dataforge.legacy.names import LEGACY_TASK_NAME
from dataforge.legacy.switch import read_switch, set_switch
from dataforge.settings import Settings
from tests.compat.support import Backend, make_backend
from tests.migrations.support import T0, build_legacy_db, upgrade

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture
def backend(tmp_path: Path) -> Backend:
    return make_backend(tmp_path / "backend")


@pytest.fixture
def settings(tmp_path: Path, pg_url: str, redis_url: str) -> Settings:
    schedule = (1, "alpha_every_minute", "interval", None, "scripts:alpha", 60, None, None, "UTC", "{}", "paused",
                None, None, 0, T0, T0)  # fmt: skip
    build_legacy_db(pg_url, [schedule], [])
    upgrade(pg_url)
    return Settings.from_env(
        {"DATAFORGE_DATABASE_URL": pg_url, "DATAFORGE_BROKER_URL": redis_url, "DATAFORGE_RESULT_BACKEND": redis_url,
         "DATAFORGE_REDIS_URL": redis_url, "DATAFORGE_TASK_PACKAGES": "dataforge.tasks"},
        cwd=tmp_path,
    )  # fmt: skip


def _send(settings: Settings, **kwargs: Any) -> Any:
    app = create_app(settings)
    try:
        return app.send_task(LEGACY_TASK_NAME, kwargs=kwargs).get(timeout=60, propagate=False)
    finally:
        app.runtime.close()


def _executions(settings: Settings) -> list[dict[str, Any]]:
    """In the order the runs started (each worker process writes its own rows, so ids need not be)."""
    db = Database(settings.database_url)
    with db.engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(text("SELECT * FROM task_executions ORDER BY started_at, id"))]
    db.dispose()
    return rows


def test_switch_on_runs_the_legacy_script_through_the_shim(settings: Settings, backend: Backend) -> None:
    db = Database(settings.database_url)
    set_switch(db, settings, True, by="test")
    with backend.worker(settings) as worker:
        worker.wait_for(r"legacy switch on: compat\.celery_tasks_legacy registers", 10)
        # The legacy executor gave _lock_key to a run() that does not accept it: TypeError. Not here.
        result = _send(settings, scheduled_task_id=1, handler_path="scripts/alpha.py", _lock_key="old", days=3)
        assert result == {"job": "alpha", "via": "script"}
        refused = _send(settings, scheduled_task_id=1, handler_path="canary:boom")
        assert "refused, nothing was imported" in str(refused)
        assert "refused" in str(_send(settings, handler_path="os:system"))
    assert [(r["via"], r["days"], r["schedule"]) for r in backend.runs()] == [("script", 3, 1)]
    assert not backend.canary_fired
    executions = _executions(settings)
    assert [(e["task_name"], e["status"]) for e in executions] == [(LEGACY_TASK_NAME, "success")] + [
        (LEGACY_TASK_NAME, "failure")
    ] * 2
    assert executions[0]["handler_path"] == "scripts/alpha.py" and executions[0]["scheduled_task_id"] == 1
    assert read_switch(db, settings).hits == 1  # counted; refused messages never ran a job
    db.dispose()


def test_switch_off_forwards_queued_legacy_messages_to_the_new_task(settings: Settings, backend: Backend) -> None:
    with backend.worker(settings) as worker:
        worker.wait_for(r"legacy switch off: dataforge\.legacy\.forwarder registers", 10)
        result = _send(settings, scheduled_task_id=1, handler_path="scripts.alpha:run", _lock_key="old", days=5)
        assert result == {"job": "alpha", "via": "task"}
        missing = _send(settings, scheduled_task_id=1, handler_path="scripts:not_converted")
        assert "dataforge.not_converted" in str(missing) and "legacy enable" in str(missing)
    assert [(r["via"], r["days"]) for r in backend.runs()] == [("task", 5)]
    executions = _executions(settings)
    assert [(e["task_name"], e["status"]) for e in executions] == [
        (LEGACY_TASK_NAME, "success"),
        (LEGACY_TASK_NAME, "failure"),
    ]
    db = Database(settings.database_url)
    assert read_switch(db, settings).hits == 1
    db.dispose()


def test_unknown_result_never_hangs(settings: Settings) -> None:
    """Guard for the tests above: without a worker, .get() times out instead of blocking."""
    app = create_app(settings)
    with pytest.raises(CeleryTimeout):
        app.send_task(LEGACY_TASK_NAME, kwargs={"handler_path": "scripts:alpha"}).get(timeout=0.5)
    app.runtime.close()
