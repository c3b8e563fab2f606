"""The signal receivers: rows, counters, parent-side events, idempotence, the recorded error."""

from __future__ import annotations

import importlib.util
import logging
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from celery import Celery, signals, states
from celery.app.task import Context
from celery.exceptions import TimeLimitExceeded, WorkerLostError
from celery.result import AsyncResult

import dataforge.celery_signals as celery_signals
from dataforge.models import ScheduledTask, TaskExecution, utcnow
from dataforge.settings import Settings
from dataforge.worker.errors import JobArgumentError
from dataforge.worker.recording.handlers import NOT_SERIALISABLE, on_task_failure, on_task_revoked
from dataforge.worker.recording.recorder import READ_TIMEOUT
from dataforge.worker.recording.runlog import RUN_LOGGER
from dataforge.worker.task import DataForgeTask
from tests.dataforge.worker.helpers import add_schedule, deliver, executions, lock_held, schedule

UNREACHABLE_PG = "postgresql://nobody@127.0.0.1:1/nothing"


def define(app: Celery, name: str, body: Callable[..., Any]) -> Any:
    def run(self: DataForgeTask, **kwargs: Any) -> Any:
        return self.run_job(body, kwargs)

    return app.task(base=DataForgeTask, bind=True, name=name, shared=False)(run)


def counters(app: Celery, sid: int) -> dict[str, Any]:
    row = schedule(app, sid)
    return {c: getattr(row, c) for c in ("success_count", "failure_count", "skipped_count", "expired_count",
                                         "lost_count", "last_status")}  # fmt: skip


def test_plain_celery_tasks_are_not_recorded(app: Celery) -> None:
    def plain(x: int) -> int:
        return x

    task = app.task(name="t.plain", shared=False)(plain)
    assert task.apply(kwargs={"x": 1}).get() == 1
    assert executions(app) == []


def test_importing_the_module_twice_still_gives_one_row_per_event(app: Celery, monkeypatch: pytest.MonkeyPatch) -> None:
    receivers_before = {name: len(getattr(signals, name).receivers) for name in ("task_prerun", "task_success")}
    spec = importlib.util.spec_from_file_location("dataforge_signals_copy", celery_signals.__file__)
    assert spec is not None and spec.loader is not None
    copy = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "dataforge_signals_copy", copy)
    spec.loader.exec_module(copy)  # a second module object: its own handler functions
    assert copy.RECEIVERS is not celery_signals.RECEIVERS
    assert {n: len(getattr(signals, n).receivers) for n in receivers_before} == receivers_before
    sid = add_schedule(app)
    assert define(app, "t.job", lambda **kw: "ok").apply(kwargs={"scheduled_task_id": sid}).get() == "ok"
    assert [r.status for r in executions(app)] == ["success"]
    assert schedule(app, sid).success_count == 1


def test_a_database_outage_never_fails_the_task(server_settings: Settings, make_app: Any) -> None:
    app = make_app(server_settings.with_(database_url=UNREACHABLE_PG))  # locks stay in Redis
    app.runtime.recorder.writer.exit_timeout = 0.2
    task = define(app, "t.job", lambda **kw: "still ran")
    assert deliver(task, "outage", {"scheduled_task_id": 1}, flush=False) == states.SUCCESS
    assert AsyncResult("outage", app=app).get(timeout=5) == "still ran"
    recorder = app.runtime.recorder
    assert recorder.stats.by_event.get("prerun") == 1  # the duplicate check could not read: ran anyway
    assert recorder.waiting() == 1  # its record waits for the database (start and outcome: one row)
    assert not recorder.flush() and recorder.waiting() == 1
    assert not lock_held(app, "dataforge:lock:t.job:1")


