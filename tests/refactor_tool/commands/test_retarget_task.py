"""RetargetTaskCommand: fixtures, idempotency, refusals."""

from __future__ import annotations

import pytest
from libcst.codemod import CodemodTest

from refactor_tool.commands.retarget_task import RetargetTaskCommand
from refactor_tool.errors import ConversionRefused
from tests.refactor_tool.support import fixture_pair, fixture_stems, lint_pair, run_command


@pytest.mark.parametrize("stem", fixture_stems("retarget_task"))
def test_fixture(stem: str) -> None:
    before, after = fixture_pair("retarget_task", stem)
    out, _ = run_command(RetargetTaskCommand, before)
    assert out == after
    compile(after, f"{stem}.py", "exec", dont_inherit=True)
    again, warnings = run_command(RetargetTaskCommand, after)
    assert again == after
    assert not any("now imported" in w for w in warnings)
    lint_before, lint_after = lint_pair(before, after)
    assert lint_after <= lint_before, f"the retarget added {lint_after - lint_before}"


def test_remaining_legacy_import_is_reported() -> None:
    before, _ = fixture_pair("retarget_task", "shared_import_line")
    _, warnings = run_command(RetargetTaskCommand, before)
    assert "app.celery_app is still imported for redis_client: the worker imports it with this module" in warnings


def test_tasks_are_collected() -> None:
    context_source, _ = fixture_pair("retarget_task", "aliased_app")
    import libcst as cst
    from libcst.codemod import CodemodContext

    command = RetargetTaskCommand(CodemodContext())
    command.transform_module(cst.parse_module(context_source))
    assert [(t.function, t.task_name, t.bind) for t in command.tasks] == [
        ("plain", "dataforge.plain", False),
        ("unnamed", None, True),
    ]


@pytest.mark.parametrize(
    ("source", "line", "reason"),
    [
        (
            b"from celery import Celery\ncelery_app = Celery('x')\n\n\n"
            b"@celery_app.task(name='t')\ndef t():\n    return 1\n",
            5,
            "registers on 'celery_app', which this module does not import by name",
        ),
        (
            b"import app.celery_app\n\n\n@app.celery_app.celery_app.task(name='t')\ndef t():\n    return 1\n",
            4,
            "app `app.celery_app.celery_app` is an attribute chain",
        ),
    ],
)
def test_refusals(source: bytes, line: int, reason: str) -> None:
    with pytest.raises(ConversionRefused) as info:
        run_command(RetargetTaskCommand, source)
    assert [(r.line, reason in r.reason) for r in info.value.refusals] == [(line, True)]


class RetargetInlineTest(CodemodTest):
    TRANSFORM = RetargetTaskCommand

    def test_module_without_tasks_is_skipped(self) -> None:
        source = """
            from celery import Task

            class DataForgeTask(Task):
                abstract = True
        """
        self.assertCodemod(source, source, expected_skip=True)

    def test_locally_defined_base_is_kept(self) -> None:
        before = """
            from app.celery_app import celery_app

            class Base:
                pass

            @celery_app.task(base=Base, name="dataforge.x")
            def x():
                return 1
        """
        after = """
            from dataforge.celery_app import celery_app

            class Base:
                pass

            @celery_app.task(base=Base, name="dataforge.x")
            def x():
                return 1
        """
        self.assertCodemod(before, after)
