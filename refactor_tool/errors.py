"""Errors of the codemod, rooted at :class:`dataforge.errors.DataForgeError`.

The runner never lets them escape: it turns each one into a per-file result. They exist so the
codemod commands (usable on their own, as libcst codemods) can say *which line* they refused
and *why*, and so callers can tell a deliberate refusal from a bug.
"""

from __future__ import annotations

from dataclasses import dataclass

from dataforge.errors import DataForgeError

__all__ = ["ConversionRefused", "RefactorError", "Refusal"]


class RefactorError(DataForgeError):
    """Root of the codemod's deliberate errors."""


@dataclass(frozen=True, order=True)
class Refusal:
    """One reason a file cannot be converted faithfully: the line it is about and what to do.

    A plain value (picklable, comparable, ordered by line) so per-file results can cross process
    boundaries and be compared between ``--jobs 1`` and ``--jobs N`` runs.
    """

    line: int
    reason: str

    def format(self, path: str) -> str:
        """``path:line: reason``, the form compilers and linters use (editors can jump to it)."""
        return f"{path}:{self.line}: {self.reason}"


class ConversionRefused(RefactorError):
    """A codemod command found shapes it cannot convert without changing behaviour.

    ``refusals`` lists every reason (not only the first), so one run tells the user everything
    to fix in that file.
    """

    def __init__(self, refusals: list[Refusal], path: str = "<module>") -> None:
        self.refusals = list(refusals)
        self.path = path
        lines = "; ".join(r.format(path) for r in self.refusals)
        super().__init__(f"refused: {lines}")
