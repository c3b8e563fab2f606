"""The backend's Python files, as they are on disk and as the write phase will leave them.

Some decisions depend on the *converted* tree, not the input: whether anything still imports a
module the conversion would delete, which files still call a function it removes, who still
reads a legacy setting. :func:`converted_sources` answers them from the disk and the planned
file operations, before anything is written.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from refactor_tool.report import Change

__all__ = ["converted_sources", "python_files"]


def python_files(directory: Path) -> Iterator[Path]:
    """Python files under ``directory``, in sorted order, skipping caches and folders that
    cannot be packages (``.venv``, ``node-modules``...)."""
    for path in sorted(directory.iterdir()):
        if path.is_dir():
            if path.name == "__pycache__" or not path.name.isidentifier():
                continue
            yield from python_files(path)
        elif path.suffix == ".py" and path.is_file():
            yield path


def converted_sources(root: Path, changes: Iterable[Change]) -> dict[str, bytes]:
    """Every ``.py`` file of the tree once ``changes`` are written: relative POSIX path -> bytes."""
    planned = {c.path: c.new for c in changes}
    out: dict[str, bytes] = {}
    for path in python_files(root):
        rel = path.relative_to(root).as_posix()
        if rel in planned:
            continue
        try:
            out[rel] = path.read_bytes()
        except OSError:
            continue  # unreadable: reported by whoever converts it; nothing to search in
    for rel, new in planned.items():
        if new is not None and rel.endswith(".py"):
            out[rel] = new
    return dict(sorted(out.items()))
