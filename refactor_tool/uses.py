"""What a job really runs and uses, so that only a job is refused, and only for a reason that
is its own or that it actually depends on.

A job *runs* every scripts module its imports execute (and their imports, and the packages on
the way: ``scripts/__init__.py`` for every job). It *uses* the names it reads from them
(``from scripts._paths import DATA_DIR``, ``_common.slugify(...)``), and what those names read
in turn (a function's body, a class's methods). Moving a module to the tasks package can
change two kinds of things:

* what runs when it is imported (a module-level call, a loop): every importer is affected, so
  a job that runs such a module is refused, naming the statement;
* what one top-level name means (``DATA_DIR = Path(__file__).parent``, a function that imports
  ``scripts.x`` by a string): only a job that uses that name (directly or through other names)
  is refused; the module still moves for the others, and the name is harmless unused.

Imports under ``if TYPE_CHECKING:`` never run and are no use. :func:`module_uses` reads one
module (pure, ``ast``); :func:`job_closure` follows one job through every module's facts.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from refactor_tool.analysis import ModuleFacts, is_main_guard, is_type_checking, statement_bindings
from refactor_tool.commands.rewrite_imports import ModuleIndex
from refactor_tool.errors import Refusal

__all__ = ["WHOLE_MODULE", "Closure", "ModuleUses", "Use", "job_closure", "module_uses"]

#: The name of a use that may touch any name of the module (``getattr(module, x)``, ``*``).
WHOLE_MODULE = "*"


@dataclass(frozen=True, order=True)
class Use:
    """``module.name`` read at ``line`` of the module that uses it."""

    module: str
    name: str
    line: int


@dataclass(frozen=True)
class ModuleUses:
    """One module's facts for :func:`job_closure` (picklable: computed in the ``--jobs`` workers)."""

    module: str
    path: str
    #: ``(module, line)`` of every scripts module its imports execute.
    runs: tuple[tuple[str, int], ...] = ()
    #: What changes for every importer: statements that run at import and cannot move.
    import_blockers: tuple[Refusal, ...] = ()
    #: Top-level name -> why its meaning changes once moved.
    name_blockers: Mapping[str, Refusal] = field(default_factory=dict)
    #: Top-level name -> the module's other top-level names it reads.
    local_refs: Mapping[str, frozenset[str]] = field(default_factory=dict)
    #: Top-level name -> other modules' names it reads.
    external_refs: Mapping[str, frozenset[Use]] = field(default_factory=dict)
    #: Every other module's name the module reads anywhere (a job uses all of its own module).
    all_external: frozenset[Use] = frozenset()
    #: First line that reads the legacy ``_lock_key``.
    lock_key_line: int | None = None


