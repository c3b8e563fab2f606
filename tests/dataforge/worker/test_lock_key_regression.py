"""The production bug ``TypeError: run() got an unexpected keyword argument '_lock_key'``.

The legacy generic executor injected ``scheduled_task_id`` and ``_lock_key`` into the job's
kwargs and called ``asyncio.run(run(**kwargs))``; jobs that named their parameters (no
``**kwargs``) failed on every run. Rows and queued messages still carry a leaked
``_lock_key``. The same job, run by DataForgeTask.run_job with the same message, succeeds.
The real-worker version of this test is in tests/dataforge/worker/.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from celery import states

from dataforge.settings import Settings
from dataforge.worker.task import DataForgeTask
from tests.dataforge.worker.helpers import add_schedule, executions


async def run(scheduled_task_id: int, days: int = 7) -> dict[str, int]:
    """A typical legacy job: named parameters, no **kwargs."""
    await asyncio.sleep(0)
    return {"schedule": scheduled_task_id, "days": days}


def legacy_execute_scheduled_task(scheduled_task_id: int, handler_path: str, **kwargs: Any) -> Any:
    """What backend/app/celery_tasks.py did (reduced to the part that fails)."""
    kwargs["scheduled_task_id"] = scheduled_task_id
    kwargs["_lock_key"] = f"lock:{handler_path}:{scheduled_task_id}"
    return asyncio.run(run(**kwargs))


MESSAGE: dict[str, Any] = {"days": 3, "_lock_key": "lock:scripts:report:5"}  # a leaked key, as in old rows


def test_legacy_executor_fails_with_the_production_error() -> None:
    with pytest.raises(TypeError, match=r"^run\(\) got an unexpected keyword argument '_lock_key'$"):
        legacy_execute_scheduled_task(5, "scripts:report", days=3)


def test_run_job_passes_only_what_the_job_declares(embedded_settings: Settings, make_app: Any) -> None:
    app = make_app(embedded_settings)
    sid = add_schedule(app, task_name="dataforge.report")

    def report(self: DataForgeTask, **kwargs: Any) -> Any:
        return self.run_job(run, kwargs)

    task = app.task(base=DataForgeTask, bind=True, name="dataforge.report", shared=False)(report)
    result = task.apply(kwargs={"scheduled_task_id": sid, **MESSAGE})
    assert result.state == states.SUCCESS
    assert result.get() == {"schedule": sid, "days": 3}
    assert [r.status for r in executions(app)] == ["success"]
