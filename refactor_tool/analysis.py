"""Facts about one module, read with the standard library's :mod:`ast`.

Why ``ast`` and not libcst metadata: the codemod must decide *whether* a file can be converted
before it touches it, and libcst's scope analysis costs about six parses per file (measured:
~74 ms against ~12 ms for a parse). ``ast`` parses ten times faster than libcst, gives exact
line numbers for every refusal, and is what CPython itself will import. libcst is then used
only to *edit* (it keeps every byte it does not touch), and only on the top-level statements
that the facts below flag.

Everything here is pure: source bytes in, a :class:`ModuleFacts` out.
"""

from __future__ import annotations

import ast
import builtins
import functools
import keyword
from collections.abc import Iterator
from dataclasses import dataclass, field

from dataforge.protocol import LEGACY_LOCK_KEY
from refactor_tool.errors import Refusal

__all__ = [
    "METADATA_NAMES",
    "ImportBinding",
    "ModuleFacts",
    "Param",
    "RunInfo",
    "ScriptsImport",
    "TaskDef",
    "analyze",
    "is_main_guard",
    "is_type_checking",
    "reserved_names",
    "statement_bindings",
]

#: Module constants the legacy registry read (``discover_scripts``).
METADATA_NAMES = ("NAME", "DESCRIPTION", "CATEGORY", "PARAMS", "SCHEDULE", "INTERVAL")

#: Module attributes whose value depends on where the file lives: after the move from
#: ``scripts/`` to the tasks package they would point elsewhere.
_LOCATION_DUNDERS = ("__file__", "__path__", "__spec__", "__loader__", "__cached__")

#: Calls that import a module named by a string (``importlib.import_module("scripts.x")``).
_DYNAMIC_IMPORTERS = ("import_module", "__import__", "find_spec", "run_module", "reload")

#: Module-level calls that only configure the module's own logger or warnings: harmless when
#: they run at worker start-up instead of at the first run (``logger.addHandler(NullHandler())``).
_CONFIGURING_CALLS = {
    "logging": ("captureWarnings",),
    "warnings": ("filterwarnings", "simplefilter"),
}
_LOGGER_METHODS = ("addHandler", "addFilter", "setLevel", "removeHandler")

#: Decorators that make ``run`` itself a Celery task (it would be registered twice).
_TASK_DECORATORS = ("task", "shared_task", "periodic_task")


@dataclass(frozen=True)
class Param:
    """One parameter of ``run`` (or of a task function), as written."""

    name: str
    #: positional_only | positional | var_positional | keyword_only | var_keyword
    kind: str
    #: Source of the default (``ast.unparse``), ``None`` when there is none.
    default: str | None
    annotation: str | None

    @property
    def required(self) -> bool:
        return self.default is None and self.kind in ("positional_only", "positional", "keyword_only")


@dataclass(frozen=True)
class RunInfo:
    """The module-level ``run`` that a legacy ``getattr(module, "run")`` finds."""

    line: int
    #: def | alias | wrapped | lambda | import | expression | class
    form: str
    is_async: bool
    is_generator: bool
    decorators: tuple[str, ...]
    #: ``None`` when the signature cannot be read from this file.
    params: tuple[Param, ...] | None
    docstring: str | None
    #: Every unconditional module-level binding of ``run`` (the last one wins at import).
    binding_lines: tuple[int, ...]
    #: For alias / import / expression forms: what ``run`` is bound to (source text).
    target: str | None = None


@dataclass(frozen=True)
class ImportBinding:
    """A module-level name bound by an unconditional top-level import statement."""

    name: str
    module: str
    #: The imported attribute (``from module import attr``); ``None`` for ``import module``.
    attr: str | None
    line: int
    #: Index of the statement in ``ast.Module.body``.
    index: int
    level: int = 0


@dataclass(frozen=True)
class ScriptsImport:
    """An import statement that names the scripts package (absolute or relative)."""

    line: int
    #: Index of the enclosing top-level statement in ``ast.Module.body``.
    index: int
    #: ``import`` (plain, binds the top package name), ``import-as``, ``from``.
    form: str
    #: Absolute dotted module for ``import``/``from``; for relative imports the module part as written.
    module: str
    level: int
    names: tuple[str, ...]
    nested: bool
    #: Inside ``if TYPE_CHECKING:`` or the ``__main__`` guard: never runs on import, so never a
    #: dependency that must move.
    type_checking: bool = False


