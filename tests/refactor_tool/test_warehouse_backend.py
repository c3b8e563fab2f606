"""A second legacy backend, written the way another team writes Python (fixtures/backends/warehouse).

It is not tuned to examples/legacy_backend: a package ``__init__`` with constants, a logger,
``__all__`` and re-exports; a job base class in a helper; ``lib/`` sub-packages; jobs reading
``_lock_key`` and ``scheduled_task_id``; CRLF and tab files; ``from __future__`` after a
docstring; decorators without ``functools.wraps``; jobs calling jobs; ``TYPE_CHECKING``
imports. Every job converts except five whose behaviour would change, each shown below.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from dataforge.catalog.params import TaskParams, check_kwargs
from dataforge.cli.main import cli
from dataforge.errors import ScheduleError
from dataforge.worker.kwargs import bind_kwargs
from refactor_tool.report import ConvertReport
from refactor_tool.runner import convert
from tests.refactor_tool.support import FIXTURES, lint_codes, snapshot

BACKEND = FIXTURES / "backends" / "warehouse"
JOBS = sorted(p.stem for p in (BACKEND / "scripts").glob("[!_]*.py") if p.stem != "constants")
#: The only refusals, each with the start of its reason.
REFUSED = {
    "scripts/render_invoice.py": "scripts/render_invoice.py:4: uses scripts._paths.ASSETS, which changes meaning "
    "once moved: scripts/_paths.py:7: uses __file__",
    "scripts/sync_ledger.py": "scripts/sync_ledger.py:4: imports scripts._legacy_db, which cannot move: "
    "scripts/_legacy_db.py:8: module-level statement `CONNECTION.execute(",
    "scripts/debug_dump.py": "scripts/debug_dump.py:8: reads '_trace', an internal (underscore) key",
    "scripts/stream_events.py": "scripts/stream_events.py:8: run() is a generator",
    "scripts/run_exporters.py": "scripts/run_exporters.py:12: imports 'scripts.plugins.' by name at runtime",
}


def _copy(destination: Path) -> Path:
    shutil.copytree(BACKEND, destination, ignore=shutil.ignore_patterns("__pycache__"))
    return destination


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ConvertReport]:
    root = _copy(tmp_path_factory.mktemp("warehouse") / "backend")
    return root, convert(root, jobs=2)


def test_the_backend_has_the_styles_it_claims() -> None:
    raw = {p.relative_to(BACKEND / "scripts").as_posix(): p.read_bytes() for p in (BACKEND / "scripts").rglob("*.py")}
    assert len(JOBS) >= 30
    crlf = raw["import_supplier_feed.py"]
    assert b"\r\n\t" in crlf and b"\n" not in crlf.replace(b"\r\n", b"")
    assert b"\n\t" in raw["export_orders_csv.py"] and b"\r" not in raw["export_orders_csv.py"]
    assert b'"""\nfrom __future__ import annotations' in raw["compute_kpis.py"]
    assert b"__all__ = " in raw["__init__.py"] and b"from ._common import" in raw["__init__.py"]
    assert b"functools.wraps" not in raw["_common.py"] and b"def timed(fn):" in raw["_common.py"]
    assert b"run = MonthlyReport(top=3).run" in raw["monthly_report.py"]
    assert b"if TYPE_CHECKING:" in raw["audit_trail.py"]
    assert b"if typing.TYPE_CHECKING:" in raw["shipping_sla_report.py"]
    assert b"from scripts.rollup_daily import run as rollup_daily" in raw["nightly_rollup.py"]
    assert b'kwargs.get("_lock_key"' in raw["_base.py"] and b"lib/store/files.py" in b" ".join(k.encode() for k in raw)


def test_only_jobs_whose_behaviour_would_change_are_refused(converted: tuple[Path, ConvertReport]) -> None:
    root, report = converted
    refused = {f.path: f.reasons for f in report.files if f.status in ("refused", "failed")}
    assert set(refused) == set(REFUSED), refused
    for path, start in REFUSED.items():
        assert len(refused[path]) == 1 and refused[path][0].startswith(start), refused[path]
    assert report.exit_code(check=False) == 2
    moved = sorted(p.stem for p in (root / "app/tasks").glob("[!_]*.py") if p.stem not in ("__init__", "constants"))
    assert moved == sorted(set(JOBS) - {Path(p).stem for p in REFUSED})
    # The refused jobs still run the legacy way, with everything they import.
    for path in REFUSED:
        assert (root / path).exists()
    assert (root / "scripts/_paths.py").exists() and (root / "scripts/_legacy_db.py").exists()
    assert (root / "scripts/plugins/csv_export.py").exists()


def test_no_refusal_spreads_from_a_module_that_is_not_a_job(converted: tuple[Path, ConvertReport]) -> None:
    """A helper that cannot move (or has a name that cannot) is never refused itself."""
    _root, report = converted
    status = {f.path: f.status for f in report.files}
    for helper in ("scripts/_paths.py", "scripts/_legacy_db.py", "scripts/_devtools.py", "scripts/_base.py"):
        assert status[helper] in ("changed", "skipped"), (helper, status[helper])
    # _paths moves for the jobs that use export_dir(); ASSETS keeps render_invoice in scripts/.
    paths = next(f for f in report.files if f.path == "scripts/_paths.py")
    assert paths.status == "changed" and any("ASSETS changes meaning" in n for n in paths.notes)


