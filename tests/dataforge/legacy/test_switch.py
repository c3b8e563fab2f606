"""dataforge.legacy.switch: the persisted switch, the environment override, and counting."""

from __future__ import annotations

from pathlib import Path

import pytest

from dataforge.db import Database
from dataforge.legacy.errors import LegacySwitchError
from dataforge.legacy.status import legacy_status
from dataforge.legacy.switch import legacy_enabled, read_switch, record_legacy_run, set_switch
from dataforge.runtime import Runtime
from dataforge.settings import Settings


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
