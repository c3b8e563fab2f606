"""`dataforge demo` runs end to end on the embedded defaults (the README's main job)."""

from __future__ import annotations

import json
import socket
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from dataforge.cli.main import cli
from dataforge.legacy.names import LEGACY_TASK_NAME
from dataforge.tools.demo import Demo, DemoOptions, StepResult, find_examples

pytestmark = pytest.mark.slow


class Recorder:
    def __init__(self) -> None:
        self.events: list[str] = []
        self.outputs: list[str] = []
        self.finished: list[StepResult] = []
        self.live_updates = 0
        self.console: list[str] = []

    def on_step_started(self, name: str, command: str | None) -> None:
        self.events.append(f"start:{name}")

    def on_step_finished(self, result: StepResult) -> None:
        self.finished.append(result)

    def on_output(self, text: str) -> None:
        self.events.append("output")
        self.outputs.append(text)
        if text.startswith("console: "):
            # The console is up (--serve): what a newcomer's browser would get.
            url = text.split()[1]
            with urllib.request.urlopen(f"{url}api/schedules?limit=50", timeout=10) as response:
                self.console = [row["name"] for row in json.load(response)["items"]]

    def on_executions(self, mode: str, rows: list[dict[str, object]], remaining: float) -> None:
        self.live_updates += 1


def test_demo_migrates_rolls_back_and_upgrades_again(tmp_path: Path) -> None:
    examples = find_examples()
    assert examples is not None, "examples/legacy_backend is part of the checkout"
    recorder = Recorder()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    options = DemoOptions(examples=examples, seconds_per_mode=8, workspace=tmp_path / "ws", serve_port=port,
                          serve_seconds=1)
    report = Demo(options, recorder).run()

    failed = report.failed_step
    assert failed is None, f"demo step failed: {failed.name}\n{failed.detail}" if failed else ""
    assert [m.mode for m in report.modes] == ["unified", "legacy", "again"]
    unified, legacy, again = report.modes
    # Unified mode runs the converted tasks by name; legacy mode runs the same schedules through
    # the shim's execute_scheduled_task; after the re-upgrade, by name again.
    assert unified.count("success") > 0 and all(task.startswith("dataforge.") for task, _ in unified.counts)
    assert legacy.count("success") > 0 and {task for task, _ in legacy.counts} == {LEGACY_TASK_NAME}
    assert again.count("success") > 0 and any(task.startswith("dataforge.") for task, _ in again.counts)
    # Beat sends by name again; a legacy message still queued from the legacy mode is run by the
    # forwarder (recorded under its legacy name), or expires unrun and is recorded `expired`:
    # never discarded silently.
    assert all(task.startswith("dataforge.") or task == LEGACY_TASK_NAME for task, _ in again.counts)
    assert recorder.live_updates > 0
    assert len(recorder.finished) == len(report.steps) == 11
    assert "sync_accounts_every_3s" in recorder.console, "--serve leaves the console up on the demo's database"
    # The conversion showed, and did, the design's file change list for the legacy app.
    converted = next(r for r in report.steps if r.name == "convert scripts/ into registered tasks").detail
    assert "app/celery_tasks.py -> app/celery_tasks_legacy.py (kept for rollback only)" in converted
    assert "app/celery_signals.py deleted" in converted
    app = tmp_path / "ws" / "backend" / "app"
    assert (app / "celery_tasks_legacy.py").is_file() and not (app / "celery_tasks.py").exists()


def test_demo_names_the_failed_step(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    (broken / "scripts").mkdir(parents=True)
    (broken / "scripts" / "bad.py").write_text("def run(:\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["demo", "--examples", str(broken), "--seconds", "3",
                                      "--workspace", str(tmp_path / "ws")])
    assert result.exit_code == 1
    assert "step failed:" in result.output
