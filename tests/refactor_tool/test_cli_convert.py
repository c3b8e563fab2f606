"""``dataforge convert`` / ``dataforge verify`` command lines: exit codes, streams, --report, one real process."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console

from dataforge.cli.convert import _progress
from dataforge.cli.main import cli
from tests.refactor_tool.support import EXAMPLE, make_jobs_tree, make_tree, snapshot


@pytest.fixture
def backend(tmp_path: Path) -> Path:
    root = tmp_path / "backend"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_check_then_write_then_check(backend: Path, tmp_path: Path) -> None:
    code, out, err = _run("convert", str(backend), "--check")
    assert code == 1 and out == ""
    assert "would be changed" in err.splitlines()[-1]
    report_file = tmp_path / "report.json"
    code, out, err = _run("convert", str(backend), "--report", str(report_file), "--jobs", "2")
    assert code == 0, err
    report = json.loads(report_file.read_text())
    assert report["mode"] == "write" and report["summary"]["refused"] == 0 and report["summary"]["changed"] > 10
    ping = next(f for f in report["files"] if f["path"] == "scripts/ping.py")
    assert ping == {
        "path": "scripts/ping.py",
        "kind": "job",
        "status": "changed",
        "target": "app/tasks/ping.py",
        "reasons": [],
        "notes": [],
        "task_name": "dataforge.ping",
        "function": "ping",
    }
    assert {"op": "rmdir", "path": "scripts/lib", "origin": None} in report["operations"]
    code, out, err = _run("convert", str(backend), "--check", "--quiet")
    assert (code, out, err) == (0, "", "")


def test_skip_app_files_leaves_the_legacy_app_alone(backend: Path) -> None:
    before = snapshot(backend)
    code, _, err = _run("convert", str(backend), "--skip-app-files")
    assert code == 0, err
    after = snapshot(backend)
    assert after["app/celery_tasks.py"] == before["app/celery_tasks.py"] and "app/celery_tasks_legacy.py" not in after
    code, _, err = _run("convert", str(backend), "--check")
    assert code == 1 and "changed: app/celery_tasks.py -> app/celery_tasks_legacy.py" in err


def test_diff_goes_to_stdout_and_writes_nothing(backend: Path) -> None:
    before = snapshot(backend)
    result = CliRunner().invoke(cli, ["convert", str(backend), "--diff"], catch_exceptions=False)
    assert result.exit_code == 0
    assert result.stdout_bytes.startswith(b"diff --git a/scripts/_common.py b/app/tasks/_common.py\n")
    assert " Écrit par".encode("latin-1") in result.stdout_bytes  # bytes of each file, untranscoded
    assert "diff --git" not in result.stderr
    assert snapshot(backend) == before
    code, _, _ = _run("convert", str(backend), "--diff", "--check")
    assert code == 1


def test_refusals_exit_2_and_still_convert_the_rest(tmp_path: Path) -> None:
    root = make_tree(
        tmp_path,
        {
            "scripts/good.py": "def run():\n    return 1\n",
            "scripts/bad.py": "def run(**kw):\n    return kw['_debug']\n",
            "scripts/broken.py": "def run(:\n",
        },
    )
    code, out, err = _run("convert", str(root), "--quiet")
    assert code == 2 and out == ""
    lines = err.splitlines()
    assert lines[0].startswith("refused: scripts/bad.py:2: reads '_debug'")
    assert lines[1].startswith("failed: scripts/broken.py:1: does not parse")
    assert len(lines) == 2
    assert (root / "app/tasks/good.py").exists() and (root / "scripts/bad.py").exists()


def test_options_reach_the_output(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {"scripts/ping.py": "def run():\n    return 1\n"})
    code, _, err = _run(
        "convert", str(root), "--keep-scripts", "--tasks-package", "backend.jobs",
        "--celery-app-import", "backend.worker:app", "--base-import", "backend.base.Base",
    )  # fmt: skip
    assert code == 0, err
    text = (root / "backend/jobs/ping.py").read_text()
    assert "from backend.base import Base\nfrom backend.worker import app\n" in text  # first-party, sorted
    assert '@app.task(base=Base, bind=True, name="dataforge.ping")' in text
    assert (root / "scripts/ping.py").exists() and (root / "backend/__init__.py").exists()


def test_bad_import_target_is_a_usage_error(tmp_path: Path) -> None:
    code, _, err = _run("convert", str(tmp_path), "--celery-app-import", "not a target")
    assert code == 2 and "expected 'package.module:attribute'" in err


def test_progress_bar_only_on_a_terminal() -> None:
    plain = Console(file=io.StringIO())
    with _progress(plain, enabled=True) as update:
        assert update is None
    terminal_out = io.StringIO()
    terminal = Console(file=terminal_out, force_terminal=True, width=80)
    with _progress(terminal, enabled=True) as update:
        assert update is not None
        update(3, 4)
    assert "3/4" in terminal_out.getvalue()
    with _progress(terminal, enabled=False) as update:  # --quiet
        assert update is None


def test_real_process(backend: Path) -> None:
    """The installed entry point, as a user runs it: separate streams, exit status, files written."""
    proc = subprocess.run(
        [sys.executable, "-m", "dataforge", "convert", str(backend), "--jobs", "2"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and "0 refused, 0 failed" in proc.stderr
    assert (backend / "app/tasks/sync_accounts.py").exists()
    check = subprocess.run(
        [sys.executable, "-m", "dataforge", "convert", str(backend), "--check", "-q"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert (check.returncode, check.stdout, check.stderr) == (0, "", "")


@pytest.mark.parametrize("flag", ["--check", "--diff", "--quiet"])
def test_a_folder_without_scripts_nor_tasks_package_is_bad_input(tmp_path: Path, flag: str) -> None:
    (tmp_path / "src").mkdir()
    code, out, err = _run("convert", str(tmp_path), flag)
    assert (code, out) == (2, "")
    assert f"convert: {tmp_path} holds neither scripts/ nor app/tasks/: pass the legacy backend folder" in err


def test_long_name_lists_are_counted_in_the_summary_and_complete_in_the_report(tmp_path: Path) -> None:
    root = make_jobs_tree(tmp_path / "backend", jobs=30)
    report_file = tmp_path / "report.json"
    code, _out, err = _run("convert", str(root), "--report", str(report_file))
    assert code == 0, err
    line = next(line for line in err.splitlines() if "REGISTERED_TASKS: added" in line)
    assert line == (
        "  note: REGISTERED_TASKS: added 30 (dataforge.job_0000, dataforge.job_0001, dataforge.job_0002, "
        "dataforge.job_0003, dataforge.job_0004, ... and 25 more; the JSON report lists all)"
    )
    registry = next(f for f in json.loads(report_file.read_text())["files"] if f["kind"] == "registry")
    assert registry["added"] == [f"dataforge.job_{i:04d}" for i in range(30)]
