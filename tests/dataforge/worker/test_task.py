"""DataForgeTask in eager mode on real stores: hook order, locks, retries, skips, policies.

Eager mode runs Celery's real tracer (the same hook and signal order as a worker); the worker
tests in tests/dataforge/worker/ repeat the essentials in real processes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from celery import Celery, states
from celery.exceptions import Ignore, Reject, Retry
from celery.result import AsyncResult

from dataforge.errors import LockUnavailableError
from dataforge.protocol import MAX_RETRIES_HEADER, SCHEDULE_ID_HEADER
from dataforge.settings import Settings
from dataforge.worker.recording.runlog import RUN_LOGGER
from dataforge.worker.run_state import ATTRIBUTE, RunState
from dataforge.worker.task import (
    LOCK_UNAVAILABLE_MAX_RETRIES,
    LOCK_WAIT_HEADER,
    DataForgeTask,
    schedule_max_retries,
)
from tests.dataforge.worker.helpers import add_schedule, deliver, executions, lock_held, noted, schedule

UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"


def traced_task(app: Celery, trace: list[str], body: Callable[..., Any], name: str = "t.job") -> Any:
    """Register a DataForgeTask whose hooks append to ``trace`` (and note the lock state)."""

    class Traced(DataForgeTask):
        def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
            trace.append("before_start")
            super().before_start(task_id, args, kwargs)

        def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
            key = self.lock_key_for(kwargs)
            trace.append("on_success" + (":locked" if lock_held(self.app, key) else ":free"))

        def on_failure(self, exc: Any, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
            key = self.lock_key_for(kwargs)
            trace.append("on_failure" + (":locked" if lock_held(self.app, key) else ":free"))

        def on_retry(self, exc: Any, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
            trace.append("on_retry")

        def after_return(self, *args: Any, **kwargs: Any) -> None:
            trace.append("after_return")

    def run(self: DataForgeTask, **kwargs: Any) -> Any:
        trace.append("run" + (":locked" if lock_held(self.app, self.lock_key_for(kwargs)) else ":unlocked"))
        return body(self, **kwargs)

    return app.task(base=Traced, bind=True, name=name, shared=False)(run)


def define(app: Celery, name: str, body: Callable[..., Any], base: type[DataForgeTask] = DataForgeTask) -> Any:
    """Register ``body`` (any callable, lambdas included) as a bound task named ``name``."""

    def run(self: DataForgeTask, **kwargs: Any) -> Any:
        return body(self, **kwargs)

    return app.task(base=base, bind=True, name=name, shared=False)(run)


def test_success_sequence_records_the_run_and_frees_the_lock_before_the_result(
    app: Celery, events: list[str]
) -> None:
    sid = add_schedule(app)
    task = traced_task(app, events, lambda self, **kw: {"n": kw["n"]})
    result = task.apply(kwargs={"scheduled_task_id": sid, "n": 3})
    assert result.state == states.SUCCESS and result.get() == {"n": 3}
    assert events == [
        "signal:task_prerun",
        "before_start",
        "run:locked",
        "on_success:free",
        "signal:task_success",
        "after_return",
        "signal:task_postrun:SUCCESS",
    ]
    [row] = executions(app)
    assert (row.status, row.attempt, row.scheduled_task_id, row.task_name) == ("success", 0, sid, "t.job")
    assert row.result == '{"n": 3}' and row.finished_at is not None and row.duration_ms is not None
    sched = schedule(app, sid)
    assert (sched.success_count, sched.failure_count, sched.last_status) == (1, 0, "success")
    assert sched.run_count == 0  # beat counts dispatches; nothing was dispatched by beat here
    assert not lock_held(app, f"dataforge:lock:t.job:{sid}")


def test_failure_sequence(app: Celery, events: list[str]) -> None:
    sid = add_schedule(app)

    def boom(self: DataForgeTask, **kw: Any) -> None:
        raise ValueError("boom")

    task = traced_task(app, events, boom)
    result = task.apply(kwargs={"scheduled_task_id": sid})
    assert result.state == states.FAILURE and isinstance(result.result, ValueError)
    assert events == [
        "signal:task_prerun",
        "before_start",
        "run:locked",
        "on_failure:free",
        "signal:task_failure",
        "after_return",
        "signal:task_postrun:FAILURE",
    ]
    [row] = executions(app)
    assert row.status == "failure" and row.error == "ValueError: boom" and "ValueError" in (row.traceback or "")
    sched = schedule(app, sid)
    assert (sched.success_count, sched.failure_count, sched.last_status, sched.last_error) == (
        0, 1, "failure", "ValueError: boom",
    )  # fmt: skip


def test_retry_sequence_with_the_schedules_max_retries(app: Celery, events: list[str]) -> None:
    sid = add_schedule(app)

    def fail_once(self: DataForgeTask, **kw: Any) -> str:
        if self.request.retries == 0:
            raise ConnectionError("flaky upstream")
        return "second time lucky"

    task = traced_task(app, events, fail_once)
    result = task.apply(kwargs={"scheduled_task_id": sid}, headers={MAX_RETRIES_HEADER: 1})
    assert result.get() == "second time lucky"
    assert events == [
        # attempt 0: the retry is published, no after_return, the lock already free
        "signal:task_prerun",
        "before_start",
        "run:locked",
        "on_retry",
        "signal:task_retry",
        "signal:task_postrun:RETRY",
        # attempt 1
        "signal:task_prerun",
        "before_start",
        "run:locked",
        "on_success:free",
        "signal:task_success",
        "after_return",
        "signal:task_postrun:SUCCESS",
    ]
    rows = executions(app)
    assert [(r.attempt, r.status) for r in rows] == [(0, "retry"), (1, "success")]
    assert rows[0].error == "ConnectionError: flaky upstream"
    sched = schedule(app, sid)
    # One run (two attempts): counters count runs, not attempts.
    assert (sched.success_count, sched.failure_count) == (1, 0)


def test_skip_sequence_when_the_lock_is_held(app: Celery, events: list[str]) -> None:
    sid = add_schedule(app)
    called: list[int] = []
    task = traced_task(app, events, lambda self, **kw: called.append(1))
    key = task.lock_key_for({"scheduled_task_id": sid})
    holder = app.runtime.locks.acquire(key, 60)
    assert holder is not None
    result = task.apply(kwargs={"scheduled_task_id": sid}, headers={MAX_RETRIES_HEADER: 5})
    assert result.state == states.IGNORED
    assert events == ["signal:task_prerun", "before_start", "signal:task_postrun:IGNORED"]
    assert called == []
    [row] = executions(app)  # one row: a held lock is never retried
    assert row.status == "skipped" and key in (row.error or "")
    sched = schedule(app, sid)
    assert (sched.success_count, sched.failure_count, sched.last_status) == (0, 0, None)
    # The other run's lock is untouched.
    assert lock_held(app, key)
    assert app.runtime.locks.release(key, holder)


@pytest.mark.parametrize("raised", ["Ignore", "Reject"])
def test_a_job_raising_ignore_or_reject_frees_its_lock(app: Celery, raised: str) -> None:
    """docs/runtime.md, release table: ``Ignore``/``Reject`` raised by the job are released by
    ``__call__``'s ``finally`` like any other outcome; a job's own ``Ignore`` is recorded
    ``skipped`` and moves ``skipped_count`` only (it is not retried: Celery's autoretry lets
    ``Ignore`` through). ``Reject`` is an ``Exception`` that autoretry catches: with no retry
    left, ``DataForgeTask.retry`` frees the lock before it re-raises it. Delivered as a worker
    child runs it (non-eager tracer)."""
    sid = add_schedule(app)
    key = f"dataforge:lock:t.job:{sid}"
    held_while_running: list[bool] = []

    def body(self: DataForgeTask, **kw: Any) -> None:
        held_while_running.append(lock_held(self.app, key))
        raise Ignore() if raised == "Ignore" else Reject("not for us", requeue=False)

    task = define(app, "t.job", body)
    headers = {MAX_RETRIES_HEADER: 3} if raised == "Ignore" else {}
    state = deliver(task, f"own-{raised}", {"scheduled_task_id": sid}, headers=headers)
    assert held_while_running == [True]
    assert not lock_held(app, key), f"the lock outlived a job that raised {raised}"
    assert app.runtime.locks.acquire(key, 60, owner="next-run") is not None  # the next run gets it
    if raised == "Ignore":
        assert state == states.IGNORED
        [row] = executions(app)
        assert row.status == "skipped"
        sched = schedule(app, sid)
        assert (sched.skipped_count, sched.success_count, sched.failure_count, sched.last_status) == (1, 0, 0, None)
    else:
        assert state == states.REJECTED


def test_max_retries_comes_from_the_header_and_does_not_leak_to_the_next_run(app: Celery) -> None:
    sid = add_schedule(app)

    def always(self: DataForgeTask, **kw: Any) -> None:
        raise ValueError("nope")

    task = traced_task(app, [], always)
    assert task.apply(kwargs={"scheduled_task_id": sid}, headers={MAX_RETRIES_HEADER: 2}).state == states.FAILURE
    assert [r.status for r in executions(app)] == ["retry", "retry", "failure"]
    # No header: the class default (0, the legacy column's default) applies, not the last 2.
    assert task.apply(kwargs={"scheduled_task_id": sid}).state == states.FAILURE
    assert [r.status for r in executions(app)] == ["retry", "retry", "failure", "failure"]
    sched = schedule(app, sid)
    assert (sched.success_count, sched.failure_count) == (0, 2)


def test_autoretry_backs_off_exponentially_with_jitter_capped_at_600s(
    embedded_settings: Settings, make_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/runtime.md: a failing job is retried with exponential backoff and jitter
    (``retry_backoff=True``), at most 600 s. Celery's full jitter draws the countdown from
    ``[0, min(600, 2**retries)]``; with the draw pinned to the top of its range, the
    countdowns are exactly those bounds, and every one of them was jittered."""
    app = make_app(embedded_settings)
    sid = add_schedule(app)
    ranges: list[int] = []

    class TopOfTheRange:
        def randrange(self, stop: int) -> int:
            ranges.append(stop)
            return stop - 1

    monkeypatch.setattr("celery.utils.time.random", TopOfTheRange())
    countdowns: list[float | None] = []

    class Counted(DataForgeTask):
        def retry(self, args: Any = None, kwargs: Any = None, exc: BaseException | None = None, throw: bool = True,
                  eta: Any = None, countdown: float | None = None, max_retries: int | None = None,
                  **options: Any) -> Any:  # fmt: skip
            countdowns.append(countdown)
            return super().retry(args, kwargs, exc, throw, eta, countdown, max_retries, **options)

    def always(self: DataForgeTask, **kw: Any) -> None:
        raise ConnectionError("upstream down")

    task = define(app, "t.job", always, base=Counted)
    attempts = 12  # retries 0..11: past 2**10 = 1024, where the cap takes over
    result = task.apply(kwargs={"scheduled_task_id": sid}, headers={MAX_RETRIES_HEADER: attempts - 1})
    assert result.state == states.FAILURE
    expected = [min(600, 2**retries) for retries in range(attempts)]
    assert countdowns == expected
    assert ranges == [c + 1 for c in expected], "the countdowns were not jittered"
    assert [r.status for r in executions(app)] == ["retry"] * (attempts - 1) + ["failure"]


