"""Per-row decisions of beat, without a database: target name, flags, message, missed runs,
jitter, the overlap header."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dataforge.protocol import (
    DUE_AT_HEADER,
    HARD_LIMIT_GRACE_SECONDS,
    MAX_RETRIES_HEADER,
    OVERLAP_HEADER,
    SCHEDULE_ID_HEADER,
    MissedRunPolicy,
)
from dataforge.scheduler.dispatch import (
    _RUN_ID_NAMESPACE,
    DispatchContext,
    MarkInvalid,
    Reschedule,
    RowSnapshot,
    Send,
    plan_due_row,
    plan_unscheduled_row,
    run_task_id,
)
from dataforge.scheduler.schedules import jitter_offset

NOW = datetime(2024, 5, 1, 12, 0, 0)
REGISTERED = {"dataforge.sync"}


def ctx(**changes: Any) -> DispatchContext:
    base = DispatchContext(is_registered=REGISTERED.__contains__)
    return replace(base, **changes)


def row(**changes: Any) -> RowSnapshot:
    values: dict[str, Any] = dict(
        id=42, name="sync", task_type="interval", task_name="dataforge.sync", handler_path=None,
        interval_seconds=300, cron_expression=None, run_at=None, timezone="UTC", handler_kwargs='{"days": 7}',
        status="active", timeout_seconds=None, max_retries=0, missed_run_policy=None, overlap_policy="skip",
        catchup_window_seconds=None, jitter_seconds=0, last_run_at=None, next_run_at=NOW, run_count=4,
        missed_count=0, invalid_reason=None,
    )
    values.update(changes)
    return RowSnapshot.from_mapping(values)


def send(decision: object) -> Send:
    assert isinstance(decision, Send), decision
    return decision


def test_due_row_is_sent_with_kwargs_id_headers_and_expiry() -> None:
    decision = send(plan_due_row(row(max_retries=3), NOW, ctx()))
    (msg,) = decision.messages
    assert msg.task_name == "dataforge.sync"
    assert msg.kwargs == {"days": 7, "scheduled_task_id": 42}
    assert msg.headers == {MAX_RETRIES_HEADER: 3, SCHEDULE_ID_HEADER: 42, DUE_AT_HEADER: NOW.isoformat()}
    assert decision.next_run_at == NOW + timedelta(seconds=300)
    # A run that has not started when the next one is due is discarded, not stacked.
    assert msg.expires == (NOW + timedelta(seconds=300)).replace(tzinfo=UTC)
    assert msg.soft_time_limit is None and "soft_time_limit" not in msg.options()
    assert msg.task_id == run_task_id(42, 5, NOW)


def test_timeout_becomes_soft_and_hard_limits() -> None:
    opts = send(plan_due_row(row(timeout_seconds=60), NOW, ctx())).messages[0].options()
    assert (opts["soft_time_limit"], opts["time_limit"]) == (60, 60 + HARD_LIMIT_GRACE_SECONDS)


def test_row_id_wins_over_a_copied_scheduled_task_id() -> None:
    decision = send(plan_due_row(row(handler_kwargs='{"scheduled_task_id": 1, "_lock_key": "x"}'), NOW, ctx()))
    assert decision.messages[0].kwargs["scheduled_task_id"] == 42


def test_task_ids_are_deterministic_per_run() -> None:
    """A resend after a crash carries the first send's id; the next run has another."""
    assert run_task_id(1, 1, NOW) == run_task_id(1, 1, NOW)
    assert len({run_task_id(1, 1, NOW), run_task_id(1, 2, NOW), run_task_id(2, 1, NOW),
                run_task_id(1, 1, NOW + timedelta(seconds=1))}) == 4


@given(
    schedule_id=st.integers(min_value=1, max_value=2**31 - 1),
    run_number=st.integers(min_value=1, max_value=2**40),
    due=st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1)),
)
def test_task_ids_are_the_uuid5_of_the_run(schedule_id: int, run_number: int, due: datetime) -> None:
    """Spelled out for speed, still exactly uuid.uuid5 (ids of runs sent before stay valid)."""
    expected = uuid.uuid5(_RUN_ID_NAMESPACE, f"{schedule_id}:{run_number}:{due.isoformat()}")
    assert run_task_id(schedule_id, run_number, due) == str(expected)


def test_once_row_has_no_next_run_and_no_expiry() -> None:
    decision = send(plan_due_row(row(task_type="once", run_at=NOW, interval_seconds=None), NOW, ctx()))
    assert decision.next_run_at is None and decision.messages[0].expires is None