@dataclass(frozen=True)
class TaskDef:
    """A module-level function registered with ``@<app>.task(...)`` or ``@shared_task``."""

    function: str
    line: int
    #: The Name the decorator hangs off (``celery_app`` in ``@celery_app.task``); ``None`` for
    #: ``@shared_task``; a dotted text for attribute chains (``app.celery_app.task``).
    app_expr: str | None
    task_name: str | None
    base_expr: str | None
    bind: bool
    #: ``run`` in ``return self.run_job(run, kwargs)``: a converted job.
    delegates_to: str | None
    params: tuple[Param, ...]
    docstring: str | None
    #: ``run_job(..., legacy_lock_key=True)``: run gets the legacy ``_lock_key``.
    legacy_lock_key: bool = False


@dataclass
class ModuleFacts:
    """What the codemod commands need to know about one module."""

    docstring: str | None = None
    run: RunInfo | None = None
    #: ``(class name, line)`` of a ``run`` method when there is no module-level ``run``.
    run_in_class: tuple[str, int] | None = None
    #: Reasons the module cannot be moved or converted faithfully (any kind of module).
    problems: list[Refusal] = field(default_factory=list)
    #: The subset of ``problems`` about statements that run at import (every importer runs them).
    import_time_problems: list[Refusal] = field(default_factory=list)
    #: Lines that read the legacy ``_lock_key`` (a parameter, ``kwargs.get("_lock_key")``...);
    #: throwing it away (``kwargs.pop("_lock_key", None)``) is not a read.
    lock_key_lines: list[int] = field(default_factory=list)
    #: Reasons specific to converting it as a job (run's shape).
    run_problems: list[Refusal] = field(default_factory=list)
    #: Things the user should know that do not block conversion.
    notes: list[str] = field(default_factory=list)
    #: Every identifier the module uses or binds anywhere (a conservative "taken" set).
    identifiers: set[str] = field(default_factory=set)
    #: Identifiers bound by anything but an import statement (assignment, def, parameter...).
    non_import_bindings: set[str] = field(default_factory=set)
    imports: dict[str, ImportBinding] = field(default_factory=dict)
    scripts_imports: list[ScriptsImport] = field(default_factory=list)
    #: Top-level statement indexes where the bare scripts package name is used as a value.
    scripts_name_uses: set[int] = field(default_factory=set)
    star_imports: list[tuple[int, str, int]] = field(default_factory=list)
    #: NAME / DESCRIPTION / ... -> (line, literal value); value is ``_NOT_LITERAL`` if not a literal.
    metadata: dict[str, tuple[int, object]] = field(default_factory=dict)
    tasks: list[TaskDef] = field(default_factory=list)
    #: Index of the first statement of the trailing ``if __name__ == "__main__"`` block(s).
    main_guard_index: int | None = None
    has_main_guard: bool = False
    top_level_count: int = 0


class _NotLiteral:
    """Marker for a metadata constant whose value is not a literal."""

    def __repr__(self) -> str:
        return "<not a literal>"


NOT_LITERAL = _NotLiteral()


@functools.lru_cache(maxsize=1)
def reserved_names() -> frozenset[str]:
    """Names a generated module-level name must never take: builtins and keywords.

    A task function called ``filter`` would shadow the builtin for ``run``'s own calls.
    """
    return frozenset(dir(builtins)) | frozenset(keyword.kwlist) | frozenset(keyword.softkwlist)


def is_main_guard(node: ast.stmt) -> bool:
    """``if __name__ == "__main__":`` (either operand order): code that never runs on import."""
    if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare):
        return False
    test = node.test
    if len(test.ops) != 1 or not isinstance(test.ops[0], ast.Eq):
        return False
    sides = [test.left, test.comparators[0]]
    has_name = any(isinstance(s, ast.Name) and s.id == "__name__" for s in sides)
    has_main = any(isinstance(s, ast.Constant) and s.value == "__main__" for s in sides)
    return has_name and has_main


def is_type_checking(test: ast.expr) -> bool:
    """``TYPE_CHECKING`` or ``<module>.TYPE_CHECKING``: a block that never runs."""
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def statement_bindings(stmt: ast.stmt) -> set[str]:
    """Module-level names a top-level ``stmt`` binds (inside if/try/with/for blocks too, never
    inside functions, classes or ``if TYPE_CHECKING:``)."""
    names: set[str] = set()
    stack: list[ast.AST] = [stmt]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
            continue
        if isinstance(node, ast.Lambda):
            continue
        if isinstance(node, ast.If) and is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            names.update(alias.asname or alias.name.split(".")[0] for alias in node.names if alias.name != "*")
            continue
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            names.add(node.id)
        stack.extend(ast.iter_child_nodes(node))
    return names


