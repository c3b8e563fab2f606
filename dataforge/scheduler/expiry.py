"""When a scheduled run's message expires: the one rule for ``Message.expires``.

A queued run that no worker has started by its expiry is discarded by the worker (Celery's
``expires``), and recorded ``expired`` and counted (``expired_count``) by the recorder, never
silently. The rule serves two cases that pull in opposite directions:

* **A worker outage** (or a slow fleet) must not turn the runs queued meanwhile into a burst:
  each run of a schedule whose missed-run policy keeps only the newest run (``once``,
  ``skip``) expires when the schedule's next run is due (``due + period``): of a backlog,
  only the newest run is still alive when a worker comes back; the older ones expire.
* **A broker outage** holds beat back (nothing can be published), and when the broker is
  back the workers reconnect with a growing backoff (Celery/kombu retry every 2, 4 ... up to
  30 s). A run sent *late* (more than :data:`ON_TIME` after its due time: it was held back)
  would then expire before any worker is connected again if its schedule is frequent. Such a
  run keeps at least :data:`RECONNECT_ALLOWANCE` from the moment it was sent: the overdue run
  runs after the outage; the runs sent on time while the workers reconnect expire as above.

A policy that keeps every run (a catch-up policy) has no newer run that supersedes a queued
one: its runs expire only at the end of the catch-up window, if it has one. A ``once`` row
(no next run) never expires.

Pure: a function of the schedule's timing and the policy, no I/O.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final

from dataforge.protocol import MissedRunPolicy

__all__ = ["ON_TIME", "RECONNECT_ALLOWANCE", "SUPERSEDING_POLICIES", "run_expiry"]

#: Beat sends a due run within milliseconds of its due time; one sent later than this was held
#: back (beat, the database or the broker was down, or a publish was retried).
ON_TIME: Final = timedelta(seconds=1)
#: What a held-back run keeps from the moment it is sent: twice kombu's longest reconnect
#: interval (30 s), so every worker is connected again before it expires.
RECONNECT_ALLOWANCE: Final = timedelta(seconds=60)
#: Policies under which a newer run of the schedule supersedes a queued older one.
SUPERSEDING_POLICIES: Final = frozenset({MissedRunPolicy.ONCE, MissedRunPolicy.SKIP})


def run_expiry(
    due: datetime,
    now: datetime,
    next_run_at: datetime | None,
    policy: MissedRunPolicy,
    catch_up: timedelta | None = None,
) -> datetime | None:
    """The expiry (naive UTC) of the message of a run due at ``due``, sent at ``now``.

    ``next_run_at`` is the schedule's next due time after this run (``due + period`` when the
    run is sent on time; the first due time after ``now`` when it is late); ``None`` for a
    row without a next run. ``catch_up`` is the window of a policy that keeps every run.
    ``None``: the message never expires.
    """
    if next_run_at is None:
        return None
    if policy not in SUPERSEDING_POLICIES:
        return None if catch_up is None else max(due + catch_up, now + RECONNECT_ALLOWANCE)
    if now - due > ON_TIME:
        return max(next_run_at, now + RECONNECT_ALLOWANCE)
    return next_run_at
