"""Schedule math: validation and due times for ``interval``, ``cron`` and ``once`` rows.

Pure functions, no I/O: beat uses them to decide what is due and when it is due next, and the
CLI uses the same functions to refuse a bad schedule before it is written. Parsed cron fields
and croniter objects are memoized per expression (bounded, thread-safe): a result depends on
the arguments only, the memo just avoids rebuilding a croniter (~0.4 ms) on every tick. Every refusal is a
:class:`~dataforge.errors.ScheduleError` naming the column at fault, so a flagged row or a CLI
error points at the field to fix.

All datetimes in and out are *naive UTC*, as the scheduling tables store them. A cron
expression is read on the wall clock of the row's IANA ``timezone`` (zoneinfo); the rules for
the two daylight-saving transitions are (docs/scheduler.md, "DST"):

* **Spring forward** (a wall-clock hour does not exist, e.g. 02:00-02:59 in Europe/Berlin on
  the last Sunday of March): a time inside the gap fires once, at the first instant after the
  gap (03:00 local). A daily ``30 2 * * *`` job still runs that day, once.
* **Fall back** (a wall-clock hour happens twice): a time in the repeated hour fires at its
  first occurrence. Only expressions whose hour field covers every hour (``0 * * * *``,
  ``*/15 * * * *``) fire again in the second pass, so "every N minutes" keeps its real-time
  cadence while ``30 2 * * *`` does not run twice.

This is the rule cronie/Vixie cron apply; croniter alone fires fixed-time jobs twice at fall
back, hence the layer below, which uses croniter only to match fields on naive wall times.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from croniter.croniter import CroniterBadDateError, CroniterError

from dataforge import strict_json
from dataforge.errors import JsonValueError, ScheduleError
from dataforge.protocol import MIN_CATCHUP_WINDOW_SECONDS, MissedRunPolicy, OverlapPolicy, TaskType
from dataforge.scheduler.limits import check_int, check_text

__all__ = [
    "CRON_NICKNAMES",
    "DEFINITION_COLUMNS",
    "MAX_JITTER_SECONDS",
    "CronSchedule",
    "Definition",
    "IntervalSchedule",
    "OnceSchedule",
    "Schedule",
    "definition_of",
    "first_run_at",
    "jitter_offset",
    "next_run_after",
    "parse_db_datetime",
    "parse_kwargs",
    "to_naive_utc",
    "validate_catchup_window",
    "validate_cron",
    "validate_definition",
    "validate_jitter",
    "validate_max_retries",
    "validate_missed_run_policy",
    "validate_overlap_policy",
    "validate_schedule",
    "validate_timeout",
    "validate_timezone",
]


#: The largest jitter: a day. A longer delay is a different schedule, not a spread.
MAX_JITTER_SECONDS: Final = 86_400

#: Nicknames of cron(8) that stand for a 5-field expression. ``@reboot`` has no schedule and
#: is refused.
CRON_NICKNAMES: Final = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

#: A field element croniter would fill with a random (``R``) or hashed (``H``) value: two beats
#: would compute different due times for the same row, so they are refused.
_NONDETERMINISTIC = re.compile(r"^[RH](?:$|[(/])", re.IGNORECASE)
_MAX_KWARGS_ECHO = 200
#: Wall-clock search window around a DST transition (offset changes are at most 2 h).
_DST_WINDOW = timedelta(hours=3)


# --------------------------------------------------------------------------------------------
# Datetimes
# --------------------------------------------------------------------------------------------


def to_naive_utc(value: datetime) -> datetime:
    """Naive UTC for any datetime: aware values are converted, naive ones are taken as UTC."""
    if value.tzinfo is None:
        return value
    return value.astimezone(UTC).replace(tzinfo=None)


def parse_db_datetime(value: object) -> datetime | None:
    """A timestamp column as the driver returned it (datetime, or text on SQLite) -> naive UTC.

    SQLite stores whatever was written: the ORM's ``2024-01-01 10:00:00.000000``, raw SQL's
    ``2024-01-01 10:00:00`` or ``2024-01-01T10:00``. ``ValueError`` for anything else.
    """
    if value is None:
        return None
    if isinstance(value, datetime):
        return to_naive_utc(value)
    if isinstance(value, str):
        return to_naive_utc(datetime.fromisoformat(value.strip()))
    raise ValueError(f"not a timestamp: {value!r}")


def _floor_second(value: datetime) -> datetime:
    return value.replace(microsecond=0)


# --------------------------------------------------------------------------------------------
# Schedules
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IntervalSchedule:
    """Every ``seconds``, on a grid anchored at the previous due time (no drift)."""

    seconds: int


@dataclass(frozen=True, slots=True)
class OnceSchedule:
    """One run at ``run_at`` (naive UTC); the row is then marked ``done``."""

    run_at: datetime


@dataclass(frozen=True, slots=True)
class CronSchedule:
    """A 5-field cron expression read on the wall clock of ``timezone``."""

    expression: str
    timezone: str
    zone: ZoneInfo = field(compare=False, repr=False)
    #: The hour field covers all 24 hours: repeated wall-clock times fire in both passes.
    every_hour: bool = field(compare=False, repr=False)


Schedule = IntervalSchedule | CronSchedule | OnceSchedule


def validate_timezone(name: object, schedule_id: int | None = None) -> ZoneInfo:
    """The zoneinfo zone ``name`` names, or ScheduleError('timezone')."""
    if not isinstance(name, str) or not name.strip():
        raise ScheduleError(
            "timezone", name, "empty; use an IANA time zone name such as 'UTC' or 'Europe/Berlin'", schedule_id
        )
    check_text("timezone", name, schedule_id)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(
            "timezone", name, "unknown time zone; use an IANA name such as 'UTC' or 'America/New_York'", schedule_id
        ) from None


@lru_cache(maxsize=4096)
def _cron_fields(expression: str) -> tuple[str, bool]:
    """Normalised expression and whether its hour field covers every hour (raises CroniterError)."""
    expr = CRON_NICKNAMES.get(expression.strip().lower(), expression.strip())
    fields = expr.split()
    if len(fields) != 5:
        raise _CronRefused(
            f"expected 5 fields (minute hour day-of-month month day-of-week), got {len(fields)}"
            + ("; @reboot has no schedule" if expr.lower() == "@reboot" else "")
        )
    for part in fields:
        for element in part.split(","):
            if _NONDETERMINISTIC.match(element):
                raise _CronRefused("random (R) and hashed (H) fields are not supported: every beat must agree")
    expanded = croniter.expand(expr)[0]
    hours = expanded[1]
    every_hour = hours == ["*"] or sorted(set(hours)) == list(range(24))
    # One match must exist: "0 0 30 2 *" parses but never fires.
    croniter(expr, datetime(2000, 1, 1), ret_type=datetime).get_next(datetime)
    return " ".join(fields), every_hour


class _CronRefused(ValueError):
    pass


def validate_cron(expression: object, timezone: object = "UTC", schedule_id: int | None = None) -> CronSchedule:
    """A :class:`CronSchedule`, or ScheduleError naming ``cron_expression`` or ``timezone``."""
    if not isinstance(expression, str) or not expression.strip():
        raise ScheduleError("cron_expression", expression, "required for task_type 'cron'", schedule_id)
    check_text("cron_expression", expression, schedule_id)
    try:
        normalised, every_hour = _cron_fields(expression)
    except _CronRefused as exc:
        raise ScheduleError("cron_expression", expression, str(exc), schedule_id) from None
    except CroniterBadDateError:
        raise ScheduleError("cron_expression", expression, "never matches any date", schedule_id) from None
    except (CroniterError, ValueError, KeyError, IndexError) as exc:
        raise ScheduleError(
            "cron_expression", expression, f"not a valid cron expression ({exc})", schedule_id
        ) from None
    zone = validate_timezone(timezone, schedule_id)
    assert isinstance(timezone, str)
    return CronSchedule(expression=normalised, timezone=timezone, zone=zone, every_hour=every_hour)


def validate_schedule(
    task_type: object,
    *,
    interval_seconds: object = None,
    cron_expression: object = None,
    run_at: object = None,
    timezone: object = "UTC",
    schedule_id: int | None = None,
) -> Schedule:
    """The schedule a row's columns describe, or ScheduleError naming the faulty column.

    Only the columns of the row's ``task_type`` matter (an interval row may carry a stale
    cron expression), except ``timezone``, which is checked for every type because beat and
    the CLI display times in it.
    """
    if task_type not in tuple(TaskType):
        raise ScheduleError("task_type", task_type, f"expected one of {', '.join(TaskType)}", schedule_id)
    if task_type == TaskType.CRON:
        return validate_cron(cron_expression, timezone, schedule_id)
    validate_timezone(timezone, schedule_id)
    if task_type == TaskType.INTERVAL:
        seconds = check_int("interval_seconds", interval_seconds, 1, "seconds between runs", schedule_id)
        return IntervalSchedule(seconds)
    try:
        when = parse_db_datetime(run_at)
    except ValueError:
        when = None
    if when is None:
        raise ScheduleError("run_at", run_at, "required for task_type 'once': a naive UTC timestamp", schedule_id)
    return OnceSchedule(when)


def _choices(enum: type[StrEnum]) -> str:
    return ", ".join(f"'{member.value}'" for member in enum)


def validate_missed_run_policy(value: object, schedule_id: int | None = None) -> MissedRunPolicy | None:
    """``None`` (use the global setting) or a :class:`MissedRunPolicy` value."""
    if value is None:
        return None
    if value not in tuple(MissedRunPolicy):
        raise ScheduleError(
            "missed_run_policy", value, f"expected {_choices(MissedRunPolicy)} or NULL (the global setting)",
            schedule_id,
        )
    return MissedRunPolicy(str(value))


def validate_overlap_policy(value: object, schedule_id: int | None = None) -> OverlapPolicy:
    """An :class:`OverlapPolicy` value; ``None`` (a row read from a schema without the column)
    is ``skip``, the behaviour of that schema."""
    if value is None:
        return OverlapPolicy.SKIP
    if value not in tuple(OverlapPolicy):
        raise ScheduleError("overlap_policy", value, f"expected one of {_choices(OverlapPolicy)}", schedule_id)
    return OverlapPolicy(str(value))


def validate_catchup_window(value: object, schedule_id: int | None = None) -> timedelta | None:
    """``None`` (use the global setting) or whole seconds >= :data:`MIN_CATCHUP_WINDOW_SECONDS`."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < MIN_CATCHUP_WINDOW_SECONDS:
        raise ScheduleError(
            "catchup_window_seconds", value,
            f"must be a whole number of seconds >= {MIN_CATCHUP_WINDOW_SECONDS}, or NULL (the global setting)",
            schedule_id,
        )
    return timedelta(seconds=value)