def _snippet(node: ast.AST, width: int = 60) -> str:
    text = ast.unparse(node).splitlines()[0] if ast.unparse(node) else ""
    return text if len(text) <= width else text[: width - 3] + "..."


def _params(args: ast.arguments) -> tuple[Param, ...]:
    out: list[Param] = []
    positional = [*args.posonlyargs, *args.args]
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    for i, arg in enumerate(positional):
        kind = "positional_only" if i < len(args.posonlyargs) else "positional"
        default = defaults[i]
        out.append(Param(arg.arg, kind, _unparse(default), _unparse(arg.annotation)))
    if args.vararg is not None:
        out.append(Param(args.vararg.arg, "var_positional", None, _unparse(args.vararg.annotation)))
    for arg, kw_default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
        out.append(Param(arg.arg, "keyword_only", _unparse(kw_default), _unparse(arg.annotation)))
    if args.kwarg is not None:
        out.append(Param(args.kwarg.arg, "var_keyword", None, _unparse(args.kwarg.annotation)))
    return tuple(out)


def _unparse(node: ast.AST | None) -> str | None:
    return None if node is None else ast.unparse(node)


def _walk_scope(nodes: list[ast.stmt]) -> Iterator[ast.AST]:
    """Every node of a function body that belongs to that function (not to nested scopes)."""
    stack: list[ast.AST] = list(reversed(nodes))
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
                continue
            stack.append(child)


def _is_generator(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    return any(isinstance(n, ast.Yield | ast.YieldFrom) for n in _walk_scope(fn.body))


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return None if inner is None else f"{inner}.{node.attr}"
    return None


def _is_task_decorator(dec: ast.expr) -> bool:
    target = dec.func if isinstance(dec, ast.Call) else dec
    if isinstance(target, ast.Name):
        return target.id in _TASK_DECORATORS
    return isinstance(target, ast.Attribute) and target.attr in _TASK_DECORATORS


def _module_scope(body: list[ast.stmt], conditional: bool = False) -> Iterator[tuple[ast.stmt, bool]]:
    """Module-level statements, descending into if/try/with/for blocks (still module scope),
    never into ``if __name__ == "__main__"`` (it does not run on import) nor into defs."""
    for stmt in body:
        yield stmt, conditional
        if is_main_guard(stmt):
            continue
        if isinstance(stmt, ast.If | ast.For | ast.AsyncFor | ast.While):
            yield from _module_scope(stmt.body, True)
            yield from _module_scope(stmt.orelse, True)
        elif isinstance(stmt, ast.With | ast.AsyncWith):
            yield from _module_scope(stmt.body, True)
        elif isinstance(stmt, ast.Try | ast.TryStar):
            yield from _module_scope(stmt.body, True)
            for handler in stmt.handlers:
                yield from _module_scope(handler.body, True)
            yield from _module_scope(stmt.orelse, True)
            yield from _module_scope(stmt.finalbody, True)
        elif isinstance(stmt, ast.Match):
            for case in stmt.cases:
                yield from _module_scope(case.body, True)


def _binds(stmt: ast.stmt, name: str) -> str | None:
    """How ``stmt`` binds ``name`` at its own level: def | class | assign | import | other."""
    if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef) and stmt.name == name:
        return "def"
    if isinstance(stmt, ast.ClassDef) and stmt.name == name:
        return "class"
    if isinstance(stmt, ast.Assign):
        for target in stmt.targets:
            if isinstance(target, ast.Name) and target.id == name:
                return "assign"
            if any(isinstance(n, ast.Name) and n.id == name for n in ast.walk(target)):
                return "other"
    if isinstance(stmt, ast.AnnAssign | ast.AugAssign) and isinstance(stmt.target, ast.Name):
        if stmt.target.id == name and (not isinstance(stmt, ast.AnnAssign) or stmt.value is not None):
            return "assign" if isinstance(stmt, ast.AnnAssign) else "other"
    if isinstance(stmt, ast.Import | ast.ImportFrom):
        for alias in stmt.names:
            bound = alias.asname or alias.name.split(".")[0]
            if bound == name:
                return "import"
    if isinstance(stmt, ast.For | ast.AsyncFor) and any(
        isinstance(n, ast.Name) and n.id == name for n in ast.walk(stmt.target)
    ):
        return "other"
    if isinstance(stmt, ast.With | ast.AsyncWith):
        for item in stmt.items:
            if item.optional_vars is not None and any(
                isinstance(n, ast.Name) and n.id == name for n in ast.walk(item.optional_vars)
            ):
                return "other"
    if isinstance(stmt, ast.Delete) and any(isinstance(t, ast.Name) and t.id == name for t in stmt.targets):
        return "other"
    return None


