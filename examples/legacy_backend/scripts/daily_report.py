"""Daily revenue report in one currency.

Written by the finance team in 2021; they also call it from the admin panel.
"""
import scripts.lib.dates
from scripts._common import load_json


async def run(*, day: str | None = None, currency: str = "EUR", scheduled_task_id: int | None = None) -> dict:
    orders = load_json("orders.json", default=[])
    rates = load_json("rates.json", default={"base": "EUR", "rates": {}})
    if not orders and not day:
        return {"day": None, "currency": currency, "orders": 0, "revenue": 0.0, "schedule": scheduled_task_id}
    target = scripts.lib.dates.parse_day(day) if day else scripts.lib.dates.latest(o["day"] for o in orders)
    paid = [o for o in orders if o["day"] == target.isoformat() and o["status"] == "paid"]
    rate = 1.0 if currency == rates["base"] else rates["rates"][currency]
    return {
        "day": target.isoformat(),
        "currency": currency,
        "orders": len(paid),
        "revenue": round(sum(o["amount"] for o in paid) * rate, 2),
        "schedule": scheduled_task_id,
    }
