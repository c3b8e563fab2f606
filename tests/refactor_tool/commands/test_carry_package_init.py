"""CarryPackageInitCommand: scripts/__init__.py kept, in order, in the tasks package's __init__.py."""

from __future__ import annotations

import pytest
from libcst.codemod import CodemodTest

from refactor_tool.commands.carry_package_init import CarryPackageInitCommand, carry_package_init
from refactor_tool.errors import ConversionRefused
from refactor_tool.import_layout import ImportStyle
from tests.refactor_tool.support import FIXTURES, lint_pair

STYLE = ImportStyle(known_first_party=("app", "scripts"))
STEMS = sorted(p.name[: -len(".target.py")] for p in (FIXTURES / "carry_package_init").glob("*.target.py"))


def _fixture(stem: str, part: str) -> bytes:
    return (FIXTURES / "carry_package_init" / f"{stem}.{part}.py").read_bytes()


@pytest.mark.parametrize("stem", STEMS)
def test_fixture(stem: str) -> None:
    target, carried, after = _fixture(stem, "target"), _fixture(stem, "carried"), _fixture(stem, "after")
    out = carry_package_init(target, carried, STYLE)
    assert out == after
    compile(after, f"{stem}.py", "exec", dont_inherit=True)
    assert out.startswith(target.split(b"\nREGISTERED_TASKS")[0].split(b"\n\n")[0])  # the package keeps its docstring
    assert carry_package_init(after, carried, STYLE) == after  # carried once, whatever the re-runs
    lint_target, lint_after = lint_pair(target, after)
    lint_carried, _ = lint_pair(carried, after)
    assert lint_after <= lint_target | lint_carried, f"the carry added {lint_after - lint_target - lint_carried}"


def test_without_a_tasks_init_the_carried_file_becomes_it_as_it_was() -> None:
    carried = _fixture("merge_into_registry", "carried")
    assert carry_package_init(None, carried, STYLE) == carried
    assert carry_package_init(None, b"", STYLE) is None
    assert carry_package_init(b"X = 1\n", b"\n\n", STYLE) == b"X = 1\n"


def test_a_name_bound_by_both_files_is_refused_with_both_lines() -> None:
    target = b'"""Tasks."""\nimport logging\n\nlogger = logging.getLogger("app")\n__all__ = ["logger"]\n'
    carried = b"import json as logging\n\nlogger = 1\n"
    with pytest.raises(ConversionRefused) as info:
        carry_package_init(target, carried, STYLE, "app/tasks/__init__.py", "scripts/__init__.py")
    assert [r.format("scripts/__init__.py") for r in info.value.refusals] == [
        "scripts/__init__.py:1: imports 'logging', which app/tasks/__init__.py:2 binds to something else; rename one",
        "scripts/__init__.py:3: binds 'logger', which app/tasks/__init__.py:4 binds too; rename one, then re-run",
    ]


def test_the_same_import_in_both_files_is_not_repeated() -> None:
    target = b"import logging\n\nREGISTERED_TASKS = {}\n"
    out = carry_package_init(target, b"import logging\nimport os\n\nLEVEL = os.sep\n", STYLE)
    assert out == b"import logging\nimport os\n\nREGISTERED_TASKS = {}\n\n\nLEVEL = os.sep\n"


class CarryInlineTest(CodemodTest):
    TRANSFORM = CarryPackageInitCommand

    def test_statements_follow_the_existing_code(self) -> None:
        before = """
            REGISTERED_TASKS = {}
        """
        after = """
            from .lib import helper

            REGISTERED_TASKS = {}


            # Jobs.
            VERSION = 2
        """
        self.assertCodemod(before, after, carried=b'"""Jobs."""\nfrom .lib import helper\n\nVERSION = 2\n', style=STYLE)
