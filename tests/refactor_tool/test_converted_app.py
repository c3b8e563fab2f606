"""The converted example, imported the way a worker imports it: one set of task-signal receivers.

The issue the legacy app's file change list fixes: ``app/__init__.py`` imports the app (Celery's
usual layout), the app imports ``app.celery_signals``, so a worker that loads ``app.tasks``
connects the legacy handlers beside the runtime's: every run recorded twice and ``next_run_at``
written behind beat's back. A child process imports the converted tree as a worker does and
runs a task eagerly against PostgreSQL; the same tree converted without the app files shows
the duplicate handlers, so the check is known to see them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from dataforge.celery_signals import RECEIVERS
from dataforge.legacy.names import FORWARDER_MODULE, SHIM_MODULE
from refactor_tool.legacy_layout import RENAMED_EXECUTOR_MODULE, module_path
from refactor_tool.options import ConvertOptions
from refactor_tool.references import Targets, references_in
from refactor_tool.runner import convert
from refactor_tool.source_tree import python_files
from tests.conftest import REPO_ROOT, create_schema
from tests.refactor_tool.support import EXAMPLE
from tests.refactor_tool.worker_view import TASK_SIGNALS

NEXT_RUN = datetime(2030, 1, 1, 12, 0, 0)
#: The runtime's receivers, one per task signal.
RUNTIME = {s.name: [f"{r.__module__}.{r.__qualname__}"] for s, r, _ in RECEIVERS if s.name in TASK_SIGNALS}


def _backend(tmp_path: Path, pg_url: str, options: ConvertOptions) -> Path:
    root = tmp_path / "backend"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("__pycache__"))
    assert convert(root, options).exit_code(check=False) == 0
    create_schema(pg_url)
    engine = create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO scheduled_tasks (id, name, task_type, task_name, interval_seconds, next_run_at, "
                "run_count, handler_kwargs, status) VALUES (1, 'ping_every_minute', 'interval', 'dataforge.ping', "
                "60, :next_run, 5, '{}', 'active')"
            ),
            {"next_run": NEXT_RUN},
        )
    engine.dispose()
    return root


def _worker_view(root: Path, tmp_path: Path, pg_url: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATAFORGE_")}
    env.update(
        DATAFORGE_TASK_PACKAGES="app.tasks",
        DATAFORGE_DATABASE_URL=pg_url,
        # The legacy app's own settings (app/config.py) point at the same database: a legacy
        # handler left connected would write there.
        DATABASE_URL=pg_url,
        PYTHONPATH=os.pathsep.join([str(root), str(REPO_ROOT)]),
        PYTHONDONTWRITEBYTECODE="1",
    )
    proc = subprocess.run(
        [sys.executable, "-m", "tests.refactor_tool.worker_view", "dataforge.ping", "1"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    view: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return view


def _rows(pg_url: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    engine = create_engine(pg_url)
    with engine.connect() as conn:
        schedule = dict(conn.execute(text("SELECT * FROM scheduled_tasks WHERE id = 1")).mappings().one())
        executions = [dict(r) for r in conn.execute(text("SELECT * FROM task_executions")).mappings()]
    engine.dispose()
    return schedule, executions


@pytest.mark.postgres
def test_a_worker_of_the_converted_backend_records_each_run_once(tmp_path: Path, pg_url: str) -> None:
    root = _backend(tmp_path, pg_url, ConvertOptions())
    view = _worker_view(root, tmp_path, pg_url)
    assert view["receivers"] == RUNTIME
    assert view["state"] == "SUCCESS", view["result"]
    # app.celery_app hands out the worker's app; nothing loaded the legacy modules, and the
    # legacy task name is the forwarder's (the renamed executor would have registered it again).
    assert view["shared_app"] is True
    assert not {"app.celery_signals", "app.celery_tasks", "app.celery_tasks_legacy"} & set(view["modules"])
    assert view["legacy_task_module"] == "dataforge.legacy.forwarder"
    schedule, executions = _rows(pg_url)
    # Beat's columns untouched by the run; the outcome counted once; one execution row.
    assert (schedule["next_run_at"], schedule["last_run_at"], schedule["run_count"]) == (NEXT_RUN, None, 5)
    assert (schedule["success_count"], schedule["last_status"]) == (1, "success")
    assert [(e["task_name"], e["status"], e["scheduled_task_id"]) for e in executions] == [
        ("dataforge.ping", "success", 1)
    ]


@pytest.mark.postgres
def test_without_the_app_files_the_legacy_handlers_come_back(tmp_path: Path, pg_url: str) -> None:
    """The control: only scripts/ converted, the legacy handlers connect in the worker and
    write next_run_at (what the test above proves gone)."""
    root = _backend(tmp_path, pg_url, ConvertOptions(app_files=False))
    view = _worker_view(root, tmp_path, pg_url)
    assert "app.celery_signals.on_task_postrun" in view["receivers"]["task_postrun"]
    assert view["receivers"] != RUNTIME
    schedule, _ = _rows(pg_url)
    assert schedule["next_run_at"] != NEXT_RUN


def test_nothing_imports_or_includes_the_renamed_executor(tmp_path: Path) -> None:
    """Importing app/celery_tasks_legacy.py would register app.celery_tasks.execute_scheduled_task a
    second time, over the forwarder or the shim: neither the converted tree nor the runtime names it."""
    root = tmp_path / "backend"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("__pycache__"))
    assert convert(root).exit_code(check=False) == 0
    renamed = root / module_path(RENAMED_EXECUTOR_MODULE)
    assert renamed.is_file()
    trees = [(root, p) for p in python_files(root) if p != renamed]
    trees += [(REPO_ROOT, p) for top in ("dataforge", "compat") for p in python_files(REPO_ROOT / top)]
    assert len(trees) > 50
    targets = Targets(frozenset({RENAMED_EXECUTOR_MODULE}))
    found = references_in(((p.relative_to(base).as_posix(), p.read_bytes()) for base, p in trees), targets)
    assert found == []
    assert RENAMED_EXECUTOR_MODULE not in (SHIM_MODULE, FORWARDER_MODULE)