def test_schedule_max_retries_parsing() -> None:
    class Req:
        def __init__(self, headers: Any) -> None:
            self.headers = headers

    assert schedule_max_retries(Req({MAX_RETRIES_HEADER: 3})) == 3
    assert schedule_max_retries(Req({MAX_RETRIES_HEADER: "2"})) == 2
    assert schedule_max_retries(Req({MAX_RETRIES_HEADER: -1})) is None
    assert schedule_max_retries(Req({MAX_RETRIES_HEADER: "x"})) is None
    assert schedule_max_retries(Req(None)) is None


def test_retry_releases_the_lock_before_the_retry_is_published(embedded_settings: Settings, make_app: Any) -> None:
    app = make_app(embedded_settings)
    task = define(app, "t.retrying", lambda self, **kw: None)
    backend = app.runtime.locks
    key = task.lock_key_for({"scheduled_task_id": 1})
    token = backend.acquire(key, 60, owner="tid-1")
    assert token is not None
    published: list[bool] = []

    class Sig:
        args: tuple[Any, ...] = ()
        kwargs: dict[str, Any] = {}

        def apply_async(self) -> None:
            published.append(lock_held(app, key))

    task.signature_from_request = lambda *a, **kw: Sig()  # the message that would be sent
    task.push_request(
        id="tid-1", retries=0, called_directly=False, is_eager=False, kwargs={"scheduled_task_id": 1},
        dataforge_run=RunState(lock_key=key, lock_token=token),
    )  # fmt: skip
    try:
        with pytest.raises(Retry):
            task.retry(countdown=0, max_retries=3)
    finally:
        task.pop_request()
    assert published == [False]  # the lock was free when the retry message went out


