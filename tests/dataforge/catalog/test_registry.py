"""REGISTERED_TASKS joined with Celery's registry, the check, and `dataforge tasks`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from dataforge.catalog.registry import RegistryCheck, check_registry, get_registered_tasks
from dataforge.cli.main import cli
from dataforge.settings import Settings
from dataforge.tasks import REGISTERED_TASKS
from tests.conftest import REPO_ROOT


def test_compare_reports_names_on_either_side_only() -> None:
    check = RegistryCheck.compare({"a", "b", "c"}, {"b", "c", "d"})
    assert (check.only_in_registry, check.only_in_celery, check.ok) == (("a",), ("d",), False)
    assert RegistryCheck.compare({"x"}, {"x"}).ok
    problems = check.problems()
    assert len(problems) == 2 and problems[0].startswith("a:") and "REGISTERED_TASKS" in problems[1]


def test_default_package_registries_agree(embedded_settings: Settings, make_app: Any) -> None:
    app = make_app(embedded_settings)
    tasks = get_registered_tasks(app)
    assert set(REGISTERED_TASKS) <= set(tasks)
    entry = tasks["dataforge.example_cleanup"]
    assert entry["in_registry"] and entry["in_celery"] and entry["dataforge_task"]
    assert entry["category"] == "maintenance" and [p["name"] for p in entry["params"]] == ["days", "dry_run"]
    assert not any(name.startswith("celery.") for name in tasks)
    assert check_registry(app).ok


def test_cli_lists_and_checks_the_default_package() -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["tasks", "--json", "--check"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["check"] == {"ok": True, "only_in_celery": [], "only_in_registry": []}
    assert {t["task_name"] for t in doc["tasks"]} == set(REGISTERED_TASKS)
    table = runner.invoke(cli, ["tasks"])
    assert table.exit_code == 0 and "dataforge.example_sync_accounts" in table.stdout


def _run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATAFORGE_")}
    env.update({"DATAFORGE_TASK_PACKAGES": "pkgx", "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO_ROOT}"})
    return subprocess.run(
        [sys.executable, "-c", "from dataforge.cli.main import main; main()", "tasks", *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_cli_check_fails_when_the_registries_disagree(tmp_path: Path) -> None:
    pkg = tmp_path / "pkgx"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent('''
        REGISTERED_TASKS = {
            "pkgx.both": {"name": "Both", "description": "", "category": "c", "params": []},
            "pkgx.listed_only": {"name": "Listed", "description": "", "category": "c", "params": []},
        }
    '''))
    (pkg / "jobs.py").write_text(textwrap.dedent('''
        from dataforge.celery_app import celery_app
        from dataforge.worker.task import DataForgeTask

        @celery_app.task(base=DataForgeTask, bind=True, name="pkgx.both")
        def both(self, **kwargs):
            return None

        @celery_app.task(name="pkgx.unlisted")
        def unlisted():
            """A plain task nobody listed."""
    '''))
    checked = _run_cli(tmp_path, "--check", "--json")
    assert checked.returncode == 1, checked.stderr
    doc = json.loads(checked.stdout)
    assert doc["check"] == {"ok": False, "only_in_celery": ["pkgx.unlisted"], "only_in_registry": ["pkgx.listed_only"]}
    by_name = {t["task_name"]: t for t in doc["tasks"]}
    assert by_name["pkgx.unlisted"]["description"] == "A plain task nobody listed."
    assert not by_name["pkgx.unlisted"]["dataforge_task"] and by_name["pkgx.both"]["dataforge_task"]
    listed = _run_cli(tmp_path)  # without --check: a warning, exit 0
    assert listed.returncode == 0 and "pkgx.listed_only" in listed.stderr


def test_cli_reports_a_missing_task_package(tmp_path: Path) -> None:
    result = _run_cli(tmp_path, "--check")
    assert result.returncode == 2 and "pkgx" in result.stderr and "DATAFORGE_TASK_PACKAGES" in result.stderr
