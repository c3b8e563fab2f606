"""RemoveSignalHandlersCommand: the handlers dataforge.celery_signals replaces go, the others stay."""

from __future__ import annotations

import ast

import libcst as cst
import pytest
from libcst.codemod import CodemodContext, CodemodTest

from dataforge.celery_signals import RECEIVERS
from refactor_tool.commands.remove_signal_handlers import (
    REPLACEMENTS,
    RemoveSignalHandlersCommand,
    find_signal_handlers,
)
from tests.refactor_tool.support import assert_fixture, assert_refused, fixture_pair, fixture_stems, refused_fixtures

DIRECTORY = "remove_signal_handlers"


@pytest.mark.parametrize("stem", fixture_stems(DIRECTORY))
def test_fixture(stem: str) -> None:
    assert_fixture(RemoveSignalHandlersCommand, DIRECTORY, stem)


@pytest.mark.parametrize("name", refused_fixtures(DIRECTORY))
def test_refused(name: str) -> None:
    assert_refused(RemoveSignalHandlersCommand, DIRECTORY, name)


def test_replacements_are_the_runtime_receivers() -> None:
    """One definition: the task signals dataforge.celery_signals connects, and nothing else."""
    assert REPLACEMENTS == {
        signal.name: f"{receiver.__module__}.{receiver.__name__}"
        for signal, receiver, _ in RECEIVERS
        if signal.name.startswith("task_")
    }
    assert set(REPLACEMENTS) == {"task_prerun", "task_success", "task_failure", "task_retry", "task_postrun",
                                 "task_revoked"}  # fmt: skip


def _run(source: bytes) -> RemoveSignalHandlersCommand:
    command = RemoveSignalHandlersCommand(CodemodContext(filename="app/celery_signals.py"))
    command.transform_module(cst.parse_module(source))
    return command


def test_the_legacy_signals_module_is_left_with_nothing_of_use() -> None:
    before, after = fixture_pair(DIRECTORY, "example")
    command = _run(before)
    assert [(h.function, h.signals) for h in command.removed] == [
        ("on_task_prerun", ("task_prerun",)),
        ("on_task_success", ("task_success",)),
        ("on_task_failure", ("task_failure",)),
        ("on_task_postrun", ("task_postrun",)),
    ]
    assert [h.writes_next_run_at for h in command.removed] == [False, False, False, True]
    assert command.emptied and after.count(b"\n") == 1  # the docstring only


def test_kept_handlers_and_what_only_removed_code_used() -> None:
    before, after = fixture_pair(DIRECTORY, "keeps_alerts")
    command = _run(before)
    assert [h.function for h in command.removed] == ["record_start"]
    assert [h.function for h in command.kept] == ["alert_on_failure", "warm_up"]
    assert not command.emptied
    assert {r.name for r in command.removed_names} == {
        "record_start",
        "_STARTED",
        "time",
        "SessionLocal",
        "TaskExecution",
    }
    assert b'__all__ = ["alert_on_failure", "warm_up"]' in after


def test_connect_calls_and_raw_sql_count() -> None:
    before, _ = fixture_pair(DIRECTORY, "connect_calls")
    handlers = find_signal_handlers(ast.parse(before))
    assert [(h.function, h.signals, h.records, len(h.statements)) for h in handlers] == [
        ("record_success", ("task_success",), True, 2),
        ("record_retry", ("task_retry",), True, 2),
    ]


class RemoveSignalHandlersInlineTest(CodemodTest):
    TRANSFORM = RemoveSignalHandlersCommand

    def test_a_module_without_handlers_is_unchanged(self) -> None:
        source = """
            from celery.signals import worker_ready


            def hello(**_):
                return 1


            worker_ready.connect(hello)
        """
        self.assertCodemod(
            source,
            source,
            expected_warnings=["kept hello() (line 4, worker_ready): not a task signal the runtime records"],
        )

    def test_a_handler_of_another_module_is_not_this_module_s(self) -> None:
        source = """
            from celery.signals import task_postrun

            from app.recording import on_postrun

            task_postrun.connect(on_postrun)
        """
        self.assertCodemod(source, source)