@pytest.mark.parametrize("policy", ["skip", "run", "retry"])
def test_lock_store_unreachable_policies(
    policy: str, server_settings: Settings, make_app: Any
) -> None:
    app = make_app(server_settings.with_(redis_url=UNREACHABLE_REDIS, lock_unavailable=policy))
    sid = add_schedule(app)
    ran: list[int] = []
    task = define(app, "t.job", lambda self, **kw: noted(ran, 1, lambda: "ran"))
    result = task.apply(kwargs={"scheduled_task_id": sid}, headers={MAX_RETRIES_HEADER: 0})
    rows = executions(app)
    if policy == "skip":
        assert result.state == states.IGNORED and ran == []
        [row] = rows
        assert row.status == "skipped" and "unreachable" in (row.error or "")
    elif policy == "run":
        assert result.get() == "ran" and ran == [1]
        assert [r.status for r in rows] == ["success"]
    else:
        # Re-queued while the store is down, never run unlocked, then a clear failure.
        assert result.state == states.FAILURE and isinstance(result.result, LockUnavailableError)
        assert ran == []
        assert [r.status for r in rows] == ["retry"] * LOCK_UNAVAILABLE_MAX_RETRIES + ["failure"]
        assert "LockUnavailableError" in (rows[-1].error or "")
        assert schedule(app, sid).failure_count == 1