class _Collector(ast.NodeVisitor):
    """One pass over the whole tree for identifiers, dunders, dynamic imports and imports."""

    def __init__(self, facts: ModuleFacts, scripts_package: str, var_kw: set[str]) -> None:
        self.facts = facts
        self.pkg = scripts_package
        #: The name of run's ``**kwargs`` (reads of internal keys from it are refused).
        self.var_kw = var_kw
        self.index = 0
        self.depth = 0  # > 0 inside a def/class/lambda
        self.in_main_guard = False
        self.type_checking = False
        self.uses_name = False
        #: String constants that are thrown away (``kwargs.pop("_lock_key", None)``).
        self.discarded: set[int] = set()

    # -- bindings and identifiers -------------------------------------------------------------
    def visit_Name(self, node: ast.Name) -> None:
        self.facts.identifiers.add(node.id)
        if node.id == "__name__" and not self.in_main_guard:
            self.uses_name = True
        if not isinstance(node.ctx, ast.Load):
            self.facts.non_import_bindings.add(node.id)
        if node.id in _LOCATION_DUNDERS:
            self.facts.problems.append(
                Refusal(
                    node.lineno,
                    f"uses {node.id}: the module moves from {self.pkg}/ to the tasks package, so paths "
                    "built from it would point elsewhere; read the location from a setting instead",
                )
            )
        elif node.id == self.pkg and isinstance(node.ctx, ast.Load):
            self.facts.scripts_name_uses.add(self.index)

    def visit_arg(self, node: ast.arg) -> None:
        self.facts.identifiers.add(node.arg)
        self.facts.non_import_bindings.add(node.arg)
        if node.arg == LEGACY_LOCK_KEY:
            self.facts.lock_key_lines.append(node.lineno)
        self.generic_visit(node)

    def visit_If(self, node: ast.If) -> None:
        if not is_type_checking(node.test):
            self.generic_visit(node)
            return
        self.visit(node.test)
        outer, self.type_checking = self.type_checking, True
        for stmt in node.body:
            self.visit(stmt)
        self.type_checking = outer
        for stmt in node.orelse:
            self.visit(stmt)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        if isinstance(node.target, ast.Name) and node.target.id == "run" and self.depth == 0:
            self.facts.run_problems.append(Refusal(node.lineno, "run is bound by an assignment expression (:=)"))
        self.generic_visit(node)

    # -- keys only the legacy executor passed ----------------------------------------------------
    # The legacy executor injected ``_lock_key`` into every call. A job that reads it converts:
    # its task hands it the legacy value (``run_job(..., legacy_lock_key=True)``), decided per job
    # from every module it runs (lock_key_lines). Other underscore keys of run's ``**kwargs``
    # came only from a schedule's kwargs, which the runtime no longer passes to a job: refused.
    # Throwing a key away (``kwargs.pop("_lock_key", None)``, the usual legacy workaround)
    # behaves the same before and after.
    def _refuse_key(self, node: ast.AST, key: str) -> None:
        self.facts.run_problems.append(
            Refusal(
                getattr(node, "lineno", 1),
                f"reads {key!r}, an internal (underscore) key: the runtime gives a job's **kwargs only public keys, "
                "so this code would see None or KeyError; rename the key (and its schedules' kwargs) or "
                f"discard it with `kwargs.pop({key!r}, None)`",
            )
        )

    def visit_Expr(self, node: ast.Expr) -> None:
        call = node.value
        if (
            isinstance(call, ast.Call)
            and isinstance(call.func, ast.Attribute)
            and call.func.attr == "pop"
            and len(call.args) == 2
            and isinstance(call.args[0], ast.Constant)
        ):
            self.discarded.add(id(call.args[0]))
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if node.value == LEGACY_LOCK_KEY and id(node) not in self.discarded:
            self.facts.lock_key_lines.append(node.lineno)

    def _internal_key(self, node: ast.expr) -> str | None:
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and node.value.startswith("_")
            and node.value != LEGACY_LOCK_KEY  # passed again where it is read (lock_key_lines)
            and id(node) not in self.discarded
        ):
            return node.value
        return None

    def _is_var_kw(self, node: ast.expr) -> bool:
        return isinstance(node, ast.Name) and node.id in self.var_kw

    def visit_Subscript(self, node: ast.Subscript) -> None:
        key = self._internal_key(node.slice)
        if key is not None and self._is_var_kw(node.value):
            self._refuse_key(node, key)
        self.generic_visit(node)

    def visit_Compare(self, node: ast.Compare) -> None:
        sides = [node.left, *node.comparators]
        if any(self._is_var_kw(x) for x in sides):
            for side in sides:
                key = self._internal_key(side)
                if key is not None:
                    self._refuse_key(node, key)
        self.generic_visit(node)

    def _scope(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self.facts.identifiers.add(node.name)
        self.facts.non_import_bindings.add(node.name)
        self._scope(node)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self.facts.identifiers.add(node.name)
        self.facts.non_import_bindings.add(node.name)
        self._scope(node)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.facts.identifiers.add(node.name)
        self.facts.non_import_bindings.add(node.name)
        self._scope(node)

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self._scope(node)

    def visit_Global(self, node: ast.Global) -> None:
        self.facts.identifiers.update(node.names)
        self.facts.non_import_bindings.update(node.names)
        if "run" in node.names:
            self.facts.run_problems.append(
                Refusal(node.lineno, "run is rebound at runtime by `global run`; which function runs cannot be known")
            )

    def visit_Nonlocal(self, node: ast.Nonlocal) -> None:
        self.facts.identifiers.update(node.names)

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.name:
            self.facts.identifiers.add(node.name)
            self.facts.non_import_bindings.add(node.name)
        self.generic_visit(node)

    def visit_MatchAs(self, node: ast.MatchAs) -> None:
        if node.name:
            self.facts.identifiers.add(node.name)
            self.facts.non_import_bindings.add(node.name)
        self.generic_visit(node)

    def visit_MatchStar(self, node: ast.MatchStar) -> None:
        if node.name:
            self.facts.identifiers.add(node.name)
            self.facts.non_import_bindings.add(node.name)

    # -- imports ------------------------------------------------------------------------------
    def _note_scripts(
        self, node: ast.Import | ast.ImportFrom, form: str, module: str, level: int, names: tuple[str, ...]
    ) -> None:
        self.facts.scripts_imports.append(
            ScriptsImport(
                node.lineno, self.index, form, module, level, names, nested=self.depth > 0,
                type_checking=self.type_checking or self.in_main_guard,
            )
        )

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            bound = alias.asname or alias.name.split(".")[0]
            self.facts.identifiers.add(bound)
            if alias.name == self.pkg or alias.name.startswith(self.pkg + "."):
                form = "import-as" if alias.asname else "import"
                self._note_scripts(node, form, alias.name, 0, ())
            if self.depth == 0 and not self.in_main_guard:
                self._bind_import(bound, alias.name if alias.asname else bound, None, node.lineno, 0)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        names = tuple(a.name for a in node.names)
        for alias in node.names:
            if alias.name == "*":
                self.facts.star_imports.append((node.lineno, module, node.level))
                continue
            bound = alias.asname or alias.name
            self.facts.identifiers.add(bound)
            if self.depth == 0 and not self.in_main_guard:
                self._bind_import(bound, module, alias.name, node.lineno, node.level)
        if node.level > 0:
            self._note_scripts(node, "from", module, node.level, names)
        elif module == self.pkg or module.startswith(self.pkg + "."):
            self._note_scripts(node, "from", module, 0, names)

    def _bind_import(self, name: str, module: str, attr: str | None, line: int, level: int) -> None:
        self.facts.imports[name] = ImportBinding(name, module, attr, line, self.index, level)

    # -- dynamic imports ----------------------------------------------------------------------
    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Attribute) and self._is_var_kw(func.value) and node.args:
            key = self._internal_key(node.args[0])
            if key is not None:
                self._refuse_key(node, key)
        fname = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
        if fname in _DYNAMIC_IMPORTERS and node.args:
            first = node.args[0]
            text: str | None = None
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                text = first.value
            elif isinstance(first, ast.JoinedStr) and first.values:
                head = first.values[0]
                if isinstance(head, ast.Constant) and isinstance(head.value, str):
                    text = head.value
            if text is not None and (text == self.pkg or text.startswith(self.pkg + ".")):
                self.facts.problems.append(
                    Refusal(
                        node.lineno,
                        f"imports {text!r} by name at runtime ({fname}); the codemod cannot rewrite "
                        f"string module names safely: import the module statically instead",
                    )
                )
        self.generic_visit(node)


