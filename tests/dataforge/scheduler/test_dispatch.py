"""Per-row decisions of beat, without a database: target name, flags, message, missed runs."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dataforge.protocol import DUE_AT_HEADER, HARD_LIMIT_GRACE_SECONDS, MAX_RETRIES_HEADER, SCHEDULE_ID_HEADER
from dataforge.scheduler.dispatch import (
    DispatchContext,
    MarkInvalid,
    Reschedule,
    RowSnapshot,
    Send,
    plan_due_row,
    plan_unscheduled_row,
    run_task_id,
)

NOW = datetime(2024, 5, 1, 12, 0, 0)
REGISTERED = {"dataforge.sync"}


def ctx(**changes: Any) -> DispatchContext:
    base = DispatchContext(is_registered=REGISTERED.__contains__)
    return replace(base, **changes)


def row(**changes: Any) -> RowSnapshot:
    values: dict[str, Any] = dict(
        id=42, name="sync", task_type="interval", task_name="dataforge.sync", handler_path=None,
        interval_seconds=300, cron_expression=None, run_at=None, timezone="UTC", handler_kwargs='{"days": 7}',
        status="active", timeout_seconds=None, max_retries=0, missed_run_policy=None, last_run_at=None,
        next_run_at=NOW, run_count=4, invalid_reason=None,
    )
    values.update(changes)
    return RowSnapshot.from_mapping(values)


def test_due_row_is_sent_with_kwargs_id_headers_and_expiry() -> None:
    decision = plan_due_row(row(max_retries=3), NOW, ctx())
    assert isinstance(decision, Send)
    msg = decision.message
    assert msg.task_name == "dataforge.sync"
    assert msg.kwargs == {"days": 7, "scheduled_task_id": 42}
    assert msg.headers == {MAX_RETRIES_HEADER: 3, SCHEDULE_ID_HEADER: 42, DUE_AT_HEADER: NOW.isoformat()}
    assert decision.next_run_at == NOW + timedelta(seconds=300)
    # A run that has not started when the next one is due is discarded, not stacked.
    assert msg.expires == (NOW + timedelta(seconds=300)).replace(tzinfo=UTC)
    assert msg.soft_time_limit is None and "soft_time_limit" not in msg.options()
    assert msg.task_id == run_task_id(42, 5, NOW)


def test_timeout_becomes_soft_and_hard_limits() -> None:
    decision = plan_due_row(row(timeout_seconds=60), NOW, ctx())
    assert isinstance(decision, Send)
    opts = decision.message.options()
    assert (opts["soft_time_limit"], opts["time_limit"]) == (60, 60 + HARD_LIMIT_GRACE_SECONDS)


def test_row_id_wins_over_a_copied_scheduled_task_id() -> None:
    decision = plan_due_row(row(handler_kwargs='{"scheduled_task_id": 1, "_lock_key": "x"}'), NOW, ctx())
    assert isinstance(decision, Send)
    assert decision.message.kwargs["scheduled_task_id"] == 42


def test_task_ids_are_deterministic_per_run() -> None:
    """A resend after a crash carries the first send's id; the next run has another."""
    assert run_task_id(1, 1, NOW) == run_task_id(1, 1, NOW)
    assert len({run_task_id(1, 1, NOW), run_task_id(1, 2, NOW), run_task_id(2, 1, NOW),
                run_task_id(1, 1, NOW + timedelta(seconds=1))}) == 4


def test_once_row_has_no_next_run_and_no_expiry() -> None:
    decision = plan_due_row(row(task_type="once", run_at=NOW, interval_seconds=None), NOW, ctx())
    assert isinstance(decision, Send)
    assert decision.next_run_at is None and decision.message.expires is None


def test_raw_sqlite_timestamps_are_read() -> None:
    decision = plan_due_row(row(next_run_at="2024-05-01 11:59:00"), NOW, ctx())
    assert isinstance(decision, Send)
    assert decision.due == datetime(2024, 5, 1, 11, 59)
    assert decision.next_run_at == datetime(2024, 5, 1, 12, 4)