def test_the_package_init_is_carried_over_with_its_names(converted: tuple[Path, ConvertReport]) -> None:
    root, _report = converted
    init = (root / "app/tasks/__init__.py").read_text()
    original = (BACKEND / "scripts/__init__.py").read_text()
    assert init.startswith(original)  # every byte, in order
    assert init.index("__all__ = ") < init.index("REGISTERED_TASKS = {")
    code = (
        "import app.tasks as t, logging; from app.tasks import chunked, slugify; "
        "print(t.SCRIPTS_API_VERSION, t.DEFAULT_BATCH, t.__version__, t.logger.name, slugify('Émile B'), "
        "sorted(t.__all__), t.__doc__.splitlines()[0])"
    )
    out = _python(root, code)
    assert out == (
        "3 500 1.4.2 app.tasks emile-b ['DEFAULT_BATCH', 'SCRIPTS_API_VERSION', 'chunked', 'logger', 'slugify'] "
        "Warehouse operations jobs.\n"
    )


def test_lock_key_readers_get_the_legacy_value_and_nobody_else(converted: tuple[Path, ConvertReport]) -> None:
    root, report = converted
    tasks = root / "app/tasks"
    passing = sorted(p.stem for p in tasks.glob("*.py") if b"legacy_lock_key=True" in p.read_bytes())
    # Through the helper base class (monthly_report, stock_valuation), a read, a parameter.
    assert passing == ["monthly_report", "reprice_catalog", "send_low_stock_alerts", "stock_valuation"]
    notes = {f.path: f.notes for f in report.files}
    assert any("runs code that reads _lock_key (scripts/_base.py:20)" in n for n in notes["scripts/monthly_report.py"])
    assert any("reads _lock_key (line 7)" in n for n in notes["scripts/reprice_catalog.py"])


def test_registry_params_record_var_keyword_and_takes_nothing(converted: tuple[Path, ConvertReport]) -> None:
    root, _report = converted
    registry = _registry(root)
    sync = TaskParams.from_registry(registry["dataforge.sync_carrier_rates"]["params"])
    check_kwargs("dataforge.sync_carrier_rates", {"zones": 2, "region": "eu"}, sync)  # **kwargs takes any key
    ping = TaskParams.from_registry(registry["dataforge.ping_healthcheck"]["params"])
    with pytest.raises(ScheduleError, match="takes no parameter"):
        check_kwargs("dataforge.ping_healthcheck", {"x": 1}, ping)
    exchange = TaskParams.from_registry(registry["dataforge.update_exchange_cache"]["params"])
    with pytest.raises(ScheduleError, match="takes no parameter.*rate"):
        check_kwargs("dataforge.update_exchange_cache", {"rate": 1}, exchange)
    assert registry["dataforge.rotate_api_keys"]["category"] == "security"


def test_the_output_is_lint_clean_wherever_the_input_was(converted: tuple[Path, ConvertReport]) -> None:
    root, report = converted
    before = lint_codes(BACKEND)
    after = lint_codes(root)
    checked = 0
    for f in report.files:
        if f.status != "changed" or f.target is None or not f.path.endswith(".py"):
            continue
        added = after.get(f.target, set()) - before.get(f.path, set())
        assert not added, f"{f.target}: {added}"
        checked += 1
    assert checked > 40
    assert after.get("app/tasks/__init__.py", set()) <= before.get("scripts/__init__.py", set())
    clean = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--isolated", "--select", "I001,E402", "app/tasks"],
        cwd=root, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert clean.returncode == 0, clean.stdout


def test_crlf_and_tabs_are_kept(converted: tuple[Path, ConvertReport]) -> None:
    root, _report = converted
    crlf = (root / "app/tasks/import_supplier_feed.py").read_bytes()
    assert b"\n" not in crlf.replace(b"\r\n", b"") and b"\r\n\treturn self.run_job(run, kwargs)\r\n" in crlf
    tabs = (root / "app/tasks/export_orders_csv.py").read_bytes()
    assert b"\n\treturn self.run_job(run, kwargs)\n" in tabs and b"\r" not in tabs


def test_a_second_run_changes_nothing(converted: tuple[Path, ConvertReport]) -> None:
    root, _report = converted
    before = snapshot(root)
    again = convert(root, mode="check")
    assert not again.would_change and again.counts()["changed"] == 0, again.summary_lines()
    assert {f.path for f in again.files if f.status == "refused"} == set(REFUSED)
    assert snapshot(root) == before


