"""``app/celery_tasks.py`` becomes ``app/celery_tasks_legacy.py``, kept only for a full rollback.

The design renames the generic executor's module and keeps it for the rollback window. What
the renamed module keeps and loses:

* ``execute_scheduled_task`` and everything it needs stay byte for byte;
* the duplicate ``task_postrun`` handler (``update_next_run_time``) goes, with the imports only
  it used (:mod:`refactor_tool.commands.remove_signal_handlers`);
* every task keeps the name it was registered under: Celery named it after its module
  (``app.celery_tasks.execute_scheduled_task``, the name legacy messages carry), so a task
  without ``name=`` gets that name written out, or the rename would change it;
* a comment says that nothing may import the module: the runtime registers that name itself
  (the forwarder, or the compat shim while the legacy switch is on), and importing the module
  would register it over them.

The legacy poller ``dispatch_due_tasks`` (a static beat entry, replaced by DatabaseScheduler)
is kept with the executor. Any other task would stop being registered, since the worker imports
only the task packages: the module is refused, naming it, until it is moved into ``app/tasks/``.
So is a module without ``execute_scheduled_task`` (a custom executor) or that builds its own
Celery app. Running the command on its output changes nothing.
"""

from __future__ import annotations

import ast
import json

import libcst as cst
from libcst.codemod import CodemodContext

from refactor_tool.analysis import TaskDef, analyze_tree
from refactor_tool.commands._base import Command, statement_map
from refactor_tool.commands.remove_signal_handlers import SignalHandler, handler_notes, remove_handlers
from refactor_tool.errors import ConversionRefused, Refusal
from refactor_tool.legacy_layout import EXECUTOR_FUNCTION, EXECUTOR_MODULE, POLLER_FUNCTION
from refactor_tool.pruning import Removed

__all__ = ["ROLLBACK_COMMENT", "KeepLegacyExecutorCommand", "celery_constructions"]

#: The comment the renamed module carries at its top (its first line also marks a converted module).
ROLLBACK_COMMENT = (
    "# Rollback only: nothing may import this module. The runtime registers",
    f"# {EXECUTOR_MODULE}.{EXECUTOR_FUNCTION} itself (the forwarder, or the compat shim",
    "# while the legacy switch is on): importing this module would register it again.",
)


def celery_constructions(tree: ast.Module) -> list[int]:
    """Lines that build a Celery app (``Celery(...)``, ``celery.Celery(...)``)."""
    names = {"celery.Celery"}
    for stmt in ast.walk(tree):
        if isinstance(stmt, ast.ImportFrom) and stmt.module == "celery" and stmt.level == 0:
            names.update(a.asname or a.name for a in stmt.names if a.name == "Celery")
        elif isinstance(stmt, ast.Import):
            names.update(f"{a.asname}.Celery" for a in stmt.names if a.name == "celery" and a.asname)
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            text = (
                func.id if isinstance(func, ast.Name) else ast.unparse(func) if isinstance(func, ast.Attribute) else ""
            )
            if text in names:
                lines.append(node.lineno)
    return sorted(lines)


