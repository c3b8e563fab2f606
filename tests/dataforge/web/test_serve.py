"""`dataforge serve` as an operator starts it: a real uvicorn process on a real port."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from dataforge.settings import Settings
from dataforge.tools.processes import CeleryProcess
from tests.conftest import REPO_ROOT, create_schema
from tests.dataforge.web.support import TOKEN

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def env_of(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATAFORGE_") or k.startswith("DATAFORGE_TEST_")}
    env.update(settings.as_env())
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def serve(settings: Settings, cwd: Path, *args: str) -> CeleryProcess:
    argv = [sys.executable, "-m", "dataforge", "serve", *args]
    return CeleryProcess("serve", argv, env=env_of(settings), cwd=cwd, stop_timeout=15)


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    url = f"sqlite:///{tmp_path / 'dataforge.db'}"
    create_schema(url)
    return Settings.from_env({"DATAFORGE_DATABASE_URL": url}, cwd=tmp_path)


def test_serve_answers_and_stops_on_sigterm(settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    proc = serve(settings.with_(api_token=TOKEN), tmp_path, "--port", str(port))
    with proc:
        proc.wait_for(rf"Uvicorn running on http://127\.0\.0\.1:{port}", 60)
        base = f"http://127.0.0.1:{port}"
        assert get(f"{base}/healthz") == (200, json.dumps({"status": "ok", "database": "ok"},
                                                          separators=(",", ":")))
        assert get(f"{base}/api/schedules")[0] == 401
        status, body = get(f"{base}/api/schedules", {"Authorization": f"Bearer {TOKEN}"})
        assert status == 200 and json.loads(body)["items"] == []
        assert get(f"{base}/schedules")[0] == 200  # urllib follows the redirect to the login form
        assert proc.proc is not None
        os.kill(proc.pid, signal.SIGTERM)
        # Uvicorn shuts down gracefully, then re-raises the signal it caught.
        assert proc.proc.wait(15) in (0, -signal.SIGTERM)
        proc.wait_for(r"Application shutdown complete", 10)
    log = proc.log
    assert "token required" in log and "GET /api/schedules" in log
    assert TOKEN not in log


def test_serve_refuses_to_listen_beyond_loopback_without_a_token(settings: Settings, tmp_path: Path) -> None:
    for host in ("0.0.0.0", "::", "192.0.2.10"):
        done = subprocess.run([sys.executable, "-m", "dataforge", "serve", "--host", host, "--port", "1"],
                              env=env_of(settings), cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, done.stderr
        assert "without DATAFORGE_API_TOKEN" in done.stderr and "--host" in done.stderr
    env = env_of(settings) | {"DATAFORGE_WEB_HOST": "0.0.0.0"}
    done = subprocess.run([sys.executable, "-m", "dataforge", "serve"], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and "'0.0.0.0'" in done.stderr


def test_serve_with_a_token_may_listen_on_every_interface(settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    with serve(settings.with_(api_token=TOKEN), tmp_path, "--host", "0.0.0.0", "--port", str(port)) as proc:
        proc.wait_for(rf"Uvicorn running on http://0\.0\.0\.0:{port}", 60)
        assert get(f"http://127.0.0.1:{port}/healthz")[0] == 200
