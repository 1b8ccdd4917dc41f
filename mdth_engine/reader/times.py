"""Instants and durations as the reader accepts them, always turned into UTC microseconds.

Accepted instants: ``datetime`` (naive = UTC), ``date`` (its 00:00 UTC), ISO 8601 strings (``Z`` or an offset,
or none = UTC), ``pandas.Timestamp`` (a datetime) and ``numpy.datetime64``. Bare numbers are refused: their
unit would be a guess. Durations: ``timedelta`` (``pandas.Timedelta`` too) or text like ``90s``, ``5m``, ``2h``.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from mdth_engine.core.errors import UsageError
from mdth_engine.core.timeframes import US_PER_SECOND, datetime_to_us, day_start_us

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(us|ms|s|m|min|h|d)\s*$", re.IGNORECASE)
_UNIT_US = {"us": 1, "ms": 1000, "s": US_PER_SECOND, "m": 60 * US_PER_SECOND, "min": 60 * US_PER_SECOND}
_UNIT_US |= {"h": 3600 * US_PER_SECOND, "d": 86_400 * US_PER_SECOND}


def to_us(value: Any, what: str = "time") -> int:
    """Microseconds since the epoch (UTC) of an instant; a UsageError quoting what could not be read."""
    if isinstance(value, dt.datetime):
        return datetime_to_us(value)
    if isinstance(value, dt.date):
        return day_start_us(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise UsageError(
                f"{what} {value!r} is not an ISO date/time; use e.g. 2024-01-01T12:00:00Z (UTC)"
            ) from None
        return datetime_to_us(parsed)
    kind = type(value).__name__
    if kind == "datetime64":  # numpy, without importing it
        import numpy as np

        if np.isnat(value):
            raise UsageError(f"{what} is NaT")
        return int(value.astype("datetime64[us]").astype("int64"))
    if value is None:
        raise UsageError(f"{what} is missing")
    raise UsageError(
        f"{what} {value!r} ({kind}) is not a time: give a datetime, a date, an ISO string or a pandas/numpy "
        "timestamp (numbers are refused: their unit would be a guess)"
    )


def duration_us(value: Any, what: str = "buffer") -> int:
    """Microseconds of a non-negative duration."""
    if isinstance(value, dt.timedelta):
        us = (value.days * 86_400 + value.seconds) * US_PER_SECOND + value.microseconds
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        us = round(float(match.group(1)) * _UNIT_US[match.group(2).lower()])
    else:
        raise UsageError(
            f"{what} {value!r} is not a duration; give a timedelta or text like '90s', '5m', '2h'"
        )
    if us < 0:
        raise UsageError(f"{what} {value!r} is negative")
    return us


def us_day(us: int) -> dt.date:
    """The UTC day an instant falls in."""
    return dt.date(1970, 1, 1) + dt.timedelta(days=us // (86_400 * US_PER_SECOND))