def validate_jitter(value: object, schedule_id: int | None = None) -> int:
    """Whole seconds in ``0 .. MAX_JITTER_SECONDS``; ``None`` (a schema without the column) is 0."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_JITTER_SECONDS:
        raise ScheduleError(
            "jitter_seconds", value, f"must be a whole number of seconds from 0 to {MAX_JITTER_SECONDS}", schedule_id
        )
    return value


def parse_kwargs(text: object, schedule_id: int | None = None) -> dict[str, Any]:
    """``handler_kwargs`` as the dict a task receives, or ScheduleError('handler_kwargs').

    The one validity rule for kwargs: a JSON object under :mod:`dataforge.strict_json` (no
    NaN or infinities, no duplicate keys, bounded size and depth). ``''``, ``'null'``, a list
    or a Python repr such as ``"{'days': 7}"`` are refused (the data migration rewrites those).
    Beat flags a stored row that breaks it; every writer refuses it before writing.
    """
    echo = text if not isinstance(text, str) or len(text) <= _MAX_KWARGS_ECHO else text[:_MAX_KWARGS_ECHO] + "..."
    if not isinstance(text, str):
        raise ScheduleError("handler_kwargs", echo, "must be the text of a JSON object", schedule_id)
    try:
        value = strict_json.loads(text)
    except JsonValueError as exc:
        hint = '; write a JSON object such as {"days": 7}' if exc.reason.startswith("not valid JSON") else ""
        raise ScheduleError("handler_kwargs", echo, f"{exc}{hint}", schedule_id) from None
    if not isinstance(value, dict):
        kind = "array" if isinstance(value, list) else "null" if value is None else type(value).__name__
        raise ScheduleError(
            "handler_kwargs", echo, f"must be a JSON object, not {kind}; use {{}} for none", schedule_id
        )
    return value


@dataclass(frozen=True, slots=True)
class Definition:
    """Everything beat needs from a row's user-written columns, validated."""

    schedule: Schedule
    kwargs: dict[str, Any]
    timeout_seconds: int | None
    max_retries: int
    missed_run_policy: MissedRunPolicy | None
    overlap_policy: OverlapPolicy = OverlapPolicy.SKIP
    #: ``None``: the global setting.
    catchup_window: timedelta | None = None
    jitter_seconds: int = 0