def _import_time(facts: ModuleFacts, problem: Refusal) -> None:
    facts.problems.append(problem)
    facts.import_time_problems.append(problem)


def _is_get_logger(node: ast.expr) -> bool:
    return isinstance(node, ast.Call) and _dotted(node.func) in ("logging.getLogger", "getLogger")


def _loggers(body: list[ast.stmt]) -> frozenset[str]:
    """Module-level names bound to ``logging.getLogger(...)``."""
    return frozenset(
        target.id
        for stmt in body
        if isinstance(stmt, ast.Assign) and _is_get_logger(stmt.value)
        for target in stmt.targets
        if isinstance(target, ast.Name)
    )


def _configures_logging(call: ast.expr, loggers: frozenset[str]) -> bool:
    """``logger.addHandler(...)``, ``logging.getLogger(x).setLevel(...)``, ``warnings.filterwarnings(...)``."""
    if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Attribute):
        return False
    owner, method = call.func.value, call.func.attr
    if isinstance(owner, ast.Name) and method in _CONFIGURING_CALLS.get(owner.id, ()):
        return True
    is_logger = (isinstance(owner, ast.Name) and owner.id in loggers) or _is_get_logger(owner)
    return is_logger and method in _LOGGER_METHODS


def _classify_side_effects(body: list[ast.stmt], facts: ModuleFacts, loggers: frozenset[str]) -> None:
    """Refuse module-level statements that *do* something at import time.

    The legacy system imported a job only when it ran (or when the API listed jobs); the
    worker imports every module of the task package at start-up, in every process, and a
    failure there stops the worker for all tasks. Definitions, imports and assignments are
    allowed (assignments' right-hand sides still run at import: see docs/codemod.md).
    """
    for stmt in body:
        if is_main_guard(stmt):
            continue
        if isinstance(stmt, ast.Expr):
            if isinstance(stmt.value, ast.Constant) or _configures_logging(stmt.value, loggers):
                continue  # docstrings and string "comments", `...`; logger and warnings set-up
            _import_time(facts,
                Refusal(
                    stmt.lineno,
                    f"module-level statement `{_snippet(stmt)}` runs at import; the worker imports every "
                    "task module at start-up (legacy imported a job only to run it): move it into run() "
                    "or a function",
                )
            )
        elif isinstance(stmt, ast.If):
            _classify_side_effects(stmt.body, facts, loggers)
            _classify_side_effects(stmt.orelse, facts, loggers)
        elif isinstance(stmt, ast.Try | ast.TryStar):
            _classify_side_effects(stmt.body, facts, loggers)
            for handler in stmt.handlers:
                _classify_side_effects(handler.body, facts, loggers)
            _classify_side_effects(stmt.orelse, facts, loggers)
            _classify_side_effects(stmt.finalbody, facts, loggers)
        elif isinstance(stmt, ast.For | ast.AsyncFor | ast.While | ast.With | ast.AsyncWith | ast.Match):
            kind = type(stmt).__name__.lower().replace("async", "async ")
            _import_time(facts,
                Refusal(
                    stmt.lineno,
                    f"module-level `{kind}` block runs at import; the worker imports every task module at "
                    "start-up (legacy imported a job only to run it): move it into run() or a function",
                )
            )


