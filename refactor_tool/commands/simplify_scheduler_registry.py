"""``app/scheduler/registry.py``: ``discover_scripts()`` goes, ``get_registered_tasks()`` delegates.

The legacy registry imports every ``scripts/*.py`` job to list it (``discover_scripts()``) and
serves the API both systems side by side (``get_registered_tasks()``). The design removes the
scanning and keeps ``get_registered_tasks()`` for the API's queries; the runtime's
:func:`dataforge.scheduler.registry.get_registered_tasks` already joins ``REGISTERED_TASKS``
with Celery's registry, so the function keeps its name, decorators and docstring and
delegates::

    def get_registered_tasks():
        \"\"\"<its docstring>\"\"\"
        return dataforge_registry.get_registered_tasks(celery_app)

``discover_scripts()`` goes, with what only it used (``import scripts``, ``pkgutil``...: once
``scripts/`` is converted, ``import scripts`` would even fail). Anything that stays but calls
what went is refused; callers in other files are reported by the runner, with file and line.
A ``get_registered_tasks`` that takes parameters (a filter the delegate cannot keep) is refused;
a module without ``discover_scripts()`` is skipped (simplified already, by hand).
Running the command on its output changes nothing.
"""

from __future__ import annotations

import ast
import itertools

import libcst as cst
from libcst.codemod import CodemodContext, SkipFile

from refactor_tool.analysis import analyze_tree
from refactor_tool.commands._base import Command, free_name, statement_map
from refactor_tool.errors import ConversionRefused, Refusal
from refactor_tool.import_layout import ImportStyle, Statement, add_import
from refactor_tool.options import DEFAULT_CELERY_APP_IMPORT, ImportTarget
from refactor_tool.pruning import Removed, loaded_names, prune

__all__ = ["DELEGATE_MODULE", "SCANNER", "NoScanner", "SimplifySchedulerRegistryCommand"]

#: The legacy scanner and the function the API keeps.
SCANNER = "discover_scripts"
_KEPT = "get_registered_tasks"
#: Where the runtime's ``get_registered_tasks(app)`` lives (its public face).
DELEGATE_MODULE = "dataforge.scheduler.registry"


class NoScanner(SkipFile):
    """No ``discover_scripts()``: simplified already, by hand or by an earlier run."""


