"""Run in a child process inside a converted backend: import it as a worker does, then report.

``python -m tests.refactor_tool.worker_view TASK_NAME SCHEDULE_ID`` with the backend on
``PYTHONPATH`` and the runtime's ``DATAFORGE_*`` settings in the environment. It imports
``dataforge.celery_app`` (what ``celery -A dataforge.celery_app worker`` imports), starts the
loader the way a worker does (``init_worker``: the legacy plug-in registers the legacy task
name, then the task packages are imported), imports ``app``, ``app.celery_app`` and
``app.tasks`` as the backend's own code would, then every other module of ``app`` (but the
renamed executor, which nothing may import), and then runs TASK_NAME eagerly for the
schedule. It prints one JSON document: the live receivers of every task signal, the modules
loaded, who registered the legacy task name, and the task's outcome.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
import weakref
from typing import Any

from celery import signals

TASK_SIGNALS = ("task_prerun", "task_success", "task_failure", "task_retry", "task_postrun", "task_revoked")


def _receivers(name: str) -> list[str]:
    out = []
    for _key, receiver in getattr(signals, name).receivers:
        target = receiver() if isinstance(receiver, weakref.ReferenceType) else receiver
        if target is not None:
            out.append(f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', repr(target))}")
    return sorted(out)


def main(task_name: str, schedule_id: int) -> dict[str, Any]:
    from dataforge.celery_app import celery_app
    from dataforge.legacy.names import LEGACY_TASK_NAME
    from dataforge.protocol import MAX_RETRIES_HEADER

    celery_app.loader.init_worker()
    for module in ("app", "app.celery_app", "app.tasks"):
        importlib.import_module(module)
    # Then every other module of the legacy app, as the backend's API process would import them
    # (the renamed executor excepted: nothing may import it).
    package = importlib.import_module("app")
    for info in pkgutil.walk_packages(package.__path__, prefix="app."):
        if info.name != "app.celery_tasks_legacy":
            importlib.import_module(info.name)
    legacy = celery_app.tasks.get(LEGACY_TASK_NAME)
    result = celery_app.tasks[task_name].apply(
        kwargs={"scheduled_task_id": schedule_id}, headers={MAX_RETRIES_HEADER: 0}
    )
    return {
        "receivers": {name: _receivers(name) for name in TASK_SIGNALS},
        "modules": sorted(m for m in sys.modules if m == "app" or m.startswith("app.")),
        "legacy_task_module": getattr(legacy, "__module__", None),
        "shared_app": importlib.import_module("app.celery_app").celery_app is celery_app,
        "state": result.state,
        "result": repr(result.result),
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]))))