def test_a_database_that_does_not_answer_the_read_holds_a_run_about_a_second(
    server_settings: Settings, make_app: Any
) -> None:
    """The read at prerun, blocked (here by a lock another session holds on the table), is
    cancelled by the server after READ_TIMEOUT (1 s); the run then goes ahead and is recorded."""
    assert READ_TIMEOUT == 1.0
    app = make_app(server_settings)
    app.runtime.recorder.writer.interval = 60.0  # only the read is on the run's path here
    task = define(app, "t.job", lambda **kw: "ran")
    assert deliver(task, "warm", {"scheduled_task_id": 1}) == states.SUCCESS  # connections kept, schema known
    with psycopg.connect(server_settings.database_url) as blocker:
        blocker.execute("LOCK TABLE task_executions IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        assert deliver(task, "blocked", {"scheduled_task_id": 1}, flush=False) == states.SUCCESS
        held = time.monotonic() - started
    assert READ_TIMEOUT <= held < READ_TIMEOUT + 2, f"the run was held {held:.1f}s by an unanswered read"
    stats = app.runtime.recorder.stats
    assert stats.by_event.get("prerun") == 1 and "statement timeout" in (stats.last_error or "")
    assert app.runtime.recorder.flush()
    assert {r.celery_task_id: r.status for r in executions(app)} == {"warm": "success", "blocked": "success"}


def test_a_run_is_written_once_already_finished_and_counted_once(app: Celery) -> None:
    """A run that ends before the writer's next flush: one row, written in its final state."""
    sid = add_schedule(app)
    app.runtime.recorder.writer.interval = 60.0  # the test decides when the writer writes
    task = define(app, "t.job", lambda **kw: {"n": 1})
    assert deliver(task, "once", {"scheduled_task_id": sid}, flush=False) == states.SUCCESS
    assert app.runtime.recorder.waiting() == 1
    assert executions(app) == []  # within 50 ms of the run, not yet
    assert app.runtime.recorder.flush()
    [row] = executions(app)
    assert (row.status, row.result, row.scheduled_task_id, row.attempt) == ("success", '{"n": 1}', sid, 0)
    assert row.started_at is not None and row.finished_at is not None and row.duration_ms is not None
    assert row.worker is not None and row.worker.startswith("w@test:") and "#" in row.worker
    assert counters(app, sid) == {"success_count": 1, "failure_count": 0, "skipped_count": 0, "expired_count": 0,
                                  "lost_count": 0, "last_status": "success"}  # fmt: skip


def test_the_result_summary_is_cut_at_2000_characters(app: Celery) -> None:
    """A summary, not the result: at most 2,000 characters, and a cut one says so."""
    sid = add_schedule(app)
    task = define(app, "t.job", lambda size: "x" * size)
    assert deliver(task, "fits", {"scheduled_task_id": sid, "size": 1998}) == states.SUCCESS  # JSON: 2,000
    assert deliver(task, "cut", {"scheduled_task_id": sid, "size": 1999}) == states.SUCCESS  # JSON: 2,001
    results = {r.celery_task_id: r.result or "" for r in executions(app)}
    assert results["fits"] == '"' + "x" * 1998 + '"'
    assert len(results["cut"]) == 2000 and results["cut"].endswith("...[truncated]")
    assert AsyncResult("cut", app=app).get(timeout=5) == "x" * 1999  # the result itself is whole


def test_a_long_run_is_visible_as_running_then_closed(app: Celery) -> None:
    sid = add_schedule(app)
    seen: list[list[str]] = []

    def job(**kw: Any) -> str:
        assert app.runtime.recorder.flush()  # the writer's flush while the job runs
        seen.append([r.status for r in executions(app)])
        return "done"

    task = define(app, "t.job", job)
    assert deliver(task, "long", {"scheduled_task_id": sid}) == states.SUCCESS
    assert seen == [["running"]]
    assert [r.status for r in executions(app)] == ["success"]
    assert schedule(app, sid).success_count == 1


def test_a_missing_schedule_is_recorded_as_null(app: Celery) -> None:
    assert define(app, "t.job", lambda **kw: 1).apply(kwargs={"scheduled_task_id": 999}).get() == 1
    [row] = executions(app)
    assert row.scheduled_task_id is None and row.status == "success"


def test_counters_are_atomic_and_due_times_are_left_to_beat(app: Celery) -> None:
    sid = add_schedule(app)
    due = datetime(2031, 1, 1, 12, 0)
    later = utcnow() + timedelta(days=365)
    with app.runtime.db.session() as s:
        row = s.get(ScheduledTask, sid)
        assert row is not None
        row.next_run_at, row.last_run_at = due, later
    before = schedule(app, sid)
    app.runtime.recorder.writer.interval = 60.0
    task = define(app, "t.job", lambda **kw: None)
    for n in range(3):
        assert deliver(task, f"atomic-{n}", {"scheduled_task_id": sid}, flush=False) == states.SUCCESS
    assert app.runtime.recorder.flush()  # three runs of one schedule in one batch
    after = schedule(app, sid)
    assert (after.success_count, after.failure_count, after.last_status) == (3, 0, "success")
    # Beat's columns are never written by the worker.
    assert (after.next_run_at, after.last_run_at, after.run_count) == (due, later, before.run_count)
    assert after.updated_at == before.updated_at  # statistics are not edits


def test_the_last_status_of_a_batch_is_its_last_run_that_ran(app: Celery) -> None:
    sid = add_schedule(app)

    def job(fail: bool = False) -> str:
        if fail:
            raise ValueError("the later one failed")
        return "ok"

    task = define(app, "t.job", job)
    app.runtime.recorder.writer.interval = 60.0
    deliver(task, "first", {"scheduled_task_id": sid}, flush=False)
    deliver(task, "second", {"scheduled_task_id": sid, "fail": True}, flush=False)
    assert app.runtime.recorder.flush()
    row = schedule(app, sid)
    assert (row.success_count, row.failure_count, row.last_status, row.last_error) == (
        1, 1, "failure", "ValueError: the later one failed",
    )  # fmt: skip


def test_a_skipped_run_counts_as_skipped_and_keeps_the_last_status(app: Celery) -> None:
    sid = add_schedule(app)
    task = define(app, "t.job", lambda **kw: "ran")
    assert deliver(task, "ran", {"scheduled_task_id": sid}) == states.SUCCESS
    key = task.lock_key_for({"scheduled_task_id": sid})
    holder = app.runtime.locks.acquire(key, 60)
    assert holder is not None
    try:
        assert deliver(task, "skipped", {"scheduled_task_id": sid}) == states.IGNORED
    finally:
        app.runtime.locks.release(key, holder)
    [row] = [r for r in executions(app) if r.celery_task_id == "skipped"]
    assert row.status == "skipped" and row.error == f"lock {key} is held by another run"
    assert counters(app, sid) == {"success_count": 1, "failure_count": 0, "skipped_count": 1, "expired_count": 0,
                                  "lost_count": 0, "last_status": "success"}  # fmt: skip


def test_one_structured_log_line_per_run_naming_only_the_callers_unaccepted_keys(
    app: Celery, caplog: pytest.LogCaptureFixture
) -> None:
    sid = add_schedule(app)
    task = define(app, "t.job", lambda days=1: days)
    with caplog.at_level(logging.INFO, logger=RUN_LOGGER):
        plain = task.apply(kwargs={"scheduled_task_id": sid, "_lock_key": "old", "days": 2})
        typo = task.apply(kwargs={"scheduled_task_id": sid, "dayz": 3})
    lines = {r.dataforge_run["task_id"]: r for r in caplog.records if r.name == RUN_LOGGER}  # type: ignore[attr-defined]
    assert set(lines) == {plain.id, typo.id}
    fields = lines[plain.id].dataforge_run  # type: ignore[attr-defined]
    assert fields["task"] == "t.job" and fields["schedule"] == sid
    assert fields["attempt"] == 0 and fields["lock"] == f"dataforge:lock:t.job:{sid}"
    assert fields["outcome"] == "success" and isinstance(fields["duration_ms"], int)
    # The injected scheduled_task_id and internal keys are not the caller's mistake...
    assert "reason" not in fields and "outcome=success" in lines[plain.id].getMessage()
    # ...a key the schedule sent that the job cannot take is.
    assert lines[typo.id].dataforge_run["reason"] == "kwargs not accepted by the job: dayz"  # type: ignore[attr-defined]


class Custom(ValueError):
    """Not rebuildable from its args: Celery's stand-in for it is a ValueError."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"code {code}: {detail}")


class Opaque(Exception):
    """No rebuildable base either: Celery wraps it (UnpickleableExceptionWrapper)."""

    def __init__(self, code: int) -> None:
        super().__init__(f"opaque {code}")


def test_the_raised_exception_class_is_recorded_and_kept_in_the_result(app: Celery) -> None:
    """Celery hands the failure signal a picklable stand-in for an exception it cannot
    rebuild: JobArgumentError used to be recorded (and stored) as its base, DataForgeError."""
    sid = add_schedule(app)

    def needs(days: int) -> int:
        return days

    def custom(**kw: Any) -> None:
        raise Custom(7, "upstream said no")

    def opaque(**kw: Any) -> None:
        raise Opaque(3)

    assert deliver(define(app, "t.needs", needs), "args", {"scheduled_task_id": sid}) == states.FAILURE
    assert deliver(define(app, "t.opaque", opaque), "opaque", {"scheduled_task_id": sid}) == states.FAILURE
    assert deliver(define(app, "t.custom", custom), "custom", {"scheduled_task_id": sid}) == states.FAILURE
    rows = {r.celery_task_id: r for r in executions(app)}
    assert (rows["args"].error or "").startswith("JobArgumentError: job ")
    assert "needs parameter(s) days" in (rows["args"].error or "")
    assert rows["custom"].error == "Custom: code 7: upstream said no"
    assert rows["opaque"].error == "Opaque: opaque 3"
    stored = AsyncResult("args", app=app).result
    assert type(stored) is JobArgumentError and stored.missing == ["days"]
    assert schedule(app, sid).last_error == rows["custom"].error


def test_a_result_that_cannot_be_stored_is_recorded_as_such(app: Celery) -> None:
    sid = add_schedule(app)
    did: list[int] = []

    def job(**kw: Any) -> object:
        did.append(1)
        return object()  # not JSON

    assert deliver(define(app, "t.job", job), "unstorable", {"scheduled_task_id": sid}) == states.FAILURE
    assert did == [1]
    [row] = executions(app)
    assert row.status == "failure" and (row.error or "").startswith(f"{NOT_SERIALISABLE}: EncodeError: ")
    assert schedule(app, sid).failure_count == 1


def _running_row(app: Celery, task_id: str, sid: int | None, worker: str = "w@dead:1#00000000") -> None:
    with app.runtime.db.session() as s:
        s.add(TaskExecution(celery_task_id=task_id, attempt=0, task_name="t.job", status="running",
                            scheduled_task_id=sid, worker=worker, started_at=utcnow() - timedelta(seconds=3)))


def _start_run(app: Celery, task: Any, task_id: str, sid: int) -> str:
    """The state a killed child leaves behind: a running row and a held lock."""
    _running_row(app, task_id, sid)
    key: str = task.lock_key_for({"scheduled_task_id": sid})
    assert app.runtime.locks.acquire(key, 60, owner=task_id) is not None
    return key


def _parent_failure(task: Any, task_id: str, exc: BaseException, sid: int, *, pushed: bool = True) -> None:
    """What the worker's main process sends; Celery 5.7 pushes the failed request's context."""
    context = Context(id=task_id, retries=0, kwargs={"scheduled_task_id": sid})
    if pushed:
        task.request_stack.push(context)
    try:
        on_task_failure(sender=task, task_id=task_id, exception=exc, kwargs={"scheduled_task_id": sid}, einfo=None)
    finally:
        if pushed:
            task.request_stack.pop()
    assert task.app.runtime.recorder.flush()


@pytest.mark.parametrize("pushed", [True, False], ids=["context-pushed", "attempt-unknown"])
def test_worker_lost_in_the_parent_marks_lost_once_and_frees_only_that_runs_lock(app: Celery, pushed: bool) -> None:
    sid = add_schedule(app)
    task = define(app, "t.job", lambda **kw: None)
    key = _start_run(app, task, "tid-dead", sid)
    exc = WorkerLostError("Worker exited prematurely: signal 9 (SIGKILL).")
    _parent_failure(task, "tid-dead", exc, sid, pushed=pushed)
    [row] = executions(app)
    assert row.status == "lost" and "WorkerLostError" in (row.error or "") and (row.duration_ms or 0) >= 3000
    assert row.worker == "w@dead:1#00000000" and row.started_at is not None  # the parent does not know them
    assert not lock_held(app, key)
    # A lost run is counted as lost, not as a failure: every run lands in one counter.
    assert counters(app, sid) == {"success_count": 0, "failure_count": 0, "skipped_count": 0, "expired_count": 0,
                                  "lost_count": 1, "last_status": "lost"}  # fmt: skip
    # Meanwhile another run took the lock: a late duplicate event must not free it or count again.
    assert app.runtime.locks.acquire(key, 60, owner="tid-alive") is not None
    _parent_failure(task, "tid-dead", exc, sid, pushed=pushed)
    assert lock_held(app, key)
    assert schedule(app, sid).lost_count == 1


def test_a_child_killed_before_its_start_was_written_is_still_recorded_lost(app: Celery) -> None:
    """The child's queued start died with it: the parent's record inserts the row."""
    sid = add_schedule(app)
    task = define(app, "t.job", lambda **kw: None)
    _parent_failure(task, "tid-early", WorkerLostError("signal 9"), sid)
    [row] = executions(app)
    assert (row.celery_task_id, row.attempt, row.status, row.scheduled_task_id) == ("tid-early", 0, "lost", sid)
    assert schedule(app, sid).lost_count == 1


def test_a_redelivery_that_takes_a_lost_run_over_takes_it_out_of_lost_count(app: Celery) -> None:
    sid = add_schedule(app)
    task = define(app, "t.job", lambda **kw: "second delivery")
    _start_run(app, task, "tid-back", sid)
    _parent_failure(task, "tid-back", WorkerLostError("signal 9"), sid)
    assert schedule(app, sid).lost_count == 1
    assert deliver(task, "tid-back", {"scheduled_task_id": sid}) == states.SUCCESS
    [row] = executions(app)
    assert (row.status, row.result) == ("success", '"second delivery"')
    assert counters(app, sid) == {"success_count": 1, "failure_count": 0, "skipped_count": 0, "expired_count": 0,
                                  "lost_count": 0, "last_status": "success"}  # fmt: skip


def test_hard_time_limit_in_the_parent_marks_failure(app: Celery) -> None:
    sid = add_schedule(app)
    task = define(app, "t.job", lambda **kw: None)
    key = _start_run(app, task, "tid-slow", sid)
    _parent_failure(task, "tid-slow", TimeLimitExceeded(30), sid)
    [row] = executions(app)
    assert row.status == "failure" and "TimeLimitExceeded" in (row.error or "")
    assert not lock_held(app, key)
    assert (schedule(app, sid).failure_count, schedule(app, sid).lost_count) == (1, 0)


def test_terminating_revoke_marks_failure_and_frees_the_lock(app: Celery) -> None:
    sid = add_schedule(app)
    task = define(app, "t.job", lambda **kw: None)
    key = _start_run(app, task, "tid-revoked", sid)
    request = Context(id="tid-revoked", kwargs={"scheduled_task_id": sid}, retries=0)
    on_task_revoked(sender=task, request=request, terminated=False, signum=None, expired=False)
    assert app.runtime.recorder.flush()
    assert executions(app)[0].status == "running" and lock_held(app, key)  # not started by this message
    on_task_revoked(sender=task, request=request, terminated=True, signum=15, expired=False)
    assert app.runtime.recorder.flush()
    [row] = executions(app)
    assert row.status == "failure" and "revoked" in (row.error or "")
    assert not lock_held(app, key)
    assert schedule(app, sid).failure_count == 1


def test_an_expired_message_is_recorded_and_counted_once(app: Celery, caplog: pytest.LogCaptureFixture) -> None:
    sid = add_schedule(app)
    task = define(app, "t.job", lambda **kw: None)
    expires = utcnow() - timedelta(seconds=5)

    def expire(task_id: str) -> None:
        request = Context(id=task_id, kwargs={"scheduled_task_id": sid}, retries=0, expires=expires)
        on_task_revoked(sender=task, request=request, terminated=False, signum=None, expired=True)
        assert app.runtime.recorder.flush()

    with caplog.at_level(logging.INFO, logger=RUN_LOGGER):
        expire("tid-expired")
        expire("tid-expired")  # the same message twice (a re-send): still one run
    [row] = executions(app)
    assert (row.status, row.scheduled_task_id, row.started_at) == ("expired", sid, None)
    assert row.finished_at is not None and (row.error or "").startswith("expired: not started by ")
    assert counters(app, sid) == {"success_count": 0, "failure_count": 0, "skipped_count": 0, "expired_count": 1,
                                  "lost_count": 0, "last_status": None}  # fmt: skip
    assert [r.dataforge_run["outcome"] for r in caplog.records if r.name == RUN_LOGGER] == ["expired"] * 2  # type: ignore[attr-defined]
    # An expired copy of a run that did start never touches its row.
    _running_row(app, "tid-started", sid)
    expire("tid-started")
    assert [r.status for r in executions(app) if r.celery_task_id == "tid-started"] == ["running"]
    assert schedule(app, sid).expired_count == 1
