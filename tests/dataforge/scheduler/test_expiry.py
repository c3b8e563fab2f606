"""The expiry rule of scheduled messages: room for a reconnect, no burst after a worker outage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from dataforge.protocol import MissedRunPolicy
from dataforge.scheduler.dispatch import DispatchContext, RowSnapshot, Send, plan_due_row
from dataforge.scheduler.expiry import ON_TIME, RECONNECT_ALLOWANCE, run_expiry

T0 = datetime(2026, 1, 5, 12, 0, 0)
S2 = timedelta(seconds=2)


def test_a_run_sent_on_time_expires_when_the_next_one_is_due() -> None:
    assert run_expiry(T0, T0 + timedelta(milliseconds=30), T0 + S2, MissedRunPolicy.ONCE) == T0 + S2
    assert run_expiry(T0, T0, T0 + timedelta(hours=1), MissedRunPolicy.SKIP) == T0 + timedelta(hours=1)


def test_a_held_back_run_keeps_room_for_the_workers_to_reconnect() -> None:
    sent = T0 + timedelta(seconds=30)  # beat could not publish for 30 s
    assert run_expiry(T0, sent, sent + S2, MissedRunPolicy.ONCE) == sent + RECONNECT_ALLOWANCE
    # A far next due time is room enough already.
    assert run_expiry(T0, sent, T0 + timedelta(hours=1), MissedRunPolicy.ONCE) == T0 + timedelta(hours=1)


def test_once_rows_and_policies_that_keep_every_run() -> None:
    assert run_expiry(T0, T0 + timedelta(days=1), None, MissedRunPolicy.ONCE) is None
    keep_all = "all"  # a policy under which no newer run supersedes a queued one
    assert run_expiry(T0, T0, T0 + S2, keep_all) is None  # type: ignore[arg-type]
    window = timedelta(minutes=10)
    assert run_expiry(T0, T0, T0 + S2, keep_all, catch_up=window) == T0 + window  # type: ignore[arg-type]


@given(
    period=st.integers(min_value=1, max_value=7200),
    queued=st.integers(min_value=1, max_value=500),
    back_after=st.floats(min_value=0.0, max_value=1.0),
    lateness_ms=st.integers(min_value=0, max_value=int(ON_TIME.total_seconds() * 1000)),
    policy=st.sampled_from([MissedRunPolicy.ONCE, MissedRunPolicy.SKIP]),
)
def test_after_a_worker_outage_only_the_newest_queued_run_is_alive(
    period: int, queued: int, back_after: float, lateness_ms: int, policy: MissedRunPolicy
) -> None:
    """Beat sent ``queued`` runs on time while no worker consumed; whenever the workers come
    back, at most one of them (the newest) has not expired: no burst."""
    step = timedelta(seconds=period)
    dues = [T0 + k * step for k in range(queued)]
    expiries = [run_expiry(d, d + timedelta(milliseconds=lateness_ms), d + step, policy) for d in dues]
    back = dues[-1] + step * back_after
    alive = [d for d, e in zip(dues, expiries, strict=True) if e is not None and e > back]
    assert alive == [dues[-1]] or (alive == [] and back_after == 1.0)


@given(outage=st.integers(min_value=2, max_value=3600), period=st.integers(min_value=1, max_value=3600),
       reconnect=st.integers(min_value=0, max_value=59))  # fmt: skip
def test_the_overdue_run_of_a_broker_outage_outlives_the_reconnect(outage: int, period: int, reconnect: int) -> None:
    sent = T0 + timedelta(seconds=outage)
    step = timedelta(seconds=period)
    next_due = T0 + step * ((outage // period) + 1)
    expires = run_expiry(T0, sent, next_due, MissedRunPolicy.ONCE)
    assert expires is not None and expires > sent + timedelta(seconds=reconnect)


def _row(**values: object) -> RowSnapshot:
    base: dict[str, object] = {
        "id": 7, "name": "every-2s", "task_type": "interval", "task_name": "t.job", "handler_path": None,
        "interval_seconds": 2, "cron_expression": None, "run_at": None, "timezone": "UTC", "handler_kwargs": "{}",
        "status": "active", "timeout_seconds": None, "max_retries": 0, "missed_run_policy": None,
        "last_run_at": None, "next_run_at": T0, "run_count": 3, "invalid_reason": None,
    }  # fmt: skip
    base.update(values)
    return RowSnapshot.from_mapping(base)


def test_dispatch_uses_the_rule() -> None:
    ctx = DispatchContext(is_registered=lambda name: name == "t.job")
    on_time = plan_due_row(_row(), T0, ctx)
    late = plan_due_row(_row(), T0 + timedelta(seconds=30), ctx)
    assert isinstance(on_time, Send) and isinstance(late, Send)
    assert on_time.messages[0].expires == (T0 + S2).replace(tzinfo=UTC)
    assert late.messages[0].expires == (T0 + timedelta(seconds=30) + RECONNECT_ALLOWANCE).replace(tzinfo=UTC)


def test_the_on_time_boundary_is_one_second_inclusive() -> None:
    """Sent exactly 1 s after its due time, a run is on time (its expiry is the next due time);
    1 us later it is held back and gets the reconnect allowance."""
    assert ON_TIME == timedelta(seconds=1)
    assert run_expiry(T0, T0 + ON_TIME, T0 + S2, MissedRunPolicy.ONCE) == T0 + S2
    late = T0 + ON_TIME + timedelta(microseconds=1)
    assert run_expiry(T0, late, T0 + S2, MissedRunPolicy.ONCE) == late + RECONNECT_ALLOWANCE
