"""A real prefork worker (concurrency 2) on Redis (broker, results, locks) + PostgreSQL."""

from __future__ import annotations

import os
import re
import signal
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from celery import states
from celery.exceptions import TaskRevokedError
from celery.result import AsyncResult

from dataforge.locks import RedisLockBackend
from dataforge.protocol import MAX_RETRIES_HEADER
from dataforge.settings import Settings
from tests.conftest import create_schema
from tests.dataforge.worker.rig import Rig, running_rig, worker_pid
from tests.support.services import fresh_postgres_database, redis_db_url

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

LOCK_TTL = 10.0


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    tmp = tmp_path_factory.mktemp("server-worker")
    with fresh_postgres_database() as pg_url, redis_db_url() as redis_url:
        create_schema(pg_url)
        settings = Settings.from_env(
            {
                "DATAFORGE_DATABASE_URL": pg_url,
                "DATAFORGE_BROKER_URL": redis_url,
                "DATAFORGE_RESULT_BACKEND": redis_url,
                "DATAFORGE_REDIS_URL": redis_url,
                "DATAFORGE_LOCK_TTL": str(LOCK_TTL),
            },
            cwd=tmp,
        )
        with running_rig(settings, tmp) as r:
            yield r


SUCCESS = ["signal:task_prerun", "before_start", "run", "on_success", "signal:task_success", "after_return",
           "signal:task_postrun:SUCCESS"]  # fmt: skip


def test_hook_and_signal_sequence_success_and_failure(rig: Rig) -> None:
    sid = rig.add_schedule("wt.seq")
    ok = rig.wait_result(rig.send("wt.seq", kwargs={"scheduled_task_id": sid}))
    assert ok.get(timeout=5) == "ok"
    assert rig.sequence(ok.id, 0, "signal:task_postrun:SUCCESS") == SUCCESS
    bad = rig.wait_result(rig.send("wt.seq", kwargs={"scheduled_task_id": sid, "mode": "fail"}))
    assert bad.state == states.FAILURE
    assert rig.sequence(bad.id, 0, "signal:task_postrun:FAILURE") == [
        "signal:task_prerun", "before_start", "run", "on_failure", "signal:task_failure", "after_return",
        "signal:task_postrun:FAILURE",
    ]  # fmt: skip
    rig.wait_execution(bad.id, "failure")  # written by the worker's recorder within ~50 ms
    assert [r.status for r in rig.executions(bad.id)] == ["failure"]
    sched = rig.schedule(sid)
    assert (sched.success_count, sched.failure_count, sched.last_status) == (1, 1, "failure")


def test_hook_and_signal_sequence_retry(rig: Rig) -> None:
    sid = rig.add_schedule("wt.seq")
    res = rig.send("wt.seq", kwargs={"scheduled_task_id": sid, "mode": "fail_once"}, headers={MAX_RETRIES_HEADER: 1})
    assert rig.wait_result(res).get(timeout=5) == "ok"
    assert rig.sequence(res.id, 0, "signal:task_postrun:RETRY") == [
        "signal:task_prerun", "before_start", "run", "on_retry", "signal:task_retry", "signal:task_postrun:RETRY",
    ]  # fmt: skip
    assert rig.sequence(res.id, 1, "signal:task_postrun:SUCCESS") == SUCCESS
    rig.wait_execution(res.id, "success")
    assert [(r.attempt, r.status) for r in rig.executions(res.id)] == [(0, "retry"), (1, "success")]
    assert (rig.schedule(sid).success_count, rig.schedule(sid).failure_count) == (1, 0)


