"""ShareCeleryAppCommand: the legacy app module hands out dataforge's app; settings reported."""

from __future__ import annotations

import pytest
from libcst.codemod import CodemodTest

from refactor_tool.commands.share_celery_app import ShareCeleryAppCommand
from refactor_tool.options import ImportTarget
from tests.refactor_tool.support import assert_fixture, assert_refused, fixture_stems, refused_fixtures

DIRECTORY = "share_celery_app"


@pytest.mark.parametrize("stem", fixture_stems(DIRECTORY))
def test_fixture(stem: str) -> None:
    assert_fixture(ShareCeleryAppCommand, DIRECTORY, stem)


@pytest.mark.parametrize("name", refused_fixtures(DIRECTORY))
def test_refused(name: str) -> None:
    assert_refused(ShareCeleryAppCommand, DIRECTORY, name)


def test_every_setting_include_and_poller_entry_is_reported_in_line_order() -> None:
    warnings = assert_fixture(ShareCeleryAppCommand, DIRECTORY, "example")
    assert [w.split(":")[0] for w in warnings] == [f"line {n}" for n in (9, 10, 11, 17, 18, 19, 20, 21, 22, 26, 33)]
    assert any(w.startswith("line 11: include is not applied") and "legacy switch" in w for w in warnings)
    assert any("beat entry 'dispatch-due-tasks' (app.celery_tasks.dispatch_due_tasks) removed" in w for w in warnings)
    assert any("no longer imports app.celery_signals" in w for w in warnings)


def test_settings_dataforge_does_not_set_say_they_are_not_applied() -> None:
    warnings = assert_fixture(ShareCeleryAppCommand, DIRECTORY, "conf_assignments")
    assert (
        "line 11: worker_max_tasks_per_child is not applied: the worker's app is dataforge.celery_app, "
        "configured only by its DATAFORGE_* settings"
    ) in warnings


class ShareCeleryAppInlineTest(CodemodTest):
    TRANSFORM = ShareCeleryAppCommand

    def test_configurable_app_import(self) -> None:
        before = """
            from celery import Celery

            app_ = Celery("x")
        """
        after = """
            from myproj.worker import app as app_

            # The worker's app (dataforge.celery_app): this backend's code shares it.
            __all__ = ["app_"]
        """
        self.assertCodemod(before, after, celery_app_import=ImportTarget.parse("myproj.worker:app"))

    def test_an_existing_all_is_kept(self) -> None:
        before = """
            from celery import Celery

            __all__ = ["celery_app"]

            celery_app = Celery("x")
        """
        after = """
            from dataforge.celery_app import celery_app

            __all__ = ["celery_app"]
        """
        self.assertCodemod(before, after)

    def test_a_shared_app_configured_again_loses_the_configuration(self) -> None:
        before = """
            from dataforge.celery_app import celery_app

            celery_app.conf.task_default_queue = "legacy"
        """
        after = """
            from dataforge.celery_app import celery_app
        """
        self.assertCodemod(
            before,
            after,
            expected_warnings=[
                "line 3: task_default_queue is not applied: the worker's app is dataforge.celery_app, configured "
                "only by its DATAFORGE_* settings"
            ],
        )