# -- one module ------------------------------------------------------------------------------
def _walk(node: ast.AST) -> Iterator[ast.AST]:
    """Every node under ``node`` (parents before children), skipping ``if TYPE_CHECKING:`` bodies."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        if isinstance(current, ast.If) and is_type_checking(current.test):
            stack.append(current.test)
            stack.extend(current.orelse)
            continue
        stack.extend(ast.iter_child_nodes(current))


class _Resolver:
    """Absolute scripts module names for the imports of one module."""

    def __init__(self, module: str, is_package: bool, index: ModuleIndex, pkg: str) -> None:
        self.package = module if is_package else module.rpartition(".")[0]
        self.index = index
        self.pkg = pkg

    def base(self, node: ast.ImportFrom) -> str | None:
        if node.level == 0:
            name = node.module or ""
            return name if name == self.pkg or name.startswith(self.pkg + ".") else None
        parts = self.package.split(".") if self.package else []
        if node.level - 1 >= len(parts):
            return None
        base = ".".join(parts[: len(parts) - (node.level - 1)])
        return f"{base}.{node.module}" if node.module else base

    def is_module(self, name: str) -> bool:
        return self.index.exists(name)

    def is_scripts(self, name: str) -> bool:
        return name == self.pkg or name.startswith(self.pkg + ".")


def _module_aliases(tree: ast.Module, resolver: _Resolver) -> dict[str, str]:
    """Top-level names bound to a scripts *module* object (``from scripts import _common``)."""
    aliases: dict[str, str] = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Import):
            for alias in stmt.names:
                if resolver.is_scripts(alias.name):
                    # `import scripts.x` binds `scripts`; `import scripts.x as y` binds the module.
                    aliases[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else resolver.pkg
        elif isinstance(stmt, ast.ImportFrom):
            base = resolver.base(stmt)
            if base is None:
                continue
            for alias in stmt.names:
                if alias.name != "*" and resolver.is_module(f"{base}.{alias.name}"):
                    aliases[alias.asname or alias.name] = f"{base}.{alias.name}"
    return aliases


def _statement_refs(
    stmt: ast.stmt, top_names: set[str], aliases: Mapping[str, str], resolver: _Resolver
) -> tuple[set[str], set[Use]]:
    local: set[str] = set()
    external: set[Use] = set()
    consumed: set[int] = set()
    for node in _walk(stmt):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            external.add(Use(aliases[node.value.id], node.attr, node.lineno))
            consumed.add(id(node.value))
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and id(node) not in consumed:
            if node.id in aliases:
                external.add(Use(aliases[node.id], WHOLE_MODULE, node.lineno))
            elif node.id in top_names:
                local.add(node.id)
        elif isinstance(node, ast.ImportFrom):
            base = resolver.base(node)
            if base is None:
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if alias.name == "*" or not resolver.is_module(sub):
                    external.add(Use(base, WHOLE_MODULE if alias.name == "*" else alias.name, node.lineno))
                elif node is not stmt:
                    external.add(Use(sub, WHOLE_MODULE, node.lineno))  # a module bound inside a function
        elif isinstance(node, ast.Import) and node is not stmt:
            for alias in node.names:
                if resolver.is_scripts(alias.name):
                    external.add(Use(alias.name, WHOLE_MODULE, node.lineno))
    return local, external


def _statement_at(tree: ast.Module, line: int) -> ast.stmt | None:
    for stmt in tree.body:
        if stmt.lineno <= line <= (stmt.end_lineno or stmt.lineno):
            return stmt
    return None


def module_uses(
    tree: ast.Module,
    facts: ModuleFacts,
    module: str,
    path: str,
    is_package: bool,
    index: ModuleIndex,
    scripts_package: str,
    runs: list[tuple[str, int]],
    import_blockers: list[Refusal],
) -> ModuleUses:
    """The facts of one module. ``runs`` and ``import_blockers`` come from the import rewrite
    (what the imports execute; imports that cannot be rewritten are blockers for every importer)."""
    resolver = _Resolver(module, is_package, index, scripts_package)
    aliases = _module_aliases(tree, resolver)
    bound = [statement_bindings(stmt) for stmt in tree.body]
    top_names = set().union(*bound) if bound else set()
    local_refs: dict[str, set[str]] = {}
    external_refs: dict[str, set[Use]] = {}
    everything: set[Use] = set()
    for stmt, names in zip(tree.body, bound, strict=True):
        if is_main_guard(stmt):
            continue  # never runs when the module is imported
        local, external = _statement_refs(stmt, top_names, aliases, resolver)
        everything |= external
        if isinstance(stmt, ast.ImportFrom) and "*" not in {a.name for a in stmt.names}:
            # `from x import a, b`: each name is only what it names.
            for alias in stmt.names:
                bound_name = alias.asname or alias.name
                own = {u for u in external if u.name in (alias.name, WHOLE_MODULE)}
                external_refs.setdefault(bound_name, set()).update(own)
                local_refs.setdefault(bound_name, set())
            continue
        for name in names:
            local_refs.setdefault(name, set()).update(local - {name})
            external_refs.setdefault(name, set()).update(external)
    blockers = list(import_blockers) + list(facts.import_time_problems)
    name_blockers: dict[str, Refusal] = {}
    import_time = set(facts.import_time_problems)
    for problem in facts.problems:
        if problem in import_time:
            continue
        found = _statement_at(tree, problem.line)
        names = statement_bindings(found) if found is not None else set()
        if not names or "__path__" in names:
            blockers.append(problem)  # it binds nothing (or the package's search path): it runs for everyone
            continue
        for name in sorted(names):
            name_blockers.setdefault(name, problem)
    # Importing a module runs its packages' __init__ first (scripts/__init__.py for every job).
    parts = module.split(".")
    packages = [(".".join(parts[:i]), 1) for i in range(1, len(parts)) if ".".join(parts[:i]) in index.modules]
    return ModuleUses(
        module=module,
        path=path,
        runs=tuple(packages + [r for r in runs if r[0] not in {p for p, _ in packages}]),
        import_blockers=tuple(sorted(set(blockers))),
        name_blockers=name_blockers,
        local_refs={k: frozenset(v) for k, v in local_refs.items()},
        external_refs={k: frozenset(v) for k, v in external_refs.items()},
        all_external=frozenset(everything),
        lock_key_line=min(facts.lock_key_lines) if facts.lock_key_lines else None,
    )


# -- one job ---------------------------------------------------------------------------------
@dataclass
class Closure:
    """Everything one job runs, and the first thing that stops it from moving."""

    #: Modules the job runs (itself excluded), each with the job's line that leads there.
    runs: dict[str, int] = field(default_factory=dict)
    #: The job's refusal: its line and what it runs or uses that cannot move.
    blocked: Refusal | None = None
    #: ``(path, line)`` of the first read of ``_lock_key`` in anything the job runs.
    lock_key: tuple[str, int] | None = None
    #: Name blockers of other modules that stopped this job (for those modules' reports).
    stopped_by: list[tuple[str, str]] = field(default_factory=list)


def job_closure(
    job: str,
    uses: Mapping[str, ModuleUses],
    cannot_move: Mapping[str, str],
    check_names: bool = True,
) -> Closure:
    """Follow ``job`` through the modules it runs and, with ``check_names``, the names it uses.

    ``cannot_move``: module -> why it cannot move (a refused job, a module that failed, a file
    already in the way...), as a phrase: ``"was refused (...)"``.
    """
    closure = Closure()
    own = uses[job]
    if own.lock_key_line is not None:
        closure.lock_key = (own.path, own.lock_key_line)
    queue = [(dep, line) for dep, line in own.runs]
    while queue:
        module, line = queue.pop(0)
        if module in closure.runs or module == job:
            continue
        closure.runs[module] = line
        if module in cannot_move and closure.blocked is None:
            closure.blocked = Refusal(line, f"imports {module}, which {cannot_move[module]}")
        facts = uses.get(module)
        if facts is None:
            continue
        if facts.import_blockers and closure.blocked is None:
            first = facts.import_blockers[0]
            closure.blocked = Refusal(line, f"imports {module}, which cannot move: {first.format(facts.path)}")
        if facts.lock_key_line is not None and closure.lock_key is None:
            closure.lock_key = (facts.path, facts.lock_key_line)
        queue.extend((dep, line) for dep, _ in facts.runs)
    if closure.blocked is None and check_names:
        _check_names(own, uses, closure)
    return closure


def _check_names(own: ModuleUses, uses: Mapping[str, ModuleUses], closure: Closure) -> None:
    """The names the job uses, followed through function bodies and re-exports."""
    seen: set[tuple[str, str]] = set()
    # (module, name, the job's line, the name the job itself used)
    queue = [(u.module, u.name, u.line, f"{u.module}.{u.name}") for u in sorted(own.all_external)]
    while queue:
        module, name, line, via = queue.pop()
        if (module, name) in seen:
            continue
        seen.add((module, name))
        facts = uses.get(module)
        if facts is None:
            continue
        if name == WHOLE_MODULE:
            names = set(facts.local_refs) | set(facts.name_blockers)
        elif name not in facts.local_refs and name not in facts.name_blockers:
            # An attribute that is not a top-level name: a submodule (`scripts.lib`), or unknown.
            sub = f"{module}.{name}"
            if sub in uses:
                queue.append((sub, WHOLE_MODULE, line, via))
            continue
        else:
            names = {name}
        for item in sorted(names):
            blocker = facts.name_blockers.get(item)
            if blocker is not None:
                what = f"{module}.{item}"
                shown = what if what == via else f"{via}, which uses {what}"
                closure.blocked = Refusal(
                    line, f"uses {shown}, which changes meaning once moved: {blocker.format(facts.path)}"
                )
                closure.stopped_by.append((module, item))
                return
            queue.extend((module, n, line, via) for n in facts.local_refs.get(item, ()))
            queue.extend((u.module, u.name, line, via) for u in facts.external_refs.get(item, ()))