def test_hook_and_signal_sequence_skip_and_what_asyncresult_shows(rig: Rig) -> None:
    sid = rig.add_schedule("wt.seq")
    key = f"dataforge:lock:wt.seq:{sid}"
    backend = RedisLockBackend(rig.settings.redis_url or "")
    holder = backend.acquire(key, 60)
    assert holder is not None
    try:
        res = rig.send("wt.seq", kwargs={"scheduled_task_id": sid}, headers={MAX_RETRIES_HEADER: 3})
        assert rig.sequence(res.id, 0, "signal:task_postrun:IGNORED") == [
            "signal:task_prerun", "before_start", "signal:task_postrun:IGNORED",
        ]  # fmt: skip
        rig.wait_state(res, states.IGNORED)  # stored by DataForgeTask, not PENDING/STARTED forever
        assert res.result == {"skipped": f"lock {key} is held by another run", "lock_key": key}
        rig.wait_execution(res.id, "skipped")  # written by the worker's recorder within ~50 ms
        sched = rig.schedule(sid)
        assert (sched.success_count, sched.failure_count, sched.skipped_count) == (0, 0, 1)
        assert rig.lock_held(key)  # the holder's lock is untouched
    finally:
        assert backend.release(key, holder)
        backend.close()


def test_an_expired_run_reads_revoked_and_get_raises_task_revoked_error(rig: Rig) -> None:
    """docs/runtime.md, what callers of AsyncResult see: a message that expired in the queue
    before any worker started it reads ``REVOKED`` (Celery's state) and ``.get()`` raises
    ``TaskRevokedError``, while its execution row says ``expired`` (never started) and the
    schedule counts it once, in ``expired_count``. The job does not run."""
    sid = rig.add_schedule("wt.seq")
    expired_at = datetime.now(UTC) - timedelta(seconds=30)
    res = rig.send("wt.seq", kwargs={"scheduled_task_id": sid}, expires=expired_at)
    rig.wait_state(res, states.REVOKED)
    with pytest.raises(TaskRevokedError):
        res.get(timeout=5)
    row = rig.wait_execution(res.id, "expired")
    assert row.started_at is None and row.attempt == 0
    sched = rig.schedule(sid)
    assert (sched.expired_count, sched.success_count, sched.failure_count, sched.skipped_count) == (1, 0, 0, 0)
    assert not [line for line in rig.worker.lines() if re.search(rf"SEQ {re.escape(res.id)} \d+ run", line)]


def test_two_concurrent_runs_of_one_schedule_give_one_run_and_one_skip(rig: Rig) -> None:
    sid = rig.add_schedule("wt.gated")
    key = f"dataforge:lock:wt.gated:{sid}"
    gate = rig.tmp / f"gate-{sid}"
    first = rig.send("wt.gated", kwargs={"scheduled_task_id": sid, "gate": str(gate), "value": 1})
    rig.wait_lock(key, held=True)
    second = rig.send("wt.gated", kwargs={"scheduled_task_id": sid, "gate": str(gate), "value": 2})
    rig.wait_state(second, states.IGNORED)  # the other child was free: it skipped, it did not wait
    gate.touch()
    assert rig.wait_result(first).get(timeout=5)["value"] == 1
    # The result is stored before task_success closes the row: wait for the rows themselves.
    rig.wait_execution(first.id, "success")
    rig.wait_execution(second.id, "skipped")
    rows = [r for r in rig.executions(task_name="wt.gated") if r.scheduled_task_id == sid]
    assert {r.celery_task_id: r.status for r in rows} == {first.id: "success", second.id: "skipped"}
    sched = rig.schedule(sid)
    assert (sched.success_count, sched.failure_count) == (1, 0)
    rig.wait_lock(key, held=False)


def test_sigkill_of_a_child_mid_task_marks_lost_and_frees_the_lock(rig: Rig) -> None:
    sid = rig.add_schedule("wt.gated")
    key = f"dataforge:lock:wt.gated:{sid}"
    res = rig.send("wt.gated", kwargs={"scheduled_task_id": sid, "gate": str(rig.tmp / "never")})
    rig.wait_lock(key, held=True)
    row = rig.wait_execution(res.id, "running")
    child_pid = worker_pid(row.worker)
    assert child_pid != rig.worker.pid
    os.kill(child_pid, signal.SIGKILL)
    lost = rig.wait_execution(res.id, "lost")
    assert "WorkerLostError" in (lost.error or "")
    # Freed by the parent at once, well within one TTL (the key would expire by itself after).
    rig.wait_lock(key, held=False, timeout=LOCK_TTL)
    sched = rig.schedule(sid)
    assert (sched.success_count, sched.failure_count, sched.lost_count, sched.last_status) == (0, 0, 1, "lost")
    rig.wait_state(res, states.FAILURE)


