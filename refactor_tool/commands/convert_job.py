"""Turn a legacy job module (a module-level ``run``) into a registered DataForge task.

The module keeps every byte it had; it gains two imports and, at the end (before a trailing
``if __name__ == "__main__":`` block), one task::

    @celery_app.task(base=DataForgeTask, bind=True, name="dataforge.<job>")
    def <job>(self, **kwargs):
        \"\"\"<first line of the module or run docstring>\"\"\"
        return self.run_job(run, kwargs)

The task looks ``run`` up when it runs, exactly as the legacy executor's ``getattr(module,
"run")`` did, so aliases, decorators and re-definitions keep their meaning. A job that reads
the legacy ``_lock_key`` gets ``return self.run_job(run, kwargs, legacy_lock_key=True)``: the
value the legacy executor passed. The two imports go where ruff's isort rules put them
(:mod:`refactor_tool.import_layout`). Every shape whose behaviour would change is refused with
its line (see docs/codemod.md for the list).
"""

from __future__ import annotations

import functools
import inspect
import itertools
import json
import keyword

import libcst as cst
from libcst.codemod import CodemodContext, SkipFile

from dataforge.legacy.paths import task_name_for_module
from refactor_tool.analysis import ModuleFacts, analyze, reserved_names
from refactor_tool.commands._base import Command, free_name, statement_map
from refactor_tool.errors import ConversionRefused, Refusal
from refactor_tool.import_layout import ImportStyle, Statement, add_import, is_import_line
from refactor_tool.options import ConvertOptions, ImportTarget

__all__ = ["ConvertJobCommand", "NotAJob"]


class NotAJob(SkipFile):
    """The module has no module-level ``run``: reported as "not a job", never as an error."""


def _first_line(docstring: str | None) -> str:
    lines = inspect.cleandoc(docstring).strip().splitlines() if docstring else []
    return lines[0].strip() if lines else ""


def _docstring_literal(text: str) -> str:
    """A docstring literal for ``text``; falls back to an escaped plain string when needed."""
    if '"""' in text or "\\" in text or text.endswith('"') or not text.isprintable():
        return json.dumps(text, ensure_ascii=False)
    return f'"""{text}"""'