def _find_run(tree: ast.Module, facts: ModuleFacts) -> None:
    bindings: list[tuple[ast.stmt, str, bool]] = []
    for stmt, conditional in _module_scope(tree.body):
        how = _binds(stmt, "run")
        if how is not None:
            bindings.append((stmt, how, conditional))
    if not bindings:
        for stmt in tree.body:
            if isinstance(stmt, ast.ClassDef):
                for inner in stmt.body:
                    if isinstance(inner, ast.FunctionDef | ast.AsyncFunctionDef) and inner.name == "run":
                        facts.run_in_class = (stmt.name, inner.lineno)
                        return
        return
    conditional_bindings = [s for s, _how, cond in bindings if cond]
    if conditional_bindings:
        stmt = conditional_bindings[0]
        facts.run_problems.append(
            Refusal(
                stmt.lineno,
                "run is bound conditionally (inside an if/try/for/with block); which definition runs "
                "cannot be known: define one module-level run",
            )
        )
    unconditional = [(s, how) for s, how, cond in bindings if not cond]
    if not unconditional:
        stmt = bindings[0][0]
        facts.run = RunInfo(stmt.lineno, "expression", False, False, (), None, None, (stmt.lineno,))
        return
    lines = tuple(s.lineno for s, _ in unconditional)
    defs = {s.name: s for s in tree.body if isinstance(s, ast.FunctionDef | ast.AsyncFunctionDef)}
    stmt, how = unconditional[-1]
    if len(unconditional) > 1:
        facts.notes.append(
            f"run is bound {len(unconditional)} times (lines {', '.join(map(str, lines))}); the last "
            f"(line {stmt.lineno}) is the one that runs, as before"
        )
    if how == "def":
        assert isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef)
        facts.run = _run_from_def(stmt, "def", lines, stmt.lineno, facts)
    elif how == "class":
        facts.run = RunInfo(stmt.lineno, "class", False, False, (), None, None, lines)
        facts.run_problems.append(
            Refusal(stmt.lineno, "run is a class: calling it builds an instance, not a job result")
        )
    elif how == "import":
        assert isinstance(stmt, ast.Import | ast.ImportFrom)
        facts.run = RunInfo(stmt.lineno, "import", False, False, (), None, None, lines, _snippet(stmt))
        facts.notes.append(
            f"run is imported (line {stmt.lineno}: `{_snippet(stmt)}`); its signature is not in this file, "
            "so REGISTERED_TASKS params come only from PARAMS"
        )
    elif how == "assign":
        assert isinstance(stmt, ast.Assign | ast.AnnAssign) and stmt.value is not None
        value = stmt.value
        previous_def = next(
            (
                s
                for s, h in reversed(unconditional[:-1])
                if h == "def" and isinstance(s, ast.FunctionDef | ast.AsyncFunctionDef)
            ),
            None,
        )
        if isinstance(value, ast.Name) and value.id in defs:
            target = defs[value.id]
            facts.run = _run_from_def(target, "alias", lines, stmt.lineno, facts, target=value.id)
            facts.notes.append(f"run is an alias of {value.id}() (line {stmt.lineno})")
        elif (
            isinstance(value, ast.Call)
            and previous_def is not None
            and any(isinstance(a, ast.Name) and a.id == "run" for a in value.args)
        ):
            facts.run = _run_from_def(previous_def, "wrapped", lines, stmt.lineno, facts, target=_snippet(value))
            facts.notes.append(
                f"run is wrapped at line {stmt.lineno} (`{_snippet(stmt)}`); the task calls the wrapped object, "
                "as the legacy executor did"
            )
        elif isinstance(value, ast.Lambda):
            facts.run = RunInfo(
                stmt.lineno, "lambda", False, False, (), _params(value.args), None, lines, _snippet(value)
            )
        else:
            facts.run = RunInfo(stmt.lineno, "expression", False, False, (), None, None, lines, _snippet(value))
            facts.notes.append(
                f"run is bound to an expression (line {stmt.lineno}: `{_snippet(stmt)}`); its signature cannot "
                "be read statically, so REGISTERED_TASKS params come only from PARAMS"
            )
    else:
        facts.run = RunInfo(stmt.lineno, "expression", False, False, (), None, None, lines)
        facts.run_problems.append(
            Refusal(stmt.lineno, f"run is bound by `{_snippet(stmt)}`; which object runs cannot be known")
        )


