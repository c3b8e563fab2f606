"""The signal module: rows, counters, parent-side events, idempotence, database outages."""

from __future__ import annotations

import importlib.util
import logging
import sys
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from celery import Celery, signals, states
from celery.app.task import Context
from celery.exceptions import TimeLimitExceeded, WorkerLostError

import dataforge.celery_signals as celery_signals
from dataforge.celery_app import create_app
from dataforge.models import ScheduledTask, utcnow
from dataforge.settings import Settings
from dataforge.worker.recording.handlers import on_task_failure, on_task_revoked
from dataforge.worker.recording.recorder import Recorder
from dataforge.worker.recording.runlog import RUN_LOGGER
from dataforge.worker.task import DataForgeTask
from tests.dataforge.worker.helpers import add_schedule, executions, lock_held, schedule

UNREACHABLE_PG = "postgresql://nobody@127.0.0.1:1/nothing"


@pytest.fixture(params=["embedded", "server"])
def settings(request: pytest.FixtureRequest) -> Settings:
    value: Settings = request.getfixturevalue(f"{request.param}_settings")
    return value


@pytest.fixture
def make_app() -> Iterator[Callable[[Settings], Celery]]:
    apps: list[Celery] = []

    def make(settings: Settings) -> Celery:
        apps.append(create_app(settings))
        return apps[-1]

    yield make
    for app in apps:
        app.runtime.close()


@pytest.fixture
def app(settings: Settings, make_app: Callable[[Settings], Celery]) -> Celery:
    return make_app(settings)


def define(app: Celery, name: str, body: Callable[..., Any]) -> Any:
    def run(self: DataForgeTask, **kwargs: Any) -> Any:
        return self.run_job(body, kwargs)

    return app.task(base=DataForgeTask, bind=True, name=name, shared=False)(run)


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
    result = define(app, "t.job", lambda **kw: "still ran").apply(kwargs={"scheduled_task_id": 1})
    assert result.state == states.SUCCESS and result.get() == "still ran"
    stats = app.runtime.recorder.stats
    assert stats.db_errors >= 2 and stats.by_event.get("prerun") == 1 and stats.by_event.get("success") == 1
    assert not lock_held(app, "dataforge:lock:t.job:1")


def test_a_redelivered_message_reuses_its_row(app: Celery) -> None:
    for _ in range(2):
        app.runtime.recorder.start(task_id="tid", task_name="t.job", attempt=0, kwargs={},
                                 worker="w:1", started_at=utcnow())
    rows = executions(app)
    assert [(r.celery_task_id, r.attempt, r.status) for r in rows] == [("tid", 0, "running")]


def _start(app: Celery, task_id: str = "tid", attempt: int = 0, worker: str = "w:1", **kw: Any) -> str | None:
    recorder: Recorder = app.runtime.recorder
    return recorder.start(task_id=task_id, task_name="t.job", attempt=attempt,
                                    kwargs={}, worker=worker, started_at=utcnow(), **kw)


def _row(app: Celery, task_id: str = "tid", attempt: int = 0) -> dict[str, Any]:
    [row] = [r for r in executions(app) if (r.celery_task_id, r.attempt) == (task_id, attempt)]
    return {c: getattr(row, c) for c in ("id", "status", "started_at", "finished_at", "duration_ms", "result",
                                         "error", "traceback", "worker", "scheduled_task_id")}


def _set_status(app: Celery, status: str, task_id: str = "tid", attempt: int = 0) -> None:
    from sqlalchemy import update

    from dataforge.models import TaskExecution

    with app.runtime.db.session() as s:
        s.execute(
            update(TaskExecution)
            .where(TaskExecution.celery_task_id == task_id, TaskExecution.attempt == attempt)
            .values(status=status, finished_at=utcnow(), duration_ms=5, result='{"first": 1}', error="first error",
                    traceback="first traceback")
        )  # fmt: skip


@pytest.mark.parametrize("status", ["success", "failure", "retry", "skipped"])
def test_a_finished_attempt_is_never_reset(app: Celery, status: str) -> None:
    assert _start(app) is None  # a new row: this delivery owns it
    _set_status(app, status)
    before = _row(app)
    assert _start(app, worker="w:2") == status  # the duplicate is told, the row is left alone
    assert _row(app) == before
    assert _start(app, attempt=1) is None  # the next attempt of the same task id is its own row
    assert _row(app, attempt=1)["status"] == "running" and _row(app) == before