@pytest.mark.parametrize(
    ("changes", "reason_start"),
    [
        ({"task_name": "dataforge.gone"}, "task_name='dataforge.gone': not registered"),
        ({"task_type": "cron", "cron_expression": "every day"}, "cron_expression='every day'"),
        ({"task_type": "cron", "cron_expression": "0 3 * * *", "timezone": "Europe/Atlantis"},
         "timezone='Europe/Atlantis': unknown time zone"),
        ({"handler_kwargs": "[1]"}, "handler_kwargs='[1]': must be a JSON object"),
        ({"handler_kwargs": "{'days': 7}"}, "handler_kwargs=\"{'days': 7}\": not valid JSON"),
        ({"handler_kwargs": ""}, "handler_kwargs='': not valid JSON"),
        ({"task_name": None}, "task_name=None: missing; set task_name"),
        ({"task_name": "  "}, "task_name=None: missing; set task_name"),
        # Without a plug-in that claims it, a legacy handler_path does not make a row runnable.
        ({"task_name": None, "handler_path": "scripts:sync"}, "task_name=None: missing; set task_name"),
        ({"next_run_at": "tomorrow"}, "next_run_at='tomorrow': not a timestamp"),
    ],
)
def test_bad_rows_are_flagged_with_a_reason(changes: dict[str, Any], reason_start: str) -> None:
    decision = plan_due_row(row(**changes), NOW, ctx())
    assert isinstance(decision, MarkInvalid)
    assert decision.reason.startswith(reason_start), decision.reason


def test_missed_runs_follow_the_row_then_the_global_policy() -> None:
    late = NOW + timedelta(hours=2)
    fired = plan_due_row(row(), late, ctx(missed_runs="once"))
    assert isinstance(fired, Send) and fired.missed
    assert fired.next_run_at == NOW + timedelta(hours=2, minutes=5)
    skipped = plan_due_row(row(), late, ctx(missed_runs="skip"))
    assert isinstance(skipped, Reschedule) and skipped.next_run_at == NOW + timedelta(hours=2, minutes=5)
    assert isinstance(plan_due_row(row(missed_run_policy="skip"), late, ctx(missed_runs="once")), Reschedule)
    assert isinstance(plan_due_row(row(missed_run_policy="once"), late, ctx(missed_runs="skip")), Send)


def test_unscheduled_rows_get_a_first_due_time_or_a_flag() -> None:
    fresh = plan_unscheduled_row(row(next_run_at=None), NOW, ctx())
    assert fresh == Reschedule(NOW, "scheduled")
    resumed = plan_unscheduled_row(row(next_run_at=None, last_run_at="2024-05-01 10:02:00"), NOW, ctx())
    assert isinstance(resumed, Reschedule) and resumed.next_run_at == datetime(2024, 5, 1, 12, 2)
    ran = plan_unscheduled_row(row(task_type="once", run_at=NOW, next_run_at=None, last_run_at=NOW), NOW, ctx())
    assert ran == Reschedule(None, "once row already ran")
    bad = plan_unscheduled_row(row(next_run_at=None, interval_seconds=0), NOW, ctx())
    assert isinstance(bad, MarkInvalid) and bad.reason.startswith("interval_seconds=0")


def test_schedule_math_that_fails_flags_only_that_row(monkeypatch: pytest.MonkeyPatch) -> None:
    import dataforge.scheduler.dispatch as dispatch

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("croniter gave up")

    monkeypatch.setattr(dispatch, "plan_run", broken)
    monkeypatch.setattr(dispatch, "first_run_at", broken)
    for decision in (plan_due_row(row(), NOW, ctx()), plan_unscheduled_row(row(next_run_at=None), NOW, ctx())):
        assert isinstance(decision, MarkInvalid)
        assert "croniter gave up" in decision.reason
