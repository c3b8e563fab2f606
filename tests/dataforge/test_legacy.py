"""dataforge.legacy: the persisted switch, counting, and what a legacy handler_path may resolve to."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from celery import Celery, signals

from dataforge.celery_app import LEGACY_SHIM_MODULE, create_app
from dataforge.db import Database
from dataforge.legacy import (
    FORWARDER_MODULE,
    LEGACY_TASK_NAME,
    LegacyHandlerError,
    LegacySwitchError,
    forward_task_name,
    legacy_enabled,
    legacy_job_module,
    legacy_status,
    read_switch,
    record_legacy_run,
    resolve_legacy_script,
    set_switch,
)
from dataforge.legacy.executor import LegacyExecutorTask
from dataforge.legacy.paths import HandlerMap, handler_path_spellings
from dataforge.locks import lock_key
from dataforge.runtime import Runtime
from dataforge.scheduler import dispatch
from dataforge.settings import Settings

MAP = HandlerMap(
    scripts_package="scripts",
    tasks_package="app.tasks",
    handlers={"jobs/legacy_name.py": "dataforge.renamed", "os:system": "dataforge.renamed"},
    modules={"renamed_job": {"task_name": "dataforge.renamed", "module": "app.tasks.renamed_job", "function": "x"}},
)


def test_the_legacy_name_is_the_schedulers() -> None:
    assert dispatch.LEGACY_TASK_NAME == LEGACY_TASK_NAME == "app.celery_tasks.execute_scheduled_task"


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


def test_legacy_and_new_task_share_the_run_lock_of_a_schedule() -> None:
    app = Celery("lock-key-test", set_as_current=False)
    app.dataforge = Runtime(Settings.from_env({}))  # type: ignore[attr-defined]

    @app.task(base=LegacyExecutorTask, bind=True, name="legacy-under-test", shared=False)  # type: ignore[untyped-decorator]
    def legacy(self: LegacyExecutorTask, **kwargs: object) -> None:
        return None

    message = {"scheduled_task_id": 7, "handler_path": "scripts.sync_accounts:run", "_lock_key": "old"}
    assert legacy.lock_key_for(message) == lock_key("dataforge.sync_accounts", {"scheduled_task_id": 7})


def test_switch_round_trip_env_override_and_counting(embedded_settings: Settings) -> None:
    db = Database(embedded_settings.database_url)
    runtime = Runtime(embedded_settings)
    assert read_switch(db, embedded_settings).persisted is None and not legacy_enabled(runtime)
    state = set_switch(db, embedded_settings, True, by="tester")
    assert (state.persisted, state.effective, state.updated_by) == (True, True, "tester")
    assert legacy_enabled(runtime)
    set_switch(db, embedded_settings, False)
    assert not legacy_enabled(runtime)
    assert legacy_enabled(Runtime(embedded_settings.with_(legacy_tasks=True)))  # env forces it on
    for _ in range(2):
        record_legacy_run(runtime, "forwarded", task_id="t", handler_path="scripts:x", scheduled_task_id=1, target="x")
    status = legacy_status(db, embedded_settings)
    assert status.switch.hits == 2 and status.switch.last_hit_at is not None
    runtime.close()
    db.dispose()


def test_unmigrated_database_reads_as_off_and_refuses_writes(tmp_path: Path) -> None:
    settings = Settings.from_env({}, cwd=tmp_path)  # no tables at all
    runtime = Runtime(settings)
    assert legacy_enabled(runtime) is False
    record_legacy_run(runtime, "shim", task_id="t", handler_path="scripts:x", scheduled_task_id=None, target="x")
    with pytest.raises(LegacySwitchError, match="dataforge db upgrade"):
        set_switch(runtime.db, settings, True)
    runtime.close()


def _include_after_worker_start(app: Celery) -> list[str]:
    app.loader.worker_initialized = True  # what init_worker sets before importing task modules
    signals.import_modules.send(sender=app)
    return list(app.conf.include)


def test_worker_start_includes_the_forwarder_or_the_shim(embedded_settings: Settings) -> None:
    app = create_app(embedded_settings)
    assert FORWARDER_MODULE not in app.conf.include  # importing the app decides nothing
    assert _include_after_worker_start(app)[-1] == FORWARDER_MODULE
    set_switch(Database(embedded_settings.database_url), embedded_settings, True)
    app = create_app(embedded_settings)
    include = _include_after_worker_start(app)
    assert include[-1] == LEGACY_SHIM_MODULE and FORWARDER_MODULE not in include
    env_on = create_app(embedded_settings.with_(legacy_tasks=True))
    assert _include_after_worker_start(env_on).count(LEGACY_SHIM_MODULE) == 1


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