def test_lock_name_lets_two_task_names_share_one_lock(app: Celery) -> None:
    class Shim(DataForgeTask):
        lock_name = "t.new"

    new = define(app, "t.new", lambda self, **kw: "new")
    shim = define(app, "t.legacy_shim", lambda self, **kw: "shim", base=Shim)
    kwargs = {"scheduled_task_id": 7, "handler_path": "scripts:x"}
    assert shim.lock_key_for(kwargs) == new.lock_key_for({"scheduled_task_id": 7}) == "dataforge:lock:t.new:7"
    token = app.runtime.locks.acquire(new.lock_key_for(kwargs), 60)
    assert token is not None
    assert shim.apply(kwargs=kwargs).state == states.IGNORED


def test_lock_can_be_disabled(app: Celery) -> None:
    class Parallel(DataForgeTask):
        lock_enabled = False

    task = define(app, "t.parallel", lambda self, **kw: "ok", base=Parallel)
    app.runtime.locks.acquire(task.lock_key_for({"scheduled_task_id": 1}), 60)
    assert task.apply(kwargs={"scheduled_task_id": 1}).get() == "ok"


def test_a_task_called_as_a_function_takes_no_lock(app: Celery) -> None:
    task = define(app, "t.direct", lambda self, **kw: self.run_job(lambda days=1: days * 2, kw))
    app.runtime.locks.acquire(task.lock_key_for({"scheduled_task_id": 1}), 60)
    assert task(scheduled_task_id=1, days=4, _lock_key="x") == 8
    assert executions(app) == []


def test_run_job_gives_the_legacy_lock_key_only_when_asked(app: Celery) -> None:
    """A converted job that reads ``_lock_key`` gets the legacy executor's value back; others never see it."""

    async def reads_it(**kwargs: Any) -> Any:
        return kwargs.get("_lock_key", "missing")

    def named_only(days: int = 1) -> int:
        return days

    asked = define(app, "t.legacy_key", lambda self, **kw: self.run_job(reads_it, kw, legacy_lock_key=True))
    plain = define(app, "t.plain_key", lambda self, **kw: self.run_job(reads_it, kw))
    named = define(app, "t.named_key", lambda self, **kw: self.run_job(named_only, kw, legacy_lock_key=True))
    sid = add_schedule(app, task_name="t.legacy_key")
    assert asked.apply(kwargs={"scheduled_task_id": sid}).get() == f"scheduled_task:{sid}"
    assert asked.apply(kwargs={}).get() == "missing"  # sent by hand, no schedule: no legacy value
    assert plain.apply(kwargs={"scheduled_task_id": sid}).get() == "missing"
    assert named.apply(kwargs={"scheduled_task_id": sid, "days": 3}).get() == 3


