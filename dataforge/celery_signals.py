"""The only module that connects Celery task signals: one ``task_executions`` row per attempt.

Importing it (the app does, in every process that loads it: worker, its children, beat, the
CLI) connects the recorder's handlers of :mod:`dataforge.worker.recording.handlers` exactly once:
``dispatch_uid`` makes a second import, even under another module name, a no-op, so no event
is ever recorded twice; ``weak=False`` keeps the receivers alive.

Which event does what is written next to each handler; in short, ``task_prerun`` opens the
attempt's row, ``task_success``/``task_failure`` close it and move the schedule's outcome
counters once, ``task_retry`` marks the attempt ``retry``, ``task_postrun`` closes what is
left (skipped runs) and writes the run's log line, ``task_revoked`` records expired and
terminated runs, ``worker_process_init`` drops what a prefork child inherited from its parent,
``worker_init`` stops a worker whose database has no schema it can run on, and
``worker_process_shutdown`` / ``worker_shutdown`` write the records a process still holds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import signals

from dataforge.worker.recording.handlers import (
    on_task_failure,
    on_task_postrun,
    on_task_prerun,
    on_task_retry,
    on_task_revoked,
    on_task_success,
    on_worker_process_init,
    on_worker_process_shutdown,
)
from dataforge.worker.startup import on_worker_init

__all__ = ["RECEIVERS", "connect_handlers"]

#: (signal, receiver, dispatch_uid) for every signal the project listens to.
RECEIVERS: tuple[tuple[Any, Callable[..., None], str], ...] = (
    (signals.task_prerun, on_task_prerun, "dataforge.task_prerun"),
    (signals.task_success, on_task_success, "dataforge.task_success"),
    (signals.task_failure, on_task_failure, "dataforge.task_failure"),
    (signals.task_retry, on_task_retry, "dataforge.task_retry"),
    (signals.task_postrun, on_task_postrun, "dataforge.task_postrun"),
    (signals.task_revoked, on_task_revoked, "dataforge.task_revoked"),
    (signals.worker_process_init, on_worker_process_init, "dataforge.worker_process_init"),
    (signals.worker_init, on_worker_init, "dataforge.worker_init"),
    (signals.worker_process_shutdown, on_worker_process_shutdown, "dataforge.worker_process_shutdown"),
    (signals.worker_shutdown, on_worker_process_shutdown, "dataforge.worker_shutdown"),
)


def connect_handlers() -> None:
    """Connect every receiver once (idempotent)."""
    for signal, handler, uid in RECEIVERS:
        signal.connect(handler, weak=False, dispatch_uid=uid)


connect_handlers()