@pytest.mark.parametrize("status", ["running", "lost"])
def test_a_redelivery_of_an_unfinished_attempt_takes_its_row_over(app: Celery, status: str) -> None:
    assert _start(app) is None
    _set_status(app, status)
    before = _row(app)
    assert _start(app, worker="w:2") is None
    after = _row(app)
    assert after["id"] == before["id"] and after["status"] == "running" and after["worker"] == "w:2"
    assert (after["finished_at"], after["duration_ms"], after["result"], after["error"], after["traceback"]) == (
        None, None, None, None, None,
    )  # fmt: skip


def test_reset_finished_resets_any_row_as_eager_mode_needs(app: Celery) -> None:
    assert _start(app) is None
    _set_status(app, "success")
    assert _start(app, worker="w:2", reset_finished=True) is None
    row = _row(app)
    assert (row["status"], row["worker"], row["result"]) == ("running", "w:2", None)


def test_the_start_upsert_is_one_round_trip_on_postgresql(server_settings: Settings, make_app: Any) -> None:
    """New row, taken-over row, refused duplicate: one statement each on the held connection."""
    from sqlalchemy import event

    app = make_app(server_settings)
    _start(app, task_id="warm-up")  # opens the held connection (and sets synchronous_commit)
    statements: list[str] = []

    def capture(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    def round_trips(expected: str | None) -> int:
        statements.clear()
        assert _start(app) == expected
        return len(statements)

    event.listen(app.runtime.db.engine, "before_cursor_execute", capture)
    try:
        assert round_trips(None) == 1  # new row
        assert round_trips(None) == 1  # still running: a redelivery takes it over
        _set_status(app, "success")
        assert round_trips("success") == 1  # refused, and the status comes with it
    finally:
        event.remove(app.runtime.db.engine, "before_cursor_execute", capture)


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
    task = define(app, "t.job", lambda **kw: None)
    for _ in range(3):
        task.apply(kwargs={"scheduled_task_id": sid})
    after = schedule(app, sid)
    assert (after.success_count, after.failure_count, after.last_status) == (3, 0, "success")
    # Beat's columns are never written by the worker.
    assert (after.next_run_at, after.last_run_at, after.run_count) == (due, later, before.run_count)
    assert after.updated_at == before.updated_at  # statistics are not edits


def test_one_structured_log_line_per_run(app: Celery, caplog: pytest.LogCaptureFixture) -> None:
    sid = add_schedule(app)
    task = define(app, "t.job", lambda days=1: days)
    with caplog.at_level(logging.INFO, logger=RUN_LOGGER):
        result = task.apply(kwargs={"scheduled_task_id": sid, "_lock_key": "old", "days": 2})
    lines = [r for r in caplog.records if r.name == RUN_LOGGER]
    assert len(lines) == 1
    fields = lines[0].dataforge_run  # type: ignore[attr-defined]
    assert fields["task_id"] == result.id and fields["task"] == "t.job" and fields["schedule"] == sid
    assert fields["attempt"] == 0 and fields["lock"] == f"dataforge:lock:t.job:{sid}"
    assert fields["outcome"] == "success" and isinstance(fields["duration_ms"], int)
    assert "outcome=success" in lines[0].getMessage()


def _start_run(app: Celery, task: Any, task_id: str, sid: int) -> str:
    """The state a killed child leaves behind: a running row and a held lock."""
    app.runtime.recorder.start(task_id=task_id, task_name=task.name, attempt=0,
                             kwargs={"scheduled_task_id": sid}, worker="w:1", started_at=utcnow())
    key: str = task.lock_key_for({"scheduled_task_id": sid})
    assert app.runtime.locks.acquire(key, 60, owner=task_id) is not None
    return key


def test_worker_lost_in_the_parent_marks_lost_and_frees_only_that_runs_lock(app: Celery) -> None:
    sid = add_schedule(app)
    task = define(app, "t.job", lambda **kw: None)
    key = _start_run(app, task, "tid-dead", sid)
    exc = WorkerLostError("Worker exited prematurely: signal 9 (SIGKILL).")
    on_task_failure(sender=task, task_id="tid-dead", exception=exc, kwargs={"scheduled_task_id": sid}, einfo=None)
    [row] = executions(app)
    assert row.status == "lost" and "WorkerLostError" in (row.error or "") and row.duration_ms is not None
    assert not lock_held(app, key)
    assert (schedule(app, sid).failure_count, schedule(app, sid).last_status) == (1, "failure")
    # Meanwhile another run took the lock: a late duplicate event must not free it or count again.
    assert app.runtime.locks.acquire(key, 60, owner="tid-alive") is not None
    on_task_failure(sender=task, task_id="tid-dead", exception=exc, kwargs={"scheduled_task_id": sid}, einfo=None)
    assert lock_held(app, key)
    assert schedule(app, sid).failure_count == 1


def test_hard_time_limit_in_the_parent_marks_failure(app: Celery) -> None:
    sid = add_schedule(app)
    task = define(app, "t.job", lambda **kw: None)
    key = _start_run(app, task, "tid-slow", sid)
    on_task_failure(sender=task, task_id="tid-slow", exception=TimeLimitExceeded(30),
                    kwargs={"scheduled_task_id": sid}, einfo=None)
    [row] = executions(app)
    assert row.status == "failure" and "TimeLimitExceeded" in (row.error or "")
    assert not lock_held(app, key)


def test_terminating_revoke_marks_failure_and_frees_the_lock(app: Celery) -> None:
    sid = add_schedule(app)
    task = define(app, "t.job", lambda **kw: None)
    key = _start_run(app, task, "tid-revoked", sid)
    request = Context(id="tid-revoked", kwargs={"scheduled_task_id": sid}, retries=0)
    on_task_revoked(sender=task, request=request, terminated=False, signum=None, expired=False)
    assert executions(app)[0].status == "running" and lock_held(app, key)  # not started by this message
    on_task_revoked(sender=task, request=request, terminated=True, signum=15, expired=False)
    [row] = executions(app)
    assert row.status == "failure" and "revoked" in (row.error or "")
    assert not lock_held(app, key)
    assert schedule(app, sid).failure_count == 1


def test_a_dropped_database_connection_costs_one_event_then_recording_resumes(
    server_settings: Settings, make_app: Any
) -> None:
    """PostgreSQL's hot path keeps one connection per worker thread; when the server drops it
    (restart, failover, idle kill) the next event fails (logged, counted, task unaffected) and
    the one after reconnects."""
    import psycopg

    app = make_app(server_settings)
    sid = add_schedule(app)
    task = define(app, "t.job", lambda **kw: "ok")
    assert task.apply(kwargs={"scheduled_task_id": sid}).get() == "ok"
    dbname = server_settings.database_url.rsplit("/", 1)[1]
    with psycopg.connect(server_settings.database_url, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (dbname,),
        )
    assert task.apply(kwargs={"scheduled_task_id": sid}).get() == "ok"  # the task never notices
    assert app.runtime.recorder.stats.db_errors >= 1
    third = task.apply(kwargs={"scheduled_task_id": sid})
    assert third.get() == "ok"
    assert [r.status for r in executions(app) if r.celery_task_id == third.id] == ["success"]


def test_relaxed_commit_stays_on_the_recorders_own_connections(server_settings: Settings, make_app: Any) -> None:
    """synchronous_commit=off is for execution records only: pooled connections (beat's
    dispatch, lock leases, the CLI) never inherit it, even after the recorder's closes."""
    from sqlalchemy import text


    app = make_app(server_settings)
    define(app, "t.job", lambda **kw: None).apply(kwargs={"scheduled_task_id": 1})
    held = app.runtime.recorder.connections
    expected = "on" if server_settings.recorder_synchronous_commit else "off"
    assert held.execute(text("SHOW synchronous_commit"), {}).scalar() == expected
    held.close()
    for _ in range(3):  # whatever the pool hands out
        with app.runtime.db.engine.connect() as conn:
            assert conn.execute(text("SHOW synchronous_commit")).scalar() == "on"