def test_registering_an_async_def_task_is_a_clear_type_error(embedded_settings: Settings, make_app: Any) -> None:
    app = make_app(embedded_settings)

    async def job(self: DataForgeTask) -> None: ...

    with pytest.raises(TypeError, match=r"async def.*run_job"):
        app.task(base=DataForgeTask, bind=True, name="t.async", shared=False)(job)
        app.finalize()
        app.tasks["t.async"]


def test_job_argument_errors_are_not_retried(app: Celery) -> None:
    def needs_days(days: int) -> int:
        return days

    task = define(app, "t.args", lambda self, **kw: self.run_job(needs_days, kw))
    result = task.apply(kwargs={}, headers={MAX_RETRIES_HEADER: 3})
    assert result.state == states.FAILURE and "needs parameter(s) days" in str(result.result)
    assert [r.status for r in executions(app)] == ["failure"]


# -- duplicate deliveries -------------------------------------------------------------------
# A worker runs a message through Celery's non-eager tracer (task_track_started included);
# `deliver` does the same in-process, so a second delivery of one task id is easy to make.


def dup_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "dataforge.tasks" and r.levelno == logging.WARNING and "duplicate delivery" in r.getMessage()]


def run_lines(caplog: pytest.LogCaptureFixture, task_id: str) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = [getattr(r, "dataforge_run") for r in caplog.records if r.name == RUN_LOGGER]  # noqa: B009
    return [line for line in lines if line["task_id"] == task_id]


