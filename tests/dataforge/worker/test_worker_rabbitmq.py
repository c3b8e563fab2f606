"""Smoke run on RabbitMQ (127.0.0.1:5672, guest/guest): one recorded run, one skip."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from dataforge.settings import Settings
from tests.conftest import create_schema
from tests.dataforge.worker.rig import running_rig

pytestmark = [pytest.mark.slow, pytest.mark.rabbitmq]


def test_rabbitmq_smoke(tmp_path: Path, rabbitmq_url: str) -> None:
    settings = Settings.from_env({"DATAFORGE_BROKER_URL": rabbitmq_url}, cwd=tmp_path)
    create_schema(settings.database_url)
    # Our own queue: other suites may share the broker's default vhost and `celery` queue.
    queue = f"df-runtime-{uuid.uuid4().hex[:8]}"
    with running_rig(settings, tmp_path, name="df-rabbit", queues=(queue,)) as rig:
        sid = rig.add_schedule("wt.gated")
        gate = tmp_path / "gate"
        first = rig.send("wt.gated", queue=queue, kwargs={"scheduled_task_id": sid, "gate": str(gate), "value": 1})
        rig.wait_lock(f"dataforge:lock:wt.gated:{sid}", held=True)
        second = rig.send("wt.gated", queue=queue, kwargs={"scheduled_task_id": sid, "gate": str(gate)})
        rig.wait_execution(second.id, "skipped")
        gate.touch()
        assert rig.wait_result(first).get(timeout=5)["value"] == 1
        rig.wait_execution(first.id, "success")  # closed just after the result is stored
        assert [r.status for r in rig.executions(first.id)] == ["success"]
    with rig.app.connection_for_write() as conn:  # leave no durable queue behind on the shared broker
        conn.default_channel.queue_delete(queue)
