"""The lock store going down mid-run never turns a success into a failure (real worker)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from celery import states

from dataforge.settings import Settings
from dataforge.tools.processes import CeleryProcess
from tests.conftest import create_schema
from tests.dataforge.worker.rig import running_rig

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_redis_down_at_release_leaves_the_task_successful(tmp_path: Path, redis_url: str, pg_url: str) -> None:
    """Locks in a private Redis that the job itself shuts down; broker and results elsewhere."""
    port = _free_port()
    store = CeleryProcess("lock-redis", ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                         "--appendonly", "no", "--dir", str(tmp_path)])  # fmt: skip
    with store:
        store.wait_for("Ready to accept connections", 30)
        create_schema(pg_url)
        settings = Settings.from_env(
            {"DATAFORGE_DATABASE_URL": pg_url, "DATAFORGE_BROKER_URL": redis_url,
             "DATAFORGE_RESULT_BACKEND": redis_url, "DATAFORGE_REDIS_URL": f"redis://127.0.0.1:{port}/0"},
            cwd=tmp_path,
        )  # fmt: skip
        with running_rig(settings, tmp_path, name="df-lockdown", queues=("df-lockdown",)) as r:
            sid = r.add_schedule("wt.shutdown_lock_store")
            res = r.send("wt.shutdown_lock_store", kwargs={"scheduled_task_id": sid})
            assert r.wait_result(res).state == states.SUCCESS
            assert res.get(timeout=5) == "lock store is down"
            r.wait_execution(res.id, "success")  # closed just after the result is stored
            assert [e.status for e in r.executions(res.id)] == ["success"]
            r.worker.wait_for("lock release failed", 30)
