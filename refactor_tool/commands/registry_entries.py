"""Add missing entries to ``REGISTERED_TASKS`` in the tasks package's ``__init__.py``.

Existing entries, their order and their comments are kept byte for byte; an entry whose key is
already there is never added again (so re-running adds nothing). A module without
``REGISTERED_TASKS`` gets one at its end.

The registry is data, and it grows with the tree (one entry per job, ~9 lines each): parsing a
2,000-entry registry with libcst took ~5 s and rendering the new entries through it ~10 s,
more than converting a thousand jobs. So the edit is a text insertion at the position that
``ast`` reports for the dict's closing brace; the output is compiled like every other output.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections.abc import Mapping, Sequence
from typing import Any

import libcst as cst
from libcst.codemod import CodemodContext

from refactor_tool.commands._base import Command
from refactor_tool.errors import ConversionRefused, Refusal
from refactor_tool.registry import render_entry

__all__ = ["REGISTRY_NAME", "RegistryEntriesCommand", "add_registry_entries"]

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


def _decode(source: bytes) -> tuple[str, str]:
    """Text and codec of a module (coding cookie and BOM honoured; ``utf-8-sig`` keeps a BOM)."""
    encoding, _ = tokenize.detect_encoding(io.BytesIO(source).readline)
    return source.decode(encoding), encoding


def _offset(lines: list[str], lineno: int, col: int) -> int:
    """``ast`` (line, UTF-8 byte column) -> index into the text."""
    before = sum(len(line) for line in lines[: lineno - 1])
    return before + len(lines[lineno - 1].encode("utf-8")[:col].decode("utf-8"))


def _has_comma(segment: str) -> bool:
    """Whether the text between the last value and ``}`` (whitespace, comments, maybe a comma) has the comma."""
    i = 0
    while i < len(segment):
        char = segment[i]
        if char == ",":
            return True
        if char == "#":
            end = segment.find("\n", i)
            i = len(segment) if end == -1 else end
        i += 1
    return False


def add_registry_entries(
    source: bytes, entries: Sequence[tuple[str, Mapping[str, Any]]], path: str = "__init__.py"
) -> tuple[bytes, list[str]]:
    """``source`` with the ``entries`` it lacks appended to ``REGISTERED_TASKS``, and their names.

    A text insertion at the position ``ast`` gives for the dict's closing brace: every byte
    already there (entries, comments, encoding, line endings) stays, and the cost does not grow
    with the size of the registry (a 2,000-entry registry is re-checked in milliseconds).
    Raises :class:`ConversionRefused` when the registry is not a plain dict literal.
    """
    text, encoding = _decode(source)
    parsed = ast.parse(text)
    statements = _registry_statements(parsed)
    if len(statements) > 1:
        raise ConversionRefused(
            [Refusal(s.lineno, f"{REGISTRY_NAME} is assigned {len(statements)} times; keep one") for s in statements],
            path,
        )
    value = statements[0].value if statements else None
    if statements and (
        not isinstance(value, ast.Dict) or (isinstance(statements[0], ast.Assign) and len(statements[0].targets) != 1)
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
    if isinstance(value, ast.Dict):
        for key in value.keys:
            if not (isinstance(key, ast.Constant) and isinstance(key.value, str)):
                raise ConversionRefused(
                    [
                        Refusal(
                            key.lineno if key is not None else statements[0].lineno,
                            f"{REGISTRY_NAME} has a key that is not a string literal (or a ** expansion); "
                            "which tasks it lists cannot be known: add the entries by hand",
                        )
                    ],
                    path,
                )
            existing.add(key.value)
    missing: dict[str, Mapping[str, Any]] = {}
    for name, entry in entries:
        if name not in existing and name not in missing:
            missing[name] = entry
    if not missing:
        return source, []
    # Split on "\n" only, as the compiler counts lines (str.splitlines also splits on \f, \x1c...).
    lines = re.findall(r"[^\n]*\n|[^\n]+$", text)
    newline = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"
    if isinstance(value, ast.Dict) and value.keys:
        first_key = value.keys[0]
        assert first_key is not None and value.end_lineno is not None and value.end_col_offset is not None
        first_line = lines[first_key.lineno - 1]
        indent = (
            first_line[: len(first_line) - len(first_line.lstrip())] if first_key.lineno != value.lineno else "    "
        )
    else:
        indent = "    "
    block = newline.join(render_entry(name, entry, indent).replace("\n", newline) for name, entry in missing.items())
    block += newline
    if value is None:
        body = text if not text or text.endswith(("\n", "\r")) else text + newline
        lead = newline * 2 if body.strip() else ""
        new_text = f"{body}{lead}{REGISTRY_NAME} = {{{newline}{block}}}{newline}"
    else:
        assert isinstance(value, ast.Dict) and value.end_lineno is not None and value.end_col_offset is not None
        close = _offset(lines, value.end_lineno, value.end_col_offset) - 1  # the "}"
        if not value.keys:
            start = _offset(lines, value.lineno, value.col_offset)
            new_text = text[:start] + "{" + newline + block + "}" + text[close + 1 :]
        else:
            last = value.values[-1]
            assert last.end_lineno is not None and last.end_col_offset is not None
            after_last = _offset(lines, last.end_lineno, last.end_col_offset)
            comma = "" if _has_comma(text[after_last:close]) else ","
            line_start = text.rfind("\n", 0, close) + 1
            if text[line_start:close].strip() == "" and line_start > after_last:
                # `}` on its own line: the new entries go just above it (below any comment).
                new_text = text[:after_last] + comma + text[after_last:line_start] + block + text[line_start:]
            else:
                new_text = (
                    text[:after_last] + comma + newline + block + text[after_last:close].lstrip(",") + text[close:]
                )
    return new_text.encode(encoding), list(missing)


class RegistryEntriesCommand(Command):
    """Append ``entries`` (task name -> catalog-format dict) that ``REGISTERED_TASKS`` lacks.

    The codemod form of :func:`add_registry_entries` (which the runner calls directly on bytes).
    """

    DESCRIPTION = "Add REGISTERED_TASKS entries for converted jobs."

    def __init__(self, context: CodemodContext, entries: Sequence[tuple[str, Mapping[str, Any]]] = ()) -> None:
        super().__init__(context)
        self.entries = list(entries)
        #: Task names actually added (filled by the transform).
        self.added: list[str] = []

    def transform_module_impl(self, tree: cst.Module) -> cst.Module:
        source = tree.bytes
        new, self.added = add_registry_entries(source, self.entries, self.context.filename or "__init__.py")
        return tree if new == source else cst.parse_module(new)
