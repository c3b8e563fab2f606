"""The write phase: all or nothing, whatever fails and whenever a signal arrives.

In-process, every operation of a conversion is made to fail, and a real SIGINT / SIGTERM /
SIGHUP is sent at every operation; then real ``python -m dataforge convert`` processes of a
large tree get a real SIGINT, SIGTERM and SIGHUP in the middle of their write phase (a closed
terminal sends SIGHUP: it must not cut an operation in half either).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from refactor_tool.runner import convert
from refactor_tool.writes import TEMP_SUFFIX, WriteInterrupted, atomic_write
from tests.refactor_tool.support import make_jobs_tree, snapshot

#: Every signal the write phase defers.
_SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]


def _signal_name(signum: int) -> str:
    return signal.Signals(signum).name


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_jobs_tree(tmp_path_factory.mktemp("pristine") / "backend", jobs=6, legacy_app=True)


@pytest.fixture(scope="module")
def converted_snapshot(pristine: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[bytes, int]]:
    root = tmp_path_factory.mktemp("reference") / "backend"
    shutil.copytree(pristine, root)
    assert convert(root).exit_code(check=False) == 0
    return snapshot(root)


def _operations(pristine: Path) -> int:
    report = convert(pristine, mode="check")
    operations = report.to_json()["operations"]
    assert {op["op"] for op in operations} == {"create", "update", "delete", "rmdir"}  # every kind is exercised
    assert {"op": "create", "path": "app/celery_tasks_legacy.py", "origin": "app/celery_tasks.py"} in operations
    assert {"op": "delete", "path": "app/celery_signals.py", "origin": None} in operations
    return len(report.changes) + len(report.removed_dirs)


class _Counter:
    """Calls ``action`` at the Nth file operation of the write phase (write, unlink or rmdir)."""

    def __init__(self, at: int, action: Callable[[], None]) -> None:
        self.at, self.action, self.count = at, action, 0

    def tick(self) -> None:
        self.count += 1
        if self.count == self.at:
            self.action()


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[int, Callable[[], None]], _Counter]]:
    counters: list[_Counter] = []

    def install(at: int, action: Callable[[], None]) -> _Counter:
        counter = _Counter(at, action)
        counters.append(counter)
        real_unlink, real_rmdir = Path.unlink, Path.rmdir

        def unlink(self: Path, missing_ok: bool = False) -> None:
            counter.tick()
            real_unlink(self, missing_ok=missing_ok)

        def rmdir(self: Path) -> None:
            counter.tick()
            real_rmdir(self)

        monkeypatch.setattr(Path, "unlink", unlink)
        monkeypatch.setattr(Path, "rmdir", rmdir)
        return counter

    yield install


def _writer(counter: _Counter) -> Callable[[Path, bytes, int | None], None]:
    def write(path: Path, data: bytes, mode: int | None = None) -> None:
        counter.tick()
        atomic_write(path, data, mode)

    return write


def _fresh(pristine: Path, tmp_path: Path) -> Path:
    root = tmp_path / "backend"
    shutil.copytree(pristine, root)
    return root


def _no_temp_files(root: Path) -> None:
    assert not [p for p in root.rglob("*") if p.name.endswith(TEMP_SUFFIX)]


def test_a_failure_at_any_operation_leaves_the_tree_as_it_was(
    pristine: Path, tmp_path: Path, counted: Callable[[int, Callable[[], None]], _Counter]
) -> None:
    total = _operations(pristine)
    before = snapshot(pristine)
    for at in range(1, total + 1):
        root = _fresh(pristine, tmp_path / str(at))

        def fail() -> None:
            raise OSError(28, "No space left on device")

        counter = counted(at, fail)
        report = convert(root, write=_writer(counter))
        assert report.write_error is not None and "No space left on device" in report.write_error, at
        assert report.exit_code(check=False) == 3
        counter.at = 0  # the undo itself must not fail
        assert snapshot(root) == before, f"operation {at} of {total}"
        _no_temp_files(root)


@pytest.mark.parametrize("signum", _SIGNALS, ids=_signal_name)
def test_a_signal_at_any_operation_leaves_the_tree_as_it_was_or_converted(
    pristine: Path,
    tmp_path: Path,
    counted: Callable[[int, Callable[[], None]], _Counter],
    converted_snapshot: dict[str, tuple[bytes, int]],
    signum: int,
) -> None:
    """A real signal to this process at every operation: the operation in flight completes,
    the phase is undone, and the signal reaches the handler that was there before (SIGTERM's
    and SIGHUP's are this test's own, so that the signal ends the run, not the test process)."""
    total = _operations(pristine)
    before = snapshot(pristine)

    class Terminated(Exception):
        pass

    def on_term(number: int, frame: Any) -> None:
        raise Terminated

    previous = {s: signal.signal(s, on_term) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        for at in range(1, total + 1):
            root = _fresh(pristine, tmp_path / str(at))
            counter = counted(at, lambda: os.kill(os.getpid(), signum))
            expected: type[BaseException] = WriteInterrupted if signum == signal.SIGINT else Terminated
            with pytest.raises(expected) as info:
                convert(root, write=_writer(counter))
            _no_temp_files(root)
            if at == total:
                # During the last operation: nothing is left to do, so the run completes.
                assert snapshot(root) == converted_snapshot
                assert signum != signal.SIGINT or not info.value.restored  # type: ignore[attr-defined]
                continue
            if signum == signal.SIGINT:
                assert isinstance(info.value, WriteInterrupted) and info.value.restored
            assert snapshot(root) == before, f"{signal.Signals(signum).name} at operation {at} of {total}"
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.0005)


@pytest.mark.parametrize("signum", _SIGNALS, ids=_signal_name)
def test_a_real_convert_process_interrupted_while_writing(tmp_path: Path, signum: int) -> None:
    """``python -m dataforge convert`` on 1,200 jobs, signalled as soon as its first file is written."""
    root = make_jobs_tree(tmp_path / "backend", jobs=1200)
    before = snapshot(root)
    first = root / "app" / "tasks" / "_common.py"  # the first file the write phase creates
    proc = subprocess.Popen(
        [sys.executable, "-m", "dataforge", "convert", str(root), "--quiet", "--jobs", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        _wait_for(lambda: first.exists() or proc.poll() is not None, 600, "the write phase to start")
        proc.send_signal(signum)
        _out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    after = snapshot(root)
    _no_temp_files(root)
    if signum == signal.SIGINT:
        assert proc.returncode == 130, err
    else:
        # SIGTERM and SIGHUP are delivered again with their default action: the process ends by them.
        assert proc.returncode == -signum, err
    if after != before:
        # Only possible when the signal came after the last write: then it is all converted.
        reference = make_jobs_tree(tmp_path / "reference", jobs=1200)
        assert convert(reference, jobs=2).exit_code(check=False) == 0
        assert after == snapshot(reference), "neither the tree as it was nor fully converted"
        assert "after the last write" in err or signum != signal.SIGINT
    else:
        assert signum != signal.SIGINT or "every file it had written was restored" in err, err
