"""Mark the legacy model's ``handler_path`` column deprecated (the design's Phase 4).

Schedules run by ``task_name`` now; ``handler_path`` is read only by the legacy path while the
rollback window lasts, and the optional migration ``0007_drop_handler_path`` drops it. The model
class of ``scheduled_tasks`` gets one comment line above the column, and nothing else changes:
the schema belongs to the migrations. A model whose column already carries a comment saying
``deprecated`` is left alone, so running the command on its output changes nothing. Two model
classes for the table are refused (which one is the schema cannot be known).
"""

from __future__ import annotations

import ast

import libcst as cst
from libcst.codemod import CodemodContext, SkipFile

from refactor_tool.commands._base import Command, statement_map
from refactor_tool.errors import ConversionRefused, Refusal
from refactor_tool.legacy_layout import SCHEDULES_TABLE

__all__ = ["DEPRECATION_COMMENT", "DeprecateHandlerPathCommand", "NoHandlerPathModel"]

COLUMN = "handler_path"
DEPRECATION_COMMENT = "# Deprecated: schedules run by task_name; only the legacy path reads it (rollback)."


class NoHandlerPathModel(SkipFile):
    """The module maps no ``scheduled_tasks`` class with a ``handler_path`` column."""


def _table(cls: ast.ClassDef) -> str | None:
    for stmt in cls.body:
        if isinstance(stmt, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__tablename__" for t in stmt.targets
        ):
            if isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str):
                return stmt.value.value
    return None


def _binds_column(stmt: ast.stmt) -> bool:
    if isinstance(stmt, ast.Assign):
        return any(isinstance(t, ast.Name) and t.id == COLUMN for t in stmt.targets)
    return isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.target.id == COLUMN


class DeprecateHandlerPathCommand(Command):
    """Add the deprecation comment above ``handler_path`` in the ``scheduled_tasks`` model."""

    DESCRIPTION = "Mark the legacy ScheduledTask.handler_path column deprecated (a comment)."

    def __init__(self, context: CodemodContext) -> None:
        super().__init__(context)
        #: ``Class.handler_path`` and its line, once found.
        self.column: tuple[str, int] | None = None

    def transform_module_impl(self, tree: cst.Module) -> cst.Module:
        path = self.context.filename or "<module>"
        tree_ast = ast.parse(tree.bytes, filename=path)
        models = [
            (i, s) for i, s in enumerate(tree_ast.body) if isinstance(s, ast.ClassDef) and _table(s) == SCHEDULES_TABLE
        ]
        if not models:
            raise NoHandlerPathModel(f"no model of {SCHEDULES_TABLE}")
        if len(models) > 1:
            lines = ", ".join(str(s.lineno) for _, s in models)
            raise ConversionRefused(
                [Refusal(models[1][1].lineno, f"{len(models)} classes map {SCHEDULES_TABLE} (lines {lines}); mark "
                 f"{COLUMN} deprecated by hand")],
                path,
            )  # fmt: skip
        index, cls = models[0]
        columns = [k for k, s in enumerate(cls.body) if _binds_column(s)]
        if not columns:
            raise NoHandlerPathModel(f"{cls.name} has no {COLUMN} column")
        self.column = (cls.name, cls.body[columns[-1]].lineno)
        mapping = statement_map(tree.body, len(tree_ast.body))
        assert mapping is not None, "ast and libcst disagree on the statement count"
        node = tree.body[mapping[index]]
        assert isinstance(node, cst.ClassDef) and isinstance(node.body, cst.IndentedBlock)
        inner = statement_map(node.body.body, len(cls.body))
        assert inner is not None, "ast and libcst disagree on the class body"
        position = inner[columns[-1]]
        column = node.body.body[position]
        assert isinstance(column, cst.SimpleStatementLine | cst.BaseCompoundStatement)
        if any(
            line.comment is not None and "deprecated" in line.comment.value.lower() for line in column.leading_lines
        ):
            return tree
        trailing = column.trailing_whitespace.comment if isinstance(column, cst.SimpleStatementLine) else None
        if trailing is not None and "deprecated" in trailing.value.lower():
            return tree
        marked = column.with_changes(
            leading_lines=[*column.leading_lines, cst.EmptyLine(indent=True, comment=cst.Comment(DEPRECATION_COMMENT))]
        )
        self.warn(f"{cls.name}.{COLUMN} (line {self.column[1]}) marked deprecated; the migrations own the schema")
        body = list(node.body.body)
        body[position] = marked
        new_class = node.with_changes(body=node.body.with_changes(body=body))
        return tree.with_changes(body=[*tree.body[: mapping[index]], new_class, *tree.body[mapping[index] + 1 :]])
