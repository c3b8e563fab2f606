"""RegistryEntriesCommand: entries added once, existing entries and comments kept, refusals."""

from __future__ import annotations

import ast
from typing import Any

import pytest
from libcst.codemod import CodemodTest

from refactor_tool.commands.registry_entries import RegistryEntriesCommand, add_registry_entries
from refactor_tool.errors import ConversionRefused
from tests.refactor_tool.support import run_command

ENTRIES = [
    ("dataforge.ping", {"name": "ping", "description": "Health check.", "category": "legacy", "params": []}),
    (
        "dataforge.sync",
        {
            "name": "账号同步",
            "description": "Sync accounts",
            "category": "sync",
            "params": [{"name": "days", "required": False, "default": 7, "annotation": "int"}],
        },
    ),
]


def _registry(source: bytes) -> dict[str, object]:
    tree = ast.parse(source)
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign | ast.AnnAssign):
            return dict(ast.literal_eval(stmt.value))  # type: ignore[arg-type]
    raise AssertionError("no REGISTERED_TASKS")


class RegistryEntriesTest(CodemodTest):
    TRANSFORM = RegistryEntriesCommand

    def test_appends_after_existing_entries_and_comments(self) -> None:
        before = """
            \"\"\"Tasks.\"\"\"

            REGISTERED_TASKS = {
                # maintenance
                "dataforge.cleanup": {"name": "cleanup", "params": []},  # weekly
            }
        """
        after = """
            \"\"\"Tasks.\"\"\"

            REGISTERED_TASKS = {
                # maintenance
                "dataforge.cleanup": {"name": "cleanup", "params": []},  # weekly
                "dataforge.ping": {
                    "name": "ping",
                    "description": "Health check.",
                    "category": "legacy",
                    "params": [],
                },
                "dataforge.sync": {
                    "name": "账号同步",
                    "description": "Sync accounts",
                    "category": "sync",
                    "params": [{"name": "days", "required": False, "default": 7, "annotation": "int"}],
                },
            }
        """
        self.assertCodemod(before, after, entries=ENTRIES)
        self.assertCodemod(after, after, entries=ENTRIES)  # idempotent

    def test_existing_entry_is_never_duplicated_nor_changed(self) -> None:
        source = """
            REGISTERED_TASKS: dict = {
                "dataforge.ping": {"name": "Ping (hand-written)"},
                "dataforge.sync": {"name": "kept"},
            }
        """
        self.assertCodemod(source, source, entries=ENTRIES)

    def test_empty_dict_and_missing_registry(self) -> None:
        out, _ = run_command(RegistryEntriesCommand, b"REGISTERED_TASKS = {}\n", entries=ENTRIES)
        assert list(_registry(out)) == ["dataforge.ping", "dataforge.sync"]
        out, _ = run_command(RegistryEntriesCommand, b'"""Only a docstring."""\n', entries=ENTRIES)
        assert out.startswith(b'"""Only a docstring."""\n\n\nREGISTERED_TASKS = {\n')
        assert _registry(out)["dataforge.sync"] == ENTRIES[1][1]


def test_crlf_module_stays_crlf() -> None:
    source = b'REGISTERED_TASKS = {\r\n    "dataforge.ping": {},\r\n}\r\n'
    out, _ = run_command(RegistryEntriesCommand, source, entries=ENTRIES)
    assert b"\n" not in out.replace(b"\r\n", b"")
    assert list(_registry(out)) == ["dataforge.ping", "dataforge.sync"]


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        (b"REGISTERED_TASKS = dict(a=1)\n", "is not a plain dict literal"),
        (b"KEY = 'x'\nREGISTERED_TASKS = {KEY: {}}\n", "key that is not a string literal"),
        (b"REGISTERED_TASKS = {**OTHER}\n", "key that is not a string literal"),
        (b"REGISTERED_TASKS = {}\nREGISTERED_TASKS = {}\n", "is assigned 2 times"),
    ],
)
def test_refusals(source: bytes, reason: str) -> None:
    with pytest.raises(ConversionRefused) as info:
        run_command(RegistryEntriesCommand, source, entries=ENTRIES)
    assert reason in info.value.refusals[0].reason


@pytest.mark.parametrize(
    "source",
    [
        b'REGISTERED_TASKS = {"dataforge.old": {}}\n',  # one line, no trailing comma
        b'REGISTERED_TASKS = {\n    "dataforge.old": {}  # no comma, a comment\n}\n',
        b'REGISTERED_TASKS = {\n    "dataforge.old": {},\n    # closing comment\n    }\n',
        b'\x0c\n"""Form feed above: lines are counted as the compiler does."""\n'
        b'REGISTERED_TASKS = {\n  "dataforge.old": {}}\n',
        b'# -*- coding: latin-1 -*-\n"""T\xe2ches."""\n'
        b'REGISTERED_TASKS = {\n    "dataforge.old": {"name": "\xe9"},\n}\n',
        b'\xef\xbb\xbfREGISTERED_TASKS = {\n    "dataforge.old": {},\n}',
        b"from typing import Any\n\nREGISTERED_TASKS: dict[str, Any] = {\n    'dataforge.old': {},\n}\n"
        b"__all__ = ['REGISTERED_TASKS']\n",
    ],
)
def test_text_insertion_keeps_every_byte_and_is_idempotent(source: bytes) -> None:
    entries = [("dataforge.new", {"name": "néw", "params": []})]
    out, added = add_registry_entries(source, entries)
    assert added == ["dataforge.new"]
    compile(out, "__init__.py", "exec", dont_inherit=True)
    registry: dict[str, Any] = {}
    exec(compile(out, "__init__.py", "exec", dont_inherit=True), registry)  # noqa: S102 - our own test data
    assert registry["REGISTERED_TASKS"]["dataforge.old"] is not None
    assert registry["REGISTERED_TASKS"]["dataforge.new"] == {"name": "néw", "params": []}
    assert out.startswith(source[: source.index(b"REGISTERED_TASKS")])  # header bytes untouched
    again, added_again = add_registry_entries(out, entries)
    assert (again, added_again) == (out, [])
