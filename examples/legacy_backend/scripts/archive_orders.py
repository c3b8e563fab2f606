"""Archive delivered orders older than N days, then clean temporary files."""
from datetime import date, timedelta

from . import _common
from scripts.cleanup_temp_files import run as cleanup_run


def run(older_than_days: int = 30, **kwargs):
    orders = _common.load_json("orders.json", default=[])
    if not orders:
        return {"archived": 0, "kept": 0, "temp_files_removed": 0}
    newest = max(date.fromisoformat(o["day"]) for o in orders)
    cutoff = newest - timedelta(days=older_than_days)
    archive = [o for o in orders if o["status"] == "delivered" and date.fromisoformat(o["day"]) < cutoff]
    _common.save_json("archive/orders.json", archive)
    cleaned = cleanup_run()  # jobs call each other directly
    return {"archived": len(archive), "kept": len(orders) - len(archive), "temp_files_removed": cleaned["removed"]}