def test_terminating_revoke_marks_failure_and_frees_the_lock(rig: Rig) -> None:
    sid = rig.add_schedule("wt.gated")
    key = f"dataforge:lock:wt.gated:{sid}"
    res = rig.send("wt.gated", kwargs={"scheduled_task_id": sid, "gate": str(rig.tmp / "never")})
    rig.wait_lock(key, held=True)
    rig.app.control.revoke(res.id, terminate=True, signal="SIGKILL")
    row = rig.wait_execution(res.id, "failure")
    assert "revoked" in (row.error or "")
    rig.wait_lock(key, held=False, timeout=LOCK_TTL)
    assert rig.schedule(sid).failure_count == 1


def test_soft_time_limit_cancels_the_coroutine_cleanly(rig: Rig) -> None:
    sid = rig.add_schedule("wt.slow")
    marker = rig.tmp / f"unwound-{sid}"
    res = rig.send("wt.slow", kwargs={"scheduled_task_id": sid, "marker": str(marker)}, soft_time_limit=1,
                   time_limit=60, headers={MAX_RETRIES_HEADER: 2})
    rig.wait_result(res)
    assert res.state == states.FAILURE and type(res.result).__name__ == "SoftTimeLimitExceeded"
    rig.wait_execution(res.id, "failure")
    assert marker.read_text() == "unwound"  # the coroutine's finally ran before the failure
    [row] = rig.executions(res.id)  # a soft time limit is not retried
    assert row.status == "failure" and "SoftTimeLimitExceeded" in (row.error or "")
    assert not rig.lock_held(f"dataforge:lock:wt.slow:{sid}")


def test_lock_key_regression_legacy_fails_new_passes(rig: Rig) -> None:
    sid = rig.add_schedule("wt.report")
    legacy = rig.send("wt.legacy_execute_scheduled_task",
                      kwargs={"scheduled_task_id": sid, "handler_path": "scripts:report", "days": 3})
    rig.wait_result(legacy)
    assert legacy.state == states.FAILURE
    assert str(legacy.result) == "run() got an unexpected keyword argument '_lock_key'"
    new = rig.send("wt.report", kwargs={"scheduled_task_id": sid, "days": 3, "_lock_key": "leaked-from-an-old-row"})
    assert rig.wait_result(new).get(timeout=5) == {"schedule": sid, "days": 3}


def test_sequential_async_jobs_share_their_process_loop_and_client(rig: Rig) -> None:
    loops: dict[int, set[int]] = {}
    for _ in range(6):
        out = rig.wait_result(rig.send("wt.loop_client")).get(timeout=5)
        assert out["ping"] is True  # the loop-bound client still works on later runs
        loops.setdefault(out["pid"], set()).add(out["loop"])
    assert all(len(ids) == 1 for ids in loops.values()), loops


def test_plain_tasks_run_unrecorded(rig: Rig) -> None:
    res = rig.send("wt.plain", kwargs={"value": 5})
    assert rig.wait_result(res).get(timeout=5) == 5
    assert rig.executions(res.id) == []


# -- duplicate deliveries: beat re-sends a run with the same task id ----------------------------


def _effect_runs(marker: Path) -> int:
    return len(marker.read_text().splitlines()) if marker.exists() else 0


def _wait_duplicate(rig: Rig, task_id: str, attempt: int = 0) -> dict[str, str]:
    """The run log line of a duplicate delivery that the worker ended unrun."""
    [line] = rig.worker.wait_for(rf"run task_id={re.escape(task_id)} .*attempt={attempt} .*outcome=duplicate ", 60)
    return dict(re.findall(r"(\w+)=(\S+)", line.split("reason=")[0]), reason=line.split("reason=", 1)[1])


def _duplicate_warnings(rig: Rig, task_id: str) -> list[str]:
    return [line for line in rig.worker.lines() if "WARNING" in line and f"[{task_id}]: duplicate delivery" in line]


