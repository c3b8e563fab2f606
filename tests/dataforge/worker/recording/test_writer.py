"""The per-process writer: batches, outages, a full queue, refused records, exit, the check."""

from __future__ import annotations

import logging
import threading
import time
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
from dataforge.worker.recording.writer import Writer
from tests.dataforge.worker.rig import wait_until


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


def _down(tmp_path: Path) -> tuple[Runtime, Path]:
    """A runtime whose SQLite database cannot be opened yet (its directory is missing):
    every flush fails as it does while a database is unreachable."""
    missing = tmp_path / "not-yet"
    settings = Settings.from_env({"DATAFORGE_DATABASE_URL": f"sqlite:///{missing / 'df.db'}"}, cwd=tmp_path)
    return Runtime(settings), missing


def _back(rt: Runtime, missing: Path) -> None:
    missing.mkdir()
    Base.metadata.create_all(rt.db.engine)


def _timed_flushes(writer: Writer, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """When each flush (the thread's or a test's) begins."""
    began: list[float] = []
    flush = writer.flush

    def timed() -> bool:
        began.append(time.monotonic())
        return flush()

    monkeypatch.setattr(writer, "flush", timed)
    return began


def test_a_batch_is_written_one_window_after_its_first_record_however_many_follow(
    embedded_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The window (50 ms) starts at the first record of a batch: records that keep coming never
    hold it back, so a record waits one window at most, not until the queue goes quiet."""
    assert Writer.interval == 0.05
    rt = Runtime(embedded_settings)
    try:
        writer = rt.recorder.writer
        writer.interval = 0.5  # the same rule, on a window scheduling noise cannot blur
        began = _timed_flushes(writer, monkeypatch)
        first = time.monotonic()
        deadline = first + 20 * writer.interval
        sent = 0
        while not began:  # a record every 50 ms: a window restarted by each one never closes
            assert time.monotonic() < deadline, "the batch was not written while records kept coming"
            rt.recorder.record(image(f"r{sent}"))
            sent += 1
            time.sleep(0.05)
        assert began[0] - first >= writer.interval, "written before its window closed"
        assert sent > 1  # later records joined the batch the first one opened
        wait_until(lambda: rt.recorder.stats.flushes >= 1, 10, "the first batch written")
        assert len(rows(rt.db)) >= 1
    finally:
        rt.close()


def test_500_queued_records_are_written_at_once_in_one_statement(server_settings: Settings) -> None:
    assert Writer.max_batch == 500
    rt = Runtime(server_settings)
    try:
        writer = rt.recorder.writer
        writer.interval = 60.0  # only the batch size can make the thread write now
        held = rt.recorder.writes
        assert held is not None
        seen: list[str] = []
        event.listen(held.engine, "before_cursor_execute", lambda *a: seen.append(a[2]))
        for n in range(writer.max_batch):
            rt.recorder.record(image(f"r{n}"))
        wait_until(lambda: rt.recorder.stats.written == 500, 20, "the 500th record had the batch written at once")
        assert (rt.recorder.stats.flushes, writer.waiting()) == (1, 0)
        assert len(seen) == 1 and "unnest" in seen[0]
        assert len(rows(rt.db)) == 500
    finally:
        rt.close()


def test_the_queue_holds_10000_records_while_the_database_is_down_then_drops_the_newest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert Writer.capacity == 10_000
    rt, missing = _down(tmp_path)
    try:
        writer = rt.recorder.writer
        writer.interval = 60.0  # the test decides when the writer writes
        with caplog.at_level(logging.ERROR, logger="dataforge.recorder"):
            for n in range(writer.capacity + 5):
                rt.recorder.record(image(f"r{n}"))
        assert (writer.waiting(), rt.recorder.stats.dropped) == (10_000, 5)
        full = [r for r in caplog.records if "dropping new ones" in r.getMessage()]
        assert len(full) == 1, "a full queue is logged once, not once per dropped record"
        assert not rt.recorder.flush() and writer.waiting() == 10_000  # unreachable: kept
        _back(rt, missing)
        assert not writer.flush()  # one batch written, more queued
        assert sorted(rows(rt.db), key=lambda t: int(t[1:])) == [f"r{n}" for n in range(500)]  # oldest first
    finally:
        rt.recorder.writer.exit_timeout = 0.0  # what is left is not what this test is about
        rt.close()


def test_an_outage_is_retried_backing_off_to_once_a_second_and_logged_once_each_way(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From 0.1 s, doubling, capped at 1 s: the database is not hammered, and once it is back
    the queue is written within about a second, by the thread alone. One line when the outage
    begins, one when it ends, however many tries failed in between."""
    assert Writer.max_backoff == 1.0
    rt, missing = _down(tmp_path)
    try:
        writer = rt.recorder.writer
        began = _timed_flushes(writer, monkeypatch)
        with caplog.at_level(logging.WARNING, logger="dataforge.recorder"):
            rt.recorder.record(image("waits"))
            wait_until(lambda: len(began) >= 8, 30, "eight tries while the database is down")
            gaps = [round(b - a, 3) for a, b in zip(began, began[1:7], strict=False)]
            for gap, backoff in zip(gaps, [0.1, 0.2, 0.4, 0.8, 1.0, 1.0], strict=True):
                # Never sooner than the backoff; a loaded machine may only make a wake-up late.
                assert backoff - 0.01 <= gap <= backoff + 0.75, (gaps, rt.recorder.stats)
            _back(rt, missing)
            wait_until(lambda: rows(rt.db) == {"waits": "success"}, 10, "the queue written once the database is back")
        messages = [r.getMessage() for r in caplog.records]
        assert len([m for m in messages if "they wait in memory" in m]) == 1, messages
        assert len([m for m in messages if "database reachable again" in m]) == 1, messages
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


def test_flush_returns_once_the_batch_the_thread_is_writing_is_written(
    embedded_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Eager runs (``apply()``) and tests read the row right after ``flush()``: a batch the
    thread took off the queue and is still writing counts as not written yet."""
    rt = Runtime(embedded_settings)
    try:
        writer = rt.recorder.writer
        taken, release = threading.Event(), threading.Event()
        write = writer._write

        def held_write(batch: list[Any]) -> int:
            taken.set()
            release.wait(10)
            return write(batch)

        monkeypatch.setattr(writer, "_write", held_write)
        rt.recorder.record(image("in-flight"))
        assert taken.wait(10) and writer.waiting() == 0  # the thread has it, the queue is empty
        seen: list[dict[str, str]] = []
        flusher = threading.Thread(target=lambda: seen.append(rows(rt.db)) if rt.recorder.flush() else None)
        flusher.start()
        flusher.join(0.5)  # a flush that does not wait has returned (and looked) by now
        release.set()
        flusher.join(10)
        assert seen == [{"in-flight": "success"}]
        monkeypatch.undo()
        writer.interval = 60.0
        for n in range(writer.max_batch + 100):  # more than one batch: still one call, True
            rt.recorder.record(image(f"r{n}"))
        assert rt.recorder.flush() and len(rows(rt.db)) == writer.max_batch + 101
    finally:
        rt.close()
