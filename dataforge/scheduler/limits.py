"""What a ``scheduled_tasks`` value may be, on every backend: the PostgreSQL column types.

PostgreSQL refuses a value that does not fit its column (``integer out of range``, ``value
too long for type character varying(128)``, a NUL character in text) with a driver error;
SQLite stores anything. Checked before any write, the same values are refused on both with
the field named, and beat flags a SQLite row holding a value PostgreSQL could not hold.

Lengths come from the model's column types (:class:`~dataforge.models.ScheduledTask`), so a
migration that widens a column widens the check. Pure: no I/O.
"""

from __future__ import annotations

from typing import Final

from dataforge.errors import ScheduleError
from dataforge.models import ScheduledTask

__all__ = ["INT32_MAX", "check_int", "check_text", "max_length"]

#: Every integer column of the scheduling tables is a PostgreSQL ``INTEGER``.
INT32_MAX: Final = 2**31 - 1


def max_length(column: str) -> int | None:
    """The ``VARCHAR(n)`` length of a ``scheduled_tasks`` column; ``None`` for ``TEXT``."""
    length = getattr(ScheduledTask.__table__.c[column].type, "length", None)
    return length if isinstance(length, int) else None


def check_int(field: str, value: object, minimum: int, reason: str, schedule_id: int | None = None) -> int:
    """``value`` as an int in ``minimum .. INT32_MAX``, or ScheduleError naming ``field``.

    ``reason`` says what the number is (``"seconds between runs"``), for the message.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise ScheduleError(field, value, f"{reason}: a whole number", schedule_id)
    if not minimum <= value <= INT32_MAX:
        raise ScheduleError(field, value, f"{reason}: must be between {minimum} and {INT32_MAX}", schedule_id)
    return value


def check_text(field: str, value: str, schedule_id: int | None = None) -> str:
    """``value`` if the ``scheduled_tasks`` column ``field`` can hold it; else ScheduleError."""
    if "\x00" in value:
        raise ScheduleError(field, value, "contains a NUL character, which no text column can hold", schedule_id)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ScheduleError(field, value, "is not valid Unicode (a lone surrogate: undecodable bytes?)",
                            schedule_id) from None
    limit = max_length(field)
    if limit is not None and len(value) > limit:
        raise ScheduleError(field, value, f"{len(value)} characters; at most {limit} fit", schedule_id)
    return value
