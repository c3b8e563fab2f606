"""Start, watch and stop ``celery worker`` / ``celery beat`` child processes.

Used by ``dataforge demo`` and by the tests and benchmarks that need real processes. Output
is read by a thread and kept, so callers wait for an *event* in the log ("ready.", a task
line) with a bounded timeout instead of sleeping, and see the log when a wait fails.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from dataforge.tools.errors import ProcessError

__all__ = ["CeleryProcess", "beat_command", "worker_command"]


def worker_command(
    app: str = "dataforge.celery_app",
    *,
    concurrency: int = 2,
    pool: str = "prefork",
    queues: Sequence[str] = (),
    hostname: str | None = None,
    loglevel: str = "INFO",
    extra: Sequence[str] = (),
) -> list[str]:
    cmd = [
        sys.executable, "-m", "celery", "-A", app, "worker",
        f"--pool={pool}", f"--concurrency={concurrency}", f"--loglevel={loglevel}",
        # Mingle and gossip cost ~1 s per start and buy nothing for a fixed fleet.
        "--without-mingle", "--without-gossip",
    ]  # fmt: skip
    if queues:
        cmd.append(f"--queues={','.join(queues)}")
    if hostname:
        cmd.append(f"--hostname={hostname}")
    return [*cmd, *extra]


def beat_command(
    app: str = "dataforge.celery_app", *, loglevel: str = "INFO", extra: Sequence[str] = ()
) -> list[str]:
    # --schedule points celery's own shelve file away from the working tree; our scheduler
    # keeps its state in the database.
    return [sys.executable, "-m", "celery", "-A", app, "beat", f"--loglevel={loglevel}", *extra]


class CeleryProcess:
    """A child process whose combined output is captured line by line.

    ``with CeleryProcess("worker", worker_command(), env=...) as w: w.wait_for("ready")``.
    Leaving the block stops it: SIGTERM (warm shutdown), then SIGKILL after ``stop_timeout``.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        log_file: Path | None = None,
        stop_timeout: float = 15.0,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(os.environ if env is None else env)
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        self.cwd = cwd
        self.log_file = log_file
        self.stop_timeout = stop_timeout
        self.proc: subprocess.Popen[str] | None = None
        self._lines: list[str] = []
        self._cond = threading.Condition()
        self._reader: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> CeleryProcess:
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            # Own process group: stop() can reach prefork children even if the parent died.
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, name=f"{self.name}-log", daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        sink = self.log_file.open("a", encoding="utf-8") if self.log_file else None
        try:
            for line in self.proc.stdout:
                if sink:
                    sink.write(line)
                    sink.flush()
                with self._cond:
                    self._lines.append(line.rstrip("\n"))
                    self._cond.notify_all()
        finally:
            if sink:
                sink.close()
            with self._cond:
                self._cond.notify_all()

    @property
    def pid(self) -> int:
        assert self.proc is not None, "process not started"
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        """Stop the process group; returns the exit code (None if it had to be killed)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            # The signal goes to the main process only: Celery's warm shutdown is driven by the
            # parent, which stops its own pool; signalling the whole group makes prefork children
            # die mid-task and the parent wait for them.
            try:
                os.kill(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        # Reap stragglers of the group (prefork children orphaned by a killed parent).
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self._reader is not None:
            self._reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL the whole group at once (a crash, as an operator's kill -9 would be)."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)

    def __enter__(self) -> CeleryProcess:
        if self.proc is None:
            self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- observation ----------------------------------------------------------------------------
    @property
    def log(self) -> str:
        with self._cond:
            return "\n".join(self._lines)

    def lines(self) -> list[str]:
        with self._cond:
            return list(self._lines)

    def wait_for(self, pattern: str, timeout: float = 30.0, *, start: int = 0, count: int = 1) -> list[str]:
        """Block until ``count`` lines from index ``start`` match ``pattern`` (a regex).

        Raises :class:`ProcessError` with the log tail on timeout or if the process exits.
        """
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                hits = [line for line in self._lines[start:] if rx.search(line)]
                if len(hits) >= count:
                    return hits
                if self.proc is not None and self.proc.poll() is not None and (
                    self._reader is None or not self._reader.is_alive()
                ):
                    raise ProcessError(
                        self.name, f"exited with {self.proc.returncode} before {pattern!r}", self.log
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ProcessError(
                        self.name, f"no {count} line(s) matching {pattern!r} within {timeout}s", self.log
                    )
                self._cond.wait(min(remaining, 0.5))

    def wait_ready(self, timeout: float = 60.0) -> CeleryProcess:
        """Worker: its "ready." line; beat: its "beat: Starting..." line."""
        self.wait_for(r"\bready\.|beat: Starting", timeout)
        return self
