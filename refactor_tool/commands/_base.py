"""What every codemod command shares: no metadata copy, statement alignment, name choice."""

from __future__ import annotations

from collections.abc import Iterable

import libcst as cst
from libcst.codemod import Codemod

__all__ = ["Command", "dotted", "free_name", "statement_map"]


class Command(Codemod):
    """A libcst codemod that declares no metadata providers.

    ``Codemod.transform_module`` wraps the tree in a ``MetadataWrapper``, which deep-copies it
    (measured: as long as a parse). These commands read their facts with :mod:`ast` instead
    (see :mod:`refactor_tool.analysis`), so they skip the copy and run the transform directly.
    """

    def transform_module(self, tree: cst.Module) -> cst.Module:
        return self.transform_module_impl(tree)


def statement_map(body: Iterable[cst.BaseStatement], ast_count: int) -> list[int] | None:
    """``ast.Module.body`` index -> ``cst.Module.body`` index.

    ``a; b`` is two statements for ``ast`` and one ``SimpleStatementLine`` for libcst; every
    compound statement is one in both. ``None`` when the counts disagree (never expected;
    callers then fall back to a whole-tree transform).
    """
    out: list[int] = []
    for i, stmt in enumerate(body):
        width = len(stmt.body) if isinstance(stmt, cst.SimpleStatementLine) else 1
        out.extend([i] * width)
    return out if len(out) == ast_count else None


def free_name(candidates: Iterable[str], taken: set[str]) -> str:
    """The first candidate not in ``taken`` (the candidates must end in an unbounded sequence)."""
    for name in candidates:
        if name not in taken:
            return name
    raise AssertionError("candidate sequence exhausted")  # pragma: no cover - callers pass infinite sequences


def dotted(name: str) -> cst.Name | cst.Attribute:
    """``a.b.c`` as a libcst Name/Attribute chain (what import statements hold)."""
    parts = name.split(".")
    node: cst.Name | cst.Attribute = cst.Name(parts[0])
    for part in parts[1:]:
        node = cst.Attribute(value=node, attr=cst.Name(part))
    return node