class KeepLegacyExecutorCommand(Command):
    """Turn ``app/celery_tasks.py`` into the rollback-only ``app/celery_tasks_legacy.py``."""

    DESCRIPTION = "Keep the legacy executor for rollback: no duplicate handler, names pinned."

    def __init__(self, context: CodemodContext, module: str = EXECUTOR_MODULE) -> None:
        super().__init__(context)
        #: The module the tasks were registered from (their default names derive from it).
        self.legacy_module = module
        self.removed: list[SignalHandler] = []
        self.kept: list[SignalHandler] = []
        self.removed_names: list[Removed] = []
        #: Task names written out: (function, name).
        self.pinned: list[tuple[str, str]] = []

    def transform_module_impl(self, tree: cst.Module) -> cst.Module:
        path = self.context.filename or "<module>"
        tree_ast = ast.parse(tree.bytes, filename=path)
        facts = analyze_tree(tree_ast)
        problems = [
            Refusal(line, "builds its own Celery app; the backend has one app (dataforge's): convert this file by hand")
            for line in celery_constructions(tree_ast)
        ]
        tasks = {t.function: t for t in facts.tasks}
        if EXECUTOR_FUNCTION not in tasks:
            problems.append(
                Refusal(
                    1,
                    f"defines no {EXECUTOR_FUNCTION} task: not the legacy generic executor (a custom one?); "
                    "convert this file by hand",
                )
            )
        for task in facts.tasks:
            if task.function not in (EXECUTOR_FUNCTION, POLLER_FUNCTION):
                problems.append(
                    Refusal(
                        task.line,
                        f"defines task {task.function}() besides the legacy executor: the worker imports only the "
                        "task packages, so it would stop being registered; move it into the tasks package "
                        "(app/tasks/), then re-run",
                    )
                )
        if problems:
            raise ConversionRefused(sorted(set(problems)), path)
        tree = self._pin_names(tree, tree_ast, facts.tasks)
        pruned, self.removed, self.kept = remove_handlers(tree, tree_ast, path)
        self.removed_names = pruned.removed
        for note in handler_notes(self.removed, self.kept):
            self.warn(note)
        if POLLER_FUNCTION in tasks:
            self.warn(
                f"kept {POLLER_FUNCTION}() (line {tasks[POLLER_FUNCTION].line}): the legacy poller; DatabaseScheduler "
                "dispatches every schedule now (its beat entry goes from the app's beat_schedule)"
            )
        return self._mark(pruned.module)

    def _pin_names(self, tree: cst.Module, tree_ast: ast.Module, tasks: list[TaskDef]) -> cst.Module:
        mapping = statement_map(tree.body, len(tree_ast.body))
        assert mapping is not None, "ast and libcst disagree on the statement count"
        positions = {
            s.name: (i, s) for i, s in enumerate(tree_ast.body) if isinstance(s, ast.FunctionDef | ast.AsyncFunctionDef)
        }
        body = list(tree.body)
        for task in tasks:
            position, node = positions[task.function]
            named = any(k.arg == "name" for d in node.decorator_list if isinstance(d, ast.Call) for k in d.keywords)
            if task.task_name is not None or named:
                continue
            name = f"{self.legacy_module}.{task.function}"
            index = mapping[position]
            fn = body[index]
            assert isinstance(fn, cst.FunctionDef)
            body[index] = fn.with_changes(decorators=[_with_name(d, name) if _is_task(d) else d for d in fn.decorators])
            self.pinned.append((task.function, name))
            self.warn(f"{task.function}() keeps its task name {name} (written out: the module is renamed)")
        return tree.with_changes(body=body)

    def _mark(self, tree: cst.Module) -> cst.Module:
        if any(line.comment is not None and line.comment.value == ROLLBACK_COMMENT[0] for line in tree.header):
            return tree
        if tree.body and any(
            line.comment is not None and line.comment.value == ROLLBACK_COMMENT[0]
            for line in tree.body[0].leading_lines
        ):
            return tree
        comments = [cst.EmptyLine(comment=cst.Comment(text)) for text in ROLLBACK_COMMENT]
        return tree.with_changes(header=[*tree.header, *comments])


def _is_task(decorator: cst.Decorator) -> bool:
    node = decorator.decorator
    target = node.func if isinstance(node, cst.Call) else node
    if isinstance(target, cst.Attribute):
        return target.attr.value in ("task", "shared_task")
    return isinstance(target, cst.Name) and target.value == "shared_task"


def _with_name(decorator: cst.Decorator, name: str) -> cst.Decorator:
    """``@app.task(bind=True)`` -> ``@app.task(bind=True, name="<name>")`` (the call's own layout kept)."""
    arg = cst.Arg(
        keyword=cst.Name("name"),
        value=cst.SimpleString(json.dumps(name)),
        equal=cst.AssignEqual(whitespace_before=cst.SimpleWhitespace(""), whitespace_after=cst.SimpleWhitespace("")),
    )
    node = decorator.decorator
    if not isinstance(node, cst.Call):
        return decorator.with_changes(decorator=cst.Call(func=node, args=[arg]))
    args = list(node.args)
    if not args:
        return decorator.with_changes(decorator=node.with_changes(args=[arg]))
    last = args[-1]
    if isinstance(last.comma, cst.Comma):
        # A trailing comma (one argument per line): the new one takes the last one's place.
        spacing = node.whitespace_before_args
        between = spacing if isinstance(spacing, cst.ParenthesizedWhitespace) else cst.SimpleWhitespace(" ")
        args[-1] = last.with_changes(comma=cst.Comma(whitespace_after=between))
        args.append(arg.with_changes(comma=last.comma))
    else:
        args[-1] = last.with_changes(comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" ")))
        args.append(arg)
    return decorator.with_changes(decorator=node.with_changes(args=args))
