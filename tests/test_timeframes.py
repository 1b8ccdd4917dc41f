import datetime as dt

import pytest

from mdth_engine.core.errors import UsageError
from mdth_engine.core.timeframes import (
    TIMEFRAMES,
    datetime_to_us,
    day_range,
    day_start_us,
    parse_day,
    parse_timeframes,
    us_to_datetime,
)


def test_days_and_microseconds():
    assert parse_day("2024-01-31") == dt.date(2024, 1, 31)
    assert len(day_range(dt.date(2024, 2, 27), dt.date(2024, 3, 1))) == 4  # leap day included
    assert day_start_us(dt.date(2024, 1, 1)) == 1_704_067_200_000_000
    t = dt.datetime(2024, 6, 28, 8, 0, 0, 123456, tzinfo=dt.UTC)
    assert us_to_datetime(datetime_to_us(t)) == t


@pytest.mark.parametrize("bad", ["2024-13-01", "yesterday", "2024/01/01", ""])
def test_bad_dates_are_usage_errors_quoting_the_input(bad):
    with pytest.raises(UsageError, match="is not a date"):
        parse_day(bad, "start")


def test_end_before_start():
    with pytest.raises(UsageError, match="before start"):
        day_range(dt.date(2024, 1, 2), dt.date(2024, 1, 1))


def test_timeframes_sorted_and_validated():
    assert parse_timeframes(None) == list(TIMEFRAMES)
    assert parse_timeframes("1h,15s,1m") == ["15s", "1m", "1h"]
    with pytest.raises(UsageError, match="unknown timeframe '2m'"):
        parse_timeframes("1m,2m")
    assert 86_400 * 1_000_000 % TIMEFRAMES["4h"] == 0
