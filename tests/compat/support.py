"""A converted legacy backend on disk for real worker/beat tests: old scripts and new tasks.

``scripts/<job>.py`` is the legacy job (``async def run``, no ``**kwargs``: the ``_lock_key``
bug's shape); ``app/tasks/<job>.py`` is the same job the new way. Both append one JSON line per
run to ``$DRILL_OUT`` saying which path ran it, so a test can tell the shim from the new task.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dataforge.settings import Settings
from dataforge.tools.processes import CeleryProcess, beat_command, worker_command

__all__ = ["JOBS", "Backend", "make_backend", "wait_until"]

JOBS = ("alpha", "beta")

_SCRIPT = '''"""Legacy job {job} (scripts/): async, keyword parameters, no **kwargs."""
import json, os, time


async def run(scheduled_task_id=None, days=1):
    with open(os.environ["DRILL_OUT"], "a", encoding="utf-8") as fh:
        fh.write(json.dumps({{"via": "script", "job": "{job}", "schedule": scheduled_task_id, "days": days,
                              "pid": os.getpid(), "t": time.time()}}) + "\\n")
    return {{"job": "{job}", "via": "script"}}
'''

_TASK = '''"""Job {job}, the new way (app/tasks/)."""
import json, os, time

from dataforge.celery_app import celery_app
from dataforge.worker.task import DataForgeTask


async def run(scheduled_task_id=None, days=1):
    with open(os.environ["DRILL_OUT"], "a", encoding="utf-8") as fh:
        fh.write(json.dumps({{"via": "task", "job": "{job}", "schedule": scheduled_task_id, "days": days,
                              "pid": os.getpid(), "t": time.time()}}) + "\\n")
    return {{"job": "{job}", "via": "task"}}


@celery_app.task(base=DataForgeTask, bind=True, name="dataforge.{job}")
def {job}(self, **kwargs):
    return self.run_job(run, kwargs)
'''

_CANARY = """import os
open(os.environ["DRILL_OUT"] + ".canary", "w").close()
"""


class Backend:
    """Paths and environment of one generated backend."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.out = root / "runs.jsonl"

    def runs(self) -> list[dict[str, Any]]:
        if not self.out.exists():
            return []
        return [json.loads(line) for line in self.out.read_text(encoding="utf-8").splitlines() if line.strip()]

    @property
    def canary_fired(self) -> bool:
        return Path(str(self.out) + ".canary").exists()

    def env(self, settings: Settings) -> dict[str, str]:
        env = dict(os.environ)
        env.update(settings.as_env())
        env["DATAFORGE_TASK_PACKAGES"] = "app.tasks"
        env["DRILL_OUT"] = str(self.out)
        env["PYTHONPATH"] = os.pathsep.join([str(self.root), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        return env

    @contextmanager
    def worker(self, settings: Settings, name: str = "worker") -> Iterator[CeleryProcess]:
        proc = CeleryProcess(
            name, worker_command(concurrency=2, hostname=f"{name}@%h"), env=self.env(settings), cwd=self.root,
            log_file=self.root / f"{name}.log",
        )  # fmt: skip
        with proc:
            proc.wait_ready(90)
            yield proc

    @contextmanager
    def beat(self, settings: Settings, name: str = "beat") -> Iterator[CeleryProcess]:
        proc = CeleryProcess(
            name, beat_command(extra=[f"--schedule={self.root / 'celerybeat-schedule'}"]), env=self.env(settings),
            cwd=self.root, log_file=self.root / f"{name}.log",
        )  # fmt: skip
        with proc:
            proc.wait_ready(90)
            yield proc


def make_backend(root: Path) -> Backend:
    (root / "scripts").mkdir(parents=True)
    (root / "scripts" / "__init__.py").write_text("", encoding="utf-8")
    (root / "app" / "tasks").mkdir(parents=True)
    (root / "app" / "__init__.py").write_text("", encoding="utf-8")
    registered = {f"dataforge.{j}": {"name": j, "description": j, "category": "test", "params": []} for j in JOBS}
    (root / "app" / "tasks" / "__init__.py").write_text(f"REGISTERED_TASKS = {registered!r}\n", encoding="utf-8")
    for job in JOBS:
        (root / "scripts" / f"{job}.py").write_text(_SCRIPT.format(job=job), encoding="utf-8")
        (root / "app" / "tasks" / f"{job}.py").write_text(_TASK.format(job=job), encoding="utf-8")
    (root / "canary").mkdir()
    (root / "canary" / "__init__.py").write_text(_CANARY, encoding="utf-8")
    return Backend(root)


def wait_until(condition: Callable[[], Any], timeout: float, what: str, poll: float = 0.2) -> Any:
    """Poll ``condition`` until it is truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(poll)
