"""Sync accounts changed recently from the CRM export into the local account state.

Reads data/accounts.json (the nightly CRM export) and records what changed.
"""
import asyncio
import logging
from datetime import date, timedelta

from scripts._common import load_json, save_json

NAME = "账号同步"
DESCRIPTION = "同步最近变更的账号"
CATEGORY = "sync"
PARAMS = [
    {"name": "days", "type": "int", "default": 7, "description": "look-back window in days"},
    {"name": "dry_run", "type": "bool", "default": False},
]
SCHEDULE = "0 * * * *"

logger = logging.getLogger(__name__)


async def run(days: int = 7, dry_run: bool = False, **kwargs):
    accounts = load_json("accounts.json", default=[])
    if not accounts:
        return {"synced": 0, "skipped": 0, "dry_run": dry_run}
    newest = max(date.fromisoformat(a["updated"]) for a in accounts)
    cutoff = newest - timedelta(days=days)
    changed = [a for a in accounts if date.fromisoformat(a["updated"]) > cutoff]
    await asyncio.sleep(0)  # the CRM client is async
    if not dry_run:
        save_json("state/accounts.json", {str(a["id"]): a for a in changed})
    logger.info("synced %d accounts (schedule %s)", len(changed), kwargs.get("scheduled_task_id"))
    return {"synced": len(changed), "skipped": len(accounts) - len(changed), "dry_run": dry_run}


if __name__ == "__main__":
    print(asyncio.run(run()))
