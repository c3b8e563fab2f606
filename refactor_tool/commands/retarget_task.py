"""Point tasks already written the new way at this project's ``celery_app`` and ``DataForgeTask``.

A legacy ``app/tasks/*.py`` task reads::

    from app.celery_app import celery_app
    from app.tasks.base import DataForgeTask

    @celery_app.task(base=DataForgeTask, bind=True, name="dataforge.cleanup_sessions")
    def cleanup_sessions(self, **kwargs): ...

Only the import statements that bind the decorator's app and the ``base=`` class change; the
names they bind stay the same, so the rest of the module is untouched. An import that also
brings other names keeps them and the retargeted name gets its own line. A retargeted import
names another module, so it moves to its sorted place in its block
(:mod:`refactor_tool.import_layout`).
"""

from __future__ import annotations

from collections import defaultdict

import libcst as cst
from libcst.codemod import CodemodContext, SkipFile
from libcst.helpers import get_full_name_for_node

from refactor_tool.analysis import ImportBinding, ModuleFacts, TaskDef, analyze
from refactor_tool.commands._base import Command, statement_map
from refactor_tool.errors import ConversionRefused, Refusal
from refactor_tool.import_layout import ImportStyle, Statement, place_imports
from refactor_tool.options import ConvertOptions, ImportTarget

__all__ = ["NotATaskModule", "RetargetTaskCommand"]


class NotATaskModule(SkipFile):
    """No ``@<app>.task`` / ``@shared_task`` function in the module (``base.py``, helpers...)."""


class RetargetTaskCommand(Command):
    """Retarget the app and base-class imports of a module of new-style tasks."""

    DESCRIPTION = "Retarget new-style tasks to dataforge's celery_app and DataForgeTask."

    def __init__(
        self,
        context: CodemodContext,
        options: ConvertOptions | None = None,
        facts: ModuleFacts | None = None,
        style: ImportStyle | None = None,
    ) -> None:
        super().__init__(context)
        self.options = options or ConvertOptions()
        self.facts = facts
        self.style = style or ImportStyle(
            known_first_party=(self.options.scripts_package, self.options.tasks_dir_parts[0])
        )
        #: The module's tasks (filled by the transform), for REGISTERED_TASKS and collision checks.
        self.tasks: list[TaskDef] = []

    def transform_module_impl(self, tree: cst.Module) -> cst.Module:
        facts = self.facts or analyze(tree.bytes, self.options.scripts_package)
        if not facts.tasks:
            raise NotATaskModule("not a task module: no @<app>.task function")
        self.tasks = list(facts.tasks)
        path = self.context.filename or "<module>"
        problems: list[Refusal] = []
        retarget: dict[str, ImportTarget] = {}
        for task in facts.tasks:
            if task.app_expr is not None:
                self._check(task, task.app_expr, self.options.celery_app_import, "app", facts, retarget, problems)
            if task.base_expr is None:
                self.warn(
                    f"{task.function}() (line {task.line}) has no base=; it runs without DataForgeTask's lock "
                    "and job runner"
                )
            else:
                self._check(task, task.base_expr, self.options.base_import, "base", facts, retarget, problems)
        if problems:
            raise ConversionRefused(sorted(set(problems)), path)
        if not retarget:
            return tree
        return self._rewrite(tree, facts, retarget)

    def _check(
        self,
        task: TaskDef,
        expr: str,
        target: ImportTarget,
        role: str,
        facts: ModuleFacts,
        retarget: dict[str, ImportTarget],
        problems: list[Refusal],
    ) -> None:
        binding = facts.imports.get(expr)
        if (
            binding is not None
            and binding.level == 0
            and (binding.module, binding.attr) == (target.module, target.attr)
        ):
            return
        if "." in expr:
            problems.append(
                Refusal(
                    task.line,
                    f"{task.function}(): {role} `{expr}` is an attribute chain; import the {role} by name "
                    f"(`from {target.module} import {target.attr}`) and re-run",
                )
            )
        elif binding is None or binding.attr is None:
            if role == "app":
                problems.append(
                    Refusal(
                        task.line,
                        f"{task.function}() registers on {expr!r}, which this module does not import by name "
                        f"(it defines its own Celery app?); tasks must register on {target}",
                    )
                )
            else:
                self.warn(
                    f"{task.function}() (line {task.line}) uses base {expr!r} defined in this module; kept as written"
                )
        else:
            retarget[expr] = target

    def _rewrite(self, tree: cst.Module, facts: ModuleFacts, retarget: dict[str, ImportTarget]) -> cst.Module:
        mapping = statement_map(tree.body, facts.top_level_count)
        assert mapping is not None, "ast and libcst disagree on the statement count"
        by_statement: dict[int, list[ImportBinding]] = defaultdict(list)
        for name in retarget:
            binding = facts.imports[name]
            by_statement[mapping[binding.index]].append(binding)
        body: list[Statement] = []
        moved: list[int] = []
        for i, stmt in enumerate(tree.body):
            if i not in by_statement:
                body.append(stmt)
                continue
            assert isinstance(stmt, cst.SimpleStatementLine)
            moving = {b.name for b in by_statement[i]}
            kept_small: list[cst.BaseSmallStatement] = []
            added: list[Statement] = []
            for small in stmt.body:
                if not isinstance(small, cst.ImportFrom) or isinstance(small.names, cst.ImportStar):
                    kept_small.append(small)
                    continue
                stay = []
                for alias in small.names:
                    bound = alias.evaluated_alias or alias.evaluated_name
                    if bound in moving:
                        target = retarget[bound]
                        suffix = f" as {bound}" if bound != target.attr else ""
                        added.append(
                            cst.parse_statement(
                                f"from {target.module} import {target.attr}{suffix}\n",
                                config=tree.config_for_parsing,
                            )
                        )
                        self.warn(f"line {facts.imports[bound].line}: {bound} now imported from {target.module}")
                    else:
                        stay.append(alias)
                if stay:
                    stay[-1] = stay[-1].with_changes(comma=cst.MaybeSentinel.DEFAULT)
                    kept_small.append(small.with_changes(names=stay))
                    if len(stay) < len(small.names):
                        dotted_name = get_full_name_for_node(small.module) if small.module is not None else None
                        module = "." * len(small.relative) + (dotted_name or "")
                        names = ", ".join(a.evaluated_alias or a.evaluated_name for a in stay)
                        self.warn(f"{module} is still imported for {names}: the worker imports it with this module")
            if kept_small:
                kept_small[-1] = kept_small[-1].with_changes(semicolon=cst.MaybeSentinel.DEFAULT)
                body.append(stmt.with_changes(body=kept_small))
                moved.extend(range(len(body), len(body) + len(added)))
                body.extend(added)
            elif added:
                # The whole line moved: keep its leading comments and its trailing comment.
                first = added[0]
                assert isinstance(first, cst.SimpleStatementLine)
                added[0] = first.with_changes(
                    leading_lines=stmt.leading_lines, trailing_whitespace=stmt.trailing_whitespace
                )
                moved.extend(range(len(body), len(body) + len(added)))
                body.extend(added)
        return tree.with_changes(body=place_imports(body, self.style, moved=moved))
