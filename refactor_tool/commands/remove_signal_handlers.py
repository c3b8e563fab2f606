"""Remove the legacy task-signal handlers that ``dataforge.celery_signals`` now owns.

The legacy backend records runs twice: ``app/celery_signals.py`` has prerun / success /
failure / postrun handlers, and ``app/celery_tasks.py`` a second ``task_postrun`` handler;
both write ``task_executions`` rows, counters and ``next_run_at``. Once a worker imports such a
module (``app/__init__.py`` importing the app, which imports the handlers), they run beside the
runtime's receivers: every run recorded twice, and ``next_run_at`` written behind beat's back.

A handler goes when it is connected to a task signal the runtime records
(:data:`REPLACEMENTS`: ``dataforge.celery_signals.RECEIVERS``) and touches the scheduling
tables: it reads a name imported from the legacy models (``ScheduledTask``...), assigns one of
their run columns (``row.next_run_at = ...``) or names one of the tables in a string. Both
connection forms count (``@task_postrun.connect`` and ``task_postrun.connect(fn)``); its
connect statements, and the imports and module state only it used, go with it
(:mod:`refactor_tool.pruning`). A handler that touches none of that (an alert on failure) is
kept and reported. A handler connected to a recorded signal and to another one, or used by
code that stays, is refused. :attr:`RemoveSignalHandlersCommand.emptied` tells whether
anything but the docstring, imports and ``__all__`` is left.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

import libcst as cst
from libcst.codemod import CodemodContext

from dataforge.celery_signals import RECEIVERS
from refactor_tool.commands._base import Command
from refactor_tool.errors import ConversionRefused, Refusal
from refactor_tool.legacy_layout import MODEL_MODULES, SCHEDULES_TABLE
from refactor_tool.pruning import Pruned, Removed, loaded_names, prune

__all__ = [
    "REPLACEMENTS",
    "RemoveSignalHandlersCommand",
    "SignalHandler",
    "find_signal_handlers",
    "handler_notes",
    "is_emptied",
    "remove_handlers",
]

#: Task signal -> the receiver that records it now (connected by ``dataforge.celery_signals``).
REPLACEMENTS: dict[str, str] = {
    signal.name: f"{receiver.__module__}.{receiver.__name__}"
    for signal, receiver, _uid in RECEIVERS
    if signal.name.startswith("task_")
}
#: Columns of the scheduling tables that the runtime writes (beat: next_run_at, last_run_at,
#: run_count; the worker: the outcome counters and the execution rows).
_RUN_COLUMNS = frozenset(
    {"next_run_at", "last_run_at", "run_count", "success_count", "failure_count", "last_status", "last_error"}
)
_TABLES = (SCHEDULES_TABLE, "task_executions")


@dataclass(frozen=True)
class SignalHandler:
    """A module-level function connected to one or more Celery signals."""

    function: str
    line: int
    signals: tuple[str, ...]
    #: ``ast.Module.body`` indexes of its ``def`` and of its connect statements.
    statements: tuple[int, ...]
    #: Reads or writes the scheduling tables.
    records: bool
    writes_next_run_at: bool

    @property
    def owned(self) -> tuple[str, ...]:
        return tuple(s for s in self.signals if s in REPLACEMENTS)

    def replacement(self) -> str:
        """What records these events now, for the report."""
        receivers = ", ".join(REPLACEMENTS[s].rpartition(".")[2] for s in self.owned)
        module = REPLACEMENTS[self.owned[0]].rpartition(".")[0]
        text = f"dataforge.celery_signals connects {receivers} ({module.replace('.', '/')}.py), which records every run"
        if self.writes_next_run_at:
            text += "; next_run_at is beat's (DatabaseScheduler advances it at dispatch)"
        return text


def _dotted(node: ast.expr) -> str | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([node.id, *reversed(parts)])


class _Signals:
    """How the module names Celery's signals: ``task_postrun``, ``signals.task_postrun``,
    ``celery.signals.task_postrun``."""

    def __init__(self, tree: ast.Module) -> None:
        self.names: dict[str, str] = {}
        self.modules: set[str] = set()
        for stmt in tree.body:
            if isinstance(stmt, ast.ImportFrom) and stmt.level == 0:
                for alias in stmt.names:
                    if stmt.module == "celery.signals" and alias.name != "*":
                        self.names[alias.asname or alias.name] = alias.name
                    elif stmt.module == "celery" and alias.name == "signals":
                        self.modules.add(alias.asname or "signals")
            elif isinstance(stmt, ast.Import):
                for alias in stmt.names:
                    if alias.name in ("celery", "celery.signals"):
                        self.modules.add(alias.asname or "celery.signals")

    def signal(self, node: ast.expr) -> str | None:
        if isinstance(node, ast.Name):
            return self.names.get(node.id)
        if isinstance(node, ast.Attribute):
            owner = _dotted(node.value)
            if owner is not None and owner in self.modules:
                return node.attr
        return None

    def connected(self, node: ast.expr) -> str | None:
        """The signal of ``X.connect`` or ``X.connect(...)`` (a decorator), else ``None``."""
        target = node.func if isinstance(node, ast.Call) else node
        if isinstance(target, ast.Attribute) and target.attr == "connect":
            return self.signal(target.value)
        return None


def _model_names(tree: ast.Module) -> set[str]:
    """Names bound to the legacy models (``from app.models import ScheduledTask``)."""
    out: set[str] = set()
    for stmt in ast.walk(tree):
        if isinstance(stmt, ast.ImportFrom) and stmt.module is not None:
            module = stmt.module
            if module == MODEL_MODULES or module.startswith(MODEL_MODULES + ".") or module.split(".")[-1] == "models":
                out.update(a.asname or a.name for a in stmt.names if a.name != "*")
        elif isinstance(stmt, ast.Import):
            for alias in stmt.names:
                if alias.name == MODEL_MODULES or alias.name.startswith(MODEL_MODULES + "."):
                    out.add(alias.asname or alias.name.split(".")[0])
    return out


def _touches_tables(fn: ast.FunctionDef | ast.AsyncFunctionDef, models: set[str]) -> tuple[bool, bool]:
    """(reads or writes the scheduling tables, writes next_run_at)."""
    records = bool(loaded_names(fn) & models)
    next_run = False
    for node in ast.walk(fn):
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and node.attr in _RUN_COLUMNS:
            records = True
            next_run = next_run or node.attr == "next_run_at"
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value.lower()
            if any(table in text for table in _TABLES):
                records = True
                next_run = next_run or "next_run_at" in text
    return records, next_run


def find_signal_handlers(tree: ast.Module) -> list[SignalHandler]:
    """Every module-level function connected to a Celery signal, in line order."""
    signals = _Signals(tree)
    if not signals.names and not signals.modules:
        return []
    defs: dict[str, tuple[int, ast.FunctionDef | ast.AsyncFunctionDef]] = {}
    connected: dict[str, list[str]] = {}
    statements: dict[str, list[int]] = {}
    for i, stmt in enumerate(tree.body):
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
            defs[stmt.name] = (i, stmt)
            for decorator in stmt.decorator_list:
                signal = signals.connected(decorator)
                if signal is not None:
                    connected.setdefault(stmt.name, []).append(signal)
        elif isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
            call = stmt.value
            signal = signals.connected(call.func) if not isinstance(call.func, ast.Call) else None
            receiver = (
                call.args[0] if call.args else next((k.value for k in call.keywords if k.arg == "receiver"), None)
            )
            if signal is not None and isinstance(receiver, ast.Name):
                connected.setdefault(receiver.id, []).append(signal)
                statements.setdefault(receiver.id, []).append(i)
    models = _model_names(tree)
    out: list[SignalHandler] = []
    for name, names in connected.items():
        if name not in defs:
            continue  # a receiver imported from elsewhere: its module is looked at on its own
        index, fn = defs[name]
        records, next_run = _touches_tables(fn, models)
        out.append(
            SignalHandler(
                function=name,
                line=fn.lineno,
                signals=tuple(dict.fromkeys(names)),
                statements=tuple(sorted({index, *statements.get(name, [])})),
                records=records,
                writes_next_run_at=next_run,
            )
        )
    return sorted(out, key=lambda h: h.line)


def is_emptied(tree: ast.Module) -> bool:
    """Nothing but a docstring, imports and ``__all__``: nothing in the module is of use."""
    for i, stmt in enumerate(tree.body):
        if i == 0 and isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
            continue
        if isinstance(stmt, ast.Import | ast.ImportFrom):
            continue
        if isinstance(stmt, ast.Assign) and all(isinstance(t, ast.Name) and t.id == "__all__" for t in stmt.targets):
            continue
        return False
    return True


def remove_handlers(
    tree: cst.Module, tree_ast: ast.Module, path: str, extra: tuple[int, ...] = ()
) -> tuple[Pruned, list[SignalHandler], list[SignalHandler]]:
    """``tree`` without its recording handlers (and the statements ``extra``):
    ``(pruned, removed handlers, kept handlers)``. Raises :class:`ConversionRefused`."""
    handlers = find_signal_handlers(tree_ast)
    problems: list[Refusal] = []
    removed: list[SignalHandler] = []
    kept: list[SignalHandler] = []
    for handler in handlers:
        if not handler.owned or not handler.records:
            kept.append(handler)
        elif len(handler.owned) < len(handler.signals):
            others = ", ".join(s for s in handler.signals if s not in REPLACEMENTS)
            problems.append(
                Refusal(
                    handler.line,
                    f"{handler.function}() records runs and is also connected to {others}; split it (the recording "
                    "part is dataforge.celery_signals's now), then re-run",
                )
            )
        else:
            removed.append(handler)
    if problems:
        raise ConversionRefused(problems, path)
    indexes = {i for h in removed for i in h.statements} | set(extra)
    pruned = prune(tree, tree_ast, indexes)
    gone = {h.function for h in removed}
    for line, name in pruned.broken:
        what = f"the handler {name}()" if name in gone else f"{name}, which only removed code used"
        problems.append(Refusal(line, f"uses {what}; remove or rewrite that use, then re-run"))
    if problems:
        raise ConversionRefused(sorted(set(problems)), path)
    return pruned, removed, kept


def handler_notes(removed: list[SignalHandler], kept: list[SignalHandler]) -> list[str]:
    """One report line per handler removed (and what replaces it) or kept (and why)."""
    notes = [f"removed {h.function}() (line {h.line}, {', '.join(h.signals)}): {h.replacement()}" for h in removed]
    for h in kept:
        why = (
            "it touches no scheduling table; it runs beside dataforge.celery_signals's receivers"
            if h.owned
            else "not a task signal the runtime records"
        )
        notes.append(f"kept {h.function}() (line {h.line}, {', '.join(h.signals)}): {why}")
    return notes


class RemoveSignalHandlersCommand(Command):
    """Remove the module's handlers that ``dataforge.celery_signals`` replaces."""

    DESCRIPTION = "Remove legacy task-signal handlers that dataforge.celery_signals replaces."

    def __init__(self, context: CodemodContext) -> None:
        super().__init__(context)
        self.removed: list[SignalHandler] = []
        self.kept: list[SignalHandler] = []
        #: Every top-level name that went (handlers, their imports and state).
        self.removed_names: list[Removed] = []
        self.emptied = False

    def transform_module_impl(self, tree: cst.Module) -> cst.Module:
        path = self.context.filename or "<module>"
        tree_ast = ast.parse(tree.bytes, filename=path)
        pruned, self.removed, self.kept = remove_handlers(tree, tree_ast, path)
        self.removed_names = pruned.removed
        for note in handler_notes(self.removed, self.kept):
            self.warn(note)
        out = pruned.module if self.removed else tree
        self.emptied = is_emptied(ast.parse(out.bytes)) if self.removed else False
        return out
