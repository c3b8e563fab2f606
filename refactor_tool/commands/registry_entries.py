"""Add missing entries to ``REGISTERED_TASKS`` in the tasks package's ``__init__.py``.

Existing entries, their order and their comments are kept; an entry whose key is already
there is never added again (so re-running adds nothing). A module without ``REGISTERED_TASKS``
gets one at its end.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping, Sequence
from typing import Any

import libcst as cst
from libcst.codemod import CodemodContext

from refactor_tool.commands._base import Command
from refactor_tool.errors import ConversionRefused, Refusal
from refactor_tool.registry import render_entry

__all__ = ["REGISTRY_NAME", "RegistryEntriesCommand"]

REGISTRY_NAME = "REGISTERED_TASKS"


def _registry_statements(tree: ast.Module) -> list[ast.Assign | ast.AnnAssign]:
    found: list[ast.Assign | ast.AnnAssign] = []
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == REGISTRY_NAME for t in stmt.targets
        ):
            found.append(stmt)
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.target.id == REGISTRY_NAME:
            found.append(stmt)
    return found


class RegistryEntriesCommand(Command):
    """Append ``entries`` (task name -> seed-format dict) that ``REGISTERED_TASKS`` lacks."""

    DESCRIPTION = "Add REGISTERED_TASKS entries for converted jobs."

    def __init__(self, context: CodemodContext, entries: Sequence[tuple[str, Mapping[str, Any]]] = ()) -> None:
        super().__init__(context)
        self.entries = list(entries)
        #: Task names actually added (filled by the transform).
        self.added: list[str] = []

    def transform_module_impl(self, tree: cst.Module) -> cst.Module:
        path = self.context.filename or "__init__.py"
        parsed = ast.parse(tree.bytes)
        statements = _registry_statements(parsed)
        if len(statements) > 1:
            raise ConversionRefused(
                [
                    Refusal(s.lineno, f"{REGISTRY_NAME} is assigned {len(statements)} times; keep one")
                    for s in statements
                ],
                path,
            )
        if statements and (
            statements[0].value is None
            or not isinstance(statements[0].value, ast.Dict)
            or len(statements[0].targets if isinstance(statements[0], ast.Assign) else [statements[0].target]) != 1
        ):
            raise ConversionRefused(
                [
                    Refusal(
                        statements[0].lineno,
                        f"{REGISTRY_NAME} is not a plain dict literal; add the entries by hand (the report lists them)",
                    )
                ],
                path,
            )
        existing: set[str] = set()
        if statements:
            value = statements[0].value
            assert isinstance(value, ast.Dict)
            for key in value.keys:
                if isinstance(key, ast.Constant) and isinstance(key.value, str):
                    existing.add(key.value)
                else:
                    line = key.lineno if key is not None else statements[0].lineno
                    raise ConversionRefused(
                        [
                            Refusal(
                                line,
                                f"{REGISTRY_NAME} has a key that is not a string literal (or a ** expansion); "
                                "which tasks it lists cannot be known: add the entries by hand",
                            )
                        ],
                        path,
                    )
        missing: list[tuple[str, Mapping[str, Any]]] = []
        for name, entry in self.entries:
            if name not in existing and name not in {n for n, _ in missing}:
                missing.append((name, entry))
        self.added = [name for name, _ in missing]
        if not missing:
            return tree
        indent = tree.default_indent
        elements_src = "\n".join(render_entry(name, entry, indent) for name, entry in missing)
        new_dict = cst.parse_expression("{\n" + elements_src + "\n}", config=tree.config_for_parsing)
        assert isinstance(new_dict, cst.Dict)
        if not statements:
            stmt = cst.parse_statement(
                f"{REGISTRY_NAME} = " + "{\n" + elements_src + "\n}\n", config=tree.config_for_parsing
            )
            stmt = stmt.with_changes(leading_lines=[cst.EmptyLine(), cst.EmptyLine()] if tree.body else [])
            return tree.with_changes(body=[*tree.body, stmt])
        return tree.visit(_Splice(new_dict))


class _Splice(cst.CSTTransformer):
    """Append the parsed elements to the module-level ``REGISTERED_TASKS`` dict literal."""

    def __init__(self, new: cst.Dict) -> None:
        super().__init__()
        self.new = new
        self.depth = 0

    def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
        return False

    def visit_ClassDef(self, node: cst.ClassDef) -> bool:
        return False

    def _target_is_registry(self, node: cst.Assign | cst.AnnAssign) -> bool:
        if isinstance(node, cst.AnnAssign):
            return isinstance(node.target, cst.Name) and node.target.value == REGISTRY_NAME
        return any(isinstance(t.target, cst.Name) and t.target.value == REGISTRY_NAME for t in node.targets)

    def leave_Assign(self, original_node: cst.Assign, updated_node: cst.Assign) -> cst.Assign:
        if self._target_is_registry(original_node) and isinstance(updated_node.value, cst.Dict):
            return updated_node.with_changes(value=self._splice(updated_node.value))
        return updated_node

    def leave_AnnAssign(self, original_node: cst.AnnAssign, updated_node: cst.AnnAssign) -> cst.AnnAssign:
        if self._target_is_registry(original_node) and isinstance(updated_node.value, cst.Dict):
            return updated_node.with_changes(value=self._splice(updated_node.value))
        return updated_node

    def _splice(self, old: cst.Dict) -> cst.Dict:
        if not old.elements:
            return self.new.with_changes(lpar=old.lpar, rpar=old.rpar)
        new_elements = list(self.new.elements)
        opening = old.lbrace.whitespace_after
        if not isinstance(opening, cst.ParenthesizedWhitespace):
            opening = self.new.lbrace.whitespace_after
        assert isinstance(opening, cst.ParenthesizedWhitespace)
        item_indent = opening.last_line
        closing = old.rbrace.whitespace_before
        elements = list(old.elements)
        last = elements[-1]
        if isinstance(closing, cst.ParenthesizedWhitespace):
            between: cst.BaseParenthesizableWhitespace = cst.ParenthesizedWhitespace(
                first_line=closing.first_line,
                empty_lines=closing.empty_lines,
                indent=closing.indent,
                last_line=item_indent,
            )
            end_ws = closing.last_line
        else:
            between = cst.ParenthesizedWhitespace(indent=True, last_line=item_indent)
            end_ws = cst.SimpleWhitespace("")
        comma = last.comma if isinstance(last.comma, cst.Comma) else cst.Comma()
        elements[-1] = last.with_changes(comma=comma.with_changes(whitespace_after=between))
        tail = new_elements[-1]
        assert isinstance(tail.comma, cst.Comma)
        new_elements[-1] = tail.with_changes(comma=tail.comma.with_changes(whitespace_after=cst.SimpleWhitespace("")))
        rbrace = old.rbrace.with_changes(whitespace_before=cst.ParenthesizedWhitespace(indent=True, last_line=end_ws))
        return old.with_changes(elements=[*elements, *new_elements], rbrace=rbrace)
