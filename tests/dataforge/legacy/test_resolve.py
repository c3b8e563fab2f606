"""dataforge.legacy.resolve: what a legacy handler_path may resolve to, and nothing else."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from dataforge.legacy.errors import LegacyHandlerError
from dataforge.legacy.paths import HandlerMap, handler_path_spellings
from dataforge.legacy.resolve import forward_task_name, legacy_job_module, resolve_legacy_script
from dataforge.settings import Settings

MAP = HandlerMap(
    scripts_package="scripts",
    tasks_package="app.tasks",
    handlers={"jobs/legacy_name.py": "dataforge.renamed", "os:system": "dataforge.renamed"},
    modules={"renamed_job": {"task_name": "dataforge.renamed", "module": "app.tasks.renamed_job", "function": "x"}},
)


@pytest.mark.parametrize("spelling", handler_path_spellings("sync_accounts"))
def test_shim_resolves_the_four_spellings_inside_the_scripts_package(spelling: str) -> None:
    settings = Settings.from_env({})
    assert resolve_legacy_script(f" {spelling} ", settings, HandlerMap.empty()) == "scripts.sync_accounts"


@pytest.mark.parametrize(
    "handler_path",
    ["os:system", "subprocess:run", "../scripts/x.py", "scripts.sub.mod", "scripts:_common", "builtins:eval", "", None,
     "tests.dataforge.canary_never_imported:run"],
)  # fmt: skip
def test_shim_refuses_everything_else_and_imports_nothing(handler_path: str | None) -> None:
    settings = Settings.from_env({})
    with pytest.raises(LegacyHandlerError, match="refused|missing"):
        resolve_legacy_script(handler_path, settings, HandlerMap.empty())
    assert "tests.dataforge.canary_never_imported" not in sys.modules


def test_shim_follows_the_map_only_to_job_modules() -> None:
    settings = Settings.from_env({})
    # An exact spelling the map lists resolves to the map's module for that task...
    assert resolve_legacy_script("jobs/legacy_name.py", settings, MAP) == "scripts.renamed_job"
    # A map may say which *script* an odd spelling means; the result is still inside scripts.
    assert resolve_legacy_script("os:system", settings, MAP) == "scripts.renamed_job"
    # ...and a map that names a non-module (or os:system) still cannot reach outside scripts.
    bad = HandlerMap("scripts", "app.tasks", {"os:system": "dataforge.x"}, {"os.path": {"task_name": "dataforge.x"}})
    with pytest.raises(LegacyHandlerError):
        resolve_legacy_script("os:system", settings, bad)


def test_forwarder_target_follows_the_map_then_the_rule() -> None:
    assert forward_task_name("scripts.renamed_job:run", MAP) == "dataforge.renamed"
    assert forward_task_name("scripts/plain.py", MAP) == "dataforge.plain"
    with pytest.raises(LegacyHandlerError, match="maps to no task"):
        forward_task_name("nonsense", MAP)


def test_shim_runs_the_converted_module_when_the_script_is_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings.from_env({}).with_(scripts_package="gone_scripts_pkg")
    converted = HandlerMap(
        "gone_scripts_pkg", "app.tasks", {}, {"sync_accounts": {"task_name": "dataforge.sync_accounts",
                                                                "module": "app.tasks.sync_accounts"}},
    )
    assert legacy_job_module("gone_scripts_pkg:sync_accounts", settings, converted) == "app.tasks.sync_accounts"
    # A map entry pointing outside its tasks package is refused, never imported.
    hostile = HandlerMap("gone_scripts_pkg", "app.tasks", {}, {"x": {"task_name": "t", "module": "os"}})
    with pytest.raises(LegacyHandlerError, match="not on disk"):
        legacy_job_module("gone_scripts_pkg:x", settings, hostile)
    # With the script still on disk (--keep-scripts), the script itself runs.
    pkg = tmp_path / "kept_scripts_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "sync_accounts.py").write_text("def run():\n    return 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    kept = settings.with_(scripts_package="kept_scripts_pkg")
    assert legacy_job_module("kept_scripts_pkg:sync_accounts", kept, converted) == "kept_scripts_pkg.sync_accounts"
