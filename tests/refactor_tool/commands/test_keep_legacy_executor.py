"""KeepLegacyExecutorCommand: the executor kept for rollback, its duplicate handler gone, names written out."""

from __future__ import annotations

import ast

import pytest
from libcst.codemod import CodemodTest

from dataforge.legacy.names import LEGACY_TASK_NAME
from refactor_tool.analysis import analyze
from refactor_tool.commands.keep_legacy_executor import ROLLBACK_COMMENT, KeepLegacyExecutorCommand
from refactor_tool.commands.remove_signal_handlers import find_signal_handlers
from tests.refactor_tool.support import (
    assert_fixture,
    assert_refused,
    fixture_pair,
    fixture_stems,
    refused_fixtures,
)

DIRECTORY = "keep_legacy_executor"


@pytest.mark.parametrize("stem", fixture_stems(DIRECTORY))
def test_fixture(stem: str) -> None:
    assert_fixture(KeepLegacyExecutorCommand, DIRECTORY, stem)


@pytest.mark.parametrize("name", refused_fixtures(DIRECTORY))
def test_refused(name: str) -> None:
    assert_refused(KeepLegacyExecutorCommand, DIRECTORY, name)


@pytest.mark.parametrize("stem", fixture_stems(DIRECTORY))
def test_every_task_keeps_the_name_legacy_messages_carry(stem: str) -> None:
    """Celery named the tasks after app.celery_tasks; the renamed module must register the same
    names, or a full rollback would discard every queued legacy message as unregistered."""
    before, after = fixture_pair(DIRECTORY, stem)
    names = {t.function: t.task_name for t in analyze(after).tasks}
    assert names["execute_scheduled_task"] == LEGACY_TASK_NAME
    assert set(names) == {t.function for t in analyze(before).tasks}
    assert all(name == f"app.celery_tasks.{fn}" for fn, name in names.items())


@pytest.mark.parametrize("stem", fixture_stems(DIRECTORY))
def test_no_recording_handler_is_left(stem: str) -> None:
    _, after = fixture_pair(DIRECTORY, stem)
    handlers = find_signal_handlers(ast.parse(after))
    assert [h.function for h in handlers if h.owned and h.records] == []
    assert b"task_postrun" not in after
    assert after.replace(b"\r\n", b"\n").startswith(("\n".join(ROLLBACK_COMMENT) + "\n").encode())


def test_the_report_names_the_handler_and_its_replacement() -> None:
    warnings = assert_fixture(KeepLegacyExecutorCommand, DIRECTORY, "example")
    assert (
        "removed update_next_run_time() (line 78, task_postrun): dataforge.celery_signals connects on_task_postrun "
        "(dataforge/worker/recording/handlers.py), which records every run; next_run_at is beat's "
        "(DatabaseScheduler advances it at dispatch)"
    ) in warnings
    assert any(w.startswith("kept dispatch_due_tasks() (line 60): the legacy poller") for w in warnings)


def test_a_handler_that_records_nothing_is_kept_and_reported() -> None:
    warnings = assert_fixture(KeepLegacyExecutorCommand, DIRECTORY, "connect_call")
    _, after = fixture_pair(DIRECTORY, "connect_call")
    assert b"def _page_oncall" in after and b"_bump_next_run" not in after
    assert any(
        w.startswith("kept _page_oncall() (line 34, task_failure): it touches no scheduling table") for w in warnings
    )


def test_the_executor_body_is_byte_identical() -> None:
    before, after = fixture_pair(DIRECTORY, "example")
    tree_before, tree_after = ast.parse(before), ast.parse(after)

    def body(tree: ast.Module) -> str:
        fn = next(s for s in tree.body if isinstance(s, ast.FunctionDef) and s.name == "execute_scheduled_task")
        return "\n".join(ast.unparse(s) for s in fn.body)

    assert body(tree_before) == body(tree_after)


class KeepLegacyExecutorInlineTest(CodemodTest):
    TRANSFORM = KeepLegacyExecutorCommand

    def test_bare_shared_task_gets_a_call(self) -> None:
        before = """
            from celery import shared_task


            @shared_task
            def execute_scheduled_task(scheduled_task_id, handler_path, **kwargs):
                return None
        """
        after = """
            # Rollback only: nothing may import this module. The runtime registers
            # app.celery_tasks.execute_scheduled_task itself (the forwarder, or the compat shim
            # while the legacy switch is on): importing this module would register it again.
            from celery import shared_task


            @shared_task(name="app.celery_tasks.execute_scheduled_task")
            def execute_scheduled_task(scheduled_task_id, handler_path, **kwargs):
                return None
        """
        self.assertCodemod(
            before,
            after,
            expected_warnings=[
                "execute_scheduled_task() keeps its task name app.celery_tasks.execute_scheduled_task (written "
                "out: the module is renamed)"
            ],
        )

    def test_a_computed_name_is_left_alone(self) -> None:
        before = """
            from app.celery_app import celery_app

            PREFIX = "app.celery_tasks"


            @celery_app.task(name=f"{PREFIX}.execute_scheduled_task")
            def execute_scheduled_task(scheduled_task_id, handler_path, **kwargs):
                return None
        """
        after = "\n".join(ROLLBACK_COMMENT) + "\n" + before.strip("\n").replace("            ", "") + "\n"
        self.assertCodemod(before, after)
