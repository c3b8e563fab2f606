"""The peer of benchmarks/worker_overhead.py: plain Celery keeping its history in PostgreSQL.

What a user would pick instead of DataForgeTask to have a record of every run: Celery's own
SQLAlchemy result backend (``db+postgresql+psycopg://``, one ``celery_taskmeta`` row per task)
on the same PostgreSQL, with the same worker settings as the DataForge app (JSON, acks_late,
prefetch 1, task events, track_started). Run by its own worker process
(``celery -A worker_overhead_peer worker``); the broker and result URLs come from
``BENCH_BROKER_URL`` / ``BENCH_RESULT_BACKEND``.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

__all__ = ["app", "peer_noop"]

app = Celery("peer", broker=os.environ["BENCH_BROKER_URL"], backend=os.environ["BENCH_RESULT_BACKEND"])
app.conf.update(
    task_serializer="json", result_serializer="json", accept_content=["json"], result_accept_content=["json"],
    worker_send_task_events=True, task_send_sent_event=False, enable_utc=True, timezone="UTC",
    task_acks_late=True, task_reject_on_worker_lost=False, worker_prefetch_multiplier=1,
    task_track_started=True, result_expires=86400, broker_connection_retry_on_startup=True,
)  # fmt: skip


@app.task(name="bench.peer")  # type: ignore[untyped-decorator]
def peer_noop(**kwargs: Any) -> None:
    """Plain Celery, history in PostgreSQL through the result backend."""
