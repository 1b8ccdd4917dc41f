"""Expiry calendars and the symbol date codes venues use (Deribit ``27SEP24``, Binance ``240927``)."""

from __future__ import annotations

import calendar
import datetime as dt
import functools

from mdth_engine.core.timeframes import US_PER_DAY, day_start_us

_UNIX = dt.date(1970, 1, 1)
MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
US_PER_HOUR = 3_600_000_000
EXPIRY_HOUR_US = 8 * US_PER_HOUR  # Deribit and Binance delivery: 08:00 UTC


def last_friday(year: int, month: int) -> dt.date:
    last = dt.date(year, month, calendar.monthrange(year, month)[1])
    return last - dt.timedelta(days=(last.weekday() - 4) % 7)


def add_months(day: dt.date, months: int) -> tuple[int, int]:
    index = day.year * 12 + (day.month - 1) + months
    return index // 12, index % 12 + 1


@functools.lru_cache(maxsize=65536)
def deribit_code(day: dt.date) -> str:
    """``9JUN20``: day without a leading zero, upper-case month, two-digit year."""
    return f"{day.day}{MONTHS[day.month - 1]}{day.year % 100:02d}"


def yymmdd(day: dt.date) -> str:
    return day.strftime("%y%m%d")


@functools.lru_cache(maxsize=65536)
def expiry_us(day: dt.date) -> int:
    return day_start_us(day) + EXPIRY_HOUR_US


@functools.lru_cache(maxsize=65536)
def iso_ms(us: int) -> str:
    """``2024-06-28T08:00:00.000Z`` for microseconds since the epoch."""
    value = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=int(us))
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


@functools.lru_cache(maxsize=65536)
def iso_day(day: dt.date) -> str:
    return f"{day.isoformat()}T00:00:00.000Z"


@functools.lru_cache(maxsize=65536)
def us_day(us: int) -> dt.date:
    return _UNIX + dt.timedelta(days=int(us) // US_PER_DAY)


def fridays_between(first: dt.date, last: dt.date) -> list[dt.date]:
    start = first + dt.timedelta(days=(4 - first.weekday()) % 7)
    out = []
    while start <= last:
        out.append(start)
        start += dt.timedelta(days=7)
    return out


def month_ends_between(first: dt.date, last: dt.date, months: tuple[int, ...] | None = None) -> list[dt.date]:
    """Last Fridays of the months (optionally only ``months``) that fall in ``[first, last]``."""
    out = []
    year, month = first.year, first.month
    while (year, month) <= (last.year, last.month):
        if months is None or month in months:
            friday = last_friday(year, month)
            if first <= friday <= last:
                out.append(friday)
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return out
