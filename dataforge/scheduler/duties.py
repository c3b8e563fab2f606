"""Periodic work of the leading beat besides dispatch (housekeeping of the tables it owns).

Beat calls every duty of :func:`leader_duties` on its passes while it leads, each no more
often than the duty asks: a duty returns how many seconds until it wants to run again, so an
idle tick costs a comparison per duty. A duty's failure is logged and retried after
:data:`RETRY_AFTER_FAILURE`; it never stops dispatch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

from dataforge.scheduler.reaper import Reaper
from dataforge.scheduler.retention import Retention

if TYPE_CHECKING:
    from dataforge.runtime import Runtime

__all__ = ["RETRY_AFTER_FAILURE", "DutyRunner", "LeaderDuty", "leader_duties"]

log = logging.getLogger(__name__)

#: Seconds before a duty that raised is tried again.
RETRY_AFTER_FAILURE: Final = 30.0


class LeaderDuty(Protocol):
    """One kind of housekeeping the leader does."""

    #: Shown in the log when it fails.
    name: str

    def run(self, runtime: Runtime) -> float:
        """Do one bounded round of the work; seconds until the next round is wanted."""
        ...


def leader_duties(runtime: Runtime) -> list[LeaderDuty]:
    """The duties of a leading beat for ``runtime``'s settings: the reaper of runs whose worker
    died (:mod:`.reaper`) and, unless retention is 0, the pruning of old history
    (:mod:`.retention`)."""
    duties: list[LeaderDuty] = [Reaper()]
    if runtime.settings.history_retention_days > 0:
        duties.append(Retention(runtime.settings.history_retention_days))
    return duties


@dataclass
class _Scheduled:
    duty: LeaderDuty
    due: float = float("-inf")


class DutyRunner:
    """Runs the duties that are due; knows when the next one is."""

    def __init__(self, duties: list[LeaderDuty], clock: Callable[[], float]) -> None:
        self._duties = [_Scheduled(d) for d in duties]
        self._clock = clock

    def reset(self) -> None:
        """A new term as leader: every duty is due at once (e.g. pruning at start)."""
        for item in self._duties:
            item.due = float("-inf")

    def run_due(self, runtime: Runtime) -> float:
        """Run every due duty; seconds until the next one is due (``inf`` with none)."""
        next_in = float("inf")
        for item in self._duties:
            now = self._clock()
            if now >= item.due:
                try:
                    delay = item.duty.run(runtime)
                except Exception:
                    log.exception("beat: %s failed; retrying in %.0fs", item.duty.name, RETRY_AFTER_FAILURE)
                    delay = RETRY_AFTER_FAILURE
                item.due = self._clock() + max(0.0, delay)
            next_in = min(next_in, item.due - self._clock())
        return max(0.0, next_in)
