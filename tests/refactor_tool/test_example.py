"""examples/legacy_backend: a realistic legacy tree that converts cleanly and loads on the runtime."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

from refactor_tool.runner import convert
from tests.refactor_tool.support import EXAMPLE, lint_codes


def test_every_example_file_compiles() -> None:
    files = sorted(EXAMPLE.rglob("*.py"))
    assert len(files) > 25
    for path in files:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            compile(path.read_bytes(), str(path), "exec", dont_inherit=True)


def test_example_has_the_shapes_the_docs_promise() -> None:
    raw = {p.name: p.read_bytes() for p in (EXAMPLE / "scripts").glob("*.py")}
    assert raw["refresh_exchange_rates.py"].startswith(b"# -*- coding: latin-1 -*-\n")
    assert b"\r\n" in raw["import_partner_feed.py"] and b"\n\t" in raw["import_partner_feed.py"].replace(b"\r", b"")
    assert raw["compute_metrics.py"].startswith(b"\xef\xbb\xbf")
    assert b'if __name__ == "__main__":' in raw["sync_accounts.py"]
    assert b"@timed\nasync def run" in raw["rebuild_search_index.py"]
    assert b"from scripts.cleanup_temp_files import run as cleanup_run" in raw["archive_orders.py"]


def test_converted_example_loads_on_the_runtime(tmp_path: Path) -> None:
    """After conversion, the worker's view (`dataforge tasks --check`) finds every task registered
    with Celery and listed in REGISTERED_TASKS: every module of app.tasks imports cleanly."""
    root = tmp_path / "backend"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("__pycache__"))
    assert convert(root).exit_code(check=False) == 0
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATAFORGE_")}
    env.update(
        DATAFORGE_TASK_PACKAGES="app.tasks",
        DATAFORGE_DATABASE_URL=f"sqlite:///{tmp_path / 'df.db'}",
        # The converted tree first, then this checkout (tests/conftest.py put it on PYTHONPATH).
        PYTHONPATH=os.pathsep.join([str(root), os.environ["PYTHONPATH"]]),
        PYTHONDONTWRITEBYTECODE="1",
    )
    proc = subprocess.run(
        [sys.executable, "-m", "dataforge", "tasks", "--check", "--json"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for job in ("ping", "sync_accounts", "refresh_exchange_rates", "cleanup_sessions"):
        assert f'"dataforge.{job}"' in proc.stdout


def test_converted_example_is_lint_clean_wherever_the_example_was(tmp_path: Path) -> None:
    """ruff I001 / E30x / E402 per file: nothing the conversion wrote adds a finding."""
    root = tmp_path / "backend"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("__pycache__"))
    report = convert(root)
    before, after = lint_codes(EXAMPLE), lint_codes(root)
    written = [f for f in report.files if f.status == "changed" and f.path.endswith(".py")]
    assert len(written) > 15
    for f in written:
        target = f.target or f.path
        assert after.get(target, set()) <= before.get(f.path, set()), (f.path, target, after.get(target))
