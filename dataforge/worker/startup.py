"""What a worker checks before it takes any work: that the database has a schema it runs on.

Connected to Celery's ``worker_init`` by :mod:`dataforge.celery_signals`. A worker started
against a database that was never upgraded would otherwise take messages and fail every
run on a missing table; it exits instead, with one line naming ``dataforge db upgrade``.
"""

from __future__ import annotations

from typing import Any

from dataforge.runtime import NotConfiguredError, get_runtime

__all__ = ["on_worker_init"]


def on_worker_init(sender: Any = None, **_: Any) -> None:
    """``worker_init``: exit (``SystemExit``, one line) when the schema is missing or outdated."""
    try:
        runtime = get_runtime(getattr(sender, "app", None))
    except NotConfiguredError:
        return
    runtime.schema.refuse_to_start("worker")