def validate_definition(
    *,
    task_type: object,
    interval_seconds: object = None,
    cron_expression: object = None,
    run_at: object = None,
    timezone: object = "UTC",
    handler_kwargs: object = "{}",
    timeout_seconds: object = None,
    max_retries: object = 0,
    missed_run_policy: object = None,
    overlap_policy: object = None,
    catchup_window_seconds: object = None,
    jitter_seconds: object = None,
    schedule_id: int | None = None,
) -> Definition:
    """Validate every user-written column of a row (the task name is checked against the app
    by the caller: registration is not a property of the row)."""
    schedule = validate_schedule(
        task_type,
        interval_seconds=interval_seconds,
        cron_expression=cron_expression,
        run_at=run_at,
        timezone=timezone,
        schedule_id=schedule_id,
    )
    kwargs = parse_kwargs(handler_kwargs, schedule_id)
    return Definition(
        schedule,
        kwargs,
        validate_timeout(timeout_seconds, schedule_id),
        validate_max_retries(max_retries, schedule_id),
        validate_missed_run_policy(missed_run_policy, schedule_id),
        validate_overlap_policy(overlap_policy, schedule_id),
        validate_catchup_window(catchup_window_seconds, schedule_id),
        validate_jitter(jitter_seconds, schedule_id),
    )


