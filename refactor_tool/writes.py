"""Phase 2 of a conversion: every file operation, all or nothing, even when interrupted.

Each file is written to a temp file beside it and renamed over it (a reader sees the old file
or the new one, never half). Before a file is touched, its content is checked against what
phase 1 read. If an operation fails, every operation already done is undone in reverse order.

SIGINT and SIGTERM (and SIGHUP) do not stop the phase in the middle of an operation, where a
temp file or a half-done rename could be left: while it runs they only set a flag, checked
between operations. Then everything done so far is undone (the signals still deferred, so a
second Ctrl-C cannot cut the undo short), the previous handlers come back and the signal is
delivered again: Ctrl-C raises :class:`WriteInterrupted` (a ``KeyboardInterrupt`` that says
whether the tree was restored), SIGTERM still ends the process. A signal that arrives after
the last operation finds the tree fully converted. Either way the tree is exactly as before
or exactly as converted; ``SIGKILL`` and power loss cannot be caught, and a converted tree is
meant to live under version control.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from refactor_tool.report import Change

__all__ = ["TEMP_SUFFIX", "WriteInterrupted", "Writer", "apply_changes", "atomic_write"]

#: Temp files of the write phase end with this (``verify`` skips them when copying a tree).
TEMP_SUFFIX = ".dataforge-tmp"
_DEFERRED_SIGNALS = tuple(
    s for s in (getattr(signal, name, None) for name in ("SIGINT", "SIGTERM", "SIGHUP")) if s is not None
)


class WriteInterrupted(KeyboardInterrupt):
    """Ctrl-C during the write phase. ``restored``: every file is as it was before the run
    (else the signal came after the last write and the tree is fully converted)."""

    def __init__(self, restored: bool) -> None:
        self.restored = restored
        super().__init__("interrupted: the tree was restored" if restored else "interrupted after the last write")


class _WriteFailed(Exception):
    """One operation failed; the phase is undone."""


class _Interrupted(Exception):
    """A deferred signal arrived; the phase is undone, then the signal delivered again."""


def atomic_write(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write ``data`` to a temp file beside ``path`` and rename it over ``path``.

    A reader, or a run interrupted at any point, sees the old file or the new one, never half
    of one. No fsync: it would make a 2,000-file conversion wait on the disk for every file, and
    a converted tree is a working copy under version control, not a database. The temp file is
    created with ``0o666`` minus the umask (``os.open`` applies it), like a plain open.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{TEMP_SUFFIX}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


#: How phase 2 writes one file (tests inject failures through it).
Writer = Callable[[Path, bytes, int | None], None]


class _Deferred:
    """The signals that arrived while deferred, and whether the phase was undone."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self.restored = False


@contextmanager
def _signals_deferred() -> Iterator[_Deferred]:
    """While inside, SIGINT/SIGTERM/SIGHUP are recorded instead of acting; on the way out the
    first one is delivered again (see the module docstring).

    Only the main thread can set handlers; elsewhere (a host application's worker thread) the
    signals keep their handlers and Python delivers them to the main thread anyway.
    """
    state = _Deferred()
    if threading.current_thread() is not threading.main_thread():
        yield state
        return

    def record(signum: int, frame: FrameType | None) -> None:
        state.received.append(signum)

    previous = {signum: signal.signal(signum, record) for signum in _DEFERRED_SIGNALS}
    try:
        yield state
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if state.received:
        signum = state.received[0]
        if signum == signal.SIGINT and previous[signum] is signal.default_int_handler:
            raise WriteInterrupted(state.restored)
        signal.raise_signal(signum)  # to the handler the caller had


def apply_changes(
    root: Path,
    changes: list[Change],
    removed_dirs: Sequence[str] = (),
    write: Writer = atomic_write,
) -> str | None:
    """Perform ``changes`` all-or-nothing. Returns ``None``, or what failed (everything undone).

    A deferred signal undoes everything too, then is delivered again (see the module docstring).
    """
    with _signals_deferred() as deferred:
        undo: list[Callable[[], None]] = []
        try:
            for change in changes:
                if deferred.received:
                    raise _Interrupted
                _apply(root, change, write, undo)
            for directory in removed_dirs:
                if deferred.received:
                    raise _Interrupted
                path = root / directory
                try:
                    path.rmdir()
                except OSError as exc:
                    raise _WriteFailed(f"{directory}/: {exc.strerror or exc}") from exc
                undo.append(lambda p=path: p.mkdir(exist_ok=True))  # type: ignore[misc]
        except _Interrupted:
            problems = _rollback(undo)
            deferred.restored = not problems
            return _failure("interrupted", problems)
        except _WriteFailed as exc:
            return _failure(str(exc), _rollback(undo))
        except Exception as exc:  # noqa: BLE001 - the tree must be restored whatever went wrong
            return _failure(f"unexpected error while writing: {type(exc).__name__}: {exc}", _rollback(undo))
        except BaseException:
            _rollback(undo)  # KeyboardInterrupt raised by a test's writer, SystemExit...
            raise
    return None


def _apply(root: Path, change: Change, write: Writer, undo: list[Callable[[], None]]) -> None:
    path = root / change.path
    current = _read(path)
    if current != change.old:
        raise _WriteFailed(f"{change.path} changed on disk since it was read; re-run")
    mode = _mode(path)
    created_dirs = _missing_parents(path.parent, root)
    try:
        if change.new is None:
            path.unlink()
        else:
            write(path, change.new, mode if mode is not None else change.mode)
    except OSError as exc:
        # A writer that failed half-way (a created parent directory) is undone with the rest.
        undo.append(_undo_for(path, change.old, mode, created_dirs))
        raise _WriteFailed(f"{change.path}: {exc.strerror or exc}") from exc
    undo.append(_undo_for(path, change.old, mode, created_dirs))


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _mode(path: Path) -> int | None:
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        return None


def _missing_parents(directory: Path, root: Path) -> list[Path]:
    missing: list[Path] = []
    while not directory.exists() and directory != root and root in directory.parents:
        missing.append(directory)
        directory = directory.parent
    return missing


def _undo_for(path: Path, old: bytes | None, mode: int | None, created_dirs: list[Path]) -> Callable[[], None]:
    def undo() -> None:
        if old is None:
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            for directory in created_dirs:  # deepest first
                try:
                    directory.rmdir()
                except FileNotFoundError:
                    pass
        elif _read(path) != old:
            atomic_write(path, old, mode)

    return undo


def _rollback(undo: list[Callable[[], None]]) -> list[str]:
    """Undo in reverse order; what could not be undone (it should be nothing)."""
    problems = []
    for action in reversed(undo):
        try:
            action()
        except OSError as exc:
            problems.append(f"{exc.filename}: {exc.strerror or exc}")
    return problems


def _failure(error: str, problems: list[str]) -> str:
    if problems:
        return f"{error}; AND the undo failed for {', '.join(problems)}: restore those files from version control"
    return error
