"""The migration report: rows grouped by reason, with ids. One format for every producer.

``dataforge db check`` (preflight), the data revision (online upgrade, and the refusal) and
the downgrades all build a :class:`MigrationReport` from the same reason catalogue, so an
operator reads the same words before, during and after a migration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["REASONS", "STOPPED", "Item", "MigrationReport", "Reason", "Severity"]

#: ``block``: the upgrade refuses (under the default policy); ``stop``: active rows the upgrade
#: leaves unable to run; ``flag``: migrated, but a person should look; ``change``: the upgrade
#: rewrites it (losslessly, the downgrade restores it); ``info``: the downgrade could not
#: express something in the legacy schema.
Severity = Literal["block", "stop", "flag", "change", "info"]
_ORDER: dict[str, int] = {"block": 0, "stop": 1, "flag": 2, "change": 3, "info": 4}

#: The group of every active row that will not run after the upgrade, each with all its reasons.
STOPPED = "active_rows_stop_running"


@dataclass(frozen=True)
class Reason:
    code: str
    severity: Severity
    #: What the rows have in common, what the migration does with them, what to do.
    summary: str
    #: An *active* row with this reason does not run after the upgrade (paused, unmapped, or
    #: flagged so that beat refuses it): it is listed under :data:`STOPPED` as well.
    stops: bool = False


def _r(code: str, severity: Severity, summary: str, *, stops: bool = False) -> tuple[str, Reason]:
    return code, Reason(code, severity, summary, stops)


REASONS: dict[str, Reason] = dict(
    [
        _r("blocked_unrecognised_handler_path", "block",
           "active, no task_name, and handler_path is none of the four known spellings: set task_name (or fix "
           "handler_path, or add it to the map file), or run with -x on_unmappable=pause", stops=True),
        _r("blocked_no_task_name_or_handler_path", "block",
           "active with neither task_name nor handler_path: set task_name, or run with -x on_unmappable=pause",
           stops=True),
        _r(STOPPED, "stop",
           "active now, and will not run after the upgrade (paused, unmapped, or flagged so that beat refuses it); "
           "every reason of each row is listed: fix them (before, or after the upgrade), or accept it knowingly"),
        _r("paused_unrecognised_handler_path", "change",
           "active, handler_path names no task: paused (on_unmappable=pause), task_name set to the placeholder, "
           "invalid_reason says why; the downgrade makes them active again", stops=True),
        _r("paused_no_task_name_or_handler_path", "change",
           "active with neither task_name nor handler_path: paused (on_unmappable=pause), task_name set to the "
           "placeholder; the downgrade makes them active again", stops=True),
        _r("inactive_unrecognised_handler_path", "flag",
           "paused/disabled, handler_path names no task: task_name set to the placeholder, invalid_reason set; "
           "set a real task_name before activating"),
        _r("inactive_no_task_name_or_handler_path", "flag",
           "paused/disabled with neither task_name nor handler_path: task_name set to the placeholder"),
        _r("task_name_from_handler_path", "change",
           "task_name derived from handler_path (map file, else scripts:<m> -> dataforge.<m>)"),
        _r("task_name_disagrees_with_handler_path", "flag",
           "task_name kept, but handler_path maps to a different task: check which one is meant"),
        _r("handler_path_unrecognised", "flag",
           "task_name kept; handler_path is not a known spelling (the legacy shim could not run this row)"),
        _r("kwargs_empty", "change", "handler_kwargs '' / 'null' / 'None' becomes {} (original kept for downgrade)"),
        _r("kwargs_python_repr", "change",
           "handler_kwargs was a Python literal (repr); converted to the equal JSON object, tuples as lists "
           "(original kept for downgrade)"),
        _r("kwargs_reserved_keys", "change",
           "handler_kwargs held _lock_key / scheduled_task_id copied from old messages; removed (original kept)"),
        _r("kwargs_unconvertible", "flag",
           "handler_kwargs has no JSON object form (a set, bytes, a complex number, inf, a non-string key, not a "
           "Python literal, not a dict...; the detail says which): kept as is, invalid_reason set, beat will not "
           "run the row until it is rewritten as JSON", stops=True),
        _r("invalid_cron", "flag", "cron_expression cannot be evaluated: migrated unchanged, beat flags the row",
           stops=True),
        _r("unknown_timezone", "flag", "timezone is unknown: migrated unchanged, beat flags the row", stops=True),
        _r("invalid_schedule", "flag",
           "a schedule column beat checks is missing or invalid (task_type, interval_seconds, run_at, "
           "timeout_seconds, max_retries): migrated unchanged, beat flags the row", stops=True),
        _r("executions_attempts_numbered", "change",
           "executions sharing a celery_task_id (legacy retries): numbered attempt 0, 1, ... by id so the new "
           "unique (celery_task_id, attempt) holds; the downgrade drops the column, the rows stay"),
        _r("restore_skipped_edited", "info",
           "edited after the upgrade: the downgrade keeps the current value instead of the legacy one"),
        _r("handler_path_written", "info",
           "created after the upgrade: handler_path written from task_name so the legacy path can run it"),
        _r("no_legacy_handler_path", "info",
           "created after the upgrade with a task_name that maps to no script: legacy code can only run it by "
           "task_name"),
        _r("status_unknown_to_legacy", "info", "status (e.g. 'done') that legacy code does not know: kept as is"),
        _r("execution_status_unknown_to_legacy", "info",
           "execution status (retry/skipped/lost) that legacy code does not know: kept as is"),
        _r("execution_details_dropped", "info",
           "execution worker / traceback / attempt columns are dropped with the downgrade"),
        _r("handler_path_restored", "info",
           "handler_path restored from the saved legacy value, or written from task_name when none was saved"),
    ]
)  # fmt: skip


@dataclass(frozen=True)
class Item:
    """One row in a group: its id, a label (schedule name...) and what is special about it."""

    id: int | str
    label: str = ""
    detail: str = ""
    #: Every reason code of the row (the :data:`STOPPED` group lists them all).
    reasons: tuple[str, ...] = ()


@dataclass
class MigrationReport:
    """Rows grouped by reason code (see :data:`REASONS`), plus free notes."""

    title: str
    groups: dict[str, list[Item]] = field(default_factory=dict)
    #: Groups too big to list (executions): the real count; ``groups`` keeps a sample.
    totals: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, code: str, item: Item) -> None:
        if code not in REASONS:
            raise KeyError(f"unknown report reason {code!r}")
        self.groups.setdefault(code, []).append(item)

    def add_total(self, code: str, total: int, sample: list[Item]) -> None:
        if total:
            for item in sample:
                self.add(code, item)
            self.totals[code] = total

    def count(self, code: str) -> int:
        return self.totals.get(code, len(self.groups.get(code, [])))

    @property
    def blocking(self) -> bool:
        return any(REASONS[code].severity == "block" for code in self.groups)

    @property
    def stops_rows(self) -> bool:
        """Active rows would not run after the upgrade (``dataforge db check`` then exits 1)."""
        return bool(self.groups.get(STOPPED))

    def ids(self, code: str) -> list[int | str]:
        return [item.id for item in self.groups.get(code, [])]

    def _codes(self) -> list[str]:
        return sorted(self.groups, key=lambda c: (_ORDER[REASONS[c].severity], c))

    def render(self, max_items: int = 25) -> str:
        lines = [self.title]
        if not self.groups:
            lines.append("  nothing to report")
        for code in self._codes():
            reason = REASONS[code]
            items = self.groups[code]
            lines.append(f"  [{reason.severity.upper()}] {code} ({self.count(code)}): {reason.summary}")
            for item in items[:max_items]:
                label = f" {_printable(item.label)}" if item.label else ""
                detail = f": {_printable(item.detail)}" if item.detail else ""
                lines.append(f"      id={item.id}{label}{detail}")
            hidden = self.count(code) - min(len(items), max_items)
            # A group that is only a count (executions whose details a downgrade drops) lists
            # no rows: its count is the whole message, there are no ids to point to.
            if hidden > 0 and items:
                lines.append(f"      ... and {hidden} more (--json lists every id that was collected)")
        lines.extend(f"  note: {note}" for note in self.notes)
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "blocking": self.blocking,
            "stops_rows": self.stops_rows,
            "groups": {
                code: {
                    "severity": REASONS[code].severity,
                    "summary": REASONS[code].summary,
                    "count": self.count(code),
                    "rows": [_row_json(i) for i in self.groups[code]],
                }
                for code in self._codes()
            },
            "notes": list(self.notes),
        }


def _row_json(item: Item) -> dict[str, Any]:
    out: dict[str, Any] = {"id": item.id, "label": item.label, "detail": item.detail}
    if item.reasons:
        out["reasons"] = list(item.reasons)
    return out


def _printable(text: str) -> str:
    """``text`` on one line: a row's name or value may hold line breaks (or anything else
    that is not printable), which would forge report lines in a log."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
