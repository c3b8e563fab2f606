"""The example tasks run (eagerly) through DataForgeTask and are recorded."""

from __future__ import annotations

from typing import Any

import pytest
from celery import states

from dataforge.protocol import MAX_RETRIES_HEADER
from dataforge.settings import Settings
from dataforge.tasks import REGISTERED_TASKS, examples
from tests.dataforge.worker.helpers import add_schedule, executions


def test_example_jobs_directly() -> None:
    assert examples.cleanup_job(days=1)["dry_run"] is True
    assert examples.flaky_job(failure_rate=0.0) == {"ok": True}
    with pytest.raises(RuntimeError):
        examples.flaky_job(failure_rate=1.0)


def test_examples_run_through_the_app(embedded_settings: Settings, make_app: Any) -> None:
    app = make_app(embedded_settings)
    app.loader.import_default_modules()
    sid = add_schedule(app, task_name="dataforge.example_sync_accounts")
    sync = app.tasks["dataforge.example_sync_accounts"]
    out = sync.apply(kwargs={"scheduled_task_id": sid, "pages": 4, "page_size": 10, "_lock_key": "x"}).get()
    assert out == {"synced_count": 40, "pages": 4, "scheduled_task_id": sid}
    cleanup = app.tasks["dataforge.example_cleanup"]
    assert cleanup.apply(kwargs={"scheduled_task_id": sid, "days": 30}).get()["deleted"] == 0
    flaky = app.tasks["dataforge.example_flaky"]
    result = flaky.apply(kwargs={"failure_rate": 1.0}, headers={MAX_RETRIES_HEADER: 1})
    assert result.state == states.FAILURE
    assert [r.status for r in executions(app)] == ["success", "success", "retry", "failure"]
    assert set(REGISTERED_TASKS) == {
        "dataforge.example_sync_accounts", "dataforge.example_cleanup", "dataforge.example_flaky",
    }  # fmt: skip