def test_a_duplicate_delivery_of_a_finished_run_does_not_run_it_again(rig: Rig) -> None:
    sid = rig.add_schedule("wt.effect")
    marker = rig.tmp / f"effect-{sid}"
    tid = f"dup-success-{uuid.uuid4()}"
    kwargs = {"scheduled_task_id": sid, "marker": str(marker)}
    assert rig.wait_result(rig.send("wt.effect", task_id=tid, kwargs=kwargs)).get(timeout=5) == {"run": 1}
    first = rig.wait_execution(tid, "success")
    rig.send("wt.effect", task_id=tid, kwargs=kwargs)  # what a re-sending beat publishes
    line = _wait_duplicate(rig, tid)
    assert line["reason"] == f"duplicate delivery: attempt 0 of task {tid} already finished (success)"
    assert line["lock"] == "None"  # no lock taken
    assert _effect_runs(marker) == 1  # the job ran once
    [row] = rig.executions(tid)  # the first run's record, untouched
    assert (row.status, row.result, row.started_at, row.finished_at, row.worker) == (
        "success", '{"run": 1}', first.started_at, first.finished_at, first.worker,
    )  # fmt: skip
    sched = rig.schedule(sid)
    assert (sched.success_count, sched.failure_count, sched.last_status) == (1, 0, "success")
    result = AsyncResult(tid, app=rig.app)
    assert (result.state, result.result) == (states.SUCCESS, {"run": 1})
    assert len(_duplicate_warnings(rig, tid)) == 1


def test_a_duplicate_of_a_failed_run_leaves_its_failure_in_the_result_backend(rig: Rig) -> None:
    sid = rig.add_schedule("wt.effect")
    marker = rig.tmp / f"effect-{sid}"
    tid = f"dup-failure-{uuid.uuid4()}"
    kwargs = {"scheduled_task_id": sid, "marker": str(marker), "fail_runs": 1}
    rig.wait_result(rig.send("wt.effect", task_id=tid, kwargs=kwargs))
    rig.wait_execution(tid, "failure")
    rig.send("wt.effect", task_id=tid, kwargs=kwargs)
    _wait_duplicate(rig, tid)
    assert _effect_runs(marker) == 1
    result = AsyncResult(tid, app=rig.app)  # not STARTED (track_started) nor IGNORED
    assert result.state == states.FAILURE and str(result.result) == "failed on run 1"
    assert [(r.status, r.error) for r in rig.executions(tid)] == [("failure", "ValueError: failed on run 1")]
    assert (rig.schedule(sid).success_count, rig.schedule(sid).failure_count) == (0, 1)


def test_a_retry_of_the_same_task_id_runs_and_duplicates_of_either_attempt_do_not(rig: Rig) -> None:
    sid = rig.add_schedule("wt.effect")
    marker = rig.tmp / f"effect-{sid}"
    tid = f"dup-retry-{uuid.uuid4()}"
    kwargs = {"scheduled_task_id": sid, "marker": str(marker), "fail_runs": 1}
    headers = {MAX_RETRIES_HEADER: 1}
    # Attempt 0 fails, attempt 1 (same task id) runs and succeeds.
    assert rig.wait_result(rig.send("wt.effect", task_id=tid, kwargs=kwargs, headers=headers)).get(timeout=5) == {
        "run": 2
    }
    rig.wait_execution(tid, "success")
    rig.send("wt.effect", task_id=tid, kwargs=kwargs, headers=headers)  # attempt 0 again
    assert "already finished (retry)" in _wait_duplicate(rig, tid, attempt=0)["reason"]
    rig.send("wt.effect", task_id=tid, kwargs=kwargs, headers=headers, retries=1)  # attempt 1 again
    assert "already finished (success)" in _wait_duplicate(rig, tid, attempt=1)["reason"]
    assert _effect_runs(marker) == 2
    assert [(r.attempt, r.status) for r in rig.executions(tid)] == [(0, "retry"), (1, "success")]
    assert (rig.schedule(sid).success_count, rig.schedule(sid).failure_count) == (1, 0)
    assert AsyncResult(tid, app=rig.app).result == {"run": 2}
