"""Drop state entries older than N days from the local state files."""
from datetime import date, timedelta

from scripts._common import load_json, save_json

CATEGORY = "maintenance"


async def run(days: int = 30, **kwargs):
    """Keep the last `days` days of every state file under data/state/."""
    accounts = load_json("state/accounts.json", default={})
    if not accounts:
        return {"removed": 0, "kept": 0, "days": days}
    newest = max(date.fromisoformat(a["updated"]) for a in accounts.values())
    cutoff = newest - timedelta(days=days)
    kept = {k: a for k, a in accounts.items() if date.fromisoformat(a["updated"]) >= cutoff}
    save_json("state/accounts.json", kept)
    return {"removed": len(accounts) - len(kept), "kept": len(kept), "days": days}
