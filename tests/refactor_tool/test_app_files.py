"""The legacy app's files in a whole conversion: planned with the rest, reported, never half-done."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from refactor_tool.options import ConvertOptions
from refactor_tool.report import ConvertReport, FileReport
from refactor_tool.runner import convert
from tests.refactor_tool.support import EXAMPLE, make_tree, snapshot

API = '''"""The admin API's handlers."""
from app.celery_tasks import execute_scheduled_task
from app.scheduler import registry
from app.scheduler.registry import get_registered_tasks


def list_tasks():
    return get_registered_tasks()


def list_scripts():
    return registry.discover_scripts()


def run_now(schedule):
    return execute_scheduled_task.delay(scheduled_task_id=schedule.id, handler_path=schedule.handler_path)
'''


def _file(report: ConvertReport, path: str) -> FileReport:
    return next(f for f in report.files if f.path == path)


@pytest.fixture
def example(tmp_path: Path) -> Path:
    root = tmp_path / "backend"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def test_the_example_gets_the_design_s_file_change_list(example: Path) -> None:
    before = snapshot(example)
    report = convert(example)
    assert report.exit_code(check=False) == 0, report.summary_lines()
    app = example / "app"
    # The executor renamed, kept for rollback; its content is the command's (fixture-tested).
    assert not (app / "celery_tasks.py").exists()
    assert (app / "celery_tasks_legacy.py").read_bytes().startswith(b"# Rollback only:")
    assert (app / "celery_tasks_legacy.py").stat().st_mode == before["app/celery_tasks.py"][1]
    executor = _file(report, "app/celery_tasks.py")
    assert (executor.status, executor.target, executor.kind) == (
        "changed",
        "app/celery_tasks_legacy.py",
        "legacy_executor",
    )
    # The signals module had nothing else: deleted.
    assert not (app / "celery_signals.py").exists()
    assert (
        "deleted: nothing else in it was of use, and nothing imports it" in _file(report, "app/celery_signals.py").notes
    )
    # The app module hands out dataforge's app; the registry delegates; the model is marked.
    assert b"from dataforge.celery_app import celery_app" in (app / "celery_app.py").read_bytes()
    assert b"discover_scripts" not in (app / "scheduler/registry.py").read_bytes()
    assert b"# Deprecated: schedules run by task_name" in (app / "models.py").read_bytes()
    # Reported, never changed.
    for path in ("app/config.py", "app/celery_scheduler.py", "app/database.py", "app/__init__.py"):
        assert (example / path).read_bytes() == before[path][0], path
    config = _file(report, "app/config.py")
    assert config.status == "skipped"
    assert config.notes[1] == (
        "line 6: BROKER_URL (env CELERY_BROKER_URL): the runtime does not read it; it reads DATAFORGE_BROKER_URL; "
        "nothing in the backend reads it any more"
    )
    assert "TASK_LOCK_TTL" in config.notes[4] and "still read by app/celery_tasks_legacy.py:" in config.notes[4]
    # A second run changes nothing, and --check agrees.
    after = snapshot(example)
    again = convert(example)
    assert again.changes == [] and snapshot(example) == after
    assert convert(example, mode="check").exit_code(check=True) == 0
    assert _file(again, "app/celery_tasks_legacy.py").status == "unchanged"


def test_diff_and_check_count_the_app_files_and_write_nothing(example: Path) -> None:
    before = snapshot(example)
    check = convert(example, mode="check")
    assert check.exit_code(check=True) == 1
    operations = {(op["op"], op["path"]) for op in check.to_json()["operations"]}
    assert {
        ("create", "app/celery_tasks_legacy.py"),
        ("delete", "app/celery_tasks.py"),
        ("delete", "app/celery_signals.py"),
        ("update", "app/celery_app.py"),
        ("update", "app/scheduler/registry.py"),
        ("update", "app/models.py"),
    } <= operations
    diff = convert(example, mode="diff").diff()
    assert b"rename from app/celery_tasks.py\nrename to app/celery_tasks_legacy.py\n" in diff
    assert b"deleted file mode 100644\n--- a/app/celery_signals.py\n+++ /dev/null\n" in diff
    assert snapshot(example) == before


def test_callers_of_what_went_are_reported_with_file_and_line(example: Path) -> None:
    make_tree(example, {"app/api.py": API, "app/worker_boot.py": "import app.celery_signals  # noqa: F401\n"})
    report = convert(example)
    assert report.exit_code(check=False) == 0
    registry = _file(report, "app/scheduler/registry.py")
    assert "app/api.py:12: uses discover_scripts, which app.scheduler.registry no longer defines" in registry.notes
    executor = _file(report, "app/celery_tasks.py")
    assert any(n.startswith("app/api.py:2, app/api.py:16: still refers to app.celery_tasks") for n in executor.notes)
    # Something imports the signals module: it stays, without its handlers.
    signals = _file(report, "app/celery_signals.py")
    assert "kept without its handlers: imported by app/worker_boot.py:1" in signals.notes
    assert (example / "app/celery_signals.py").read_bytes().startswith(b'"""prerun / success')
    assert b"connect" not in (example / "app/celery_signals.py").read_bytes()


def test_a_refused_app_file_is_left_as_it_was_and_the_rest_converts(example: Path) -> None:
    celery_app = (example / "app/celery_app.py").read_bytes()
    debug = b"\n\n@celery_app.task(bind=True)\ndef debug_task(self):\n    return repr(self.request)\n"
    (example / "app/celery_app.py").write_bytes(celery_app + debug)
    report = convert(example)
    assert report.exit_code(check=False) == 2
    refused = _file(report, "app/celery_app.py")
    assert refused.status == "refused"
    assert refused.reasons[0].startswith("app/celery_app.py:37: `@celery_app.task(bind=True)` uses the app beyond")
    assert (example / "app/celery_app.py").read_bytes() == celery_app + debug
    # No cascade: the jobs, the executor, the registry still convert.
    assert (example / "app/tasks/ping.py").exists() and (example / "app/celery_tasks_legacy.py").exists()
    assert _file(report, "app/scheduler/registry.py").status == "changed"
    # The refused module still imports the signals module, so that one is kept (without handlers).
    assert "kept without its handlers: imported by app/celery_app.py:33" in _file(report, "app/celery_signals.py").notes


def test_the_rename_never_overwrites(example: Path) -> None:
    (example / "app/celery_tasks_legacy.py").write_text("# someone's file\n")
    report = convert(example)
    assert report.exit_code(check=False) == 2
    assert _file(report, "app/celery_tasks.py").reasons == [
        "app/celery_tasks.py:1: app/celery_tasks_legacy.py already exists: the rename would overwrite it; delete or "
        "rename one of the two, then re-run"
    ]
    assert (example / "app/celery_tasks.py").exists()
    assert (example / "app/celery_tasks_legacy.py").read_text() == "# someone's file\n"


def test_app_files_can_be_left_out(example: Path) -> None:
    before = snapshot(example)
    report = convert(example, ConvertOptions(app_files=False))
    assert report.exit_code(check=False) == 0
    app = {p: v for p, v in snapshot(example).items() if p.startswith("app/") and not p.startswith("app/tasks/")}
    assert app == {p: v for p, v in before.items() if p.startswith("app/") and not p.startswith("app/tasks/")}


def test_a_file_that_does_not_parse_fails_alone(example: Path) -> None:
    (example / "app/celery_signals.py").write_text("def broken(:\n")
    report = convert(example)
    signals = _file(report, "app/celery_signals.py")
    assert signals.status == "failed" and signals.reasons[0].startswith("app/celery_signals.py:1: does not parse")
    assert report.exit_code(check=False) == 2
    assert (example / "app/celery_tasks_legacy.py").exists()


def test_a_recording_handler_in_the_tasks_package_is_reported(example: Path) -> None:
    """The worker imports every module of app/tasks: a handler there would record every run twice."""
    base = (example / "app/tasks/base.py").read_text()
    handler = (
        "\n\nfrom celery.signals import task_postrun  # noqa: E402\n\n\n@task_postrun.connect\n"
        "def touch(sender=None, **kwargs):\n    from app.models import ScheduledTask\n\n    ScheduledTask.touch()\n"
    )
    (example / "app/tasks/base.py").write_text(base + handler)
    report = convert(example, mode="check")
    line = (base + handler).splitlines().index("def touch(sender=None, **kwargs):") + 1
    assert any(
        n.startswith(f"app/tasks/base.py:{line}: touch() (task_postrun) records runs, and the worker imports this")
        for n in _file(report, "app/tasks/base.py").notes
    )


def test_a_refused_executor_is_reported_once_and_not_renamed(example: Path) -> None:
    executor = (example / "app/celery_tasks.py").read_bytes()
    extra = b"\n\n@celery_app.task\ndef cleanup_executions(days=30):\n    return days\n"
    (example / "app/celery_tasks.py").write_bytes(executor + extra)
    report = convert(example)
    reports = [f for f in report.files if f.path == "app/celery_tasks.py"]
    assert [f.status for f in reports] == ["refused"]
    assert "defines task cleanup_executions() besides the legacy executor" in reports[0].reasons[0]
    assert (example / "app/celery_tasks.py").read_bytes() == executor + extra
    assert not (example / "app/celery_tasks_legacy.py").exists()
    # Every file is reported once.
    paths = [f.path for f in report.files]
    assert len(paths) == len(set(paths))


def test_a_package_init_left_empty_is_never_deleted(example: Path) -> None:
    signals = (example / "app/celery_signals.py").read_bytes()
    (example / "app/scheduler/__init__.py").write_bytes(signals)
    report = convert(example)
    assert report.exit_code(check=False) == 0
    init = _file(report, "app/scheduler/__init__.py")
    assert init.status == "changed" and "kept without its handlers: it makes its folder a package" in init.notes
    assert (example / "app/scheduler/__init__.py").read_bytes().startswith(b'"""prerun / success')