def test_a_duplicate_delivery_of_a_finished_run_does_not_run_again(
    app: Celery, events: list[str], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    sid = add_schedule(app)
    ran: list[int] = []
    task = traced_task(app, events, lambda self, **kw: noted(ran, 1, lambda: {"run": len(ran)}))
    tid = "dup-success"
    assert deliver(task, tid, {"scheduled_task_id": sid}) == states.SUCCESS
    first = executions(app)
    [first_row] = first
    events.clear()
    acquired: list[str] = []
    backend = app.runtime.locks
    real_acquire = backend.acquire
    monkeypatch.setattr(
        backend, "acquire", lambda key, *a, **kw: noted(acquired, key, lambda: real_acquire(key, *a, **kw))
    )
    with caplog.at_level(logging.INFO):
        assert deliver(task, tid, {"scheduled_task_id": sid}) == states.IGNORED
    assert ran == [1]  # the job ran once
    assert events == ["signal:task_prerun", "before_start", "signal:task_postrun:IGNORED"]
    assert acquired == []  # no lock taken
    [row] = executions(app)  # the first run's record, untouched
    assert {c: getattr(row, c) for c in ("status", "result", "started_at", "finished_at", "duration_ms", "worker")} == {
        c: getattr(first_row, c) for c in ("status", "result", "started_at", "finished_at", "duration_ms", "worker")
    }
    assert row.status == "success" and row.result == '{"run": 1}'
    sched = schedule(app, sid)
    assert (sched.success_count, sched.failure_count, sched.last_status) == (1, 0, "success")
    result = AsyncResult(tid, app=app)
    assert (result.state, result.result) == (states.SUCCESS, {"run": 1})
    reason = f"duplicate delivery: attempt 0 of task {tid} already finished (success)"
    assert dup_warnings(caplog) == [f"t.job[{tid}]: {reason}; not running it again"]
    [line] = run_lines(caplog, tid)
    assert (line["outcome"], line["reason"], line["lock"]) == ("duplicate", reason, None)


def test_a_duplicate_of_a_failed_run_keeps_its_failure_in_the_result_backend(app: Celery) -> None:
    """Celery's backends keep a stored SUCCESS from later writes, not a FAILURE: the duplicate's
    track_started STARTED (stored before before_start) must not reach the backend either."""
    sid = add_schedule(app)
    ran: list[int] = []

    def boom(self: DataForgeTask, **kw: Any) -> None:
        ran.append(1)
        raise ValueError(f"boom {len(ran)}")

    task = define(app, "t.job", boom)
    tid = "dup-failure"
    assert deliver(task, tid, {"scheduled_task_id": sid}) == states.FAILURE
    assert deliver(task, tid, {"scheduled_task_id": sid}) == states.IGNORED
    assert ran == [1]
    result = AsyncResult(tid, app=app)
    assert result.state == states.FAILURE and str(result.result) == "boom 1"
    [row] = executions(app)
    assert (row.status, row.error) == ("failure", "ValueError: boom 1")
    assert (schedule(app, sid).success_count, schedule(app, sid).failure_count) == (0, 1)


def test_a_duplicate_of_a_skipped_run_keeps_ignored_and_its_reason(app: Celery) -> None:
    sid = add_schedule(app)
    ran: list[int] = []
    task = define(app, "t.job", lambda self, **kw: ran.append(1))
    key = task.lock_key_for({"scheduled_task_id": sid})
    holder = app.runtime.locks.acquire(key, 60)
    assert holder is not None
    tid = "dup-skipped"
    assert deliver(task, tid, {"scheduled_task_id": sid}) == states.IGNORED
    [skipped] = executions(app)
    app.runtime.locks.release(key, holder)  # a real second run would now run
    assert deliver(task, tid, {"scheduled_task_id": sid}) == states.IGNORED
    assert ran == []
    [row] = executions(app)
    assert (row.status, row.error, row.finished_at) == ("skipped", skipped.error, skipped.finished_at)
    result = AsyncResult(tid, app=app)
    assert result.state == states.IGNORED and result.result == {"skipped": f"lock {key} is held by another run",
                                                                 "lock_key": key}


def test_a_retry_of_the_same_task_id_runs_and_a_duplicate_of_the_retried_attempt_does_not(app: Celery) -> None:
    sid = add_schedule(app)
    ran: list[int] = []

    def fail_first(self: DataForgeTask, **kw: Any) -> str:
        ran.append(self.request.retries)
        if self.request.retries == 0:
            raise ConnectionError("flaky upstream")
        return "second time lucky"

    task = define(app, "t.job", fail_first)
    tid = "dup-retry"
    headers = {MAX_RETRIES_HEADER: 1}
    # Attempt 0 fails and publishes its retry (a real message: nobody consumes it here).
    assert deliver(task, tid, {"scheduled_task_id": sid}, headers=headers) == states.RETRY
    assert deliver(task, tid, {"scheduled_task_id": sid}, headers=headers) == states.IGNORED  # attempt 0 again
    assert deliver(task, tid, {"scheduled_task_id": sid}, retries=1, headers=headers) == states.SUCCESS
    assert ran == [0, 1]
    assert [(r.attempt, r.status) for r in executions(app)] == [(0, "retry"), (1, "success")]
    assert AsyncResult(tid, app=app).result == "second time lucky"
    assert (schedule(app, sid).success_count, schedule(app, sid).failure_count) == (1, 0)


class Republished:
    """Stands in for the message a waiting delivery re-publishes (``signature_from_request``)."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def __call__(self, request: Any, **options: Any) -> Republished:
        self.sent.append({"id": request.id, "retries": request.retries, **options})
        return self

    def apply_async(self) -> None:
        return None


def _dead_delivery_row(app: Celery, tid: str, sid: int) -> None:
    from dataforge.models import TaskExecution, utcnow

    with app.runtime.db.session() as s:
        s.add(TaskExecution(celery_task_id=tid, attempt=0, task_name="t.job", status="running", scheduled_task_id=sid,
                            worker="dead:1#00000000", started_at=utcnow()))  # fmt: skip


@pytest.mark.parametrize("ttl", [60.0, 10.0])
def test_a_redelivery_waits_for_a_dead_holder_with_countdowns_1_2_4_capped_at_a_quarter_ttl(
    settings: Settings, make_app: Any, ttl: float
) -> None:
    """docs/runtime.md: a redelivered message that finds its run's lock held under its own task
    id (the dead delivery's) re-publishes itself, same task id and attempt, with the schedule's
    headers and ``dataforge_lock_waits``, with a countdown of 1, 2, 4 ... s capped at a
    quarter of the lock TTL (60 s is the default TTL), and ends without running or recording;
    each re-published delivery that still finds the lock held waits again, one step longer."""
    app = make_app(settings.with_(lock_ttl=ttl))
    sid = add_schedule(app)
    tid = f"waiting-{int(ttl)}"
    _dead_delivery_row(app, tid, sid)
    key = f"dataforge:lock:t.job:{sid}"
    assert app.runtime.locks.acquire(key, 600, owner=tid) is not None  # the dead delivery's lease
    ran: list[int] = []
    task = define(app, "t.job", lambda self, **kw: noted(ran, 1, lambda: "ran"))
    republished = Republished()
    task.signature_from_request = republished
    carried = {MAX_RETRIES_HEADER: 2, SCHEDULE_ID_HEADER: sid}
    waits = 6
    for n in range(waits):
        first = n == 0
        headers = carried if first else {**carried, LOCK_WAIT_HEADER: n}
        state = deliver(task, tid, {"scheduled_task_id": sid}, headers=headers,
                        delivery_info={"redelivered": True} if first else {})  # fmt: skip
        assert state == states.IGNORED
    assert ran == [], "a delivery ran while the dead delivery's lock was held"
    assert [m["countdown"] for m in republished.sent] == [min(2.0**n, ttl / 4) for n in range(waits)]
    assert [m["headers"] for m in republished.sent] == [{**carried, LOCK_WAIT_HEADER: n + 1} for n in range(waits)]
    assert {(m["id"], m["retries"]) for m in republished.sent} == {(tid, 0)}
    [row] = executions(app)
    assert (row.status, row.worker) == ("running", "dead:1#00000000"), "a waiting delivery wrote a record"


def test_a_redelivery_while_the_holder_is_alive_ends_as_a_duplicate_once_it_finishes(app: Celery) -> None:
    """docs/runtime.md: if the holder was in fact alive (the broker redelivered on a network
    blip), the redelivery waits; the holder finishes; the re-published delivery then finds the
    attempt finished and ends as a duplicate: the job never runs twice, the run counts once
    and the result stays the holder's."""
    sid = add_schedule(app)
    tid = "blip"
    ran: list[str] = []
    task: Any = None
    republished = Republished()

    def holder(self: DataForgeTask, **kw: Any) -> str:
        ran.append("ran")
        if len(ran) == 1:  # the broker redelivers while this delivery still runs
            state = deliver(task, tid, {"scheduled_task_id": sid}, delivery_info={"redelivered": True})
            assert state == states.IGNORED and len(republished.sent) == 1
        return "holder"

    task = define(app, "t.job", holder)
    task.signature_from_request = republished
    assert deliver(task, tid, {"scheduled_task_id": sid}) == states.SUCCESS
    [waited] = republished.sent
    assert (waited["countdown"], waited["headers"]) == (1.0, {LOCK_WAIT_HEADER: 1})
    # The re-published delivery comes back after its countdown: the lock is free, the attempt done.
    assert deliver(task, tid, {"scheduled_task_id": sid}, headers=waited["headers"]) == states.IGNORED
    assert ran == ["ran"], "the job ran twice"
    assert len(republished.sent) == 1, "it kept waiting for a run that had finished"
    [row] = executions(app)
    assert (row.status, row.result) == ("success", '"holder"')
    sched = schedule(app, sid)
    assert (sched.success_count, sched.skipped_count, sched.failure_count) == (1, 0, 0)
    assert AsyncResult(tid, app=app).result == "holder"


@pytest.mark.parametrize("left", ["running", "lost"])
def test_a_redelivery_of_an_unfinished_attempt_runs(app: Celery, left: str) -> None:
    """acks_late after a worker crash: the row the dead run left behind is taken over."""
    from dataforge.models import TaskExecution, utcnow

    sid = add_schedule(app)
    tid = f"redelivered-{left}"
    with app.runtime.db.session() as s:
        s.add(TaskExecution(celery_task_id=tid, attempt=0, task_name="t.job", status=left, scheduled_task_id=sid,
                            worker="dead:1#00000000", started_at=utcnow()))
    ran: list[int] = []
    task = define(app, "t.job", lambda self, **kw: noted(ran, 1, lambda: "ran"))
    assert deliver(task, tid, {"scheduled_task_id": sid}) == states.SUCCESS
    assert ran == [1]
    [row] = executions(app)
    assert (row.status, row.result, row.worker.split(":")[0]) == ("success", '"ran"', "w@test")  # type: ignore[union-attr]
    assert schedule(app, sid).success_count == 1


def test_a_message_header_cannot_mark_a_delivery_as_a_duplicate(app: Celery) -> None:
    """Celery copies message headers onto the request: only task_prerun's mark counts."""
    ran: list[int] = []
    task = define(app, "t.job", lambda self, **kw: noted(ran, 1, lambda: "ran"))

    class Unrecorded(DataForgeTask):
        dataforge_record = False

    plain = define(app, "t.unrecorded", lambda self, **kw: noted(ran, 2, lambda: "ran"), base=Unrecorded)
    headers: list[Any] = ["success", {"duplicate_of": "success"}]
    for n, header in enumerate(headers):
        for t in (task, plain):
            tid = f"header-{n}-{t.name}"
            assert deliver(t, tid, {}, **{ATTRIBUTE: header}) == states.SUCCESS
            assert AsyncResult(tid, app=app).result == "ran"
    assert ran == [1, 2, 1, 2]


def test_eager_mode_and_unrecorded_tasks_run_every_time(app: Celery) -> None:
    sid = add_schedule(app)
    ran: list[str] = []
    task = define(app, "t.job", lambda self, **kw: noted(ran, "eager", lambda: len(ran)))
    for _ in range(2):  # an explicit in-process call always runs (and is recorded, as before)
        assert task.apply(kwargs={"scheduled_task_id": sid}, task_id="eager-same-id").get() == len(ran)
    assert ran == ["eager", "eager"]
    [row] = executions(app)
    assert (row.status, row.result) == ("success", "2")

    class Unrecorded(DataForgeTask):
        dataforge_record = False

    plain = define(app, "t.unrecorded", lambda self, **kw: ran.append("unrecorded"), base=Unrecorded)
    for _ in range(2):
        assert deliver(plain, "unrecorded-same-id", {"scheduled_task_id": sid}) == states.SUCCESS
    assert ran.count("unrecorded") == 2
    assert [r.celery_task_id for r in executions(app)] == ["eager-same-id"]


def test_a_duplicate_that_arrives_while_the_first_delivery_runs_leaves_the_run_to_it(
    app: Celery, caplog: pytest.LogCaptureFixture
) -> None:
    """Beat re-sends a run (same task id) while its first delivery is still running: the re-send
    finds the run lock held by that task id. It must end as a duplicate, not as a `skipped`
    run: the first delivery then closes the row and counts the run, once."""
    sid = add_schedule(app)
    ran: list[str] = []
    tid = "dup-concurrent"
    task: Any = None

    def first_run(self: DataForgeTask, **kw: Any) -> str:
        ran.append(self.request.id)
        if len(ran) == 1:  # while the first delivery runs, the re-send arrives
            with caplog.at_level(logging.INFO):
                assert deliver(task, tid, {"scheduled_task_id": sid}) == states.IGNORED
            app.runtime.recorder.flush()
            assert [r.status for r in executions(app)] == ["running"], "the re-send closed the running row"
        return "first"

    task = define(app, "t.job", first_run)
    assert deliver(task, tid, {"scheduled_task_id": sid}) == states.SUCCESS
    assert ran == [tid]
    [row] = executions(app)
    assert (row.status, row.result) == ("success", '"first"')
    sched = schedule(app, sid)
    assert (sched.success_count, sched.failure_count, sched.last_status) == (1, 0, "success")
    assert AsyncResult(tid, app=app).result == "first"
    reason = f"duplicate delivery: attempt 0 of task {tid} is running in another delivery"
    assert dup_warnings(caplog) == [f"t.job[{tid}]: {reason}; not running it again"]
    [line] = run_lines(caplog, tid)[:1]
    assert (line["outcome"], line["reason"]) == ("duplicate", reason)
