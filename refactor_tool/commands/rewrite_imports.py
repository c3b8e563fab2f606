"""Rewrite imports of the legacy scripts package to the tasks package.

``from scripts._common import x`` -> ``from app.tasks._common import x``,
``import scripts.lib.x as y`` -> ``import app.tasks.lib.x as y``, and ``import scripts.lib.x``
-> ``import app.tasks.lib.x`` together with every ``scripts.lib.x...`` use in the module (the
bound name changes from ``scripts`` to ``app``). Relative imports (``from . import _common``)
are kept as written: helpers move along with the same layout, so they still resolve.

The command also resolves what each import needs (``dependencies``) against the tree's module
index, so the runner can refuse a module whose helper is missing or was itself refused.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import libcst as cst
from libcst.codemod import CodemodContext
from libcst.helpers import get_full_name_for_node

from refactor_tool.analysis import ModuleFacts, ScriptsImport, analyze
from refactor_tool.commands._base import Command, dotted, statement_map
from refactor_tool.errors import ConversionRefused, Refusal
from refactor_tool.options import ConvertOptions

__all__ = ["ModuleIndex", "RewriteImportsCommand", "resolve_imports"]


@dataclass(frozen=True)
class ModuleIndex:
    """What exists under the scripts folder: module files and package directories (dotted)."""

    #: ``scripts.x`` for scripts/x.py, ``scripts.lib`` for scripts/lib/__init__.py.
    modules: frozenset[str] = field(default_factory=frozenset)
    #: Every directory that holds Python files (namespace or regular package).
    packages: frozenset[str] = field(default_factory=frozenset)

    def exists(self, name: str) -> bool:
        return name in self.modules or name in self.packages


def _prefixes(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def resolve_imports(
    facts: ModuleFacts, module: str, is_package: bool, index: ModuleIndex | None, scripts_package: str
) -> tuple[list[tuple[str, int]], list[Refusal]]:
    """``(dependencies, problems)``: the scripts modules each import executes, and what is wrong.

    Dependencies are ``(module, line)``; a module depends on every package ``__init__`` on
    the way (importing ``scripts.lib.x`` runs ``scripts/lib/__init__.py``).
    """
    deps: list[tuple[str, int]] = []
    problems: list[Refusal] = []
    current_package = module if is_package else module.rpartition(".")[0]

    def need(name: str, line: int) -> None:
        for prefix in _prefixes(name):
            if index is None or prefix in index.modules:
                deps.append((prefix, line))

    for si in facts.scripts_imports:
        if si.level > 0:
            parts = current_package.split(".") if current_package else []
            if si.level - 1 >= len(parts) or not current_package:
                problems.append(
                    Refusal(
                        si.line,
                        f"relative import with {si.level} dot(s) reaches above the {scripts_package} package; "
                        "legacy raised ImportError here, the moved module would import something else",
                    )
                )
                continue
            base = ".".join(parts[: len(parts) - (si.level - 1)])
            target = f"{base}.{si.module}" if si.module else base
        else:
            target = si.module
        if si.form in ("import", "import-as"):
            if index is not None and not index.exists(target):
                problems.append(Refusal(si.line, f"imports {target}, which does not exist under {scripts_package}/"))
                continue
            need(target, si.line)
            continue
        if "*" in si.names and target == scripts_package:
            problems.append(
                Refusal(
                    si.line,
                    f"star import from the {scripts_package} package itself: the tasks package's __init__ is a "
                    "different module; import the names you need explicitly",
                )
            )
            continue
        if index is not None and not index.exists(target):
            problems.append(Refusal(si.line, f"imports {target}, which does not exist under {scripts_package}/"))
            continue
        need(target, si.line)
        for name in si.names:
            if name == "*":
                continue
            sub = f"{target}.{name}"
            if index is None or index.exists(sub):
                if index is not None:
                    need(sub, si.line)
            elif target not in index.modules:
                problems.append(Refusal(si.line, f"imports {sub}, which does not exist under {scripts_package}/"))
    seen: set[str] = set()
    unique = []
    for dep, line in deps:
        if dep != module and dep not in seen:
            seen.add(dep)
            unique.append((dep, line))
    return unique, problems


class _Rewriter(cst.CSTTransformer):
    def __init__(self, old: str, new: str, rewrite_names: bool) -> None:
        super().__init__()
        self.old = old
        self.new = new
        self.rewrite_names = rewrite_names

    def _map(self, name: str) -> str | None:
        if name == self.old or name.startswith(self.old + "."):
            return self.new + name[len(self.old) :]
        return None

    # Imports are rebuilt from the original node: a Name inside them is not a value.
    def leave_Import(self, original_node: cst.Import, updated_node: cst.Import) -> cst.Import:
        aliases = []
        for alias in original_node.names:
            full = get_full_name_for_node(alias.name)
            mapped = self._map(full) if full else None
            aliases.append(alias.with_changes(name=dotted(mapped)) if mapped else alias)
        return original_node.with_changes(names=aliases)

    def leave_ImportFrom(self, original_node: cst.ImportFrom, updated_node: cst.ImportFrom) -> cst.ImportFrom:
        if original_node.relative or original_node.module is None:
            return original_node
        full = get_full_name_for_node(original_node.module)
        mapped = self._map(full) if full else None
        return original_node.with_changes(module=dotted(mapped)) if mapped else original_node

    def leave_Name(self, original_node: cst.Name, updated_node: cst.Name) -> cst.BaseExpression:
        if self.rewrite_names and original_node.value == self.old:
            return dotted(self.new)
        return updated_node

    def leave_Attribute(self, original_node: cst.Attribute, updated_node: cst.Attribute) -> cst.Attribute:
        # `obj.scripts`: the attribute name is not the module.
        if original_node.attr.value == self.old:
            return updated_node.with_changes(attr=original_node.attr)
        return updated_node

    def leave_Arg(self, original_node: cst.Arg, updated_node: cst.Arg) -> cst.Arg:
        # `f(scripts=...)`: a keyword is not the module either.
        if original_node.keyword is not None and original_node.keyword.value == self.old:
            return updated_node.with_changes(keyword=original_node.keyword)
        return updated_node


class RewriteImportsCommand(Command):
    """Point a moved module's imports of the scripts package at the tasks package."""

    DESCRIPTION = "Rewrite `scripts` imports to the tasks package."

    def __init__(
        self,
        context: CodemodContext,
        module: str = "scripts.job",
        is_package: bool = False,
        index: ModuleIndex | None = None,
        options: ConvertOptions | None = None,
        facts: ModuleFacts | None = None,
    ) -> None:
        super().__init__(context)
        self.options = options or ConvertOptions()
        self.module_name = module
        self.is_package = is_package
        self.index = index
        self.facts = facts
        #: ``(module, line)`` of every scripts module this one imports (filled by the transform).
        self.dependencies: list[tuple[str, int]] = []

    def transform_module_impl(self, tree: cst.Module) -> cst.Module:
        pkg = self.options.scripts_package
        facts = self.facts or analyze(tree.bytes, pkg)
        deps, problems = resolve_imports(facts, self.module_name, self.is_package, self.index, pkg)
        self.dependencies = deps
        plain = [si for si in facts.scripts_imports if si.form == "import"]
        root = self.options.tasks_package.split(".")[0]
        if plain:
            problems.extend(self._name_conflicts(facts, plain, root))
        if problems:
            raise ConversionRefused(sorted(problems), self.context.filename or self.module_name)
        absolute = [si for si in facts.scripts_imports if si.level == 0]
        if not absolute:
            return tree
        for si in absolute:
            if si.nested:
                self.warn(f"line {si.line}: import inside a function body rewritten to {self.options.tasks_package}")
        targets = {si.index for si in absolute}
        if plain:
            targets |= facts.scripts_name_uses
        rewriter = _Rewriter(pkg, self.options.tasks_package, rewrite_names=bool(plain))
        mapping = statement_map(tree.body, facts.top_level_count)
        if mapping is None:  # pragma: no cover - ast and libcst always agree on statement counts
            return tree.visit(rewriter)
        body = list(tree.body)
        for ast_index in sorted(targets):
            i = mapping[ast_index]
            body[i] = body[i].visit(rewriter)  # type: ignore[assignment]
        return tree.with_changes(body=body)

    def _name_conflicts(self, facts: ModuleFacts, plain: Iterable[ScriptsImport], root: str) -> list[Refusal]:
        pkg = self.options.scripts_package
        first = min(si.line for si in plain)
        problems = []
        if pkg in facts.non_import_bindings:
            problems.append(
                Refusal(
                    first,
                    f"`import {pkg}...` is used while the name {pkg!r} is also a variable, parameter or keyword "
                    f"here; its uses cannot be told apart: use `from {pkg}... import ...`",
                )
            )
        other = facts.imports.get(root)
        if root in facts.non_import_bindings or (
            other is not None and (other.attr is not None or other.module != root)
        ):
            problems.append(
                Refusal(
                    first,
                    f"`import {pkg}...` becomes `import {self.options.tasks_package}...`, which binds {root!r}, "
                    f"but {root!r} already names something else here: use `from {pkg}... import ...`",
                )
            )
        return problems