def _run_from_def(
    fn: ast.FunctionDef | ast.AsyncFunctionDef,
    form: str,
    lines: tuple[int, ...],
    line: int,
    facts: ModuleFacts,
    target: str | None = None,
) -> RunInfo:
    decorators = tuple(ast.unparse(d) for d in fn.decorator_list)
    for dec in fn.decorator_list:
        if _is_task_decorator(dec):
            facts.run_problems.append(
                Refusal(
                    dec.lineno,
                    f"{fn.name}() is itself a Celery task (@{ast.unparse(dec)}); wrapping it would register "
                    "it twice: remove the decorator or convert it by hand",
                )
            )
    generator = _is_generator(fn)
    if generator:
        facts.run_problems.append(
            Refusal(
                fn.lineno,
                f"{fn.name}() is a generator (it yields); the legacy executor never ran it to completion, "
                "so there is no behaviour to keep: make it return its result",
            )
        )
    if decorators and form == "def":
        facts.notes.append(
            f"run is decorated ({', '.join('@' + d for d in decorators)}); the task calls the decorated "
            "object, as the legacy executor did"
        )
    positional_only = [p for p in _params(fn.args) if p.kind == "positional_only" and p.required]
    if positional_only:
        facts.run_problems.append(
            Refusal(
                fn.lineno,
                f"{fn.name}() has required positional-only parameter(s) "
                f"{', '.join(p.name for p in positional_only)}; a job is only ever called with keywords",
            )
        )
    return RunInfo(
        line,
        form,
        isinstance(fn, ast.AsyncFunctionDef),
        generator,
        decorators,
        _params(fn.args),
        ast.get_docstring(fn),
        lines,
        target,
    )


