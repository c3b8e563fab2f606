"""Purge audit log entries older than the retention period."""
from datetime import date, timedelta

from scripts import _common

PARAMS = ["retention_days"]


async def _purge(retention_days: int = 90, **kwargs):
    entries = _common.load_json("audit_log.json", default=[])
    if not entries:
        return {"purged": 0, "kept": 0}
    newest = max(date.fromisoformat(e["day"]) for e in entries)
    cutoff = newest - timedelta(days=retention_days)
    kept = [e for e in entries if date.fromisoformat(e["day"]) >= cutoff]
    return {"purged": len(entries) - len(kept), "kept": len(kept)}


# The audit store drops connections under load.
run = _common.retrying(_purge, attempts=2)
