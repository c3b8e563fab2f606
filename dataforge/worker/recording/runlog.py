"""The one structured log line per run (logger ``dataforge.runs``).

Each line carries its fields twice: as ``key=value`` text for people and log greps, and as
``extra={"dataforge_run": {...}}`` for structured log handlers.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Final

from dataforge.protocol import SCHEDULE_ID_KWARG

__all__ = ["RUN_LOGGER", "log_run", "schedule_id_of"]

#: The logger of the one structured line per run.
RUN_LOGGER: Final = "dataforge.runs"
_run_log = logging.getLogger(RUN_LOGGER)


def schedule_id_of(kwargs: Mapping[str, Any] | None) -> int | None:
    """The schedule id a message carries, or ``None`` (absent or not an integer)."""
    raw = (kwargs or {}).get(SCHEDULE_ID_KWARG)
    if raw is None or isinstance(raw, bool):
        return None
    try:
        return int(raw)
    except (TypeError, ValueError):
        return None


def log_run(task: Any, task_id: str, kwargs: Mapping[str, Any] | None, attempt: int | None,
            lock: str | None, outcome: str, duration_ms: int | None, reason: str | None = None) -> None:
    fields: dict[str, Any] = {
        "task_id": task_id,
        "task": getattr(task, "name", None),
        "schedule": schedule_id_of(kwargs),
        "attempt": attempt,
        "lock": lock,
        "outcome": str(outcome),
        "duration_ms": duration_ms,
    }
    if reason:
        fields["reason"] = reason
    _run_log.info(
        "run " + " ".join(f"{k}={v}" for k, v in fields.items()),
        extra={"dataforge_run": fields},
    )
