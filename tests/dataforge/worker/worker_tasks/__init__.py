"""Tasks the real-worker tests send: ``DATAFORGE_TASK_PACKAGES=tests.dataforge.worker.worker_tasks``.

Not collected by pytest (no ``test_`` prefix); imported by the ``celery worker`` subprocesses
and by the test process (to build a client app with the same registry).
"""

from __future__ import annotations

from typing import Any

__all__ = ["REGISTERED_TASKS"]

REGISTERED_TASKS: dict[str, dict[str, Any]] = {}