def test_raw_sqlite_timestamps_are_read() -> None:
    decision = send(plan_due_row(row(next_run_at="2024-05-01 11:59:00"), NOW, ctx()))
    assert decision.messages[0].headers[DUE_AT_HEADER] == "2024-05-01T11:59:00"
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
    late = NOW + timedelta(hours=2, minutes=2)
    newest = NOW + timedelta(hours=2)  # 12:00 + 24 x 5 min
    fired = send(plan_due_row(row(), late, ctx(missed_runs="once")))
    assert fired.catch_up and fired.missed == 24 and len(fired.messages) == 1
    # The newest missed run is the one sent, with its due time and its id.
    assert fired.messages[0].headers[DUE_AT_HEADER] == newest.isoformat()
    assert fired.messages[0].task_id == run_task_id(42, 5, newest)
    assert fired.next_run_at == NOW + timedelta(hours=2, minutes=5)
    skipped = plan_due_row(row(), late, ctx(missed_runs="skip"))
    assert isinstance(skipped, Reschedule) and skipped.next_run_at == NOW + timedelta(hours=2, minutes=5)
    assert skipped.missed == 25 and "25 missed run(s)" in skipped.why
    assert isinstance(plan_due_row(row(missed_run_policy="skip"), late, ctx(missed_runs="once")), Reschedule)
    assert isinstance(plan_due_row(row(missed_run_policy="once"), late, ctx(missed_runs="skip")), Send)


def test_all_sends_one_message_per_missed_run_each_with_its_own_id() -> None:
    decision = send(plan_due_row(row(missed_run_policy="all"), NOW + timedelta(minutes=16), ctx()))
    dues = [NOW + timedelta(minutes=m) for m in (0, 5, 10, 15)]
    assert [m.headers[DUE_AT_HEADER] for m in decision.messages] == [d.isoformat() for d in dues]
    assert [m.task_id for m in decision.messages] == [run_task_id(42, 5 + k, d) for k, d in enumerate(dues)]
    # 16:00 past, next regular 12:20 is 4 min away (> half of 5 min): kept.
    assert decision.next_run_at == NOW + timedelta(minutes=20) and decision.missed == 0
    # `all` wants every run: without a catch-up window, no replayed run expires (the expiry rule).
    assert {m.expires for m in decision.messages} == {None}


def test_catchup_window_comes_from_the_row_then_the_global_setting() -> None:
    late = NOW + timedelta(minutes=16)
    global_window = ctx(missed_runs=MissedRunPolicy.ALL, catchup_window=timedelta(minutes=7))
    narrowed = send(plan_due_row(row(), late, global_window))
    assert [m.headers[DUE_AT_HEADER] for m in narrowed.messages] == [
        (NOW + timedelta(minutes=m)).isoformat() for m in (10, 15)
    ]
    assert narrowed.missed == 2
    own = send(plan_due_row(row(catchup_window_seconds=3600), late, global_window))
    assert len(own.messages) == 4 and own.missed == 0
    gone = plan_due_row(row(catchup_window_seconds=60), NOW + timedelta(minutes=3), ctx())
    assert isinstance(gone, Reschedule) and gone.missed == 1 and "catch-up window 60s" in gone.why


def test_jitter_delays_the_send_not_the_due_time() -> None:
    offset = jitter_offset(42, 120)
    assert offset > timedelta(0)
    # next_run_at holds the send time: due time + the schedule's offset.
    # Resumed a little before 12:00 + offset; its last run was sent at 11:55 + offset.
    last_sent = NOW - timedelta(minutes=5) + offset
    first = plan_unscheduled_row(row(next_run_at=None, jitter_seconds=120, last_run_at=last_sent),
                                 NOW + offset - timedelta(seconds=1), ctx())
    assert first == Reschedule(NOW + offset, "scheduled")
    decision = send(plan_due_row(row(jitter_seconds=120, next_run_at=NOW + offset), NOW + offset, ctx()))
    (msg,) = decision.messages
    assert msg.headers[DUE_AT_HEADER] == NOW.isoformat() and msg.task_id == run_task_id(42, 5, NOW)
    assert decision.next_run_at == NOW + timedelta(minutes=5) + offset and not decision.catch_up
    assert msg.expires == (NOW + timedelta(minutes=5) + offset).replace(tzinfo=UTC)
    # A re-send of the same run (beat crashed before committing) is the same message.
    again = send(plan_due_row(row(jitter_seconds=120, next_run_at=NOW + offset), NOW + offset + timedelta(seconds=3),
                              ctx()))
    assert again.messages[0].task_id == msg.task_id


def test_overlap_policy_travels_in_a_header_when_not_skip() -> None:
    assert OVERLAP_HEADER not in send(plan_due_row(row(), NOW, ctx())).messages[0].headers
    for policy in ("buffer_one", "allow", "cancel_previous"):
        headers = send(plan_due_row(row(overlap_policy=policy), NOW, ctx())).messages[0].headers
        assert headers[OVERLAP_HEADER] == policy
    bad = plan_due_row(row(overlap_policy="queue"), NOW, ctx())
    assert isinstance(bad, MarkInvalid) and bad.reason.startswith("overlap_policy='queue'")


def test_a_bad_row_is_flagged_with_its_own_id_even_when_its_definition_was_seen_before() -> None:
    bad = row(id=7, jitter_seconds=-3)
    assert isinstance(plan_due_row(bad, NOW, ctx()), MarkInvalid)
    again = plan_due_row(row(id=8, jitter_seconds=-3), NOW, ctx())
    assert isinstance(again, MarkInvalid) and again.reason.startswith("jitter_seconds=-3")


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
