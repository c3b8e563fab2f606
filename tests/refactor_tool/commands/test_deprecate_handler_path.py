"""DeprecateHandlerPathCommand: one comment above ScheduledTask.handler_path, nothing else."""

from __future__ import annotations

import pytest
from libcst.codemod import CodemodTest

from refactor_tool.commands.deprecate_handler_path import DEPRECATION_COMMENT, DeprecateHandlerPathCommand
from tests.refactor_tool.support import assert_fixture, assert_refused, fixture_pair, fixture_stems, refused_fixtures

DIRECTORY = "deprecate_handler_path"


@pytest.mark.parametrize("stem", fixture_stems(DIRECTORY))
def test_fixture(stem: str) -> None:
    assert_fixture(DeprecateHandlerPathCommand, DIRECTORY, stem)


@pytest.mark.parametrize("name", refused_fixtures(DIRECTORY))
def test_refused(name: str) -> None:
    assert_refused(DeprecateHandlerPathCommand, DIRECTORY, name)


@pytest.mark.parametrize("stem", fixture_stems(DIRECTORY))
def test_only_a_comment_line_is_added(stem: str) -> None:
    before, after = fixture_pair(DIRECTORY, stem)
    added = [line for line in after.splitlines() if line not in before.splitlines()]
    assert added in ([], [b"    " + DEPRECATION_COMMENT.encode()])
    assert len(after.splitlines()) - len(before.splitlines()) == len(added)


class DeprecateHandlerPathInlineTest(CodemodTest):
    TRANSFORM = DeprecateHandlerPathCommand

    def test_no_scheduled_tasks_model_is_skipped(self) -> None:
        source = """
            class TaskExecution(Base):
                __tablename__ = "task_executions"
                handler_path = Column(String(255))
        """
        self.assertCodemod(source, source, expected_skip=True)

    def test_a_model_without_the_column_is_skipped(self) -> None:
        source = """
            class ScheduledTask(Base):
                __tablename__ = "scheduled_tasks"
                task_name = Column(String(255))
        """
        self.assertCodemod(source, source, expected_skip=True)
