"""The live path gives the batch numbers: whole days replayed tick by tick, closed by the clock."""

from __future__ import annotations

import datetime as dt
import math
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from test_features_synthetic import make_day

from mdth_engine.core.errors import UsageError
from mdth_engine.core.timeframes import TIMEFRAMES, US_PER_DAY, day_start_us
from mdth_engine.features.batch import build_candles
from mdth_engine.features.incremental import IncrementalCandles, replay_table, rows_to_tables
from mdth_engine.features.spec import CANDLE_COLUMNS, candle_schema

SEC = 1_000_000


def _given(day, drop=()):
    return {
        "trades": day.trades,
        "liquidations": None if "liquidations" in drop else day.liquidations,
        "derivative_ticker": day.derivative_ticker,
        "book": day.book,
        "options_chain": None if "options_chain" in drop else day.options_chain,
    }


def _sources(given):
    return {("book_snapshot_5" if k == "book" else k) for k, v in given.items() if v is not None}


def assert_identical(batch: pa.Table, live: pa.Table, label: str) -> None:
    """Same schema, same rows, every value bit for bit (NaN equals NaN, null equals null)."""
    assert live.schema.equals(batch.schema), label
    assert live.num_rows == batch.num_rows, label
    for name in CANDLE_COLUMNS:
        a, b = batch.column(name).to_pylist(), live.column(name).to_pylist()
        bad = [
            (i, x, y)
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            if not (
                x == y or (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y))
            )
        ]
        assert not bad, f"{label} {name}: first differences {bad[:3]}"


@pytest.fixture(scope="module")
def day():
    return make_day(dt.date(2024, 3, 1), 21)


@pytest.mark.parametrize(
    "drop", [(), ("liquidations", "options_chain")], ids=["all-sources", "no-liq-no-options"]
)
def test_replaying_a_day_through_the_live_path_gives_the_batch_numbers(day, drop) -> None:
    given = _given(day, drop)
    batch = build_candles(day.day, **given)
    live = IncrementalCandles(day_or_start=day.day, sources=_sources(given))
    end = day_start_us(day.day) + US_PER_DAY
    # The clock closes buckets 2 s behind arrival time (longer than any delay in the data), like a live timer.
    rows = replay_table(live, **given, close_lag_us=2 * SEC, until_us=end)
    tables = rows_to_tables(rows)
    assert set(tables) == set(batch)
    for tf in batch:
        assert_identical(batch[tf], tables[tf], tf)
    # Only the rows stamped before the day (5 per event table) were refused; none was late.
    assert live.counters["late"] == 5 * (2 + ("liquidations" not in drop))
    assert live.counters["invalid"] == pc.sum(pc.is_null(day.trades.column("price"))).as_py()


def test_two_days_in_one_live_session_match_two_batch_days() -> None:
    """Across midnight the live state carries the book on and restarts the open-interest reference."""
    d1, d2 = make_day(dt.date(2024, 3, 1), 31), make_day(dt.date(2024, 3, 2), 32)
    merged = {}
    for name in ("trades", "liquidations", "derivative_ticker", "book", "options_chain"):
        table = pa.concat_tables([d1.tables()[name], d2.tables()[name]])
        merged[name] = table.take(pc.sort_indices(table, [("local_timestamp", "ascending")]))
    live = IncrementalCandles(("1m", "1h", "24h"), d1.day)
    rows = replay_table(live, **merged, close_lag_us=2 * SEC, until_us=day_start_us(d2.day) + US_PER_DAY)
    tables = rows_to_tables(rows)
    for d, offset in ((d1, 0), (d2, 1)):
        batch = build_candles(d.day, **merged, timeframes=("1m", "1h", "24h"))
        for tf, table in batch.items():
            n = table.num_rows
            assert_identical(table, tables[tf].slice(offset * n, n), f"{d.day} {tf}")
    assert not math.isnan(tables["1h"].column("oi_change").to_pylist()[25])


