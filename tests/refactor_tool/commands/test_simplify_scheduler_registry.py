"""SimplifySchedulerRegistryCommand: discover_scripts goes, get_registered_tasks delegates."""

from __future__ import annotations

import ast

import pytest
from libcst.codemod import CodemodTest

from refactor_tool.analysis import statement_bindings
from refactor_tool.commands.simplify_scheduler_registry import SimplifySchedulerRegistryCommand
from tests.refactor_tool.support import assert_fixture, assert_refused, fixture_pair, fixture_stems, refused_fixtures

DIRECTORY = "simplify_scheduler_registry"


@pytest.mark.parametrize("stem", fixture_stems(DIRECTORY))
def test_fixture(stem: str) -> None:
    assert_fixture(SimplifySchedulerRegistryCommand, DIRECTORY, stem)


@pytest.mark.parametrize("name", refused_fixtures(DIRECTORY))
def test_refused(name: str) -> None:
    assert_refused(SimplifySchedulerRegistryCommand, DIRECTORY, name)


@pytest.mark.parametrize("stem", fixture_stems(DIRECTORY))
def test_nothing_imports_the_scripts_package_any_more(stem: str) -> None:
    """``import scripts`` fails once scripts/ is converted; the scanning helpers go with it."""
    _, after = fixture_pair(DIRECTORY, stem)
    tree = ast.parse(after)
    bound = {name for stmt in tree.body for name in statement_bindings(stmt)}
    assert not bound & {
        "scripts",
        "discover_scripts",
        "importlib",
        "pkgutil",
        "SCRIPTS_DIR",
        "_load",
        "REGISTERED_TASKS",
    }
    assert b"return dataforge_registry.get_registered_tasks(" in after


def test_the_report_says_what_the_api_gets_now() -> None:
    warnings = assert_fixture(SimplifySchedulerRegistryCommand, DIRECTORY, "example")
    assert warnings[0] == "removed discover_scripts() (line 11) and the script scanning only it used"
    assert "keyed by task name (the scripts:<name> keys are gone" in warnings[1]


class SimplifySchedulerRegistryInlineTest(CodemodTest):
    TRANSFORM = SimplifySchedulerRegistryCommand

    def test_already_simplified_by_hand_is_skipped(self) -> None:
        source = """
            from app.tasks import REGISTERED_TASKS


            def get_registered_tasks():
                return dict(REGISTERED_TASKS)
        """
        self.assertCodemod(source, source, expected_skip=True)

    def test_only_the_scanner(self) -> None:
        before = """
            import pkgutil

            import scripts


            def discover_scripts():
                return [m.name for m in pkgutil.iter_modules(scripts.__path__)]
        """
        after = """
        """
        self.assertCodemod(before, after)
