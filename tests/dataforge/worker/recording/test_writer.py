"""The per-process writer: batches, outages, a full queue, refused records, exit, the check."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select

from dataforge.db import Database
from dataforge.models import Base, TaskExecution, utcnow
from dataforge.protocol import ExecutionStatus
from dataforge.runtime import Runtime
from dataforge.settings import Settings
from dataforge.worker.liveness import heartbeat_key
from dataforge.worker.recording.records import RowImage


def image(tid: str, status: ExecutionStatus = ExecutionStatus.SUCCESS, **values: Any) -> RowImage:
    now = utcnow()
    fields: dict[str, Any] = {"task_name": "t.job", "started_at": now, "worker": "w@h:1#00000001",
                              "count_as": status if status.finished else None}  # fmt: skip
    if status.finished:
        fields.update(finished_at=now, duration_ms=1)
    fields.update(values)
    return RowImage(task_id=tid, attempt=0, status=status, **fields)


def rows(db: Database) -> dict[str, str]:
    with db.session() as s:
        return {r.celery_task_id: r.status for r in s.scalars(select(TaskExecution))}  # type: ignore[misc]


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    rt = Runtime(settings)
    rt.recorder.writer.interval = 60.0  # the test decides when the writer writes
    yield rt
    rt.close()


def test_a_batch_is_written_in_order_and_a_later_image_replaces_a_queued_one(runtime: Runtime) -> None:
    recorder = runtime.recorder
    recorder.record(image("a", ExecutionStatus.RUNNING))
    recorder.record(image("b"))
    recorder.record(image("a", ExecutionStatus.FAILURE, error="E: x"))
    assert recorder.waiting() == 2
    assert recorder.writer.finished_status(("a", 0)) is ExecutionStatus.FAILURE
    assert recorder.flush()
    assert rows(runtime.db) == {"a": "failure", "b": "success"}
    assert recorder.writer.finished_status(("a", 0)) is None  # in the database now
    assert recorder.finished_attempt("a", 0) is ExecutionStatus.FAILURE


def test_postgresql_writes_a_batch_in_one_statement(server_settings: Settings) -> None:
    rt = Runtime(server_settings)
    try:
        rt.recorder.writer.interval = 60.0
        for n in range(20):
            rt.recorder.record(image(f"r{n}"))
        seen: list[str] = []
        held = rt.recorder.writes
        assert held is not None
        event.listen(held.engine, "before_cursor_execute", lambda *a: seen.append(a[2]))
        assert rt.recorder.flush()
        assert len(seen) == 1 and "unnest" in seen[0]
        assert len(rows(rt.db)) == 20
    finally:
        rt.close()


def test_records_wait_while_the_database_is_down_and_a_full_queue_drops_the_newest(tmp_path: Path) -> None:
    missing = tmp_path / "not-yet"
    settings = Settings.from_env({"DATAFORGE_DATABASE_URL": f"sqlite:///{missing / 'df.db'}"}, cwd=tmp_path)
    rt = Runtime(settings)
    try:
        writer = rt.recorder.writer
        writer.interval, writer.capacity = 60.0, 3
        for n in range(5):
            rt.recorder.record(image(f"r{n}"))
        assert (writer.waiting(), rt.recorder.stats.dropped) == (3, 2)
        assert not rt.recorder.flush() and writer.waiting() == 3  # unreachable: kept
        missing.mkdir()
        Base.metadata.create_all(rt.db.engine)  # the database is back
        assert rt.recorder.flush()
        assert sorted(rows(rt.db)) == ["r0", "r1", "r2"]  # the first ones queued were kept
    finally:
        rt.close()


def test_a_record_the_database_refuses_is_dropped_and_the_others_are_written(server_settings: Settings) -> None:
    rt = Runtime(server_settings)
    try:
        rt.recorder.writer.interval = 60.0
        rt.recorder.record(image("good-1"))
        rt.recorder.record(RowImage(task_id="bad", attempt=2**40, status=ExecutionStatus.SUCCESS,
                                    started_at=utcnow(), finished_at=utcnow()))  # integer out of range
        rt.recorder.record(image("good-2"))
        assert rt.recorder.flush()
        assert rows(rt.db) == {"good-1": "success", "good-2": "success"}
        assert rt.recorder.stats.dropped == 1
    finally:
        rt.close()


def test_close_writes_what_is_queued_and_drops_the_heartbeat(runtime: Runtime) -> None:
    recorder = runtime.recorder
    worker = recorder.worker_id("w@test")
    recorder.record(image("last", worker=worker))
    assert recorder.flush()  # the lease is taken before the first row naming the process
    key = heartbeat_key(worker)
    assert key is not None and runtime.locks.held_by(key, worker)
    recorder.record(image("at-exit", worker=worker))
    recorder.close()
    assert rows(runtime.db) == {"last": "success", "at-exit": "success"}
    assert not runtime.locks.held_by(key, worker)


def test_a_start_is_discarded_only_while_it_is_queued_as_it_was(runtime: Runtime) -> None:
    recorder = runtime.recorder
    mine = image("dup", ExecutionStatus.RUNNING)
    recorder.record(mine)
    other = image("dup", ExecutionStatus.RUNNING, worker="w@h:2#00000002")
    recorder.record(other)  # a concurrent delivery in this process: the first start stays
    recorder.discard_start(other)
    assert recorder.waiting() == 1
    recorder.discard_start(mine)
    assert recorder.waiting() == 0
