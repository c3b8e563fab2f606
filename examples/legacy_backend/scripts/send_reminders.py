import asyncio

from scripts._common import load_json

CATEGORY = "notifications"
CHANNELS = ("email", "sms")


async def run(channel="email", **kwargs):
    if channel not in CHANNELS:
        raise ValueError(f"unknown channel {channel!r}; expected one of {', '.join(CHANNELS)}")
    accounts = load_json("accounts.json", default=[])
    due = [a["id"] for a in accounts if not a.get("active")]
    await asyncio.sleep(0)
    return {"channel": channel, "sent": len(due), "to": due}
