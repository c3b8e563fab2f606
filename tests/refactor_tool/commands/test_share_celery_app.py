"""ShareCeleryAppCommand: the legacy app module hands out dataforge's app; settings reported."""

from __future__ import annotations

import ast

import pytest
from libcst.codemod import CodemodTest

from refactor_tool.commands.share_celery_app import ShareCeleryAppCommand
from refactor_tool.errors import ConversionRefused
from refactor_tool.options import ImportTarget
from tests.refactor_tool.support import (
    assert_fixture,
    assert_refused,
    fixture_stems,
    lint_pair,
    refused_fixtures,
    run_command,
)

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


#: App modules in the shapes projects write them (Django, Flask, FastAPI layouts): each converts,
#: or is refused with the reason (``None``: converts).
SHAPES: dict[str, tuple[str, str | None]] = {
    "django": (
        "import os\n\nfrom celery import Celery\n\nos.environ.setdefault('DJANGO_SETTINGS_MODULE', 'proj.settings')\n"
        "app = Celery('proj')\napp.config_from_object('django.conf:settings', namespace='CELERY')\n"
        "app.autodiscover_tasks()\napp.conf.beat_scheduler = 'django_celery_beat.schedulers:DatabaseScheduler'\n"
        "app.conf.beat_schedule = {}\n",
        None,
    ),
    "settings_object": (
        '"""Worker app."""\nfrom __future__ import annotations\n\nfrom celery import Celery\n\n'
        "from app.core.config import get_settings\n\nsettings = get_settings()\n\n"
        'celery_app = Celery(\n    "worker",\n    broker=settings.broker_url,\n    backend=settings.result_backend,\n'
        '    include=["app.tasks"],\n)\n'
        "celery_app.conf.update(task_track_started=True, worker_prefetch_multiplier=1)\n",
        None,
    ),
    "imported_schedule": (
        "from celery import Celery\n\nfrom app.celeryconfig import BEAT\n\ncelery_app = Celery('myapp')\n"
        "celery_app.config_from_object('app.celeryconfig')\ncelery_app.conf.beat_schedule = BEAT\n",
        "beat_schedule is not a dict literal",
    ),
    "flask_factory": (
        "from celery import Celery\n\ncelery = Celery(__name__)\n\n\ndef init_app(flask_app):\n"
        "    celery.conf.broker_url = flask_app.config['BROKER_URL']\n    celery.conf.update(flask_app.config)\n",
        "uses the app beyond configuring it",
    ),
    "periodic_tasks_hook": (
        "from celery import Celery\n\napp = Celery('x')\n\n\n@app.on_after_configure.connect\n"
        "def setup_periodic_tasks(sender, **kwargs):\n    sender.add_periodic_task(10.0, ping.s())\n",
        "uses the app beyond configuring it",
    ),
    "coding_cookie_and_schedules": (
        "# coding=utf-8\nfrom celery import Celery\nfrom celery.schedules import crontab\n\ncelery = Celery(__name__)\n"
        "celery.conf.beat_schedule = {'poll': {'task': 'app.celery_tasks.dispatch_due_tasks', "
        "'schedule': crontab(minute='*/1')}}\n",
        None,
    ),
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_project_shapes_convert_or_are_refused_with_the_reason(shape: str) -> None:
    source, refusal = SHAPES[shape]
    if refusal is not None:
        with pytest.raises(ConversionRefused) as info:
            run_command(ShareCeleryAppCommand, source.encode())
        assert any(refusal in r.reason for r in info.value.refusals), info.value.refusals
        return
    out, warnings = run_command(ShareCeleryAppCommand, source.encode())
    compile(out, shape, "exec", dont_inherit=True)
    assert run_command(ShareCeleryAppCommand, out)[0] == out
    tree = ast.parse(out)
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.Call) and ast.unparse(n.func).endswith("Celery")]
    assert any(isinstance(s, ast.ImportFrom) and s.module == "dataforge.celery_app" for s in tree.body)
    assert warnings and all(w.startswith("line ") for w in warnings)
    lint_before, lint_after = lint_pair(source.encode(), out)
    assert lint_after <= lint_before


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
