"""A running beat follows `dataforge legacy enable|disable` within a minute (docs/rollback.md).

The switch is the persisted one (``dataforge_flags``), flipped while the same scheduler keeps
ticking: the plug-in re-reads it on beat's periodic full refresh, so the flip must take effect
at the first pass after that period and not before it (nobody restarts beat in a rollback).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dataforge.legacy.names import LEGACY_TASK_NAME
from dataforge.legacy.switch import set_switch
from dataforge.scheduler.beat import DatabaseScheduler
from tests.dataforge.scheduler.support import (
    CapturingScheduler,
    FakeClock,
    add_row,
    get_row,
    legacy_capable_schema,
    make_app,
    register,
    settings_for,
)

#: The bound docs/rollback.md states for a running beat.
STATED_BOUND = 60.0


@pytest.fixture
def scheduler(tmp_path: Path, database_url: str) -> Iterator[CapturingScheduler]:
    legacy_capable_schema(database_url)
    settings = settings_for(tmp_path, database_url, DATAFORGE_LEGACY_TASKS="0")
    app = make_app(settings)
    register(app, LEGACY_TASK_NAME)  # what the compat shim registers in a real worker/beat
    sch = CapturingScheduler(app, FakeClock())
    yield sch
    sch.close()
    app.runtime.close()


def _tick_for(sch: CapturingScheduler, seconds: float, step: float = 1.0) -> None:
    """Let the running scheduler pass ``seconds`` of (fake) time, ticking every ``step``."""
    assert sch.clock is not None
    elapsed = 0.0
    while elapsed < seconds:
        sch.clock.advance(step)
        elapsed += step
        sch.tick_once()


def test_the_refresh_period_is_within_the_stated_bound() -> None:
    assert DatabaseScheduler.full_refresh_every <= STATED_BOUND


def test_a_running_beat_follows_the_persisted_switch_both_ways(scheduler: CapturingScheduler) -> None:
    sch = scheduler
    db = sch.runtime.db
    settings = sch.runtime.settings
    row = add_row(db, task_name=None, handler_path="scripts:sync_accounts", interval_seconds=5)
    sch.tick_once()
    assert sch.sent_for(row) == []
    assert str(get_row(db, row)["invalid_reason"]).startswith("task_name=None: missing; this legacy")

    set_switch(db, settings, True, by="test")
    period = DatabaseScheduler.full_refresh_every
    _tick_for(sch, period - 2)
    assert sch.sent_for(row) == [], "the switch took effect before beat's refresh: the test cannot see the re-read"
    _tick_for(sch, 3)
    sent = sch.sent_for(row)
    assert sent and {m.task_name for m in sent} == {LEGACY_TASK_NAME}, "enable not picked up by a running beat"
    assert sent[0].kwargs["handler_path"] == "scripts:sync_accounts"

    set_switch(db, settings, False, by="test")
    _tick_for(sch, period + 1)
    before = len(sch.sent_for(row))
    _tick_for(sch, 30)
    assert len(sch.sent_for(row)) == before, "disable not picked up by a running beat"
    assert get_row(db, row)["invalid_reason"] is not None
