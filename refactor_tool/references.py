"""Where a backend's code still refers to a module, or to a name of a module.

When the conversion removes a function (``discover_scripts``), renames a module
(``app.celery_tasks``) or deletes one (``app.celery_signals``), the code that used them breaks,
at import (``from app.scheduler.registry import discover_scripts``) or when it runs
(``registry.discover_scripts()``). The report names every such place with its file and line,
so nobody has to find them by a failed deploy. The same search tells which files still read a
legacy setting (``config.BROKER_URL``).

What counts, per file (read with :mod:`ast`, relative imports resolved against the file's
package): an import of the module or of the name; an attribute chain that reaches the name
through a name bound to the module (``registry.discover_scripts``,
``app.scheduler.registry.discover_scripts``); a string that is the module's dotted name or a
``module:attribute`` spec naming it (``include=["app.celery_tasks"]``). Shadowing is not
followed, so a search can only find too much, never miss an import. Pure: bytes in, references out.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = ["Reference", "Targets", "find_references", "module_of_path", "references_in"]


@dataclass(frozen=True, order=True)
class Reference:
    """``path:line`` refers to ``module`` (``name is None``) or to ``module.name``."""

    path: str
    line: int
    module: str
    name: str | None = None

    def format(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass(frozen=True)
class Targets:
    """What to look for: whole modules, and names of modules."""

    modules: frozenset[str] = frozenset()
    #: module -> names of it.
    names: Mapping[str, frozenset[str]] | None = None

    def __bool__(self) -> bool:
        return bool(self.modules) or any(self.names.values() if self.names else ())

    def _needles(self) -> list[bytes]:
        out = [m.rpartition(".")[2].encode() for m in self.modules]
        for names in (self.names or {}).values():
            out.extend(n.encode() for n in names)
        return out


def module_of_path(path: str) -> tuple[str, bool]:
    """``app/api/x.py`` -> ``("app.api.x", False)``; ``app/__init__.py`` -> ``("app", True)``."""
    parts = path.removesuffix(".py").split("/")
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def _resolve_from(node: ast.ImportFrom, package: str) -> str | None:
    if node.level == 0:
        return node.module or ""
    parts = package.split(".") if package else []
    if node.level - 1 > len(parts):
        return None
    base = parts[: len(parts) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _dotted(node: ast.expr) -> list[str] | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return parts[::-1]


def _within(module: str, target: str) -> bool:
    return module == target or module.startswith(target + ".")


def find_references(path: str, source: bytes, targets: Targets) -> list[Reference]:
    """Every place of the file ``path`` (POSIX, relative to the backend) that refers to a target.

    A file that does not parse has no references (it is reported elsewhere).
    """
    if not targets or not any(needle in source for needle in targets._needles()):
        return []
    try:
        tree = ast.parse(source, filename=path)
    except (SyntaxError, ValueError):
        return []
    own, is_package = module_of_path(path)
    package = own if is_package else own.rpartition(".")[0]
    names = dict(targets.names or {})
    found: set[Reference] = set()
    #: local name -> the dotted module or attribute it is bound to
    bound: dict[str, str] = {}

    def touch(line: int, dotted: str) -> None:
        for module in targets.modules:
            if _within(dotted, module):
                found.add(Reference(path, line, module))
        for module, wanted in names.items():
            if dotted.startswith(module + "."):
                name = dotted[len(module) + 1 :].split(".")[0]
                if name in wanted:
                    found.add(Reference(path, line, module, name))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                touch(node.lineno, alias.name)
                if alias.asname:
                    bound[alias.asname] = alias.name
                else:
                    top = alias.name.split(".")[0]
                    bound.setdefault(top, top)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_from(node, package)
            if base is None:
                continue
            for alias in node.names:
                if alias.name == "*":
                    touch(node.lineno, base)
                    continue
                full = f"{base}.{alias.name}" if base else alias.name
                touch(node.lineno, full)
                bound[alias.asname or alias.name] = full
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            parts = _dotted(node)
            if parts is not None and parts[0] in bound:
                touch(node.lineno, ".".join([bound[parts[0]], *parts[1:]]))
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id in bound:
            touch(node.lineno, bound[node.id])
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
            for module in targets.modules:
                if text == module or text.startswith(module + ":"):
                    found.add(Reference(path, node.lineno, module))
    return sorted(found)


def references_in(sources: Iterable[tuple[str, bytes]], targets: Targets) -> list[Reference]:
    """:func:`find_references` over many files, in order."""
    out: list[Reference] = []
    for path, source in sources:
        out.extend(find_references(path, source, targets))
    return out
