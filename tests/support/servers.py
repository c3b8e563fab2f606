"""Private server processes for fault tests: PostgreSQL, Redis and RabbitMQ on their own ports.

Fault tests stop, kill and freeze servers; they must never do that to the machine's shared
ones. Each class here starts its own server process in a temporary directory, on a free port,
knows its PID, and is stopped (by that PID only) and removed when the test is done. Waits are
on the server answering, with a deadline and a message that says what did not happen.

Requirements (a fresh machine with the services installed has them): ``initdb`` and
``postgres`` (PostgreSQL 15, run as the ``postgres`` user when the tests run as root),
``redis-server``, and RabbitMQ's ``rabbitmq-server`` (``/usr/lib/rabbitmq/bin``; started
with its own node name, ports, data directory and Erlang cookie). Outside CI a missing one
skips the test; under ``CI=true`` it fails it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.services import IN_CI

__all__ = ["PrivatePostgres", "PrivateRabbitMQ", "PrivateRedis", "free_port", "wait_port"]

_PG_BIN = Path("/usr/lib/postgresql/15/bin")
_RABBIT_BIN = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")


def _unavailable(what: str) -> None:
    if IN_CI:
        pytest.fail(f"{what}: CI=true requires it", pytrace=False)
    pytest.skip(what)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_port(port: int, *, up: bool, timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while _answers(port) is not up:
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log is not None and log.exists() else ""
            raise AssertionError(f"{what} {'did not start' if up else 'did not stop'} within {timeout}s\n{tail}")
        time.sleep(0.1)


def _signal(pid: int | None, sig: int) -> None:
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _as_postgres(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run it as the ``postgres`` user."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


class PrivatePostgres:
    """A PostgreSQL server of its own (``initdb`` in a fresh temporary directory, its log in
    ``root``), trust auth, fsync off."""

    def __init__(self, root: Path) -> None:
        for tool in ("initdb", "postgres"):
            if not (_PG_BIN / tool).exists() and shutil.which(tool) is None:
                _unavailable(f"PostgreSQL's {tool} is not installed")
        # Its own directory under the system temp dir: pytest's are private to the user
        # running the tests, and the server may run as another one (``postgres``).
        self.root = Path(tempfile.mkdtemp(prefix="dftest-pg-"))
        self.data = self.root / "pgdata"
        self.port = free_port()
        self.log = root / "postgres.log"
        self.proc: subprocess.Popen[bytes] | None = None
        root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
        out = subprocess.run(
            _as_postgres([self._bin("initdb"), "-D", str(self.data), "--auth=trust", "-U", "postgres", "-E", "UTF8"]),
            capture_output=True, text=True, timeout=120, cwd=self.root,
        )  # fmt: skip
        if out.returncode != 0:
            _unavailable(f"initdb failed: {out.stderr[-2000:]}")

    def _bin(self, tool: str) -> str:
        path = _PG_BIN / tool
        return str(path) if path.exists() else tool

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def pid(self) -> int | None:
        """The postmaster's pid (first line of ``postmaster.pid``)."""
        try:
            return int((self.data / "postmaster.pid").read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None

    def start(self, timeout: float = 60) -> None:
        cmd = [self._bin("postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(self.root),
               "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=60"]  # fmt: skip
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(_as_postgres(cmd), stdout=log, stderr=subprocess.STDOUT, cwd=self.root)
        wait_port(self.port, up=True, timeout=timeout, what="private PostgreSQL", log=self.log)
        deadline = time.monotonic() + timeout
        import psycopg

        while True:  # the port answers before the server accepts sessions
            try:
                psycopg.connect(self.url, connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self, timeout: float = 60) -> None:
        """Fast shutdown (SIGINT): every session is cut ("terminating connection due to
        administrator command"), as in a restart or a failover."""
        _signal(self.pid, signal.SIGINT)
        wait_port(self.port, up=False, timeout=timeout, what="private PostgreSQL", log=self.log)
        if self.proc is not None:
            self.proc.wait(timeout)
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        if self.pid is not None and _answers(self.port):
            _signal(self.pid, signal.SIGQUIT)  # immediate shutdown
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(30)
        shutil.rmtree(self.root, ignore_errors=True)

    @classmethod
    @contextlib.contextmanager
    def running(cls, root: Path) -> Iterator[PrivatePostgres]:
        server = cls(root)
        try:
            server.start()
            yield server
        finally:
            server.close()


class PrivateRedis:
    """A ``redis-server`` of its own; ``aof``: append-only file fsynced per write, so a kill -9
    loses nothing (a broker should; the default machine Redis has no persistence)."""

    def __init__(self, root: Path, *, aof: bool = False) -> None:
        if shutil.which("redis-server") is None:
            _unavailable("redis-server is not installed")
        self.root = root
        self.port = free_port()
        self.aof = aof
        self.log = root / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None
        root.mkdir(parents=True, exist_ok=True)

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def start(self, timeout: float = 30) -> None:
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.aof else ["--appendonly", "no"]
        cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", *persistence,
               "--dir", str(self.root), "--logfile", str(self.log)]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.root)
        wait_port(self.port, up=True, timeout=timeout, what="private Redis", log=self.log)

    def kill(self) -> None:
        """kill -9: no shutdown, connections reset."""
        _signal(self.pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(30)
        wait_port(self.port, up=False, timeout=30, what="private Redis")

    def freeze(self) -> None:
        _signal(self.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        _signal(self.pid, signal.SIGCONT)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            _signal(self.proc.pid, signal.SIGCONT)
            _signal(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)

    @classmethod
    @contextlib.contextmanager
    def running(cls, root: Path, *, aof: bool = False) -> Iterator[PrivateRedis]:
        server = cls(root, aof=aof)
        try:
            server.start()
            yield server
        finally:
            server.close()


class PrivateRabbitMQ:
    """A RabbitMQ node of its own: node name, AMQP and distribution ports, data directory and
    Erlang cookie (``HOME``) in ``root``; no plug-ins (so no management port to collide on)."""

    def __init__(self, root: Path) -> None:
        if not _RABBIT_BIN.exists():
            _unavailable(f"RabbitMQ is not installed ({_RABBIT_BIN})")
        self.root = root
        self.port = free_port()
        self.name = f"dftest{self.port}@localhost"
        self.log = root / "rabbitmq.log"
        self.proc: subprocess.Popen[bytes] | None = None
        root.mkdir(parents=True, exist_ok=True)
        (root / "enabled_plugins").write_text("[].\n")

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    @property
    def pid(self) -> int | None:
        try:
            return int((self.root / "rabbitmq.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def start(self, timeout: float = 90) -> None:
        env = {
            **os.environ, "HOME": str(self.root), "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_PORT": str(self.port), "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_MNESIA_BASE": str(self.root / "mnesia"), "RABBITMQ_LOG_BASE": str(self.root / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.root / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self.root / "rabbitmq.pid"), "RABBITMQ_CONFIG_FILE": str(self.root / "rabbitmq"),
        }  # fmt: skip
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([str(_RABBIT_BIN)], env=env, stdout=log, stderr=subprocess.STDOUT,
                                         cwd=self.root, start_new_session=True)
        wait_port(self.port, up=True, timeout=timeout, what="private RabbitMQ", log=self.log)

    def close(self) -> None:
        _signal(self.pid, signal.SIGKILL)
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)  # the start script and its children
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(30)

    @classmethod
    @contextlib.contextmanager
    def running(cls, root: Path) -> Iterator[PrivateRabbitMQ]:
        server = cls(root)
        try:
            server.start()
            yield server
        finally:
            server.close()
