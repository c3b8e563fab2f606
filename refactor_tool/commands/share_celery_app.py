"""``app/celery_app.py`` hands out this project's app instead of building a second one.

The legacy module builds ``celery_app = Celery(..., include=["app.celery_tasks", ...])``,
configures it, schedules the legacy poller (``beat_schedule``: ``dispatch_due_tasks`` every
minute) and imports ``app.celery_signals`` so its handlers connect. After the conversion the
worker and beat run ``dataforge.celery_app``; code that still imports ``app.celery_app`` (task
modules, ``app/__init__.py`` in Celery's usual layout, the API) must get that same app, or it
sends and registers on a second one. So the module becomes::

    \"\"\"<its docstring>\"\"\"

    from dataforge.celery_app import celery_app

    # ...
    __all__ = ["celery_app"]

* the ``Celery(...)`` assignment becomes the import (the name it bound is kept: ``celery =
  Celery(...)`` gives ``from dataforge.celery_app import celery_app as celery``);
* ``conf.update(...)``, ``conf.<key> = ...``, ``config_from_object(...)``,
  ``autodiscover_tasks(...)`` go: each setting is reported with what the runtime uses instead
  (:mod:`refactor_tool.legacy_settings`). ``include`` goes with them: the legacy executor comes
  back through the legacy switch, not through an include list;
* the ``dispatch_due_tasks`` beat entry goes (DatabaseScheduler dispatches every schedule).
  Any other static beat entry is refused: beat reads schedules from the database, so it would
  stop running; add it as a schedule, remove the entry, re-run;
* imports of the legacy signal handlers and executor modules go; imports only the removed
  statements used go too (:mod:`refactor_tool.pruning`);
* everything else stays, unless it uses the app (a task defined here, ``add_periodic_task``):
  that is refused, as is a module building several apps or none.

Running the command on its output changes nothing.
"""

from __future__ import annotations

import ast

import libcst as cst
from libcst.codemod import CodemodContext

from refactor_tool.analysis import analyze_tree, is_main_guard
from refactor_tool.commands._base import Command
from refactor_tool.commands.keep_legacy_executor import celery_constructions
from refactor_tool.errors import ConversionRefused, Refusal
from refactor_tool.import_layout import ImportStyle, Statement, add_import, is_import_line, required_blank_lines
from refactor_tool.legacy_layout import EXECUTOR_MODULE, POLLER_FUNCTION, SIGNALS_MODULE
from refactor_tool.legacy_settings import celery_setting_note
from refactor_tool.options import DEFAULT_CELERY_APP_IMPORT, ImportTarget
from refactor_tool.pruning import Removed, prune

__all__ = ["SHARED_APP_COMMENT", "ShareCeleryAppCommand"]

SHARED_APP_COMMENT = "# The worker's app (dataforge.celery_app): this backend's code shares it."
#: Modules whose import connects the legacy handlers or registers the legacy executor.
_LEGACY_MODULES = (SIGNALS_MODULE, EXECUTOR_MODULE)


def _dotted(node: ast.expr) -> list[str] | None:
    parts: list[str] = []
    while True:
        if isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        elif isinstance(node, ast.Subscript):
            key = node.slice
            parts.append(str(key.value) if isinstance(key, ast.Constant) else "[]")
            node = node.value
        elif isinstance(node, ast.Name):
            parts.append(node.id)
            return parts[::-1]
        else:
            return None


def _legacy_import(stmt: ast.stmt) -> list[str] | None:
    """The legacy modules ``stmt`` imports when it imports nothing else, else ``None``."""
    if isinstance(stmt, ast.Import):
        names = [a.name for a in stmt.names]
    elif isinstance(stmt, ast.ImportFrom) and stmt.level == 0 and stmt.module:
        names = [f"{stmt.module}.{a.name}" for a in stmt.names]
        if stmt.module in _LEGACY_MODULES:
            names = [stmt.module]
    else:
        return None
    if names and all(n in _LEGACY_MODULES for n in names):
        return names
    return None