def _task_defs(tree: ast.Module, facts: ModuleFacts) -> None:
    for stmt in tree.body:
        if not isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for dec in stmt.decorator_list:
            if not _is_task_decorator(dec):
                continue
            call = dec if isinstance(dec, ast.Call) else None
            target = dec.func if isinstance(dec, ast.Call) else dec
            app_expr: str | None = None
            if isinstance(target, ast.Attribute):
                app_expr = _dotted(target.value) or ast.unparse(target.value)
            kwargs = {k.arg: k.value for k in call.keywords if k.arg} if call else {}
            name_node = kwargs.get("name")
            task_name = (
                name_node.value if isinstance(name_node, ast.Constant) and isinstance(name_node.value, str) else None
            )
            base = kwargs.get("base")
            bind_node = kwargs.get("bind")
            bind = isinstance(bind_node, ast.Constant) and bind_node.value is True
            facts.tasks.append(
                TaskDef(
                    function=stmt.name,
                    line=dec.lineno,
                    app_expr=app_expr,
                    task_name=task_name,
                    base_expr=None if base is None else (_dotted(base) or ast.unparse(base)),
                    bind=bind,
                    delegates_to=_delegate(stmt),
                    legacy_lock_key=_delegate(stmt) is not None and _passes_legacy_lock_key(stmt),
                    params=_params(stmt.args),
                    docstring=ast.get_docstring(stmt),
                )
            )
            break


def _delegate(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> str | None:
    """``X`` when the body is ``return self.run_job(X, kwargs)`` (after an optional docstring),
    ``legacy_lock_key=True`` allowed."""
    body = list(fn.body)
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    if len(body) != 1 or not isinstance(body[0], ast.Return) or body[0].value is None:
        return None
    call = body[0].value
    if not (
        isinstance(call, ast.Call)
        and isinstance(call.func, ast.Attribute)
        and call.func.attr == "run_job"
        and len(call.args) == 2
        and all(k.arg == "legacy_lock_key" for k in call.keywords)
        and isinstance(call.args[0], ast.Name)
    ):
        return None
    return call.args[0].id


def _passes_legacy_lock_key(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """``return self.run_job(run, kwargs, legacy_lock_key=True)`` (see :func:`_delegate`)."""
    last = fn.body[-1]
    assert isinstance(last, ast.Return) and isinstance(last.value, ast.Call)
    return any(k.arg == "legacy_lock_key" and isinstance(k.value, ast.Constant) and k.value.value is True
               for k in last.value.keywords)  # fmt: skip


def _metadata(tree: ast.Module, facts: ModuleFacts) -> None:
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
            target, value = stmt.targets[0], stmt.value
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            target, value = stmt.target, stmt.value
        else:
            continue
        if isinstance(target, ast.Name) and target.id in METADATA_NAMES:
            try:
                literal: object = ast.literal_eval(value)
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                literal = NOT_LITERAL
            facts.metadata[target.id] = (stmt.lineno, literal)


def analyze(source: bytes, scripts_package: str = "scripts", filename: str = "<module>") -> ModuleFacts:
    """Parse ``source`` (bytes: the coding cookie and BOM are honoured) and collect its facts.

    Raises :class:`SyntaxError` (also for errors only the compiler finds, such as ``return``
    outside a function) so the caller can report the file as failed with its line.
    """
    tree = ast.parse(source, filename=filename)
    compile(tree, filename, "exec", dont_inherit=True)
    return analyze_tree(tree, scripts_package)


def analyze_tree(tree: ast.Module, scripts_package: str = "scripts") -> ModuleFacts:
    """:func:`analyze` for an already parsed module."""
    facts = ModuleFacts(docstring=ast.get_docstring(tree), top_level_count=len(tree.body))
    run_def = next(
        (s for s in tree.body if isinstance(s, ast.FunctionDef | ast.AsyncFunctionDef) and s.name == "run"), None
    )
    var_kw = {run_def.args.kwarg.arg} if run_def is not None and run_def.args.kwarg is not None else set()
    collector = _Collector(facts, scripts_package, var_kw)
    for index, stmt in enumerate(tree.body):
        collector.index = index
        collector.in_main_guard = is_main_guard(stmt)
        collector.visit(stmt)
    _classify_side_effects(tree.body, facts, _loggers(tree.body))
    _find_run(tree, facts)
    _task_defs(tree, facts)
    _metadata(tree, facts)
    trailing = len(tree.body)
    while trailing > 0 and is_main_guard(tree.body[trailing - 1]):
        trailing -= 1
    facts.has_main_guard = any(is_main_guard(s) for s in tree.body)
    facts.main_guard_index = trailing if trailing < len(tree.body) else None
    if collector.uses_name:
        facts.notes.append(
            "uses __name__ outside the __main__ guard: its value changes with the module's new name "
            "(logger names, for instance)"
        )
    return facts
