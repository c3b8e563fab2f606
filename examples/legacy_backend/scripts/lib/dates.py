"""Date helpers (the data files use ISO days: 2024-03-01)."""

from datetime import date, timedelta


def parse_day(value):
    return date.fromisoformat(value)


def latest(days):
    """The most recent day of an iterable of ISO day strings."""
    return max(parse_day(d) for d in days)


def window(end, days):
    """The ISO days of the `days`-day window ending on `end` (inclusive)."""
    return [(end - timedelta(days=i)).isoformat() for i in range(days)]
