"""Phase 1 of a conversion: transform one file, in memory, never raising.

:func:`transform_unit` is what each ``--jobs N`` worker process runs. It reads one file,
analyses it, runs the codemod commands that apply to it, and compiles the output with
CPython's own compiler, returning a picklable :class:`UnitOutcome`. Whether a module finally
moves (its helpers may be refused, its task name may collide) is decided afterwards, in the
parent, by :mod:`refactor_tool.runner`, because that needs every file's outcome.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import libcst as cst
from libcst.codemod import CodemodContext

from refactor_tool.analysis import ModuleFacts, analyze_tree
from refactor_tool.commands.convert_job import ConvertJobCommand, NotAJob
from refactor_tool.commands.retarget_task import NotATaskModule, RetargetTaskCommand
from refactor_tool.commands.rewrite_imports import ModuleIndex, RewriteImportsCommand
from refactor_tool.errors import ConversionRefused, Refusal
from refactor_tool.options import ConvertOptions
from refactor_tool.registry import job_entry, task_entry

__all__ = ["TransformContext", "Unit", "UnitOutcome", "transform_unit"]

#: Roles of files in the tree.
SCRIPT = "script"
TASK_MODULE = "task_module"


@dataclass(frozen=True)
class Unit:
    """One input file: where it is, what it is, where its output goes."""

    #: POSIX path relative to the backend dir.
    path: str
    role: str
    #: Dotted module name (``scripts.sync_accounts``; a package's ``__init__`` has the package's name).
    module: str
    is_package: bool
    #: Where a script's output goes (relative); ``None`` for task modules (changed in place).
    target: str | None
    #: job | helper | module | package | private | task_module (decided from the path).
    kind: str


@dataclass(frozen=True)
class TransformContext:
    """Shared by every unit of a run (sent once to each worker)."""

    root: str
    options: ConvertOptions
    index: ModuleIndex


@dataclass
class UnitOutcome:
    """What phase 1 found and produced for one unit."""

    unit: Unit
    #: The unit's kind after analysis: a job candidate without ``run`` becomes ``module``.
    kind: str
    source: bytes | None = None
    output: bytes | None = None
    encoding: str = "utf-8"
    refusals: list[Refusal] = field(default_factory=list)
    #: Why a non-job module could not move, should a converted module need it.
    move_refusals: list[Refusal] = field(default_factory=list)
    failure: Refusal | None = None
    skip: str | None = None
    notes: list[str] = field(default_factory=list)
    deps: list[tuple[str, int]] = field(default_factory=list)
    #: Jobs: task name, task function name and REGISTERED_TASKS entry.
    task_name: str | None = None
    function: str | None = None
    entry: dict[str, Any] | None = None
    #: Task modules: (task name, function, line, entry) for every task found.
    tasks: list[tuple[str, str, int, dict[str, Any]]] = field(default_factory=list)

    @property
    def movable(self) -> bool:
        """Transformed cleanly, so it can move (it may still be refused later for a dependency)."""
        return self.failure is None and not self.refusals and not self.move_refusals and self.output is not None


def _syntax_failure(exc: SyntaxError | ValueError) -> Refusal:
    if isinstance(exc, SyntaxError):
        return Refusal(exc.lineno or 1, f"does not parse: {exc.msg}")
    return Refusal(1, f"does not parse: {exc}")


def _trivial_package(tree: ast.Module, outcome: UnitOutcome, pkg: str) -> None:
    """``scripts/__init__.py`` is dropped, so it may only hold what needs no new home."""
    for i, stmt in enumerate(tree.body):
        if isinstance(stmt, ast.Pass) or (
            i == 0 and isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)
        ):
            continue
        if isinstance(stmt, ast.Assign) and all(isinstance(t, ast.Name) and t.id == "__all__" for t in stmt.targets):
            continue
        if isinstance(stmt, ast.ImportFrom) and stmt.level == 1 and not stmt.module:
            continue  # `from . import a, b`: eager submodule imports; the worker imports them all anyway
        outcome.refusals.append(
            Refusal(
                stmt.lineno,
                f"{pkg}/__init__.py has code (`{ast.unparse(stmt).splitlines()[0][:50]}`); the tasks package's "
                "__init__ cannot take it over: move it into a helper module",
            )
        )


def transform_unit(unit: Unit, ctx: TransformContext) -> UnitOutcome:
    """Transform one file; every error becomes part of the outcome."""
    outcome = UnitOutcome(unit=unit, kind=unit.kind)
    try:
        _transform(unit, ctx, outcome)
    except Exception as exc:  # noqa: BLE001 - a batch runner reports, never raises
        outcome.failure = Refusal(1, f"internal error while converting: {type(exc).__name__}: {exc}; please report it")
        outcome.output = None
    return outcome


def _transform(unit: Unit, ctx: TransformContext, outcome: UnitOutcome) -> None:
    opts = ctx.options
    try:
        source = (Path(ctx.root) / unit.path).read_bytes()
    except OSError as exc:
        outcome.failure = Refusal(1, f"cannot be read: {exc.strerror or exc}")
        return
    outcome.source = source
    try:
        tree_ast = ast.parse(source, filename=unit.path)
    except (SyntaxError, ValueError) as exc:
        outcome.failure = _syntax_failure(exc)
        return
    if unit.kind == "private":
        outcome.skip = f"not a job: {Path(unit.path).name} is a dunder module; it stays in place"
        return
    if unit.kind == "package":
        _trivial_package(tree_ast, outcome, opts.scripts_package)
        outcome.output = b""  # dropped, not moved
        return
    facts = analyze_tree(tree_ast, opts.scripts_package)
    try:
        tree = cst.parse_module(source)
    except cst.ParserSyntaxError as exc:
        outcome.failure = Refusal(exc.raw_line, f"libcst cannot parse it: {exc.message}")
        return
    outcome.encoding = tree.encoding
    if unit.role == TASK_MODULE:
        _retarget(unit, ctx, outcome, tree, facts)
    else:
        _script(unit, ctx, outcome, tree, facts)
    # One compile per file: the output when it changed (it holds every statement of the input),
    # else the input. Either catches what only the compiler finds (`return` outside a function).
    changed = outcome.output is not None and outcome.output not in (b"", source)
    try:
        compile(outcome.output if changed else source, unit.path, "exec", dont_inherit=True)  # type: ignore[arg-type]
    except (SyntaxError, ValueError):
        try:
            compile(source, unit.path, "exec", dont_inherit=True)
        except (SyntaxError, ValueError) as exc:
            outcome.failure = _syntax_failure(exc)
        else:  # pragma: no cover - a bug in a command, reported per file
            outcome.failure = Refusal(1, "generated code does not compile; please report it")
        outcome.output = None


def _script(unit: Unit, ctx: TransformContext, outcome: UnitOutcome, tree: cst.Module, facts: ModuleFacts) -> None:
    opts = ctx.options
    context = CodemodContext(filename=unit.path, full_module_name=unit.module)
    rewrite = RewriteImportsCommand(context, unit.module, unit.is_package, ctx.index, opts, facts)
    try:
        tree = rewrite.transform_module(tree)
    except ConversionRefused as exc:
        outcome.refusals.extend(exc.refusals)
    outcome.deps = rewrite.dependencies
    if unit.kind == "job":
        job = unit.module.rpartition(".")[2]
        convert = ConvertJobCommand(context, job, opts, facts)
        try:
            tree = convert.transform_module(tree)
        except NotAJob as exc:
            # Not a job: it stays unless a converted module imports it, so what would stop it
            # from moving only matters then (see runner.plan).
            outcome.kind = "module"
            outcome.skip = str(exc)
            outcome.move_refusals = sorted(set(facts.problems + outcome.refusals))
            outcome.refusals = []
        except ConversionRefused as exc:
            outcome.refusals.extend(exc.refusals)
        else:
            outcome.task_name = convert.task_name
            outcome.function = convert.function_name
            outcome.entry = job_entry(facts, job, outcome.notes)
    else:
        outcome.refusals.extend(facts.problems)
    outcome.notes[:0] = list(context.warnings)
    outcome.refusals = sorted(set(outcome.refusals))
    outcome.output = tree.bytes


def _retarget(unit: Unit, ctx: TransformContext, outcome: UnitOutcome, tree: cst.Module, facts: ModuleFacts) -> None:
    context = CodemodContext(filename=unit.path, full_module_name=unit.module)
    command = RetargetTaskCommand(context, ctx.options, facts)
    try:
        tree = command.transform_module(tree)
    except NotATaskModule as exc:
        outcome.skip = str(exc)
        return
    except ConversionRefused as exc:
        outcome.refusals.extend(exc.refusals)
        outcome.notes.extend(context.warnings)
        return
    outcome.notes.extend(context.warnings)
    for task in command.tasks:
        name = task.task_name or f"{unit.module}.{task.function}"
        outcome.tasks.append((name, task.function, task.line, task_entry(task, facts, name.rpartition(".")[2])))
    outcome.output = tree.bytes
