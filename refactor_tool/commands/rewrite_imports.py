"""Rewrite imports of the legacy scripts package to the tasks package.

``from scripts._common import x`` -> ``from app.tasks._common import x``,
``import scripts.lib.x as y`` -> ``import app.tasks.lib.x as y``, and ``import scripts.lib.x``
-> ``import app.tasks.lib.x`` together with every ``scripts.lib.x...`` use in the module (the
bound name changes from ``scripts`` to ``app``). Relative imports (``from . import _common``)
are kept as written: helpers move along with the same layout, so they still resolve.

The command also resolves what each import needs (``dependencies``) against the tree's module
index, so the runner can refuse a module whose helper is missing or cannot move. Imports under
``if TYPE_CHECKING:`` never run: they are rewritten too, but are only ``type_only_dependencies``.
A rewritten import changes module name, so it moves to the place ruff's isort rules give it in
its block (:mod:`refactor_tool.import_layout`).
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
from refactor_tool.import_layout import ImportStyle, is_import_line, place_imports
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


@dataclass(frozen=True)
class Resolved:
    """What the scripts imports of one module need."""

    #: ``(module, line)`` of every scripts module an import executes (packages on the way too).
    dependencies: list[tuple[str, int]]
    #: The same for imports under ``if TYPE_CHECKING:`` only (they never run).
    type_only: list[tuple[str, int]]
    problems: list[Refusal]


def resolve_imports(
    facts: ModuleFacts, module: str, is_package: bool, index: ModuleIndex | None, scripts_package: str
) -> Resolved:
    """The scripts modules each import executes, and what is wrong with the imports.

    A module depends on every package ``__init__`` on the way (importing ``scripts.lib.x`` runs
    ``scripts/lib/__init__.py``).
    """
    deps: list[tuple[str, int]] = []
    type_only: list[tuple[str, int]] = []
    problems: list[Refusal] = []
    current_package = module if is_package else module.rpartition(".")[0]
    into = deps

    def need(name: str, line: int) -> None:
        for prefix in _prefixes(name):
            if index is None or prefix in index.modules:
                into.append((prefix, line))

    for si in facts.scripts_imports:
        into = type_only if si.type_checking else deps
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
    executed = _unique(deps, module, set())
    return Resolved(executed, _unique(type_only, module, {d for d, _ in executed}), problems)


def _unique(deps: list[tuple[str, int]], module: str, seen: set[str]) -> list[tuple[str, int]]:
    unique = []
    for dep, line in deps:
        if dep != module and dep not in seen:
            seen.add(dep)
            unique.append((dep, line))
    return unique


class _Rewriter(cst.CSTTransformer):
    def __init__(self, old: str, new: str, rewrite_names: bool, style: ImportStyle) -> None:
        super().__init__()
        self.old = old
        self.new = new
        self.rewrite_names = rewrite_names
        self.style = style

    def leave_IndentedBlock(
        self, original_node: cst.IndentedBlock, updated_node: cst.IndentedBlock
    ) -> cst.IndentedBlock:
        # An import rewritten inside a function moves to its sorted place in that block.
        moved = [
            i
            for i, (old, new) in enumerate(zip(original_node.body, updated_node.body, strict=True))
            if isinstance(new, cst.SimpleStatementLine) and is_import_line(new) and not old.deep_equals(new)
        ]
        if not moved:
            return updated_node
        body = [s for s in updated_node.body if isinstance(s, cst.SimpleStatementLine | cst.BaseCompoundStatement)]
        return updated_node.with_changes(body=place_imports(body, self.style, moved=moved))

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
        style: ImportStyle | None = None,
    ) -> None:
        super().__init__(context)
        self.options = options or ConvertOptions()
        self.module_name = module
        self.is_package = is_package
        self.index = index
        self.facts = facts
        self.style = style or ImportStyle(
            known_first_party=(self.options.scripts_package, self.options.tasks_dir_parts[0])
        )
        #: ``(module, line)`` of every scripts module this one runs (filled by the transform).
        self.dependencies: list[tuple[str, int]] = []
        #: The same for imports under ``if TYPE_CHECKING:`` only.
        self.type_only_dependencies: list[tuple[str, int]] = []

    def transform_module_impl(self, tree: cst.Module) -> cst.Module:
        pkg = self.options.scripts_package
        facts = self.facts or analyze(tree.bytes, pkg)
        resolved = resolve_imports(facts, self.module_name, self.is_package, self.index, pkg)
        self.dependencies, self.type_only_dependencies = resolved.dependencies, resolved.type_only
        problems = resolved.problems
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
        rewriter = _Rewriter(pkg, self.options.tasks_package, rewrite_names=bool(plain), style=self.style)
        mapping = statement_map(tree.body, facts.top_level_count)
        if mapping is None:  # pragma: no cover - ast and libcst always agree on statement counts
            return tree.visit(rewriter)
        body = list(tree.body)
        moved = set()
        for ast_index in sorted(targets):
            i = mapping[ast_index]
            body[i] = body[i].visit(rewriter)  # type: ignore[assignment]
            if is_import_line(body[i]):
                moved.add(i)
        return tree.with_changes(body=place_imports(body, self.style, moved=moved))

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