def _delegates(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """``return <registry>.get_registered_tasks(<app>)`` after an optional docstring."""
    body = list(fn.body)
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    if len(body) != 1 or not isinstance(body[0], ast.Return) or not isinstance(body[0].value, ast.Call):
        return False
    func = body[0].value.func
    return isinstance(func, ast.Attribute) and func.attr == _KEPT and len(body[0].value.args) == 1


class SimplifySchedulerRegistryCommand(Command):
    """Remove the script scanning; make ``get_registered_tasks()`` the runtime's."""

    DESCRIPTION = "Remove discover_scripts(); get_registered_tasks() delegates to dataforge's registry."

    def __init__(
        self,
        context: CodemodContext,
        celery_app_import: ImportTarget = DEFAULT_CELERY_APP_IMPORT,
        style: ImportStyle | None = None,
    ) -> None:
        super().__init__(context)
        self.celery_app_import = celery_app_import
        self.style = style or ImportStyle(known_first_party=("app",))
        self.removed_names: list[Removed] = []

    def transform_module_impl(self, tree: cst.Module) -> cst.Module:
        path = self.context.filename or "<module>"
        tree_ast = ast.parse(tree.bytes, filename=path)
        defs = {
            s.name: (i, s) for i, s in enumerate(tree_ast.body) if isinstance(s, ast.FunctionDef | ast.AsyncFunctionDef)
        }
        kept = defs.get(_KEPT)
        if SCANNER not in defs:
            if kept is None or _delegates(kept[1]):
                return tree
            raise NoScanner(
                f"no {SCANNER}(): nothing to remove; {_KEPT}() is left as written (it does not delegate to "
                f"{DELEGATE_MODULE}, which joins REGISTERED_TASKS with Celery's registry)"
            )
        if kept is not None:
            fn = kept[1]
            args = fn.args
            takes = args.posonlyargs or args.args or args.vararg or args.kwonlyargs or args.kwarg
            if isinstance(fn, ast.AsyncFunctionDef) or takes:
                raise ConversionRefused(
                    [Refusal(fn.lineno, f"{_KEPT}() takes parameters: {DELEGATE_MODULE}.{_KEPT} cannot keep what "
                     "they do; rewrite it by hand")],
                    path,
                )  # fmt: skip
        # Pruned first, on the module as written (refusals name its lines); then the delegate. The
        # kept function still reads what its decorators and signature read, not its old body.
        rewritten = None
        if kept is not None:
            outside = [*kept[1].decorator_list, kept[1].args, *([kept[1].returns] if kept[1].returns else [])]
            rewritten = {kept[0]: set().union(*(loaded_names(node) for node in outside))}
        pruned = prune(tree, tree_ast, {defs[SCANNER][0]}, rewritten)
        if pruned.broken:
            raise ConversionRefused(
                [Refusal(line, f"uses {name}, which goes with {SCANNER}(); remove or rewrite that use, then re-run")
                 for line, name in pruned.broken],
                path,
            )  # fmt: skip
        self.removed_names = pruned.removed
        self.warn(f"removed {SCANNER}() (line {defs[SCANNER][1].lineno}) and the script scanning only it used")
        if kept is not None:
            self.warn(
                f"{_KEPT}() returns {DELEGATE_MODULE}.{_KEPT}(<app>): REGISTERED_TASKS joined with Celery's registry, "
                "keyed by task name (the scripts:<name> keys are gone: converted jobs are listed by task name), each "
                "entry with task_name, in_registry, in_celery and dataforge_task beside name, description, category, "
                "params"
            )
        if kept is None:
            return pruned.module
        module = pruned.module
        module_ast = ast.parse(module.bytes, filename=path)
        index = next(i for i, s in enumerate(module_ast.body) if isinstance(s, ast.FunctionDef) and s.name == _KEPT)
        return self._delegate(module, module_ast, index)

    def _delegate(self, tree: cst.Module, tree_ast: ast.Module, index: int) -> cst.Module:
        facts = analyze_tree(tree_ast)
        taken = set(facts.identifiers)
        statements: list[cst.SimpleStatementLine] = []
        app = next(
            (
                b.name
                for b in facts.imports.values()
                if (b.module, b.attr, b.level) == (self.celery_app_import.module, self.celery_app_import.attr, 0)
            ),
            None,
        )
        if app is None:
            app = free_name(
                itertools.chain(
                    [self.celery_app_import.attr, f"dataforge_{self.celery_app_import.attr}"],
                    (f"dataforge_{self.celery_app_import.attr}_{n}" for n in itertools.count(2)),
                ),
                taken,
            )  # fmt: skip
            taken.add(app)
            alias = f" as {app}" if app != self.celery_app_import.attr else ""
            statements.append(self._parse(f"from {self.celery_app_import.module} import "
                                          f"{self.celery_app_import.attr}{alias}\n", tree))  # fmt: skip
        package, _, attr = DELEGATE_MODULE.rpartition(".")
        registry = free_name(
            itertools.chain(["dataforge_registry"], (f"dataforge_registry_{n}" for n in itertools.count(2))), taken
        )
        statements.append(self._parse(f"from {package} import {attr} as {registry}\n", tree))
        mapping = statement_map(tree.body, len(tree_ast.body))
        assert mapping is not None, "ast and libcst disagree on the statement count"
        body: list[Statement] = list(tree.body)
        fn = body[mapping[index]]
        assert isinstance(fn, cst.FunctionDef) and isinstance(fn.body, cst.IndentedBlock)
        inner = list(fn.body.body)
        doc = inner[:1] if inner and _is_docstring(inner[0]) else []
        call = cst.parse_statement(
            f"return {registry}.{_KEPT}({app})\n",
            config=cst.PartialParserConfig(default_newline=tree.default_newline, default_indent=tree.default_indent),
        )
        body[mapping[index]] = fn.with_changes(body=fn.body.with_changes(body=[*doc, call]))
        has_docstring = facts.docstring is not None
        for statement in statements:
            body = add_import(
                body, statement, self.style, insert_at=1 if has_docstring else 0, after_docstring=has_docstring
            )
        return tree.with_changes(body=body)

    @staticmethod
    def _parse(source: str, tree: cst.Module) -> cst.SimpleStatementLine:
        statement = cst.parse_statement(source, config=tree.config_for_parsing)
        assert isinstance(statement, cst.SimpleStatementLine)
        return statement


def _is_docstring(stmt: cst.BaseStatement) -> bool:
    return (
        isinstance(stmt, cst.SimpleStatementLine)
        and len(stmt.body) == 1
        and isinstance(stmt.body[0], cst.Expr)
        and isinstance(stmt.body[0].value, cst.SimpleString | cst.ConcatenatedString)
    )