def validate_timeout(value: object, schedule_id: int | None = None) -> int | None:
    """``timeout_seconds``: ``None`` (no limit) or 1 .. INT32_MAX seconds."""
    if value is None:
        return None
    return check_int("timeout_seconds", value, 1, "soft time limit in seconds (or none)", schedule_id)


def validate_max_retries(value: object, schedule_id: int | None = None) -> int:
    """``max_retries``: 0 .. INT32_MAX."""
    return check_int("max_retries", value, 0, "retries of a failed run", schedule_id)


#: The user-written columns of ``scheduled_tasks`` that make a :class:`Definition`.
DEFINITION_COLUMNS: Final = (
    "task_type", "interval_seconds", "cron_expression", "run_at", "timezone", "handler_kwargs",
    "timeout_seconds", "max_retries", "missed_run_policy", "overlap_policy", "catchup_window_seconds",
    "jitter_seconds",
)


def definition_of(row: Mapping[str, Any] | object, schedule_id: int | None = None) -> Definition:
    """:func:`validate_definition` of a row: a mapping of column values, or an object with
    them as attributes (beat's row snapshot)."""
    if isinstance(row, Mapping):
        values = {column: row.get(column) for column in DEFINITION_COLUMNS}
    else:
        values = {column: getattr(row, column, None) for column in DEFINITION_COLUMNS}
    return validate_definition(**values, schedule_id=schedule_id)