def test_without_the_refused_jobs_it_converts_fully_and_check_then_passes(tmp_path: Path) -> None:
    root = _copy(tmp_path / "backend")
    for path in REFUSED:
        (root / path).unlink()
    runner = CliRunner()
    first = runner.invoke(cli, ["convert", str(root), "--quiet"], catch_exceptions=False)
    assert first.exit_code == 0, first.stderr
    # What nothing converted runs stays, with what it imports: the plugins, the helper that opens
    # a database at import (and the helper and package __init__ it needs).
    assert sorted(p.relative_to(root).as_posix() for p in (root / "scripts").rglob("*.py")) == [
        "scripts/__init__.py", "scripts/_common.py", "scripts/_devtools.py", "scripts/_legacy_db.py",
        "scripts/plugins/__init__.py", "scripts/plugins/csv_export.py", "scripts/plugins/json_export.py",
    ]  # fmt: skip
    assert not (root / "scripts/_base.py").exists() and (root / "app/tasks/_base.py").exists()
    second = runner.invoke(cli, ["convert", str(root), "--check"], catch_exceptions=False)
    assert second.exit_code == 0, second.stderr


def test_verify_finds_no_difference_on_any_case(tmp_path: Path) -> None:
    root = _copy(tmp_path / "backend")
    result = CliRunner().invoke(
        cli, ["verify", str(root), "--cases", str(root / "verify-cases.json"), "--json"], catch_exceptions=False
    )
    report = json.loads(result.stdout)
    failing = [c for c in report["cases"] if not c["ok"]]
    assert result.exit_code == 0 and not failing, json.dumps(failing, indent=1)
    cases = json.loads((root / "verify-cases.json").read_text())["cases"]
    assert {c["job"] for c in cases} == set(JOBS) - {Path(p).stem for p in REFUSED}
    assert len(report["cases"]) == len(cases) >= 60


def test_the_converted_tree_loads_on_the_runtime(converted: tuple[Path, ConvertReport], tmp_path: Path) -> None:
    root, _report = converted
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATAFORGE_")}
    env.update(
        DATAFORGE_TASK_PACKAGES="app.tasks",
        DATAFORGE_DATABASE_URL=f"sqlite:///{tmp_path / 'df.db'}",
        PYTHONPATH=os.pathsep.join([str(root), env.get("PYTHONPATH", "")]),
        PYTHONDONTWRITEBYTECODE="1",
    )
    proc = subprocess.run(
        [sys.executable, "-m", "dataforge", "tasks", "--check", "--json"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    listed = json.loads(proc.stdout)
    assert "devtools loaded" not in proc.stdout + proc.stderr  # the TYPE_CHECKING-only helper stayed behind
    assert json.dumps(listed).count('"dataforge.') >= 33


# -- each refusal is a real change -----------------------------------------------------------
def test_render_invoice_would_read_a_template_that_does_not_move() -> None:
    legacy_assets = BACKEND / "scripts" / "assets" / "invoice.txt"
    moved_assets = BACKEND / "app" / "tasks" / "assets" / "invoice.txt"  # Path(__file__) of the moved module
    assert legacy_assets.exists() and not moved_assets.exists()


def test_sync_ledger_runs_a_helper_that_opens_a_database_on_import(tmp_path: Path) -> None:
    """The worker (and beat, and `dataforge tasks`) imports every task module when it starts."""
    root = _copy(tmp_path / "backend")
    assert not (root / "data/reporting.sqlite3").exists()
    _python(root, "import scripts._legacy_db")
    assert (root / "data/reporting.sqlite3").exists()


def test_debug_dump_would_never_see_its_underscore_key(tmp_path: Path) -> None:
    root = _copy(tmp_path / "backend")
    legacy = _python(root, "from scripts.debug_dump import run; print(run(_trace=True, scheduled_task_id=1)['bins'])")
    assert legacy.startswith("[{'sku': 'A-100'")  # the legacy executor passed the schedule's key through

    def run(**options: Any) -> None: ...

    assert "_trace" not in bind_kwargs(run, {"_trace": True, "scheduled_task_id": 1}).kwargs  # the runtime drops it
    with pytest.raises(ScheduleError, match="reserved"):
        check_kwargs("dataforge.debug_dump", {"_trace": True}, TaskParams())  # and no schedule may carry it


def test_stream_events_never_ran_to_completion(tmp_path: Path) -> None:
    root = _copy(tmp_path / "backend")
    out = _python(root, "import inspect; from scripts.stream_events import run; print(inspect.isgenerator(run()))")
    assert out == "True\n"  # what the legacy executor got back: a generator nobody iterated


def test_run_exporters_imports_modules_nothing_moves() -> None:
    source = (BACKEND / "scripts/run_exporters.py").read_text()
    assert 'import_module(f"scripts.plugins.{name}")' in source
    statically_imported = {
        node.module
        for path in (BACKEND / "scripts").rglob("*.py")
        for node in ast.walk(ast.parse(path.read_bytes()))
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert not any(m.startswith("scripts.plugins") for m in statically_imported)


# -- helpers ---------------------------------------------------------------------------------
def _python(root: Path, code: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(root), "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _registry(root: Path) -> dict[str, Any]:
    tree = ast.parse((root / "app/tasks/__init__.py").read_bytes())
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and getattr(stmt.targets[0], "id", None) == "REGISTERED_TASKS":
            value: dict[str, Any] = ast.literal_eval(stmt.value)
            return value
    raise AssertionError("no REGISTERED_TASKS")
