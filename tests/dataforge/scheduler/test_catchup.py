"""Missed runs and catch-up (dataforge.scheduler.catchup): tables of datetimes, then a
simulation of beat's ticks with outages checked against the rules with hypothesis.

All values are naive UTC; ``plan_run(schedule, due, now, policy, window=...)`` returns the due
times to send now, the next due time and how many runs were not sent.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from croniter import croniter
from hypothesis import given, settings
from hypothesis import strategies as st

from dataforge.protocol import MissedRunPolicy
from dataforge.scheduler.catchup import CRON_WALK_LIMIT, MAX_REPLAYED_RUNS, plan_run
from dataforge.scheduler.schedules import IntervalSchedule, OnceSchedule, Schedule, next_run_after, validate_cron

D = datetime
ONCE, SKIP, ALL = MissedRunPolicy.ONCE, MissedRunPolicy.SKIP, MissedRunPolicy.ALL
MIN = timedelta(minutes=1)


def t(hour: int, minute: int = 0, second: int = 0, micro: int = 0, day: int = 1) -> datetime:
    return D(2024, 1, day, hour, minute, second, micro)


def plan(schedule: Schedule, due: datetime, now: datetime, policy: MissedRunPolicy,
         window: timedelta | None = None) -> tuple[tuple[datetime, ...], datetime | None, int]:
    p = plan_run(schedule, due, now, policy, window=window)
    return p.dues, p.next_run_at, p.missed


def test_the_reported_bunching_case_sends_one_run_and_skips_the_next_regular_one() -> None:
    """3 s schedule, due 18:12:45, new beat takes over at 18:13:02.77: before, it sent the
    catch-up and the regular 18:13:03 run 0.23 s later."""
    p = plan_run(IntervalSchedule(3), t(18, 12, 45), t(18, 13, 2, 770_000), ONCE)
    assert p.dues == (t(18, 13, 0),)
    assert p.next_run_at == t(18, 13, 6), "18:13:03 is 0.23 s away: the catch-up took its place"
    # 45, 48, 51, 54, 57 and 00 passed (one sent), 03 replaced by the catch-up.
    assert p.missed == 6 and p.catch_up


TEN = IntervalSchedule(600)


@pytest.mark.parametrize(
    ("now", "policy", "window", "dues", "next_run_at", "missed"),
    [
        # On time, or late by beat's own latency: sent under every policy, grid kept.
        (t(12), ONCE, None, (t(12),), t(12, 10), 0),
        (t(12, 0, 59), SKIP, None, (t(12),), t(12, 10), 0),
        (t(12, 0, 59), ALL, None, (t(12),), t(12, 10), 0),
        # The grace boundary (60 s), inclusive: exactly at it a run is on time, 1 us past it, missed.
        (t(12, 1), SKIP, None, (t(12),), t(12, 10), 0),
        (t(12, 1, 0, 1), SKIP, None, (), t(12, 10), 1),
        (t(12, 11), SKIP, None, (t(12, 10),), t(12, 20), 1),  # the newest missed run, 60 s late
        (t(12, 11, 0, 1), SKIP, None, (), t(12, 20), 2),
        # Down 35 minutes: 12:00, 12:10, 12:20, 12:30 passed.
        (t(12, 35), ONCE, None, (t(12, 30),), t(12, 40), 3),
        (t(12, 35), SKIP, None, (), t(12, 40), 4),
        (t(12, 35), ALL, None, (t(12), t(12, 10), t(12, 20), t(12, 30)), t(12, 40), 0),
        # Down 38 minutes: 12:40 is 2 minutes away, closer than half the period: replaced.
        (t(12, 38), ONCE, None, (t(12, 30),), t(12, 50), 4),
        (t(12, 38), ALL, None, (t(12), t(12, 10), t(12, 20), t(12, 30)), t(12, 50), 1),
        (t(12, 38), SKIP, None, (), t(12, 40), 4),  # nothing sent: nothing to bunch with
        # Back exactly on a grid point: that run is on time; the older ones are missed runs.
        (t(12, 30), ONCE, None, (t(12, 30),), t(12, 40), 3),
        (t(12, 30, 30), SKIP, None, (t(12, 30),), t(12, 40), 3),
        # Catch-up windows: runs due longer ago than the window are never sent.
        (t(12, 35), ALL, timedelta(minutes=15), (t(12, 20), t(12, 30)), t(12, 40), 2),
        (t(12, 35), ONCE, timedelta(minutes=3), (), t(12, 40), 4),
        (t(12, 35), ONCE, timedelta(minutes=10), (t(12, 30),), t(12, 40), 3),
        (t(12, 0, 20), ONCE, timedelta(seconds=10), (), t(12, 10), 1),  # the window wins over the grace
    ],
)
def test_interval_rows(now: datetime, policy: MissedRunPolicy, window: timedelta | None,
                       dues: tuple[datetime, ...], next_run_at: datetime, missed: int) -> None:
    assert plan(TEN, t(12), now, policy, window) == (dues, next_run_at, missed)


HOURLY = validate_cron("0 * * * *", "UTC")
TWICE_A_DAY = validate_cron("0 9,17 * * *", "UTC")


@pytest.mark.parametrize(
    ("schedule", "due", "now", "policy", "window", "dues", "next_run_at", "missed"),
    [
        (HOURLY, t(12), t(12, 0, 0, 30_000), ONCE, None, (t(12),), t(13), 0),
        # An hourly job whose 12:00 run is reached at 12:59:50: one run, not two 10 s apart.
        (HOURLY, t(12), t(12, 59, 50), ONCE, None, (t(12),), t(14), 1),
        (HOURLY, t(12), t(12, 59, 50), SKIP, None, (), t(13), 1),
        # Reached at 13:00:02: 13:00 is on time and stands for 12:00.
        (HOURLY, t(12), t(13, 0, 2), ONCE, None, (t(13),), t(14), 1),
        (HOURLY, t(12), t(13, 0, 2), SKIP, None, (t(13),), t(14), 1),
        (HOURLY, t(12), t(15, 59, 50), ONCE, None, (t(15),), t(17), 4),
        (HOURLY, t(12), t(15, 59, 50), SKIP, None, (), t(16), 4),
        (HOURLY, t(12), t(15, 30), ALL, timedelta(hours=2), (t(14), t(15)), t(16), 2),
        (HOURLY, t(12), t(15, 30), ALL, None, (t(12), t(13), t(14), t(15)), t(16), 0),
        # Irregular gaps: half of the gap before the next run (8 h before 17:00).
        (TWICE_A_DAY, t(9), t(16, 40), ONCE, None, (t(9),), t(9, day=2), 1),
        (TWICE_A_DAY, t(9), t(12, 40), ONCE, None, (t(9),), t(17), 0),
        (TWICE_A_DAY, t(9), t(9, 0, 5), ONCE, None, (t(9),), t(17), 0),
        # Daily at 03:00, beat down from Jan 1 to Jan 4 08:00: one run, for Jan 4.
        (validate_cron("0 3 * * *"), t(3), t(8, day=4), ONCE, None, (t(3, day=4),), t(3, day=5), 3),
        (validate_cron("0 3 * * *"), t(3), t(8, day=4), SKIP, None, (), t(3, day=5), 4),
    ],
)
def test_cron_rows(schedule: Schedule, due: datetime, now: datetime, policy: MissedRunPolicy,
                   window: timedelta | None, dues: tuple[datetime, ...], next_run_at: datetime,
                   missed: int) -> None:
    assert plan(schedule, due, now, policy, window) == (dues, next_run_at, missed)


def test_once_rows() -> None:
    once = OnceSchedule(t(12))
    assert plan(once, t(12), t(12, 0, 5), SKIP) == ((t(12),), None, 0)
    assert plan(once, t(12), t(13), SKIP) == ((), None, 1)
    assert plan(once, t(12), t(13), ONCE) == ((t(12),), None, 0)
    assert plan(once, t(12), t(13), ALL) == ((t(12),), None, 0)
    assert plan(once, t(12), t(13), ONCE, timedelta(minutes=30)) == ((), None, 1)


def test_all_replays_at_most_the_newest_runs() -> None:
    p = plan_run(IntervalSchedule(60), t(0), t(12, 0, 30), ALL)
    assert len(p.dues) == MAX_REPLAYED_RUNS
    assert p.dues[-1] == t(12) and p.dues[0] == t(12) - (MAX_REPLAYED_RUNS - 1) * MIN
    assert p.missed == 12 * 60 + 1 - MAX_REPLAYED_RUNS


def test_a_long_cron_backlog_is_not_walked_and_its_size_is_estimated() -> None:
    every_minute = validate_cron("* * * * *")
    due, now = t(12), D(2024, 2, 8, 15, 30, 30)
    passed = int((D(2024, 2, 8, 15, 30) - due) / MIN) + 1
    calls = 0
    real = next_run_after

    def counting(schedule: Schedule, after: datetime) -> datetime | None:
        nonlocal calls
        calls += 1
        return real(schedule, after)

    import dataforge.scheduler.catchup as catchup

    setattr(catchup, "next_run_after", counting)  # noqa: B010
    try:
        p = plan_run(every_minute, due, now, ALL)
    finally:
        setattr(catchup, "next_run_after", real)  # noqa: B010
    assert p.dues[-1] == D(2024, 2, 8, 15, 30) and len(p.dues) == MAX_REPLAYED_RUNS
    assert abs(p.missed - (passed - MAX_REPLAYED_RUNS)) <= passed // 100
    assert calls < CRON_WALK_LIMIT + 4 * MAX_REPLAYED_RUNS, f"{calls} steps for a {passed}-run backlog"


def test_the_grace_can_be_changed() -> None:
    p = plan_run(IntervalSchedule(3600), t(0), t(0, 10), SKIP, grace=timedelta(hours=1))
    assert p.dues == (t(0),) and p.missed == 0 and not p.catch_up
    assert plan_run(IntervalSchedule(3600), t(0), t(0, 10), SKIP).dues == ()


# --- beat's ticks, simulated ---------------------------------------------------------------------

SCHEDULES = st.one_of(
    st.integers(min_value=1, max_value=7200).map(IntervalSchedule),
    st.sampled_from(["*/5 * * * *", "0 * * * *", "0 9,17 * * *", "30 2 * * *", "*/15 9-17 * * 1-5"]).map(validate_cron),
)


def _gap_before(schedule: Schedule, moment: datetime) -> timedelta:
    """How long after the previous due time ``moment`` is (UTC schedules: croniter's own prev)."""
    if isinstance(schedule, IntervalSchedule):
        return timedelta(seconds=schedule.seconds)
    assert not isinstance(schedule, OnceSchedule)
    previous: datetime = croniter(schedule.expression, moment).get_prev(datetime)
    return moment - previous


@settings(max_examples=150, deadline=None)
@given(
    schedule=SCHEDULES,
    policy=st.sampled_from(list(MissedRunPolicy)),
    window=st.one_of(st.none(), st.integers(min_value=10, max_value=20_000).map(lambda s: timedelta(seconds=s))),
    steps=st.lists(st.tuples(st.floats(min_value=0.0, max_value=1.0), st.booleans()), min_size=5, max_size=60),
)
def test_simulated_beat_never_bunches_never_sends_twice_and_counts_every_run(
    schedule: Schedule, policy: MissedRunPolicy, window: timedelta | None, steps: list[tuple[float, bool]]
) -> None:
    """Beat ticks at random moments, sometimes after an outage of up to seven periods. Whatever
    happens: each due time is sent at most once and in order, two ticks that send are at least
    half a period apart (half the gap before the next due time), nothing older than the window
    is sent, and sent + missed is every due time passed."""
    start = t(0)
    first = next_run_after(schedule, start - timedelta(seconds=1))
    assert first is not None
    due, now = first, start
    sent: list[datetime] = []
    sending_ticks: list[tuple[datetime, datetime]] = []  # (when, the next due time it set)
    missed = 0
    for fraction, outage in steps:
        gap = _gap_before(schedule, next_run_after(schedule, due) or due)
        now = max(now, due) + gap * fraction * (7 if outage else 1)
        p = plan_run(schedule, due, now, policy, window=window)
        assert p.next_run_at is not None and p.next_run_at > now
        assert all(d <= now and (window is None or now - d <= window) for d in p.dues)
        assert policy == ALL or len(p.dues) <= 1
        if p.dues:
            sending_ticks.append((now, p.next_run_at))
        sent.extend(p.dues)
        missed += p.missed
        due = p.next_run_at
    assert sent == sorted(set(sent)), "a due time sent twice, or out of order"
    for (a, next_after_a), (b, _) in zip(sending_ticks, sending_ticks[1:], strict=False):
        assert b - a >= _gap_before(schedule, next_after_a) / 2, f"sends at {a} and {b} are bunched"
    passed, moment = 0, first
    while moment < due:
        passed += 1
        moment = next_run_after(schedule, moment) or due
    assert len(sent) + missed == passed


def test_all_replays_the_newest_hundred_runs_and_counts_the_rest_missed() -> None:
    """A day-long outage of an every-minute schedule is 100 messages, not 1,440."""
    minute = IntervalSchedule(60)
    p = plan_run(minute, t(0), t(0, 0, 30, day=2), ALL)
    assert len(p.dues) == MAX_REPLAYED_RUNS == 100
    assert p.dues[-1] == t(0, day=2) and p.dues[0] == t(0, day=2) - timedelta(minutes=99)
    assert p.missed == 24 * 60 + 1 - 100