# --------------------------------------------------------------------------------------------
# Due times
# --------------------------------------------------------------------------------------------


class _CronIterators:
    """One croniter per expression, reused (building one costs ~0.4 ms, moving it ~0.08 ms),
    and the last few thousand results of :func:`_cron_next`: at the top of the hour thousands
    of rows share an expression and a due time, and the answer is the same for all of them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cache: dict[str, croniter] = {}
        self.results: dict[tuple[str, str, datetime], datetime] = {}

    def next_wall_time(self, expression: str, after: datetime) -> datetime:
        """The first naive wall-clock time strictly after ``after`` that matches."""
        with self._lock:
            it = self._cache.get(expression)
            if it is None:
                if len(self._cache) >= 4096:
                    self._cache.clear()
                it = self._cache[expression] = croniter(expression, after, ret_type=datetime)
            else:
                it.set_current(after, force=True)
            result: datetime = it.get_next(datetime)
            return result


_ITERATORS = _CronIterators()


def _utc_offset(wall: datetime, zone: ZoneInfo, fold: int) -> timedelta:
    offset = wall.replace(tzinfo=zone, fold=fold).utcoffset()
    assert offset is not None
    return offset


def _offset_at(instant: datetime, zone: ZoneInfo) -> timedelta | None:
    return instant.replace(tzinfo=UTC).astimezone(zone).utcoffset()


def _gap_end(wall: datetime, zone: ZoneInfo) -> datetime:
    """For a wall time inside a spring-forward gap: the UTC instant the gap ends."""
    # PEP 495: fold=1 reads a gap time with the offset after the change (an instant before
    # the change), fold=0 with the offset before it (an instant after). The change lies
    # between; bisect to the second (about 12 steps, and only near a DST change).
    low = wall - _utc_offset(wall, zone, 1)
    high = wall - _utc_offset(wall, zone, 0)
    offset_before = _offset_at(low, zone)
    while high - low > timedelta(seconds=1):
        mid = (low + (high - low) / 2).replace(microsecond=0)
        if _offset_at(mid, zone) == offset_before:
            low = mid
        else:
            high = mid
    return high


def _instants(wall: datetime, cron: CronSchedule) -> list[datetime]:
    """The UTC instants (naive) at which a matching naive wall time fires, per the DST rules."""
    zone = cron.zone
    first = _utc_offset(wall, zone, 0)
    second = _utc_offset(wall, zone, 1)
    if first == second:
        return [wall - first]
    as_local = (wall - first).replace(tzinfo=UTC).astimezone(zone).replace(tzinfo=None)
    if as_local != wall:
        # Does not exist on the clock (spring forward): fire when the gap ends.
        return [_gap_end(wall, zone)]
    # Happens twice (fall back): fold=0 is the earlier instant.
    instants = [wall - first]
    if cron.every_hour:
        instants.append(wall - second)
    return instants


def _cron_next(cron: CronSchedule, after: datetime) -> datetime:
    key = (cron.expression, cron.timezone, after)
    memo = _ITERATORS.results
    found = memo.get(key)
    if found is None:
        found = _cron_next_computed(cron, after)
        if len(memo) >= 4096:
            memo.clear()
        memo[key] = found
    return found


def _cron_next_computed(cron: CronSchedule, after: datetime) -> datetime:
    zone = cron.zone
    local = after.replace(tzinfo=UTC).astimezone(zone)
    wall_after = local.replace(tzinfo=None)
    ambiguous_now = _utc_offset(wall_after, zone, 0) != _utc_offset(wall_after, zone, 1)
    candidate = _ITERATORS.next_wall_time(cron.expression, wall_after)
    if not ambiguous_now and _utc_offset(candidate, zone, 0) == _utc_offset(candidate, zone, 1):
        # Fast path, all but a few hours a year: nothing ambiguous between here and there.
        return candidate - _utc_offset(candidate, zone, 0)
    # Near a transition: walk wall times from before `after` (a repeated hour may still hold
    # a second-pass instant after it) and keep the earliest instant strictly after `after`.
    # Offsets move by at most 2 h around a wall time, so once a wall time's earliest
    # possible instant is past the best candidate, no later wall time can beat it.
    best: datetime | None = None
    wall = wall_after - _DST_WINDOW - timedelta(minutes=1)
    while True:
        wall = _ITERATORS.next_wall_time(cron.expression, wall)
        largest_offset = max(_utc_offset(wall, zone, 0), _utc_offset(wall, zone, 1))
        if best is not None and wall - largest_offset - _DST_WINDOW > best:
            return best
        for instant in _instants(wall, cron):
            if instant > after and (best is None or instant < best):
                best = instant


def next_run_after(schedule: Schedule, after: datetime) -> datetime | None:
    """The first due time strictly after ``after`` (naive UTC); ``None`` when there is none.

    An interval's grid is anchored by the caller (:func:`plan_run`); here it is ``after +
    seconds``.
    """
    after = to_naive_utc(after)
    if isinstance(schedule, IntervalSchedule):
        return after + timedelta(seconds=schedule.seconds)
    if isinstance(schedule, OnceSchedule):
        return schedule.run_at if schedule.run_at > after else None
    return _cron_next(schedule, after)


def _next_on_grid(anchor: datetime, seconds: int, now: datetime) -> datetime:
    """The first ``anchor + k * seconds`` (k >= 1) strictly after ``now``."""
    step = timedelta(seconds=seconds)
    if now < anchor:
        return anchor + step
    k = (now - anchor) // step + 1
    return anchor + k * step


def first_run_at(
    schedule: Schedule, now: datetime, last_run_at: datetime | None, offset: timedelta = timedelta(0)
) -> datetime | None:
    """The due time of an active row that has none (new, resumed, edited or revived).

    ``offset`` is the row's :func:`jitter_offset`: the row is *sent* ``offset`` after each due
    time, so the schedule is read on a clock ``offset`` behind (a run whose send time is still
    ahead is not skipped), and ``last_run_at`` (when it was sent) stands for the due time
    ``offset`` before it.

    * interval: a row that never ran (``last_run_at`` NULL) is due now (to the second), and
      sent ``offset`` later, so rows created together are spread. One that ran continues its
      grid from its last due time, at the first point after now (a resumed row does not fire
      its backlog).
    * cron: the first match after now.
    * once: ``run_at`` (possibly past: then the missed-run policy applies,
      :mod:`dataforge.scheduler.catchup`), unless it already ran at or after ``run_at``:
      ``None``, the row is done.
    """
    now = to_naive_utc(now)
    if isinstance(schedule, IntervalSchedule):
        if last_run_at is None:
            return _floor_second(now)
        return _next_on_grid(_floor_second(last_run_at - offset), schedule.seconds, now - offset)
    if isinstance(schedule, OnceSchedule):
        if last_run_at is not None and last_run_at - offset >= schedule.run_at:
            return None
        return schedule.run_at
    return _cron_next(schedule, now - offset)


def jitter_offset(schedule_id: int, jitter_seconds: int) -> timedelta:
    """How long after each due time schedule ``schedule_id`` is sent: whole seconds in
    ``0 .. jitter_seconds``, the same for every run of the schedule.

    Derived from the schedule's id (a hash, the same in every process and after every restart),
    so a re-sent run keeps its delay and beat recovers a run's due time from the stored send time
    by subtraction. One fixed offset per schedule, rather than a new one per run, keeps the
    schedule's own spacing exact (jitter never brings two runs closer), while a hundred thousand
    schedules due at the same second are spread evenly over the window.
    """
    if jitter_seconds <= 0:
        return timedelta(0)
    digest = hashlib.blake2b(str(schedule_id).encode("ascii"), digest_size=8).digest()
    return timedelta(seconds=int.from_bytes(digest, "big") % (jitter_seconds + 1))
