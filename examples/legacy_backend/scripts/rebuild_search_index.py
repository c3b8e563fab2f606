"""Rebuild the product search index from the partner feed."""
import asyncio
import csv
import json

from scripts._common import DATA_DIR, save_json, timed

NAME = "Search index rebuild"
CATEGORY = "search"


@timed
async def run(full: bool = False, **kwargs):
    """Rebuild the index (incrementally unless full=True)."""
    # execute_scheduled_task adds its lock key to our kwargs: drop it, the options we report
    # back are the schedule's own.
    kwargs.pop("_lock_key", None)
    options = sorted(k for k in kwargs if k != "scheduled_task_id")
    feed = DATA_DIR / "partner_feed.csv"
    if not feed.exists():
        return {"words": 0, "full": full, "options": options, "scheduled_task_id": kwargs.get("scheduled_task_id")}
    index_path = DATA_DIR / "index" / "search.json"
    index = {} if full or not index_path.exists() else json.loads(index_path.read_text(encoding="utf-8"))
    with feed.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            for word in row["name"].lower().split():
                index.setdefault(word, [])
                if row["sku"] not in index[word]:
                    index[word].append(row["sku"])
    await asyncio.sleep(0)
    save_json("index/search.json", index)
    return {
        "words": len(index),
        "full": full,
        "options": options,
        "scheduled_task_id": kwargs.get("scheduled_task_id"),
    }