class ConvertJobCommand(Command):
    """Add the task wrapper to one job module."""

    DESCRIPTION = "Register a legacy scripts/<job>.py run() as a DataForge task."

    def __init__(
        self,
        context: CodemodContext,
        job: str = "job",
        options: ConvertOptions | None = None,
        facts: ModuleFacts | None = None,
        style: ImportStyle | None = None,
        legacy_lock_key: bool | None = None,
    ) -> None:
        super().__init__(context)
        self.job = job
        self.options = options or ConvertOptions()
        self.facts = facts
        self.style = style or ImportStyle(
            known_first_party=(self.options.scripts_package, self.options.tasks_dir_parts[0])
        )
        #: Give run the legacy ``_lock_key``: ``None`` decides from this module (it reads the key).
        self.legacy_lock_key = legacy_lock_key
        self.task_name = task_name_for_module(job)
        #: Name of the task function (the job's name unless that is taken); set by the transform.
        self.function_name: str | None = None
        #: True when the module already carries this exact task (a re-run): nothing changes.
        self.already_converted = False
        #: Whether the task passes run the legacy ``_lock_key`` (set by the transform).
        self.passes_legacy_lock_key = False

    # -- checks -------------------------------------------------------------------------------
    def _problems(self, facts: ModuleFacts) -> list[Refusal]:
        problems = list(facts.problems) + list(facts.run_problems)
        if not self.job.isidentifier():
            problems.append(
                Refusal(1, f"module name {self.job!r} is not a Python identifier; rename the file (and its schedules)")
            )
        for line, module, level in facts.star_imports:
            shown = "." * level + module
            problems.append(
                Refusal(
                    line,
                    f"star import from {shown}: the names it binds cannot be known, so the added names "
                    "(celery_app, DataForgeTask, the task function) could shadow one; import names explicitly",
                )
            )
        for task in facts.tasks:
            if task.task_name == self.task_name and task.delegates_to == "run":
                continue
            if task.task_name == self.task_name:
                problems.append(
                    Refusal(
                        task.line,
                        f"already defines task {self.task_name!r} in {task.function}() which does not hand over "
                        "to run(); merge the two by hand",
                    )
                )
            else:
                problems.append(
                    Refusal(
                        task.line,
                        f"defines Celery task {task.function}() itself; a script is not a task module: move that "
                        "task to the tasks package by hand",
                    )
                )
        return problems

    # -- transform ----------------------------------------------------------------------------
    def transform_module_impl(self, tree: cst.Module) -> cst.Module:
        facts = self.facts or analyze(tree.bytes, self.options.scripts_package)
        path = self.context.filename or f"{self.options.scripts_package}/{self.job}.py"
        if facts.run is None:
            if facts.run_in_class is not None:
                cls, line = facts.run_in_class
                raise NotAJob(
                    f"not a job: no module-level run (class {cls} defines run at line {line}; the legacy "
                    "executor looked up a module-level run)"
                )
            raise NotAJob("not a job: no module-level run")
        problems = self._problems(facts)
        if problems:
            raise ConversionRefused(sorted(set(problems)), path)
        for note in facts.notes:
            self.warn(note)
        existing = next((t for t in facts.tasks if t.task_name == self.task_name and t.delegates_to == "run"), None)
        if existing is not None:
            self.function_name = existing.function
            self.already_converted = True
            self.passes_legacy_lock_key = existing.legacy_lock_key
            return tree
        legacy_lock_key = bool(facts.lock_key_lines) if self.legacy_lock_key is None else self.legacy_lock_key
        self.passes_legacy_lock_key = legacy_lock_key
        if legacy_lock_key and facts.lock_key_lines:
            self.warn(
                f"reads _lock_key (line {facts.lock_key_lines[0]}): the task passes it the legacy executor's value, "
                '"scheduled_task:<schedule id>" (run_job(..., legacy_lock_key=True))'
            )

        taken = set(facts.identifiers) | reserved_names()
        statements: list[Statement] = []
        app_name = self._import_name(self.options.celery_app_import, facts, taken, statements, tree)
        base_name = self._import_name(self.options.base_import, facts, taken, statements, tree)
        fn = free_name(
            itertools.chain([self.job, f"{self.job}_task"], (f"{self.job}_task_{n}" for n in itertools.count(2))),
            taken,
        )
        self.function_name = fn
        if fn != self.job:
            reason = "a keyword" if keyword.iskeyword(self.job) else "already taken in this module"
            self.warn(f"task function named {fn}() because {self.job!r} is {reason}")
        first_line = _first_line(facts.docstring) or _first_line(facts.run.docstring)
        if not first_line:
            first_line = f"Run {self.options.scripts_package}/{self.job}.py's run() as a DataForge task."
        task = _fill_template(
            _task_template(tree.default_newline, tree.default_indent, legacy_lock_key),
            app=app_name,
            base=base_name,
            function=fn,
            task_name=json.dumps(self.task_name),
            docstring=_docstring_literal(first_line),
        )
        return self._insert(tree, facts, statements, task)

    def _import_name(
        self,
        target: ImportTarget,
        facts: ModuleFacts,
        taken: set[str],
        statements: list[Statement],
        tree: cst.Module,
    ) -> str:
        for binding in facts.imports.values():
            if binding.level == 0 and binding.module == target.module and binding.attr == target.attr:
                return binding.name
        name = free_name(
            itertools.chain(
                [target.attr, f"dataforge_{target.attr}"],
                (f"dataforge_{target.attr}_{n}" for n in itertools.count(2)),
            ),
            taken,
        )
        taken.add(name)
        if name != target.attr:
            self.warn(f"imported {target.attr} as {name} because {target.attr!r} is already taken in this module")
        alias = f" as {name}" if name != target.attr else ""
        statements.append(_statement(f"from {target.module} import {target.attr}{alias}\n", tree))
        return name

    def _insert(
        self,
        tree: cst.Module,
        facts: ModuleFacts,
        imports: list[Statement],
        task: cst.FunctionDef,
    ) -> cst.Module:
        body = list(tree.body)
        # The task goes at the end, before a trailing `if __name__ == "__main__":` block, which
        # then needs two blank lines above it (E305).
        mapping = statement_map(body, facts.top_level_count)
        if facts.main_guard_index is not None and mapping is not None:
            end = mapping[facts.main_guard_index]
        else:
            end = len(body)
        after = [_at_least_two_blank_lines(stmt) if i == 0 else stmt for i, stmt in enumerate(body[end:])]
        body = [*body[:end], task, *after]
        docstring = facts.docstring is not None
        header = list(tree.header)
        if imports and not docstring and body and not any(is_import_line(s) for s in body):
            # The new import block goes first: comments right above the first statement stay with it.
            header, body[0] = _detach_header_tail(header, body[0])
        for statement in imports:
            assert isinstance(statement, cst.SimpleStatementLine)
            body = add_import(body, statement, self.style, insert_at=1 if docstring else 0, after_docstring=docstring)
        return tree.with_changes(body=body, header=header)


