"""The production bug ``TypeError: run() got an unexpected keyword argument '_lock_key'``.

The legacy generic executor injected ``scheduled_task_id`` and ``_lock_key`` into the job's
kwargs and called ``asyncio.run(run(**kwargs))``; jobs that named their parameters (no
``**kwargs``) failed on every run. Rows and queued messages still carry a leaked
``_lock_key``. The same job, run by DataForgeTask.run_job with the same message, succeeds.
The real-worker version of this test is in tests/dataforge/worker/.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from celery import states

from dataforge.settings import Settings
from dataforge.worker.task import DataForgeTask
from tests.dataforge.worker.helpers import add_schedule, executions
from tests.refactor_tool.support import EXAMPLE


async def run(scheduled_task_id: int, days: int = 7) -> dict[str, int]:
    """A typical legacy job: named parameters, no **kwargs."""
    await asyncio.sleep(0)
    return {"schedule": scheduled_task_id, "days": days}


MESSAGE: dict[str, Any] = {"days": 3, "_lock_key": "lock:scripts:report:5"}  # a leaked key, as in old rows

#: The job above as a legacy script module.
_SCRIPT = """import asyncio


async def run(scheduled_task_id, days=7):
    await asyncio.sleep(0)
    return {"schedule": scheduled_task_id, "days": days}
"""
#: Runs the legacy backend's own executor once, in its own process (it builds its Celery app
#: and its Redis client at import, from the backend's config).
_CALL = """import json, sys
from app.celery_tasks import execute_scheduled_task
try:
    print(json.dumps({"result": execute_scheduled_task.run(5, "scripts:report", days=3)}))
except Exception as exc:
    print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
"""


def test_the_legacy_executor_fails_with_the_production_error(tmp_path: Path, redis_url: str) -> None:
    """The example backend's real ``execute_scheduled_task`` (not a copy), on a job that names
    its parameters: the production ``TypeError``."""
    backend = tmp_path / "backend"
    shutil.copytree(EXAMPLE / "app", backend / "app")
    (backend / "scripts").mkdir()
    (backend / "scripts" / "__init__.py").write_text("")
    (backend / "scripts" / "report.py").write_text(_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(backend), "REDIS_URL": redis_url,
           "DATABASE_URL": f"sqlite:///{tmp_path / 'legacy.db'}"}
    done = subprocess.run([sys.executable, "-c", _CALL], cwd=backend, env=env, capture_output=True, text=True,
                          timeout=60, check=True)
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome == {"error": "TypeError", "message": "run() got an unexpected keyword argument '_lock_key'"}


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
