"""A real prefork worker on the embedded defaults: SQLite + sqla broker + database locks.

No server at all, as on a fresh machine. Also: a whole worker killed with SIGKILL leaves its
lease behind, and the lease frees itself within one TTL.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from celery import states

from dataforge.locks import DatabaseLockBackend
from dataforge.settings import Settings
from tests.conftest import create_schema
from tests.dataforge.worker.rig import running_rig, wait_until

pytestmark = [pytest.mark.slow]

LOCK_TTL = 1.5
#: What this test's polling and a loaded 2-core machine add to a bound it measures (seconds).
POLL_SLACK = 1.0


def embedded(tmp_path: Path) -> Settings:
    settings = Settings.from_env({"DATAFORGE_LOCK_TTL": str(LOCK_TTL)}, cwd=tmp_path)
    create_schema(settings.database_url)
    return settings


def test_runs_skips_and_records_without_any_server(tmp_path: Path) -> None:
    with running_rig(embedded(tmp_path), tmp_path, name="df-embedded") as rig:
        sid = rig.add_schedule("wt.gated")
        key = f"dataforge:lock:wt.gated:{sid}"
        gate = tmp_path / "gate"
        first = rig.send("wt.gated", kwargs={"scheduled_task_id": sid, "gate": str(gate), "value": "a"})
        rig.wait_lock(key, held=True)
        # Held longer than one TTL: the renewal thread keeps the lease alive meanwhile.
        deadline = time.monotonic() + 2 * LOCK_TTL
        while time.monotonic() < deadline:
            assert rig.lock_held(key), "the lease expired while its run was still going"
            time.sleep(0.2)
        second = rig.send("wt.gated", kwargs={"scheduled_task_id": sid, "gate": str(gate), "value": "b"})
        rig.wait_execution(second.id, "skipped")
        gate.touch()
        assert rig.wait_result(first).get(timeout=5)["value"] == "a"
        rig.wait_execution(first.id, "success")  # closed just after the result is stored
        assert rig.wait_result(rig.send("wt.seq", kwargs={"mode": "ok"})).get(timeout=5) == "ok"
        rows = [r for r in rig.executions(task_name="wt.gated") if r.scheduled_task_id == sid]
        assert {r.celery_task_id: r.status for r in rows} == {first.id: "success", second.id: "skipped"}
        sched = rig.schedule(sid)
        assert (sched.success_count, sched.failure_count) == (1, 0)
        rig.wait_lock(key, held=False)


def test_a_killed_workers_lease_frees_itself_within_one_ttl(tmp_path: Path) -> None:
    settings = embedded(tmp_path)
    with running_rig(settings, tmp_path, name="df-killed") as rig:
        sid = rig.add_schedule("wt.gated")
        key = f"dataforge:lock:wt.gated:{sid}"
        res = rig.send("wt.gated", kwargs={"scheduled_task_id": sid, "gate": str(tmp_path / "never")})
        rig.wait_lock(key, held=True)
        rig.wait_execution(res.id, "running")  # the start record is written ~50 ms after the lock
        rig.worker.kill()  # the whole process group: no parent is left to free anything
        killed_at = time.monotonic()
        backend = DatabaseLockBackend(rig.app.runtime.db)
        # One TTL after the last renewal at most, plus the polling of this test on a busy machine.
        bound = LOCK_TTL + POLL_SLACK
        token = wait_until(lambda: backend.acquire(key, 60), bound, f"lease {key} taken over after the kill")
        assert token is not None and time.monotonic() - killed_at <= bound
        assert backend.release(key, token)
        # Nobody was left to close the row: it stays `running` (see docs/runtime.md).
        assert [r.status for r in rig.executions(res.id)] == ["running"]
        assert res.state in (states.PENDING, states.STARTED)
