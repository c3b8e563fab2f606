"""Schedule math: validation that names the faulty column, due times, DST rules, missed runs.

Tables of (input, expected) datetimes. All expected values are naive UTC, the storage format;
comments give the wall-clock time they stand for.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from dataforge.errors import ScheduleError
from dataforge.protocol import MIN_CATCHUP_WINDOW_SECONDS, OverlapPolicy
from dataforge.scheduler.schedules import (
    CronSchedule,
    IntervalSchedule,
    OnceSchedule,
    first_run_at,
    jitter_offset,
    next_run_after,
    parse_db_datetime,
    parse_kwargs,
    to_naive_utc,
    validate_cron,
    validate_definition,
    validate_missed_run_policy,
    validate_schedule,
    validate_timezone,
)

D = datetime


def run_times(schedule: CronSchedule, start: datetime, count: int) -> list[datetime]:
    out: list[datetime] = []
    t = start
    for _ in range(count):
        nxt = next_run_after(schedule, t)
        assert nxt is not None
        out.append(nxt)
        t = nxt
    return out


# --- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"task_type": "hourly"}, "task_type"),
        ({"task_type": None}, "task_type"),
        ({"task_type": "interval"}, "interval_seconds"),
        ({"task_type": "interval", "interval_seconds": 0}, "interval_seconds"),
        ({"task_type": "interval", "interval_seconds": -5}, "interval_seconds"),
        ({"task_type": "interval", "interval_seconds": "60"}, "interval_seconds"),
        ({"task_type": "interval", "interval_seconds": True}, "interval_seconds"),
        ({"task_type": "interval", "interval_seconds": 60, "timezone": "Mars/Olympus"}, "timezone"),
        ({"task_type": "cron"}, "cron_expression"),
        ({"task_type": "cron", "cron_expression": "  "}, "cron_expression"),
        ({"task_type": "cron", "cron_expression": "* * * *"}, "cron_expression"),
        ({"task_type": "cron", "cron_expression": "0 0 * * * *"}, "cron_expression"),  # seconds field
        ({"task_type": "cron", "cron_expression": "61 * * * *"}, "cron_expression"),
        ({"task_type": "cron", "cron_expression": "a b c d e"}, "cron_expression"),
        ({"task_type": "cron", "cron_expression": "0 0 30 2 *"}, "cron_expression"),  # never matches
        ({"task_type": "cron", "cron_expression": "R * * * *"}, "cron_expression"),  # random
        ({"task_type": "cron", "cron_expression": "H * * * *"}, "cron_expression"),  # hashed
        ({"task_type": "cron", "cron_expression": "@reboot"}, "cron_expression"),
        ({"task_type": "cron", "cron_expression": "0 3 * * *", "timezone": "Europe/Berlinn"}, "timezone"),
        ({"task_type": "cron", "cron_expression": "0 3 * * *", "timezone": ""}, "timezone"),
        ({"task_type": "cron", "cron_expression": "0 3 * * *", "timezone": "../../etc/passwd"}, "timezone"),
        ({"task_type": "once"}, "run_at"),
        ({"task_type": "once", "run_at": "tomorrow"}, "run_at"),
    ],
)
def test_invalid_schedules_name_the_column(kwargs: dict[str, object], field: str) -> None:
    task_type = kwargs.pop("task_type")
    with pytest.raises(ScheduleError) as info:
        validate_schedule(task_type, schedule_id=7, **kwargs)
    assert info.value.field == field
    assert info.value.schedule_id == 7
    assert str(info.value).startswith(f"schedule 7: {field}=")


def test_valid_schedules() -> None:
    assert validate_schedule("interval", interval_seconds=60) == IntervalSchedule(60)
    assert validate_schedule("once", run_at=D(2024, 5, 1, 12)) == OnceSchedule(D(2024, 5, 1, 12))
    # SQLite hands timestamps back as text; any ISO form is read.
    assert validate_schedule("once", run_at="2024-05-01 12:00:00") == OnceSchedule(D(2024, 5, 1, 12))
    cron = validate_schedule("cron", cron_expression=" 0  3 * * MON-FRI ", timezone="Europe/Berlin")
    assert isinstance(cron, CronSchedule)
    assert (cron.expression, cron.timezone) == ("0 3 * * MON-FRI", "Europe/Berlin")
    # A stale cron expression on an interval row is not the interval row's problem.
    assert validate_schedule("interval", interval_seconds=5, cron_expression="garbage") == IntervalSchedule(5)


def test_cron_nicknames_and_month_names() -> None:
    assert validate_cron("@daily").expression == "0 0 * * *"
    assert validate_cron("@hourly").every_hour
    assert not validate_cron("30 2 * * *").every_hour
    assert validate_cron("0 */1 * * *").every_hour
    assert validate_cron("0 0-23 * * *").every_hour
    # Month and weekday names contain R and H; only a bare R/H element is refused.
    assert validate_cron("0 12 * MAR THU").expression == "0 12 * MAR THU"


def test_timezone_validation() -> None:
    assert validate_timezone("America/New_York").key == "America/New_York"
    with pytest.raises(ScheduleError, match="unknown time zone"):
        validate_timezone("Nowhere/Special")
    with pytest.raises(ScheduleError, match="empty"):
        validate_timezone(None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("{}", {}), ('{"days": 7, "dry_run": false}', {"days": 7, "dry_run": False})],
)
def test_kwargs_accepts_json_objects(text: str, expected: dict[str, object]) -> None:
    assert parse_kwargs(text) == expected


@pytest.mark.parametrize("text", ["", "null", "[1, 2]", '"x"', "{'days': 7}", "{", None, 5])
def test_kwargs_refuses_everything_else(text: object) -> None:
    with pytest.raises(ScheduleError) as info:
        parse_kwargs(text, schedule_id=3)
    assert info.value.field == "handler_kwargs"


def test_kwargs_error_echo_is_bounded() -> None:
    with pytest.raises(ScheduleError) as info:
        parse_kwargs("[" + "1," * 1000 + "1]")
    assert len(str(info.value)) < 400


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"timeout_seconds": 0}, "timeout_seconds"),
        ({"timeout_seconds": "30"}, "timeout_seconds"),
        ({"max_retries": -1}, "max_retries"),
        ({"max_retries": None}, "max_retries"),
        ({"missed_run_policy": "twice"}, "missed_run_policy"),
        ({"missed_run_policy": "ALL"}, "missed_run_policy"),
        ({"handler_kwargs": "[]"}, "handler_kwargs"),
        ({"overlap_policy": "queue"}, "overlap_policy"),
        ({"overlap_policy": ""}, "overlap_policy"),
        ({"catchup_window_seconds": MIN_CATCHUP_WINDOW_SECONDS - 1}, "catchup_window_seconds"),
        ({"catchup_window_seconds": 0}, "catchup_window_seconds"),
        ({"catchup_window_seconds": "3600"}, "catchup_window_seconds"),
        ({"catchup_window_seconds": 3600.5}, "catchup_window_seconds"),
        ({"catchup_window_seconds": True}, "catchup_window_seconds"),
        ({"jitter_seconds": -1}, "jitter_seconds"),
        ({"jitter_seconds": 86_401}, "jitter_seconds"),
        ({"jitter_seconds": "30"}, "jitter_seconds"),
        ({"jitter_seconds": False}, "jitter_seconds"),
    ],
)
def test_definition_validation(extra: dict[str, object], field: str) -> None:
    base: dict[str, object] = {"task_type": "interval", "interval_seconds": 10}
    with pytest.raises(ScheduleError) as info:
        validate_definition(**{**base, **extra})  # type: ignore[arg-type]
    assert info.value.field == field


def test_definition_ok() -> None:
    d = validate_definition(
        task_type="interval", interval_seconds=10, handler_kwargs='{"a": 1}', timeout_seconds=30,
        max_retries=2, missed_run_policy="skip",
    )
    assert (d.schedule, d.kwargs, d.timeout_seconds, d.max_retries, d.missed_run_policy) == (
        IntervalSchedule(10), {"a": 1}, 30, 2, "skip",
    )
    assert validate_missed_run_policy(None) is None
    assert validate_missed_run_policy("all") == "all"
    assert (d.overlap_policy, d.catchup_window, d.jitter_seconds) == (OverlapPolicy.SKIP, None, 0)
    full = validate_definition(
        task_type="interval", interval_seconds=10, overlap_policy="cancel_previous",
        catchup_window_seconds=MIN_CATCHUP_WINDOW_SECONDS, jitter_seconds=86_400,
    )
    assert (full.overlap_policy, full.catchup_window, full.jitter_seconds) == (
        OverlapPolicy.CANCEL_PREVIOUS, timedelta(seconds=MIN_CATCHUP_WINDOW_SECONDS), 86_400,
    )


def test_jitter_offset_is_fixed_per_schedule_and_spreads_schedules() -> None:
    assert jitter_offset(7, 0) == timedelta(0)
    # The same in every process and on every call: a re-sent run keeps its delay.
    assert jitter_offset(7, 300) == jitter_offset(7, 300)
    offsets = [jitter_offset(i, 300).total_seconds() for i in range(1, 30_001)]
    assert min(offsets) == 0 and max(offsets) == 300
    assert all(o == int(o) for o in offsets)
    # Spread evenly: every 30 s slice of the window holds close to a tenth of the schedules.
    slices = [sum(1 for o in offsets if k * 30 <= o < (k + 1) * 30) for k in range(10)]
    assert all(2500 <= n <= 3500 for n in slices), slices


def test_first_run_with_jitter_reads_the_schedule_behind_by_the_offset() -> None:
    offset = timedelta(seconds=40)
    hourly = validate_cron("0 * * * *", "UTC")
    # 12:00:30 is before 12:00's send time (12:00:40): 12:00 is still the next run.
    assert first_run_at(hourly, D(2024, 1, 1, 12, 0, 30), None, offset) == D(2024, 1, 1, 12)
    assert first_run_at(hourly, D(2024, 1, 1, 12, 0, 50), None, offset) == D(2024, 1, 1, 13)
    every = IntervalSchedule(60)
    # Never ran: due now (sent 40 s later); ran: the grid of its due times, not its send times.
    assert first_run_at(every, D(2024, 1, 1, 12, 0, 5), None, offset) == D(2024, 1, 1, 12, 0, 5)
    assert first_run_at(every, D(2024, 1, 1, 12, 5, 30), D(2024, 1, 1, 12, 1, 40), offset) == D(2024, 1, 1, 12, 5)
    once = OnceSchedule(D(2024, 3, 1, 9))
    assert first_run_at(once, D(2024, 4, 1), D(2024, 3, 1, 9, 0, 39), offset) == D(2024, 3, 1, 9)
    assert first_run_at(once, D(2024, 4, 1), D(2024, 3, 1, 9, 0, 40), offset) is None


# --- timestamps -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, None),
        (D(2024, 1, 1, 10), D(2024, 1, 1, 10)),
        ("2024-01-01 10:00:00.000000", D(2024, 1, 1, 10)),
        ("2024-01-01 10:00:00", D(2024, 1, 1, 10)),
        ("2024-01-01T10:00", D(2024, 1, 1, 10)),
        ("2024-01-01 10:00:00.5", D(2024, 1, 1, 10, 0, 0, 500000)),
        # Aware values become naive UTC with no hour shift beyond the offset they carry.
        ("2024-01-01T11:00:00+01:00", D(2024, 1, 1, 10)),
        (D(2024, 1, 1, 5, tzinfo=timezone(timedelta(hours=-5))), D(2024, 1, 1, 10)),
    ],
)
def test_parse_db_datetime(raw: object, expected: datetime | None) -> None:
    assert parse_db_datetime(raw) == expected


def test_parse_db_datetime_refuses_garbage() -> None:
    with pytest.raises(ValueError):
        parse_db_datetime("soon")
    with pytest.raises(ValueError):
        parse_db_datetime(12)


def test_naive_values_are_taken_as_utc() -> None:
    naive = D(2024, 7, 1, 12)
    assert to_naive_utc(naive) is naive
    assert to_naive_utc(naive.replace(tzinfo=UTC)) == naive


# --- interval and once -----------------------------------------------------------------------------


def test_interval_first_run_and_grid() -> None:
    every = IntervalSchedule(60)
    now = D(2024, 1, 1, 12, 0, 30, 123456)
    # A row that never ran starts now (to the second).
    assert first_run_at(every, now, None) == D(2024, 1, 1, 12, 0, 30)
    # One that ran continues its grid from last_run_at, at the first point after now.
    assert first_run_at(every, now, D(2024, 1, 1, 12, 0, 0)) == D(2024, 1, 1, 12, 1, 0)
    assert first_run_at(every, now, D(2024, 1, 1, 11, 0, 10)) == D(2024, 1, 1, 12, 1, 10)
    assert first_run_at(every, now, D(2024, 1, 1, 12, 0, 45)) == D(2024, 1, 1, 12, 1, 45)
    assert next_run_after(every, D(2024, 1, 1)) == D(2024, 1, 1, 0, 1)


def test_once() -> None:
    once = OnceSchedule(D(2024, 3, 1, 9))
    assert first_run_at(once, D(2024, 2, 1), None) == D(2024, 3, 1, 9)
    # Past and never run: due (plan_run then applies the missed-run policy).
    assert first_run_at(once, D(2024, 4, 1), None) == D(2024, 3, 1, 9)
    # Already ran at or after run_at: nothing left, the row is done.
    assert first_run_at(once, D(2024, 4, 1), D(2024, 3, 1, 9, 0, 1)) is None
    # Ran before, then given a new time: runs at the new time.
    assert first_run_at(once, D(2024, 2, 1), D(2024, 1, 1)) == D(2024, 3, 1, 9)
    assert next_run_after(once, D(2024, 3, 1, 9)) is None


# --- cron and daylight saving time ------------------------------------------------------------------


def test_cron_in_utc_and_naive_storage_has_no_hour_shift() -> None:
    cron = validate_cron("15 10 * * *", "UTC")
    assert run_times(cron, D(2024, 6, 1), 2) == [D(2024, 6, 1, 10, 15), D(2024, 6, 2, 10, 15)]
    # Summer in Berlin is UTC+2: 10:15 local is 08:15 UTC, winter (UTC+1) 09:15.
    berlin = validate_cron("15 10 * * *", "Europe/Berlin")
    assert next_run_after(berlin, D(2024, 6, 1)) == D(2024, 6, 1, 8, 15)
    assert next_run_after(berlin, D(2024, 1, 10)) == D(2024, 1, 10, 9, 15)
    # An aware `after` is the same instant as its naive-UTC form.
    assert next_run_after(berlin, D(2024, 6, 1, 2, tzinfo=timezone(timedelta(hours=2)))) == D(2024, 6, 1, 8, 15)


@pytest.mark.parametrize(
    ("expression", "zone", "start", "expected"),
    [
        # Europe/Berlin springs forward on 2024-03-31: 02:00 CET -> 03:00 CEST (01:00 UTC).
        # A daily 02:30 job runs once that day, when the gap ends (03:00 CEST = 01:00 UTC).
        ("30 2 * * *", "Europe/Berlin", D(2024, 3, 29, 12),
         [D(2024, 3, 30, 1, 30), D(2024, 3, 31, 1, 0), D(2024, 4, 1, 0, 30)]),
        # Hourly: 01:00 CET, then 03:00 CEST; nothing twice, nothing extra.
        ("0 * * * *", "Europe/Berlin", D(2024, 3, 30, 23, 30),
         [D(2024, 3, 31, 0, 0), D(2024, 3, 31, 1, 0), D(2024, 3, 31, 2, 0)]),
        # Several times inside the gap collapse into one run at its end.
        ("*/15 2 * * *", "Europe/Berlin", D(2024, 3, 30, 12),
         [D(2024, 3, 31, 1, 0), D(2024, 4, 1, 0, 0), D(2024, 4, 1, 0, 15)]),
        # America/New_York springs forward on 2024-03-10: 02:00 EST -> 03:00 EDT (07:00 UTC).
        ("30 2 * * *", "America/New_York", D(2024, 3, 8, 12),
         [D(2024, 3, 9, 7, 30), D(2024, 3, 10, 7, 0), D(2024, 3, 11, 6, 30)]),
        # 09:00 EST is 14:00 UTC; after the change, 09:00 EDT is 13:00 UTC.
        ("0 9 * * *", "America/New_York", D(2024, 3, 9, 12),
         [D(2024, 3, 9, 14, 0), D(2024, 3, 10, 13, 0), D(2024, 3, 11, 13, 0)]),
    ],
)
def test_cron_spring_forward(expression: str, zone: str, start: datetime, expected: list[datetime]) -> None:
    assert run_times(validate_cron(expression, zone), start, len(expected)) == expected


@pytest.mark.parametrize(
    ("expression", "zone", "start", "expected"),
    [
        # Europe/Berlin falls back on 2024-10-27: 03:00 CEST -> 02:00 CET (01:00 UTC); 02:xx
        # happens twice. A daily 02:30 job runs once, at the first 02:30 (CEST, 00:30 UTC).
        ("30 2 * * *", "Europe/Berlin", D(2024, 10, 25, 12),
         [D(2024, 10, 26, 0, 30), D(2024, 10, 27, 0, 30), D(2024, 10, 28, 1, 30)]),
        # Hourly keeps real time: 02:00 CEST (00:00 UTC) and 02:00 CET (01:00 UTC) both run.
        ("0 * * * *", "Europe/Berlin", D(2024, 10, 26, 23, 30),
         [D(2024, 10, 27, 0, 0), D(2024, 10, 27, 1, 0), D(2024, 10, 27, 2, 0)]),
        ("*/30 * * * *", "Europe/Berlin", D(2024, 10, 26, 23, 45),
         [D(2024, 10, 27, 0, 0), D(2024, 10, 27, 0, 30), D(2024, 10, 27, 1, 0), D(2024, 10, 27, 1, 30),
          D(2024, 10, 27, 2, 0)]),
        # A fixed hour range is a fixed-time job: the repeated 02:00 does not run again.
        ("0 1-3 * * *", "Europe/Berlin", D(2024, 10, 26, 22),
         [D(2024, 10, 26, 23, 0), D(2024, 10, 27, 0, 0), D(2024, 10, 27, 2, 0)]),
        # America/New_York falls back on 2024-11-03: 02:00 EDT -> 01:00 EST (06:00 UTC).
        ("30 1 * * *", "America/New_York", D(2024, 11, 1, 12),
         [D(2024, 11, 2, 5, 30), D(2024, 11, 3, 5, 30), D(2024, 11, 4, 6, 30)]),
        ("0 * * * *", "America/New_York", D(2024, 11, 3, 4, 30),
         [D(2024, 11, 3, 5, 0), D(2024, 11, 3, 6, 0), D(2024, 11, 3, 7, 0)]),
    ],
)
def test_cron_fall_back(expression: str, zone: str, start: datetime, expected: list[datetime]) -> None:
    assert run_times(validate_cron(expression, zone), start, len(expected)) == expected


def test_cron_from_inside_the_repeated_hour() -> None:
    """Starting in the second pass of the repeated hour, the first pass is not replayed."""
    daily = validate_cron("30 2 * * *", "Europe/Berlin")
    # 01:10 UTC = 02:10 CET, second pass: the 02:30 of this day already ran (00:30 UTC).
    assert next_run_after(daily, D(2024, 10, 27, 1, 10)) == D(2024, 10, 28, 1, 30)
    every_hour = validate_cron("30 * * * *", "Europe/Berlin")
    # 00:50 UTC = 02:50 CEST, first pass: next is 02:30 CET (01:30 UTC), not 03:30.
    assert next_run_after(every_hour, D(2024, 10, 27, 0, 50)) == D(2024, 10, 27, 1, 30)


def test_cron_first_run_is_strictly_after_now() -> None:
    cron = validate_cron("0 12 * * *", "UTC")
    assert first_run_at(cron, D(2024, 1, 1, 12), None) == D(2024, 1, 2, 12)
    assert first_run_at(cron, D(2024, 1, 1, 11, 59, 59), D(2023, 1, 1)) == D(2024, 1, 1, 12)


def test_cron_leap_day_and_weekday() -> None:
    assert next_run_after(validate_cron("0 0 29 2 *"), D(2025, 3, 1)) == D(2028, 2, 29)
    # 2024-01-01 is a Monday.
    assert next_run_after(validate_cron("0 8 * * MON"), D(2024, 1, 1, 9)) == D(2024, 1, 8, 8)