def test_clock_closes_empty_buckets_and_never_twice() -> None:
    start = day_start_us(dt.date(2024, 1, 1))
    live = IncrementalCandles(("15s", "1m"), dt.date(2024, 1, 1))
    assert live.close_until(start + 14 * SEC) == []
    rows = live.close_until(start + 60 * SEC)
    assert [(tf, r["timestamp"] - start) for tf, r in rows] == [
        ("15s", 0),
        ("15s", 15 * SEC),
        ("15s", 30 * SEC),
        ("15s", 45 * SEC),
        ("1m", 0),
    ]
    for tf, row in rows:
        assert row["timestamp_out"] - row["timestamp"] == TIMEFRAMES[tf]
        assert row["trade_count"] == 0 and row["volume"] == 0.0 and math.isnan(row["open"])
    assert live.close_until(start + 60 * SEC) == []
    live.on_trade(start + 61 * SEC, start + 61 * SEC + 5_000, 100.0, 2.0, "buy")
    live.on_trade(start + 59 * SEC, start + 61 * SEC, 99.0, 1.0, "sell")  # its bucket is closed: late
    assert live.counters["late"] == 1
    ((_, row),) = live.close_until(start + 75 * SEC)
    assert (row["open"], row["close"], row["volume"], row["buy_volume_sum"], row["delay_median"]) == (
        100.0,
        100.0,
        2.0,
        2.0,
        5.0,
    )


def test_a_too_eager_clock_counts_late_events(day) -> None:
    given = _given(day)
    live = IncrementalCandles(("1m",), day.day)
    rows = replay_table(live, **given, close_lag_us=0, until_us=day_start_us(day.day) + US_PER_DAY)
    assert live.counters["late"] > 15  # trades stamped before the clock caught up with their bucket
    assert len(rows) == 1440  # still a dense grid


def test_first_and_last_follow_exchange_time_then_arrival() -> None:
    start = day_start_us(dt.date(2024, 1, 1))
    live = IncrementalCandles(("15s",), start)
    t = start + 5 * SEC
    for ts, price in (
        (t + 3, 10.0),
        (t + 1, 11.0),
        (t + 1, 12.0),
        (t + 9, 13.0),
        (t + 9, 14.0),
        (t + 2, 15.0),
    ):
        live.on_trade(ts, ts + 1000, price, 1.0, "unknown")
    ((_, row),) = live.close_until(start + 15 * SEC)
    assert (row["open"], row["close"], row["high"], row["low"]) == (11.0, 14.0, 15.0, 10.0)
    assert row["buy_volume_sum"] == row["sell_volume_sum"] == 0.0 and row["volume"] == 6.0


def test_rows_to_tables_has_the_candle_schema() -> None:
    live = IncrementalCandles(("4h",), dt.date(2024, 1, 1), sources={"trades"})
    tables = rows_to_tables(live.close_until(day_start_us(dt.date(2024, 1, 1)) + US_PER_DAY))
    assert tables["4h"].schema.equals(candle_schema()) and tables["4h"].num_rows == 6
    assert tables["4h"].column("liquidation_count").null_count == 6  # no liquidations source
    assert tables["4h"].column("trade_count").to_pylist() == [0] * 6


def test_bad_arguments_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="unknown timeframe"):
        IncrementalCandles(("2m",), dt.date(2024, 1, 1))
    with pytest.raises(UsageError, match="needs day_or_start"):
        IncrementalCandles(("1m",))
    with pytest.raises(UsageError, match="not aligned"):
        IncrementalCandles(("1m",), day_start_us(dt.date(2024, 1, 1)) + 7 * SEC)


def test_trade_path_is_fast_enough_for_live_use() -> None:
    """A loose guard (shared CI machines): the benchmark reports the real rate."""
    rng = np.random.default_rng(0)
    n = 100_000
    start = day_start_us(dt.date(2024, 1, 1))
    ts = (start + np.sort(rng.integers(0, 3_600 * SEC, n))).tolist()
    price = (100 + rng.random(n)).tolist()
    live = IncrementalCandles(day_or_start=start)
    on_trade = live.on_trade
    t0 = time.perf_counter()
    for i in range(n):
        on_trade(ts[i], ts[i] + 20_000, price[i], 0.5, "buy")
    elapsed = time.perf_counter() - t0
    assert elapsed < 2.0, f"{n / elapsed:,.0f} trades/s"
