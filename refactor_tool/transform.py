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
from refactor_tool.import_layout import ImportStyle
from refactor_tool.options import ConvertOptions
from refactor_tool.registry import job_entry, task_entry
from refactor_tool.uses import ModuleUses, module_uses

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
    style: ImportStyle = field(default_factory=ImportStyle)


@dataclass
class UnitOutcome:
    """What phase 1 found and produced for one unit."""

    unit: Unit
    #: The unit's kind after analysis: a job candidate without ``run`` becomes ``module``.
    kind: str
    source: bytes | None = None
    output: bytes | None = None
    encoding: str = "utf-8"
    #: A job's own reasons not to convert (a non-job module has none: see ``uses``).
    refusals: list[Refusal] = field(default_factory=list)
    failure: Refusal | None = None
    skip: str | None = None
    notes: list[str] = field(default_factory=list)
    #: ``(module, line)`` of the scripts modules it runs, and of those it imports only for types.
    deps: list[tuple[str, int]] = field(default_factory=list)
    type_only_deps: list[tuple[str, int]] = field(default_factory=list)
    #: A module that is not a job: its imports that cannot be rewritten (every importer stops).
    import_blockers: list[Refusal] = field(default_factory=list)
    #: What it runs and uses, and what cannot move (scripts modules).
    uses: ModuleUses | None = None
    #: The task passes run the legacy ``_lock_key`` (a job that reads it, or runs code that does).
    legacy_lock_key: bool = False
    #: Jobs: task name, task function name and REGISTERED_TASKS entry.
    task_name: str | None = None
    function: str | None = None
    entry: dict[str, Any] | None = None
    #: Task modules: (task name, function, line, entry) for every task found.
    tasks: list[tuple[str, str, int, dict[str, Any]]] = field(default_factory=list)

    @property
    def movable(self) -> bool:
        """Transformed cleanly, so it can move (it may still be refused later for a dependency)."""
        return self.failure is None and not self.refusals and self.output is not None


def _syntax_failure(exc: SyntaxError | ValueError) -> Refusal:
    if isinstance(exc, SyntaxError):
        return Refusal(exc.lineno or 1, f"does not parse: {exc.msg}")
    return Refusal(1, f"does not parse: {exc}")


def transform_unit(unit: Unit, ctx: TransformContext, legacy_lock_key: bool | None = None) -> UnitOutcome:
    """Transform one file; every error becomes part of the outcome.

    ``legacy_lock_key``: for a job, whether its task passes the legacy ``_lock_key`` (``None``:
    when the job's own module reads it; the runner forces it for jobs that run code that does).
    """
    outcome = UnitOutcome(unit=unit, kind=unit.kind)
    try:
        _transform(unit, ctx, outcome, legacy_lock_key)
    except Exception as exc:  # noqa: BLE001 - a batch runner reports, never raises
        outcome.failure = Refusal(1, f"internal error while converting: {type(exc).__name__}: {exc}; please report it")
        outcome.output = None
    return outcome


def _transform(unit: Unit, ctx: TransformContext, outcome: UnitOutcome, legacy_lock_key: bool | None) -> None:
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
        _script(unit, ctx, outcome, tree, facts, legacy_lock_key)
        outcome.uses = module_uses(
            tree_ast, facts, unit.module, unit.path, unit.is_package, ctx.index, opts.scripts_package,
            outcome.deps, outcome.import_blockers,
        )  # fmt: skip
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


def _script(
    unit: Unit,
    ctx: TransformContext,
    outcome: UnitOutcome,
    tree: cst.Module,
    facts: ModuleFacts,
    legacy_lock_key: bool | None,
) -> None:
    opts = ctx.options
    context = CodemodContext(filename=unit.path, full_module_name=unit.module)
    rewrite = RewriteImportsCommand(context, unit.module, unit.is_package, ctx.index, opts, facts, ctx.style)
    rewrite_refusals: list[Refusal] = []
    try:
        tree = rewrite.transform_module(tree)
    except ConversionRefused as exc:
        rewrite_refusals = list(exc.refusals)
    outcome.deps = rewrite.dependencies
    outcome.type_only_deps = rewrite.type_only_dependencies
    if unit.kind == "job":
        job = unit.module.rpartition(".")[2]
        convert = ConvertJobCommand(context, job, opts, facts, ctx.style, legacy_lock_key)
        try:
            tree = convert.transform_module(tree)
        except NotAJob as exc:
            # Not a job: it stays unless a converted job runs it (see runner.plan).
            outcome.kind = "module"
            outcome.skip = str(exc)
        except ConversionRefused as exc:
            outcome.refusals.extend(exc.refusals)
        else:
            outcome.task_name = convert.task_name
            outcome.function = convert.function_name
            outcome.entry = job_entry(facts, job, outcome.notes)
            outcome.legacy_lock_key = convert.passes_legacy_lock_key
    if outcome.kind == "job":
        outcome.refusals = sorted(set(outcome.refusals + rewrite_refusals))
    else:
        # A module that is not a job is never refused for itself: what it cannot carry over
        # refuses only the jobs that run or use it (refactor_tool.uses).
        outcome.import_blockers = sorted(set(rewrite_refusals))
    outcome.notes[:0] = list(context.warnings)
    outcome.output = tree.bytes


def _retarget(unit: Unit, ctx: TransformContext, outcome: UnitOutcome, tree: cst.Module, facts: ModuleFacts) -> None:
    context = CodemodContext(filename=unit.path, full_module_name=unit.module)
    command = RetargetTaskCommand(context, ctx.options, facts, ctx.style)
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
