"""Per-file results of a conversion, the summary, the JSON report and the unified diff.

A conversion never raises for a file: every file ends up here with one status and its reasons.
"""

from __future__ import annotations

import difflib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["STATUSES", "Change", "ConvertReport", "FileReport", "Status", "counted"]

Status = Literal["changed", "unchanged", "skipped", "refused", "failed"]
#: In the order the summary prints them.
STATUSES: tuple[Status, ...] = ("changed", "unchanged", "skipped", "refused", "failed")
REPORT_VERSION = 1
#: Longer name lists are counted in the summary (the JSON report keeps every name).
SHOWN_NAMES = 5


def counted(names: list[str], limit: int = SHOWN_NAMES) -> str:
    """``a, b, c`` for a short list; ``3000 (a, b, ... and 2995 more)`` for a long one."""
    if len(names) <= limit:
        return ", ".join(names)
    return f"{len(names)} ({', '.join(names[:limit])}, ... and {len(names) - limit} more; the JSON report lists all)"


@dataclass
class FileReport:
    """One input file (or generated file: the registry, the map) and what happened to it."""

    path: str
    kind: str
    status: Status
    #: Where the converted file goes (scripts), ``None`` when changed in place.
    target: str | None = None
    #: ``path:line: reason`` for refused and failed files; one line for skipped ones.
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    task_name: str | None = None
    function: str | None = None
    #: The registry: every task name this run added to REGISTERED_TASKS.
    added: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "kind": self.kind,
            "status": self.status,
            "target": self.target,
            "reasons": list(self.reasons),
            "notes": list(self.notes),
            "task_name": self.task_name,
            "function": self.function,
            **({"added": list(self.added)} if self.added else {}),
        }


@dataclass(frozen=True)
class Change:
    """One file operation of the write phase. ``new is None`` deletes; ``old is None`` creates."""

    path: str
    old: bytes | None
    new: bytes | None
    #: The file this one was converted from (a script), for rename/copy headers in the diff.
    origin: str | None = None
    #: The origin's content (what a rename/copy diff compares against).
    origin_data: bytes | None = None
    #: File mode to give a created file (the origin's), ``None`` for the default.
    mode: int | None = None


@dataclass
class ConvertReport:
    """Everything a conversion did or would do."""

    root: str
    mode: str
    files: list[FileReport]
    changes: list[Change]
    #: Directories the write phase removes because they became empty.
    removed_dirs: list[str] = field(default_factory=list)
    #: Set when the write phase failed and rolled back: what failed and why.
    write_error: str | None = None

    def counts(self) -> dict[str, int]:
        counter = Counter(f.status for f in self.files)
        return {status: counter.get(status, 0) for status in STATUSES}

    @property
    def has_errors(self) -> bool:
        return self.write_error is not None or any(f.status in ("refused", "failed") for f in self.files)

    @property
    def would_change(self) -> bool:
        return bool(self.changes) or bool(self.removed_dirs)

    def exit_code(self, check: bool) -> int:
        """3 when the write phase failed (rolled back: the disk, permissions), 2 when any file
        was refused or failed; with ``check``, 1 when anything would change; else 0."""
        if self.write_error is not None:
            return 3
        if self.has_errors:
            return 2
        if check and self.would_change:
            return 1
        return 0

    def to_json(self) -> dict[str, Any]:
        return {
            "version": REPORT_VERSION,
            "root": self.root,
            "mode": self.mode,
            "summary": self.counts(),
            "write_error": self.write_error,
            "files": [f.to_json() for f in self.files],
            "operations": [
                {
                    "op": "delete" if c.new is None else "create" if c.old is None else "update",
                    "path": c.path,
                    "origin": c.origin,
                }
                for c in self.changes
            ]
            + [{"op": "rmdir", "path": d, "origin": None} for d in self.removed_dirs],
        }

    def summary_lines(self, verbose: bool = True) -> list[str]:
        """Human summary: one line per file that is not plainly unchanged, then the counts."""
        lines: list[str] = []
        for f in self.files:
            if f.status == "unchanged":
                continue
            if f.status in ("refused", "failed"):
                lines.extend(f"{f.status}: {r}" for r in f.reasons)
                continue
            if not verbose:
                continue
            where = f" -> {f.target}" if f.target and f.target != f.path else ""
            reason = f" ({'; '.join(f.reasons)})" if f.reasons else ""
            lines.append(f"{f.status}: {f.path}{where}{reason}")
            lines.extend(f"  note: {n}" for n in f.notes)
        if self.write_error:
            lines.append(f"failed: {self.write_error} (every file written by this run was restored)")
        counts = self.counts()
        verb = "would be " if self.mode != "write" else ""
        lines.append(", ".join(f"{counts[s]} {verb if s == 'changed' else ''}{s}" for s in STATUSES))
        return lines

    def diff(self) -> bytes:
        """A git-style unified diff of every file the write phase creates, changes or deletes.

        Bytes, like ``git diff``: every file keeps its own encoding, BOM and line endings, so the
        output applies with ``git apply`` / ``patch`` and reproduces the write exactly.
        """
        deleted = {c.path for c in self.changes if c.new is None}
        shown_as_rename = {
            c.origin for c in self.changes if c.origin is not None and c.origin in deleted and c.old is None
        }
        out: list[bytes] = []
        for c in self.changes:
            if c.new is None and c.path in shown_as_rename:
                continue
            moved = c.origin is not None and c.old is None and c.new is not None
            a_path = c.origin if moved and c.origin is not None else c.path
            header = [f"diff --git a/{a_path} b/{c.path}"]
            old_bytes = c.origin_data if moved else c.old
            if moved:
                verb = "rename" if c.origin in deleted else "copy"
                header += [f"{verb} from {c.origin}", f"{verb} to {c.path}"]
            elif c.old is None:
                header.append("new file mode 100644")
            if c.new is None:
                header.append("deleted file mode 100644")
            out.append(("\n".join(header) + "\n").encode())
            from_name = "/dev/null" if old_bytes is None else f"a/{a_path}"
            to_name = "/dev/null" if c.new is None else f"b/{c.path}"
            out.extend(
                difflib.diff_bytes(
                    difflib.unified_diff,
                    _lines(old_bytes),
                    _lines(c.new),
                    from_name.encode(),
                    to_name.encode(),
                    lineterm=b"\n",
                )
            )
        return b"".join(out)


def _lines(data: bytes | None) -> list[bytes]:
    if data is None:
        return []
    lines = data.splitlines(keepends=True)
    if lines and not lines[-1].endswith((b"\n", b"\r")):
        lines[-1] += b"\n\\ No newline at end of file\n"
    return lines
