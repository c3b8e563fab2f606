"""Missed runs: which of a row's due runs beat sends now, and when the row is due next.

A pure function of the schedule, the row's due time, the clock and the row's policies
(:func:`plan_run`), tested with tables of datetimes. Beat calls it for every due row; the rules
(docs/scheduler.md, "Missed runs"):

* **Backlog.** Every due time of the schedule from the row's due time up to now is a run that
  should have been sent. Usually that is the row's due time alone, reached milliseconds late.
* **Grace.** A run reached less than :data:`MISSED_RUN_GRACE` after its due time is on time
  (beat's own latency); only older runs are *missed* and subject to the policy.
* **Window.** A run due longer ago than the catch-up window is never sent.
* **Policy.** ``once``: one run stands for the whole backlog (the newest due time in the window,
  as Kubernetes and APScheduler's ``coalesce`` pick the most recent); ``skip``: only a run that
  is on time is sent; ``all``: each run in the window is sent (the newest
  :data:`MAX_REPLAYED_RUNS`), each with its own due time and task id.
* **Never bunch.** When the last run sent now is closer to the next regular due time than half
  the gap before that due time, the regular run is not sent either: the late run took its place.
  So a catch-up never lands next to a regular run (a takeover at 18:13:02.77 of a 3 s schedule
  whose 18:12:45 run was missed sends one run, and the next at 18:13:06, not 18:13:03).
* **Counting.** Every due time passed is either sent or counted missed: ``run_count +
  missed_count`` is the number of due times the schedule has passed.

All datetimes are naive UTC, on the *schedule's* clock: for a row with jitter the caller passes
``now - offset`` (the row is sent ``offset`` after each due time, see
:func:`~dataforge.scheduler.schedules.jitter_offset`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from dataforge.protocol import MissedRunPolicy
from dataforge.scheduler.schedules import IntervalSchedule, OnceSchedule, Schedule, next_run_after, to_naive_utc

__all__ = ["CRON_WALK_LIMIT", "MAX_REPLAYED_RUNS", "MISSED_RUN_GRACE", "RunPlan", "plan_run"]

#: A run that beat reaches more than this long after its due time counts as *missed* (beat or
#: the database was down). Below it, lateness is beat's own latency and the run is on time.
MISSED_RUN_GRACE: Final = timedelta(seconds=60)
#: ``all`` replays at most this many runs per catch-up (the newest; older ones are counted
#: missed), whatever the window: a day-long outage of an every-minute schedule is not 1,440
#: messages at once.
MAX_REPLAYED_RUNS: Final = 100
#: A cron backlog is walked run by run up to this many due times, then its size is estimated
#: from the spacing seen (croniter moves ~20k due times/s: a week-long outage of 100,000
#: hourly rows walked exactly would take minutes). Interval backlogs are always exact.
CRON_WALK_LIMIT: Final = 64


@dataclass(frozen=True, slots=True)
class RunPlan:
    """What beat does with a due row."""

    #: Due times of the runs to send now, oldest first (empty: send nothing).
    dues: tuple[datetime, ...]
    #: The row's next due time (``None``: a ``once`` row, marked done).
    next_run_at: datetime | None
    #: Due times passed and not sent (policy, window, or a late run that took their place).
    missed: int
    #: The row had missed runs (more than one due time passed, or its due time is older than
    #: the grace): the sends are a catch-up.
    catch_up: bool


@dataclass(frozen=True, slots=True)
class _Backlog:
    #: Due times in ``[due, now]`` (estimated beyond :data:`CRON_WALK_LIMIT` for cron).
    count: int
    #: The newest of them (at most the number asked for), oldest first; never empty.
    newest: tuple[datetime, ...]
    #: The first due time after now, and the gap between it and the one before.
    next_due: datetime | None
    gap: timedelta | None


def _interval_backlog(seconds: int, due: datetime, now: datetime, keep: int) -> _Backlog:
    step = timedelta(seconds=seconds)
    last = (now - due) // step
    first = max(0, last - keep + 1)
    newest = tuple(due + k * step for k in range(first, last + 1))
    return _Backlog(last + 1, newest, due + (last + 1) * step, step)


def _after(schedule: Schedule, moment: datetime) -> datetime:
    nxt = next_run_after(schedule, moment)
    assert nxt is not None  # interval and cron schedules never end
    return nxt


def _cron_backlog(schedule: Schedule, due: datetime, now: datetime, keep: int) -> _Backlog:
    walked = [due]
    nxt = _after(schedule, due)
    while nxt <= now and len(walked) < CRON_WALK_LIMIT:
        walked.append(nxt)
        nxt = _after(schedule, nxt)
    if nxt > now:
        newest = tuple(walked[-keep:])
        return _Backlog(len(walked), newest, nxt, nxt - newest[-1])
    # A long backlog: find its newest due times from a little before now instead of walking all
    # of it, widening the look-back until there are enough, and estimate the uncounted middle.
    spacing = (walked[-1] - walked[0]) / (len(walked) - 1)
    span = spacing * (keep + 1)
    while True:
        start = max(now - span, walked[-1])
        tail: list[datetime] = []
        moment = _after(schedule, start)
        while moment <= now:
            tail.append(moment)
            moment = _after(schedule, moment)
        if len(tail) >= keep or start == walked[-1]:
            break
        span *= 2
    middle = round((start - walked[-1]) / spacing)
    points = walked + tail if start == walked[-1] else tail
    newest = tuple(points[-keep:])
    count = len(walked) + middle + len(tail)
    return _Backlog(count, newest, moment, moment - newest[-1])


def _backlog(schedule: Schedule, due: datetime, now: datetime, keep: int) -> _Backlog:
    if isinstance(schedule, OnceSchedule):
        return _Backlog(1, (due,), None, None)
    if isinstance(schedule, IntervalSchedule):
        return _interval_backlog(schedule.seconds, due, now, keep)
    return _cron_backlog(schedule, due, now, keep)


def plan_run(
    schedule: Schedule,
    due: datetime,
    now: datetime,
    policy: MissedRunPolicy,
    *,
    window: timedelta | None = None,
    grace: timedelta = MISSED_RUN_GRACE,
) -> RunPlan:
    """Decide a due row (``due <= now``): the runs to send now and the next due time.

    ``window`` is the catch-up window (``None``: unbounded). An interval keeps its grid
    anchored at ``due``; a cron schedule continues with its first match after now.
    """
    due = to_naive_utc(due)
    now = to_naive_utc(now)
    if not isinstance(schedule, OnceSchedule) and now - due <= grace and (window is None or now - due <= window):
        # The common case, first: the row's own run, on time, and nothing else due yet.
        following = _after(schedule, due)
        if following > now and following - now >= (following - due) / 2:
            return RunPlan(dues=(due,), next_run_at=following, missed=0, catch_up=False)
    backlog = _backlog(schedule, due, now, MAX_REPLAYED_RUNS if policy == MissedRunPolicy.ALL else 1)

    def in_window(moment: datetime) -> bool:
        return window is None or now - moment <= window

    if policy == MissedRunPolicy.ALL:
        dues = tuple(moment for moment in backlog.newest if in_window(moment))
    else:
        newest = backlog.newest[-1]
        on_time = now - newest <= grace
        send = in_window(newest) and (policy == MissedRunPolicy.ONCE or on_time)
        dues = (newest,) if send else ()
    missed = backlog.count - len(dues)
    nxt, gap = backlog.next_due, backlog.gap
    if dues and nxt is not None and gap is not None and nxt - now < gap / 2:
        # The run sent now is closer to the next regular run than half a period: it stands for
        # that one too, so the two never go out a fraction of a period apart.
        nxt = _after(schedule, nxt)
        missed += 1
    catch_up = backlog.count > 1 or now - due > grace
    return RunPlan(dues=dues, next_run_at=nxt, missed=missed, catch_up=catch_up)