class ShareCeleryAppCommand(Command):
    """Make ``app/celery_app.py`` hand out the runtime's app."""

    DESCRIPTION = "Make the legacy app module hand out dataforge's celery_app (one app)."

    def __init__(
        self,
        context: CodemodContext,
        celery_app_import: ImportTarget = DEFAULT_CELERY_APP_IMPORT,
        style: ImportStyle | None = None,
    ) -> None:
        super().__init__(context)
        self.target = celery_app_import
        self.style = style or ImportStyle(known_first_party=("app",))
        #: Report lines: each setting, beat entry and import that went.
        self.notes: list[str] = []
        self.removed_names: list[Removed] = []
        self.app_name: str | None = None

    def transform_module_impl(self, tree: cst.Module) -> cst.Module:
        path = self.context.filename or "<module>"
        tree_ast = ast.parse(tree.bytes, filename=path)
        facts = analyze_tree(tree_ast)
        problems: list[Refusal] = []
        constructions = celery_constructions(tree_ast)
        apps = [
            (i, stmt)
            for i, stmt in enumerate(tree_ast.body)
            if isinstance(stmt, ast.Assign | ast.AnnAssign)
            and isinstance(stmt.value, ast.Call)
            and stmt.value.lineno in constructions
        ]
        shared = [b for b in facts.imports.values() if (b.module, b.attr) == (self.target.module, self.target.attr)]
        if len(constructions) + len(shared) > 1:
            lines = ", ".join(str(n) for n in sorted([*constructions, *(b.line for b in shared)]))
            raise ConversionRefused(
                [Refusal(min([*constructions, *(b.line for b in shared)]), f"several Celery apps (lines {lines}); "
                 "the backend needs one (dataforge's): convert this file by hand")],
                path,
            )  # fmt: skip
        if len(apps) != len(constructions):
            raise ConversionRefused(
                [Refusal(constructions[0], "builds its Celery app outside a plain module-level assignment; convert "
                 "this file by hand")],
                path,
            )  # fmt: skip
        if not apps and not shared:
            raise ConversionRefused(
                [Refusal(1, f"builds no Celery app and does not import {self.target}: not the legacy app module")],
                path,
            )
        app_index: int | None = None
        if apps:
            app_index, assign = apps[0]
            target = assign.targets[0] if isinstance(assign, ast.Assign) else assign.target
            if not isinstance(target, ast.Name) or (isinstance(assign, ast.Assign) and len(assign.targets) > 1):
                raise ConversionRefused([Refusal(assign.lineno, "the app is not bound to one plain name")], path)
            name = target.id
            assert isinstance(assign.value, ast.Call)
            self._celery_arguments(assign.value)
        else:
            name = shared[0].name
        self.app_name = name
        remove: set[int] = set() if app_index is None else {app_index}
        for i, stmt in enumerate(tree_ast.body):
            if i == app_index or is_main_guard(stmt):
                continue
            legacy = _legacy_import(stmt)
            if legacy is not None:
                remove.add(i)
                for legacy_module in legacy:
                    what = "its signal handlers" if legacy_module == SIGNALS_MODULE else "the legacy executor"
                    self.notes.append(
                        f"line {stmt.lineno}: no longer imports {legacy_module} ({what}): dataforge.celery_signals "
                        "records every run"
                    )
                continue
            if self._configuration(stmt, name, problems):
                remove.add(i)
            elif any(isinstance(n, ast.Name) and n.id == name for n in ast.walk(stmt)):
                problems.append(
                    Refusal(
                        stmt.lineno,
                        f"`{ast.unparse(stmt).splitlines()[0][:60]}` uses the app beyond configuring it; once "
                        f"{name} is dataforge's app it would act on the worker's app: move it out, then re-run",
                    )
                )
        if problems:
            raise ConversionRefused(sorted(set(problems)), path)
        if not remove:
            return tree
        # The app's name stays bound: the import that replaces the assignment binds it.
        pruned = prune(tree, tree_ast, remove, rebound={name})
        if pruned.broken:
            raise ConversionRefused(
                [Refusal(line, f"uses {n}, which only the app's configuration used; move that use, then re-run")
                 for line, n in pruned.broken],
                path,
            )  # fmt: skip
        self.removed_names = pruned.removed
        module = pruned.module
        if not shared:
            module = self._hand_out(module, name, facts.docstring is not None)
        self.notes.sort(key=lambda note: int(note.split(":")[0].removeprefix("line ")))
        for note in self.notes:
            self.warn(note)
        return module

    # -- what goes ------------------------------------------------------------------------------
    def _celery_arguments(self, call: ast.Call) -> None:
        for keyword in call.keywords:
            if keyword.arg is None:
                self.notes.append(f"line {keyword.value.lineno}: **{ast.unparse(keyword.value)} is not applied")
            else:
                self.notes.append(celery_setting_note(keyword.arg, keyword.value.lineno))

    def _configuration(self, stmt: ast.stmt, app: str, problems: list[Refusal]) -> bool:
        """Whether ``stmt`` only configures the app (it then goes, its settings reported)."""
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
            call = stmt.value
            chain = _dotted(call.func)
            if chain is None or chain[0] != app:
                return False
            method = ".".join(chain[1:])
            if method in ("conf.update", "conf.setdefault"):
                self._settings(call, problems)
            elif method == "conf.beat_schedule.update" and call.args:
                self._beat_schedule(call.args[0], problems)
            elif method in ("config_from_object", "config_from_envvar"):
                self.notes.append(
                    f"line {stmt.lineno}: {method}({ast.unparse(call.args[0]) if call.args else ''}) is not applied: "
                    "the worker's app is dataforge.celery_app, configured only by its DATAFORGE_* settings"
                )
            elif method == "autodiscover_tasks":
                self.notes.append(celery_setting_note("autodiscover_tasks", stmt.lineno))
            else:
                return False
            return True
        if isinstance(stmt, ast.Assign | ast.AugAssign | ast.AnnAssign):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            chains = [_dotted(t) for t in targets]
            if not all(c is not None and len(c) >= 3 and c[0] == app and c[1] == "conf" for c in chains):
                return False
            for chain in chains:
                assert chain is not None
                if chain[2] == "beat_schedule" and len(chain) == 3 and stmt.value is not None:
                    self._beat_schedule(stmt.value, problems)
                elif chain[2] == "beat_schedule" and len(chain) == 4 and stmt.value is not None:
                    self._beat_entry(repr(chain[3]), stmt.value, problems)  # beat_schedule["name"] = {...}
                elif chain[2] == "beat_schedule":
                    problems.append(
                        Refusal(stmt.lineno, "changes beat_schedule in a way whose entries cannot be known")
                    )
                else:
                    self.notes.append(celery_setting_note(chain[2], stmt.lineno))
            return True
        return False

    def _settings(self, call: ast.Call, problems: list[Refusal]) -> None:
        items: list[tuple[str | None, ast.expr, int]] = [(k.arg, k.value, k.value.lineno) for k in call.keywords]
        for arg in call.args:
            if isinstance(arg, ast.Dict):
                for key_node, value_node in zip(arg.keys, arg.values, strict=True):
                    text = (
                        key_node.value
                        if isinstance(key_node, ast.Constant) and isinstance(key_node.value, str)
                        else None
                    )
                    items.append((text, value_node, value_node.lineno))
            else:
                items.append((None, arg, arg.lineno))
        for key, value, line in items:
            if key is None:
                self.notes.append(f"line {line}: settings from {ast.unparse(value)[:60]} are not applied")
            elif key == "beat_schedule":
                self._beat_schedule(value, problems)
            else:
                self.notes.append(celery_setting_note(key, line))

    def _beat_schedule(self, value: ast.expr, problems: list[Refusal]) -> None:
        if not isinstance(value, ast.Dict):
            problems.append(
                Refusal(value.lineno, "beat_schedule is not a dict literal: which entries it holds cannot be known")
            )
            return
        if not value.keys:
            self.notes.append(celery_setting_note("beat_schedule", value.lineno))
        for key, entry in zip(value.keys, value.values, strict=True):
            self._beat_entry(ast.unparse(key) if key is not None else "**", entry, problems)

    def _beat_entry(self, name: str, entry: ast.expr, problems: list[Refusal]) -> None:
        """The poller's entry goes; any other would stop running: refused."""
        task = None
        if isinstance(entry, ast.Dict):
            for k, v in zip(entry.keys, entry.values, strict=True):
                if isinstance(k, ast.Constant) and k.value == "task" and isinstance(v, ast.Constant):
                    task = v.value if isinstance(v.value, str) else None
        if isinstance(task, str) and task.rpartition(".")[2] == POLLER_FUNCTION:
            self.notes.append(
                f"line {entry.lineno}: beat entry {name} ({task}) removed: DatabaseScheduler dispatches every "
                "schedule from the database"
            )
        else:
            problems.append(
                Refusal(
                    entry.lineno,
                    f"beat entry {name} ({task or 'task unknown'}) would stop running: beat runs dataforge's "
                    "DatabaseScheduler, which reads schedules from the database; add it as a schedule "
                    "(`dataforge schedules add`), delete the entry, then re-run",
                )
            )

    # -- what comes -----------------------------------------------------------------------------
    def _hand_out(self, module: cst.Module, name: str, has_docstring: bool) -> cst.Module:
        alias = f" as {name}" if name != self.target.attr else ""
        statement = cst.parse_statement(
            f"from {self.target.module} import {self.target.attr}{alias}\n", config=module.config_for_parsing
        )
        assert isinstance(statement, cst.SimpleStatementLine)
        body: list[Statement] = add_import(
            list(module.body), statement, self.style, insert_at=1 if has_docstring else 0, after_docstring=has_docstring
        )
        if any(_is_all(s) for s in body):
            return module.with_changes(body=body)
        end = next(i for i, s in enumerate(body) if is_import_line(s))
        while end < len(body) and is_import_line(body[end]):
            end += 1
        exported = cst.parse_statement(f'__all__ = ["{name}"]\n', config=module.config_for_parsing)
        exported = exported.with_changes(
            leading_lines=[cst.EmptyLine(), cst.EmptyLine(comment=cst.Comment(SHARED_APP_COMMENT))]
        )
        rest = body[end:]
        if rest:
            first = rest[0]
            blanks = required_blank_lines(first)
            kept = list(first.leading_lines)
            while kept and kept[0].comment is None:
                kept.pop(0)
            rest[0] = first.with_changes(leading_lines=[cst.EmptyLine() for _ in range(blanks)] + kept)
        return module.with_changes(body=[*body[:end], exported, *rest])


def _is_all(stmt: Statement) -> bool:
    if not isinstance(stmt, cst.SimpleStatementLine):
        return False
    small = stmt.body[0]
    targets = (
        [t.target for t in small.targets] if isinstance(small, cst.Assign) else
        [small.target] if isinstance(small, cst.AnnAssign) else []
    )  # fmt: skip
    return any(isinstance(t, cst.Name) and t.value == "__all__" for t in targets)
