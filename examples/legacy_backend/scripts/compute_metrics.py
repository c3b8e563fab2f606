"""Compute the weekly engagement metrics from the orders."""
from scripts._common import load_json
from scripts.lib.dates import latest, window


def compute_metrics_job(window_days: int = 7, **kwargs):
    orders = load_json("orders.json", default=[])
    if not orders:
        return {"days": 0, "orders_per_day": 0.0}
    days = window(latest(o["day"] for o in orders), window_days)
    count = sum(1 for o in orders if o["day"] in days)
    return {"days": len(days), "orders_per_day": round(count / len(days), 3)}


run = compute_metrics_job
