"""dataforge.legacy.plugin: the legacy executor's registration, its lock, and legacy row dispatch."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from celery import signals

from dataforge.celery_app import create_app
from dataforge.db import Database
from dataforge.legacy.executor import LegacyExecutorTask
from dataforge.legacy.names import FORWARDER_MODULE, LEGACY_TASK_NAME, SHIM_MODULE
from dataforge.legacy.plugin import LegacyPlugin
from dataforge.legacy.switch import set_switch
from dataforge.locks import lock_key
from dataforge.runtime import DataForgeApp
from dataforge.scheduler.dispatch import DispatchContext, MarkInvalid, RowSnapshot, Send, plan_due_row
from dataforge.settings import Settings

NOW = datetime(2024, 5, 1, 12, 0, 0)


def plugin(enabled: bool) -> LegacyPlugin:
    legacy = LegacyPlugin(Settings.from_env({}))
    legacy.enabled = enabled
    return legacy


def ctx(enabled: bool, registered: frozenset[str] = frozenset({"dataforge.sync", LEGACY_TASK_NAME})) -> DispatchContext:
    return DispatchContext(is_registered=registered.__contains__, resolvers=(plugin(enabled).resolve_row,))


def row(**changes: Any) -> RowSnapshot:
    values: dict[str, Any] = dict(
        id=42, name="sync", task_type="interval", task_name="dataforge.sync", handler_path=None,
        interval_seconds=300, cron_expression=None, run_at=None, timezone="UTC", handler_kwargs='{"days": 7}',
        status="active", timeout_seconds=None, max_retries=0, missed_run_policy=None, last_run_at=None,
        next_run_at=NOW, run_count=0, invalid_reason=None,
    )
    values.update(changes)
    return RowSnapshot(**values)


def test_legacy_rows_go_to_the_shim_only_with_the_switch_on() -> None:
    legacy = row(task_name=None, handler_path="scripts.sync_accounts:run", handler_kwargs='{"days": 1}')
    decision = plan_due_row(legacy, NOW, ctx(True))
    assert isinstance(decision, Send)
    (message,) = decision.messages
    assert message.task_name == LEGACY_TASK_NAME
    assert message.kwargs == {"days": 1, "scheduled_task_id": 42, "handler_path": "scripts.sync_accounts:run"}
    off = plan_due_row(legacy, NOW, ctx(False))
    assert isinstance(off, MarkInvalid) and off.reason.startswith("task_name=None: missing; this legacy"), off
    # An unregistered task_name with a legacy handler_path also goes through the shim.
    stale = replace(legacy, task_name="dataforge.not_deployed")
    sent = plan_due_row(stale, NOW, ctx(True))
    assert isinstance(sent, Send) and sent.messages[0].task_name == LEGACY_TASK_NAME
    # A registered task_name always wins: the new path is used whenever it exists.
    both = replace(legacy, task_name="dataforge.sync")
    new_way = plan_due_row(both, NOW, ctx(True))
    assert isinstance(new_way, Send) and new_way.messages[0].task_name == "dataforge.sync"
    # Outside the scripts namespace nothing is ever sent to the shim.
    evil = plan_due_row(replace(legacy, handler_path="os:system"), NOW, ctx(True))
    assert isinstance(evil, MarkInvalid) and evil.reason.startswith("handler_path='os:system': no task_name"), evil


def test_legacy_switch_on_without_the_shim_registered_flags_the_row() -> None:
    legacy = row(task_name=None, handler_path="scripts:sync")
    decision = plan_due_row(legacy, NOW, ctx(True, frozenset({"dataforge.sync"})))
    assert isinstance(decision, MarkInvalid)
    assert "DATAFORGE_LEGACY_TASKS=1" in decision.reason


def test_legacy_and_new_task_share_the_run_lock_of_a_schedule() -> None:
    app = create_app(Settings.from_env({}))

    @app.task(base=LegacyExecutorTask, bind=True, name="legacy-under-test", shared=False)
    def legacy(self: LegacyExecutorTask, **kwargs: object) -> None:
        return None

    message = {"scheduled_task_id": 7, "handler_path": "scripts.sync_accounts:run", "_lock_key": "old"}
    assert legacy.lock_key_for(message) == lock_key("dataforge.sync_accounts", {"scheduled_task_id": 7})
    app.runtime.close()


def _include_after_worker_start(app: DataForgeApp) -> list[str]:
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
    assert include[-1] == SHIM_MODULE and FORWARDER_MODULE not in include
    env_on = create_app(embedded_settings.with_(legacy_tasks=True))
    assert _include_after_worker_start(env_on).count(SHIM_MODULE) == 1
