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
A ``get_registered_tasks`` that takes parameters (a filter the delegate cannot keep) is refused.
Running the command on its output changes nothing.
"""

from __future__ import annotations

import ast
import itertools

import libcst as cst
from libcst.codemod import CodemodContext

from refactor_tool.analysis import analyze_tree
from refactor_tool.commands._base import Command, free_name, statement_map
from refactor_tool.errors import ConversionRefused, Refusal
from refactor_tool.import_layout import ImportStyle, Statement, add_import
from refactor_tool.options import DEFAULT_CELERY_APP_IMPORT, ImportTarget
from refactor_tool.pruning import Removed, loaded_names, prune

__all__ = ["DELEGATE_MODULE", "SCANNER", "SimplifySchedulerRegistryCommand"]

#: The legacy scanner and the function the API keeps.
SCANNER = "discover_scripts"
_KEPT = "get_registered_tasks"
#: Where the runtime's ``get_registered_tasks(app)`` lives (its public face).
DELEGATE_MODULE = "dataforge.scheduler.registry"


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
            raise ConversionRefused(
                [Refusal(kept[1].lineno, f"{_KEPT}() is not the legacy one (no {SCANNER}() beside it) and does not "
                 f"delegate to {DELEGATE_MODULE}; convert this file by hand")],
                path,
            )  # fmt: skip
        if kept is not None:
            fn = kept[1]
            args = fn.args
            if (
                isinstance(fn, ast.AsyncFunctionDef)
                or args.posonlyargs
                or args.args
                or args.vararg
                or args.kwonlyargs
                or args.kwarg
            ):
                raise ConversionRefused(
                    [Refusal(fn.lineno, f"{_KEPT}() takes parameters: {DELEGATE_MODULE}.{_KEPT} cannot keep what "
                     "they do; rewrite it by hand")],
                    path,
                )  # fmt: skip
            released = loaded_names(fn)
            tree = self._delegate(tree, tree_ast, kept[0])
            tree_ast = ast.parse(tree.bytes, filename=path)
        else:
            released = set()
        scanner = next(i for i, s in enumerate(tree_ast.body) if isinstance(s, ast.FunctionDef | ast.AsyncFunctionDef)
                       and s.name == SCANNER)  # fmt: skip
        pruned = prune(tree, tree_ast, {scanner}, released)
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
        return pruned.module

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
                itertools.chain([self.celery_app_import.attr], (f"dataforge_{self.celery_app_import.attr}_{n}"
                                for n in itertools.count(2))),
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
