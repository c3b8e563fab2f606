"""The task package: ``REGISTERED_TASKS`` (the design's format) and the example tasks.

Every module of this package is imported by the worker and beat (``DATAFORGE_TASK_PACKAGES``
lists the packages; :func:`dataforge.celery_app.task_modules` walks them). This ``__init__``
holds only data, so importing :mod:`dataforge.worker.task` never builds the Celery app.

``REGISTERED_TASKS`` is the catalogue people read (``dataforge tasks``, the schedules CLI
validates ``--kwargs`` against ``params``); Celery's registry is what the worker runs.
``dataforge tasks --check`` fails when the two disagree.
"""

from __future__ import annotations

from typing import Any

__all__ = ["REGISTERED_TASKS"]

#: task name -> {"name", "description", "category", "params"} (the design's format). ``params``
#: lists dicts {"name", "required", "default", "kind"}; kind "var_keyword" = takes any key.
REGISTERED_TASKS: dict[str, dict[str, Any]] = {
    "dataforge.example_sync_accounts": {
        "name": "账号同步 (example)",
        "description": "Async job: fetches account pages concurrently and reports how many were synced.",
        "category": "sync",
        "params": [
            {"name": "pages", "required": False, "default": 3, "kind": "keyword"},
            {"name": "page_size", "required": False, "default": 50, "kind": "keyword"},
        ],
    },
    "dataforge.example_cleanup": {
        "name": "过期数据清理 (example)",
        "description": "Sync job: computes the cut-off for rows older than `days` and reports it.",
        "category": "maintenance",
        "params": [
            {"name": "days", "required": False, "default": 7, "kind": "keyword"},
            {"name": "dry_run", "required": False, "default": True, "kind": "keyword"},
        ],
    },
    "dataforge.example_flaky": {
        "name": "不稳定任务 (example)",
        "description": "Fails with probability `failure_rate`: shows retries, failure counters and the log line.",
        "category": "demo",
        "params": [
            {"name": "failure_rate", "required": False, "default": 0.3, "kind": "keyword"},
        ],
    },
}
