"""UTC day helpers and the candle timeframes; every date in mdth is a UTC calendar day."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

from mdth_engine.core.errors import UsageError

UTC = dt.UTC
US_PER_SECOND = 1_000_000
US_PER_DAY = 86_400 * US_PER_SECOND

# Timeframe name -> length in microseconds, shortest first.
TIMEFRAMES: dict[str, int] = {
    "15s": 15 * US_PER_SECOND,
    "1m": 60 * US_PER_SECOND,
    "5m": 300 * US_PER_SECOND,
    "15m": 900 * US_PER_SECOND,
    "1h": 3_600 * US_PER_SECOND,
    "4h": 14_400 * US_PER_SECOND,
    "24h": US_PER_DAY,
}


def parse_day(text: str | dt.date, what: str = "date") -> dt.date:
    """A ``YYYY-MM-DD`` string as a date, or a ``UsageError`` that quotes it."""
    if isinstance(text, dt.datetime):
        return text.date()
    if isinstance(text, dt.date):
        return text
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"{what} {text!r} is not a date; use YYYY-MM-DD (UTC)") from None


def day_range(start: dt.date, end: dt.date) -> list[dt.date]:
    """Inclusive list of UTC days; a ``UsageError`` when end is before start."""
    if end < start:
        raise UsageError(f"end {end} is before start {start}")
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


def iter_days(start: dt.date, end: dt.date) -> Iterator[dt.date]:
    yield from day_range(start, end)


def day_start_us(day: dt.date) -> int:
    """Microseconds since the epoch at 00:00 UTC of ``day``."""
    return (day - dt.date(1970, 1, 1)).days * US_PER_DAY


def us_to_datetime(us: int) -> dt.datetime:
    return dt.datetime(1970, 1, 1, tzinfo=UTC) + dt.timedelta(microseconds=int(us))


def datetime_to_us(value: dt.datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    delta = value - dt.datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * US_PER_SECOND + delta.microseconds


def parse_timeframes(text: str | None) -> list[str]:
    """A comma list of timeframes (all of them when empty), shortest first; unknown names are a UsageError."""
    if not text:
        return list(TIMEFRAMES)
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in TIMEFRAMES]
    if unknown:
        raise UsageError(f"unknown timeframe {unknown[0]!r}; known: {', '.join(TIMEFRAMES)}")
    return sorted(set(names), key=TIMEFRAMES.__getitem__)