def _at_least_two_blank_lines(stmt: Statement) -> Statement:
    lines = list(stmt.leading_lines)
    blanks = next((i for i, line in enumerate(lines) if line.comment is not None), len(lines))
    if blanks >= 2:
        return stmt
    return stmt.with_changes(leading_lines=[cst.EmptyLine()] * (2 - blanks) + lines)


def _detach_header_tail(
    header: list[cst.EmptyLine], first: Statement
) -> tuple[list[cst.EmptyLine], Statement]:
    """libcst keeps the comments above a module's first statement in ``Module.header``; the ones
    after the header's last blank line describe that statement, so they move with it."""
    last_blank = max((i for i, line in enumerate(header) if line.comment is None), default=None)
    if last_blank is None or last_blank == len(header) - 1:
        return header, first
    tail = header[last_blank + 1 :]
    return header[: last_blank + 1], first.with_changes(leading_lines=[*tail, *first.leading_lines])


_TASK_TEMPLATE = (
    '@APP.task(base=BASE, bind=True, name="TASK")\n'
    "def FN(self, **kwargs):\n"
    '    """DOC"""\n'
    "    return self.run_job(run, kwargs{LOCK_KEY})\n"
)


@functools.lru_cache(maxsize=16)
def _task_template(newline: str, indent: str, legacy_lock_key: bool) -> Statement:
    """The task wrapper, parsed once per newline/indent style and filled in per job by
    :func:`_fill_template` (parsing it for every file cost ~2 ms, a tenth of a conversion)."""
    source = _TASK_TEMPLATE.replace("{LOCK_KEY}", ", legacy_lock_key=True" if legacy_lock_key else "")
    return _parse_cached(source, newline, indent)


def _fill_template(
    template: Statement, *, app: str, base: str, function: str, task_name: str, docstring: str
) -> cst.FunctionDef:
    """The template with its five placeholders replaced (direct node edits: a transformer walk
    over it cost more than the rest of the command)."""
    assert isinstance(template, cst.FunctionDef) and isinstance(template.body, cst.IndentedBlock)
    decorator = template.decorators[0]
    call = decorator.decorator
    assert isinstance(call, cst.Call) and isinstance(call.func, cst.Attribute)
    base_arg, bind_arg, name_arg = call.args
    call = call.with_changes(
        func=call.func.with_changes(value=cst.Name(app)),
        args=[
            base_arg.with_changes(value=cst.Name(base)),
            bind_arg,
            name_arg.with_changes(value=cst.SimpleString(task_name)),
        ],
    )
    doc_line, *rest = template.body.body
    assert isinstance(doc_line, cst.SimpleStatementLine) and isinstance(doc_line.body[0], cst.Expr)
    doc_line = doc_line.with_changes(body=[doc_line.body[0].with_changes(value=cst.SimpleString(docstring))])
    return template.with_changes(
        name=cst.Name(function),
        decorators=[decorator.with_changes(decorator=call)],
        body=template.body.with_changes(body=[doc_line, *rest]),
        leading_lines=[cst.EmptyLine(), cst.EmptyLine()],
    )


@functools.lru_cache(maxsize=256)
def _parse_cached(source: str, newline: str, indent: str) -> Statement:
    return cst.parse_statement(source, config=cst.PartialParserConfig(default_newline=newline, default_indent=indent))


def _statement(source: str, tree: cst.Module) -> Statement:
    """``source`` parsed for ``tree``'s newline and indentation. The two import lines are the same
    in every module, so they are parsed once per style (nodes are immutable and safe to share)."""
    return _parse_cached(source, tree.default_newline, tree.default_indent)
