"""Remove top-level statements from a module, and what only they used.

A legacy app module loses a signal handler or ``discover_scripts()``; the imports and module
state that only those used (``from croniter import croniter``, ``_started = {}``, ``import
scripts``) must go too, or the module keeps importing things for nothing (``import scripts``
even fails once ``scripts/`` is gone). Everything else stays byte for byte.

The rule, to a fixed point: an import name, a ``def``, a ``class`` or a plain assignment goes
when every name it binds is read by removed code and by nothing that stays. Reads are every
``Name`` loaded anywhere in a statement (function bodies included, shadowing not followed),
so the rule can only keep too much. A statement that stays but reads a name only removed
statements bound would break: that is returned, never silently left (the command refuses).
A literal ``__all__`` loses the names that went. Blank lines: the statement after a removed
run keeps at least the blank lines the first removed statement had (a section break of an
import block, the two lines above a ``def``).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import libcst as cst

from refactor_tool.analysis import statement_bindings
from refactor_tool.commands._base import statement_map
from refactor_tool.import_layout import Statement, is_import_line, required_blank_lines

__all__ = ["Pruned", "Removed", "loaded_names", "prune"]

#: (index of the statement in ``ast.Module.body``, index of the import alias or ``None``)
_Unit = tuple[int, int | None]


@dataclass(frozen=True, order=True)
class Removed:
    """A top-level name the module no longer binds, and the line that bound it."""

    line: int
    name: str
    #: Bound by an import (not something the module defined).
    imported: bool = False


@dataclass
class Pruned:
    module: cst.Module
    removed: list[Removed] = field(default_factory=list)
    #: ``(line, name)``: a statement that stays reads a name that went.
    broken: list[tuple[int, str]] = field(default_factory=list)


def loaded_names(node: ast.AST) -> set[str]:
    """Every name ``node`` reads, anywhere inside it."""
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def _is_all(stmt: ast.stmt) -> bool:
    targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target] if isinstance(stmt, ast.AnnAssign) else []
    return any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets)


def _prunable(stmt: ast.stmt) -> bool:
    if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return True
    if isinstance(stmt, ast.Assign):
        return all(isinstance(t, ast.Name) for t in stmt.targets) and not _is_all(stmt)
    if isinstance(stmt, ast.AnnAssign):
        return isinstance(stmt.target, ast.Name) and not _is_all(stmt)
    return False


def _alias_binding(node: ast.Import | ast.ImportFrom, alias: ast.alias) -> str | None:
    if alias.name == "*":
        return None
    if isinstance(node, ast.Import) and alias.asname is None:
        return alias.name.split(".")[0]
    return alias.asname or alias.name


def prune(
    tree: cst.Module,
    tree_ast: ast.Module,
    remove: Iterable[int],
    rewritten: Mapping[int, set[str]] | None = None,
    rebound: Iterable[str] = (),
) -> Pruned:
    """``tree`` without the top-level statements at ``ast`` indexes ``remove`` and what only they
    used (see the module docstring). ``rewritten``: statements the caller rewrites afterwards, with
    the names they will read (what they read before counts as read by removed code). ``rebound``:
    names the caller binds again (they are not gone)."""
    body = tree_ast.body
    removed_stmts = set(remove)
    units: dict[_Unit, set[str]] = {}
    for i, stmt in enumerate(body):
        if isinstance(stmt, ast.Import | ast.ImportFrom):
            for k, alias in enumerate(stmt.names):
                name = _alias_binding(stmt, alias)
                units[(i, k)] = {name} if name else set()
        else:
            units[(i, None)] = statement_bindings(stmt)
    gone: set[_Unit] = {u for u in units if u[0] in removed_stmts}
    kept_names = set(rebound)
    uses = {i: loaded_names(stmt) for i, stmt in enumerate(body) if not isinstance(stmt, ast.Import | ast.ImportFrom)}
    released: set[str] = set()
    for i, names in (rewritten or {}).items():
        released |= uses[i]
        uses[i] = set(names)
    while True:
        live = set().union(*(uses[i] for i in uses if (i, None) not in gone))
        dead = set(released).union(*(uses[i] for i in uses if (i, None) in gone))
        newly = {
            u
            for u, names in units.items()
            if u not in gone
            and names
            and not names & kept_names
            and names <= dead
            and not names & live
            and (u[1] is not None or _prunable(body[u[0]]))
        }
        if not newly:
            break
        gone |= newly
    kept_bindings = kept_names.union(*(names for u, names in units.items() if u not in gone))
    removed_names = set().union(*(names for u, names in units.items() if u in gone)) - kept_bindings
    broken = sorted((body[i].lineno, name) for i in uses if (i, None) not in gone for name in uses[i] & removed_names)
    removed = sorted(
        {Removed(body[u[0]].lineno, n, u[1] is not None) for u in gone for n in units[u] if n in removed_names}
    )
    module = _rewrite(tree, body, gone)
    module = _drop_from_all(module, {r.name for r in removed})
    return Pruned(module, removed, broken)


def _rewrite(tree: cst.Module, body: list[ast.stmt], gone: set[_Unit]) -> cst.Module:
    mapping = statement_map(tree.body, len(body))
    assert mapping is not None, "ast and libcst disagree on the statement count"
    by_cst: dict[int, list[int]] = defaultdict(list)
    for a, c in enumerate(mapping):
        by_cst[c].append(a)
    out: list[Statement] = []
    carried_blanks = 0  # blank lines of the first statement of a removed run
    for c, stmt in enumerate(tree.body):
        new = _rewrite_statement(stmt, by_cst[c], body, gone)
        if new is None:
            if not carried_blanks:
                carried_blanks = _blank_lines(stmt) or -1
            continue
        if carried_blanks and not out:
            # The module's first statements went: this one starts the module as the first did.
            new = _with_blank_lines(new, _blank_lines(tree.body[0]))
        elif carried_blanks and is_import_line(out[-1]) and not is_import_line(new):
            # Now the first statement after the import block: the blank lines isort wants there.
            new = _with_blank_lines(new, required_blank_lines(new))
        elif carried_blanks > 0 and _blank_lines(new) < carried_blanks:
            new = _with_blank_lines(new, carried_blanks)
        carried_blanks = 0
        out.append(new)
    return tree.with_changes(body=out)


def _with_blank_lines(stmt: Statement, blanks: int) -> Statement:
    attached = list(stmt.leading_lines)[_blank_lines(stmt) :]
    return stmt.with_changes(leading_lines=[cst.EmptyLine() for _ in range(blanks)] + attached)


def _blank_lines(stmt: Statement) -> int:
    count = 0
    for line in stmt.leading_lines:
        if line.comment is not None:
            break
        count += 1
    return count


def _rewrite_statement(stmt: Statement, indexes: list[int], body: list[ast.stmt], gone: set[_Unit]) -> Statement | None:
    if not isinstance(stmt, cst.SimpleStatementLine):
        return None if (indexes[0], None) in gone else stmt
    smalls: list[cst.BaseSmallStatement] = []
    for a, small in zip(indexes, stmt.body, strict=True):
        node = body[a]
        if isinstance(node, ast.Import | ast.ImportFrom):
            assert isinstance(small, cst.Import | cst.ImportFrom)
            if isinstance(small.names, cst.ImportStar):
                if (a, 0) not in gone:
                    smalls.append(small)
                continue
            names = [alias for k, alias in enumerate(small.names) if (a, k) not in gone]
            if not names:
                continue
            if len(names) < len(small.names):
                last_comma = small.names[-1].comma if isinstance(small, cst.ImportFrom) and small.lpar else None
                names[-1] = names[-1].with_changes(comma=last_comma or cst.MaybeSentinel.DEFAULT)
                small = small.with_changes(names=names)
            smalls.append(small)
        elif (a, None) not in gone:
            smalls.append(small)
    if not smalls:
        return None
    if len(smalls) == len(stmt.body) and all(s is o for s, o in zip(smalls, stmt.body, strict=True)):
        return stmt
    smalls[-1] = smalls[-1].with_changes(semicolon=cst.MaybeSentinel.DEFAULT)
    return stmt.with_changes(body=smalls)


def _drop_from_all(module: cst.Module, names: set[str]) -> cst.Module:
    """A literal ``__all__`` without ``names``."""
    if not names:
        return module
    body = list(module.body)
    for i, stmt in enumerate(body):
        if not isinstance(stmt, cst.SimpleStatementLine) or len(stmt.body) != 1:
            continue
        small = stmt.body[0]
        if isinstance(small, cst.Assign) and len(small.targets) == 1:
            target, value = small.targets[0].target, small.value
        elif isinstance(small, cst.AnnAssign) and small.value is not None:
            target, value = small.target, small.value
        else:
            continue
        if not (isinstance(target, cst.Name) and target.value == "__all__") or not isinstance(
            value, cst.List | cst.Tuple
        ):
            continue
        elements = list(value.elements)
        kept = [e for e in elements if not (isinstance(e.value, cst.SimpleString) and e.value.evaluated_value in names)]
        if len(kept) == len(elements):
            continue
        if kept and kept[-1] is not elements[-1]:
            kept[-1] = kept[-1].with_changes(comma=elements[-1].comma)
        if isinstance(value, cst.Tuple) and len(kept) == 1 and not isinstance(kept[0].comma, cst.Comma):
            kept[0] = kept[0].with_changes(comma=cst.Comma())  # ("x",), not ("x")
        new_value = value.with_changes(elements=kept)
        new_small = small.with_changes(value=new_value)
        body[i] = stmt.with_changes(body=[new_small])
    return module.with_changes(body=body)
