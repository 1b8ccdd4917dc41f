"""The feature spec is complete and self-consistent, and build_candles handles its inputs as documented."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pyarrow as pa
import pytest
from test_features_synthetic import make_day

from mdth_engine.core.errors import UsageError
from mdth_engine.core.schemas import SCHEMAS, TS
from mdth_engine.core.timeframes import TIMEFRAMES, US_PER_DAY, day_start_us
from mdth_engine.features.batch import build_candles
from mdth_engine.features.spec import (
    CANDLE_COLUMNS,
    FEATURE_SPEC_VERSION,
    FEATURES,
    Aggregation,
    candle_schema,
)

DAY = dt.date(2024, 5, 5)
START = day_start_us(DAY)
SEC = 1_000_000

# DESIGN.md section 6, every feature by name.
DESIGN_FEATURES = {
    "open", "high", "low", "close", "volume", "trade_count", "buy_volume_sum", "sell_volume_sum", "size_avg",
    "price_vwap", "delay_median", "delay_mean", "delay_min", "delay_max", "liquidation_buy_volume",
    "liquidation_sell_volume", "liquidation_count", "funding_rate", "predicted_funding_rate", "index_price",
    "mark_price", "open_interest", "oi_change", "liquidation_with_rising_oi", "liquidation_with_falling_oi",
    "mid_price", "spread_bps", "depth_imbalance", "microprice", "mid_price_twa", "spread_bps_twa",
    "depth_imbalance_twa", "microprice_twa", "atm_mark_iv", "skew_25d_put_call_ratio",
}  # fmt: skip


def test_spec_lists_every_design_feature_once_with_complete_entries() -> None:
    names = [f.name for f in FEATURES]
    assert len(names) == len(set(names))
    assert set(names) == DESIGN_FEATURES
    assert FEATURE_SPEC_VERSION
    for f in FEATURES:
        assert f.formula and f.nan_policy and f.unit, f.name
        assert set(f.inputs) <= set(SCHEMAS), f.name
        assert isinstance(f.aggregation, Aggregation)
    by_name = {f.name: f for f in FEATURES}
    # The original's bugs, not repeated: delay extremes aggregate as extremes, the median is not aggregable.
    assert by_name["delay_min"].aggregation is Aggregation.MIN
    assert by_name["delay_max"].aggregation is Aggregation.MAX
    assert by_name["delay_median"].aggregation is Aggregation.RECOMPUTE_FROM_RAW
    assert "short" in by_name["liquidation_buy_volume"].formula  # Tardis: buy = a short was liquidated


def test_candle_schema_is_times_then_features_in_spec_order() -> None:
    schema = candle_schema()
    assert (
        tuple(schema.names) == CANDLE_COLUMNS == ("timestamp", "timestamp_out", *(f.name for f in FEATURES))
    )
    assert schema.field("timestamp").type == TS and not schema.field("timestamp").nullable
    assert schema.field("timestamp_out").type == TS
    assert schema.field("trade_count").type == pa.int64()
    assert schema.field("price_vwap").type == pa.float64()


def test_no_data_at_all_gives_a_dense_grid_of_nulls_and_nans() -> None:
    out = build_candles(DAY, trades=None, liquidations=None, derivative_ticker=None, book=None)
    assert {tf: t.num_rows for tf, t in out.items()} == {tf: US_PER_DAY // n for tf, n in TIMEFRAMES.items()}
    t = out["1h"]
    assert t.column("trade_count").null_count == 24 and t.column("liquidation_count").null_count == 24
    assert all(math.isnan(v) for v in t.column("volume").to_pylist())


def _trades(rows: list[tuple[int, int, float, float, str | None]], side_type=None) -> pa.Table:
    ts, local, price, amount, side = zip(*rows, strict=True) if rows else ([], [], [], [], [])
    side_arr = pa.array(list(side), type=pa.string())
    if side_type is None:
        side_arr = side_arr.dictionary_encode()
    return pa.table(
        {
            "timestamp": pa.array(list(ts), type=pa.int64()).cast(TS),
            "local_timestamp": pa.array(list(local), type=pa.int64()).cast(TS),
            "id": pa.nulls(len(rows), pa.string()),
            "side": side_arr,
            "price": pa.array(list(price), type=pa.float64()),
            "amount": pa.array(list(amount), type=pa.float64()),
        }
    )


def test_empty_sources_give_zeros_and_missing_sources_give_nulls() -> None:
    empty = _trades([])
    out = build_candles(DAY, trades=empty, liquidations=empty, derivative_ticker=None, book=None)["4h"]
    assert out.column("trade_count").to_pylist() == [0] * 6
    assert out.column("volume").to_pylist() == [0.0] * 6
    assert out.column("liquidation_count").to_pylist() == [0] * 6
    assert all(math.isnan(v) for v in out.column("open").to_pylist())
    assert all(math.isnan(v) for v in out.column("liquidation_with_rising_oi").to_pylist())  # no OI known


def test_hand_computed_bucket() -> None:
    """One minute worked out by hand: sides, unknowns, ties, out-of-day rows, NaN rows, delays."""
    t0 = START + 60 * SEC  # the second minute
    rows = [
        (t0 + 5 * SEC, t0 + 5 * SEC + 2_000, 100.0, 1.0, "buy"),
        (t0 - 1, t0 + 1_000, 555.0, 9.0, "buy"),  # previous minute
        (t0 + 1 * SEC, t0 + 6 * SEC, 99.0, 2.0, "sell"),  # arrives later, happened first: the open
        (t0 + 59 * SEC, t0 + 59 * SEC + 4_000, 101.0, 1.0, None),  # unknown side
        (t0 + 59 * SEC, t0 + 59 * SEC + 8_000, 102.0, 4.0, "unknown"),  # same stamp, later: the close
        (t0 + 30 * SEC, t0 + 30 * SEC + 1_000, float("nan"), 1.0, "buy"),  # no price: ignored
        (START - 1, START + 10, 1.0, 1.0, "buy"),  # previous day
        (START + US_PER_DAY, START + US_PER_DAY + 10, 1.0, 1.0, "buy"),  # next day
    ]
    for side_type in (None, "string"):
        out = build_candles(DAY, trades=_trades(rows, side_type), liquidations=None, derivative_ticker=None,
                            book=None, timeframes=("1m",))["1m"]  # fmt: skip
        row = out.slice(1, 1).to_pylist()[0]
        assert (row["open"], row["high"], row["low"], row["close"]) == (99.0, 102.0, 99.0, 102.0)
        assert (row["volume"], row["trade_count"], row["buy_volume_sum"], row["sell_volume_sum"]) == (
            8.0,
            4,
            1.0,
            2.0,
        )
        assert row["price_vwap"] == pytest.approx((100 + 198 + 101 + 408) / 8)
        assert row["size_avg"] == 2.0
        # delays (µs): 2000, 5_000_000, 4000, 8000 -> median (4000 + 8000) / 2 = 6 ms
        assert row["delay_median"] == 6.0 and row["delay_min"] == 2.0 and row["delay_max"] == 5000.0
        assert row["delay_mean"] == pytest.approx((2_000 + 5_000_000 + 4_000 + 8_000) / 4 / 1000)
        first = out.slice(0, 1).to_pylist()[0]
        assert first["trade_count"] == 1 and first["close"] == 555.0  # t0 - 1 is in minute 0
        assert sum(out.column("trade_count").to_pylist()) == 5


def test_timeframe_subsets_give_the_same_numbers() -> None:
    d = make_day(DAY, 5, n_trades=4_000, n_book=5_000)
    tables = {k: v for k, v in d.tables().items()}
    full = build_candles(DAY, **tables)
    part = build_candles(DAY, **tables, timeframes=["24h", "5m"])
    assert list(part) == ["5m", "24h"]
    for tf in part:
        assert part[tf].to_pylist() == full[tf].to_pylist() or _same_with_nan(part[tf], full[tf])


def _same_with_nan(a: pa.Table, b: pa.Table) -> bool:
    for name in a.column_names:
        x, y = a.column(name).to_pylist(), b.column(name).to_pylist()
        for p, q in zip(x, y, strict=True):
            if not (p == q or (isinstance(p, float) and math.isnan(p) and math.isnan(q))):
                return False
    return True


def test_chunked_inputs_with_different_dictionaries_and_ns_timestamps() -> None:
    d = make_day(DAY, 6, n_trades=3_000, n_book=3_000)
    trades = d.trades
    half = trades.num_rows // 2
    # Second chunk with its own dictionary order, and nanosecond timestamps.
    a = trades.slice(0, half)
    b = trades.slice(half)
    b = b.set_column(b.schema.get_field_index("side"), "side",
                     pa.chunked_array([pa.array(b.column("side").to_pylist(), pa.string()).dictionary_encode()]))  # fmt: skip
    mixed = pa.concat_tables([a, b.cast(a.schema)], promote_options="default")
    mixed = mixed.cast(
        pa.schema(
            [pa.field(f.name, pa.timestamp("ns", tz="UTC") if f.type == TS else f.type) for f in mixed.schema]
        )
    )
    base = build_candles(DAY, trades=trades, liquidations=None, derivative_ticker=None, book=None)["1m"]
    other = build_candles(DAY, trades=mixed, liquidations=None, derivative_ticker=None, book=None)["1m"]
    assert _same_with_nan(base, other)


def test_bad_inputs_are_one_line_usage_errors() -> None:
    d = make_day(DAY, 7, n_trades=500, n_book=500)
    with pytest.raises(UsageError, match="unknown timeframe '3m'"):
        build_candles(
            DAY, trades=d.trades, liquidations=None, derivative_ticker=None, book=None, timeframes=["3m"]
        )
    with pytest.raises(UsageError, match="no column 'amount'"):
        build_candles(DAY, trades=d.trades.drop_columns(["amount"]), liquidations=None, derivative_ticker=None,
                      book=None)  # fmt: skip
    with pytest.raises(UsageError, match="book table has no column 'bid_amount_3'"):
        build_candles(DAY, trades=None, liquidations=None, derivative_ticker=None,
                      book=d.book.drop_columns(["bid_amount_3"]))  # fmt: skip
    nulls = d.trades.set_column(0, "timestamp", pa.nulls(d.trades.num_rows, TS))
    with pytest.raises(UsageError, match="null timestamps"):
        build_candles(DAY, trades=nulls, liquidations=None, derivative_ticker=None, book=None)


def test_option_selection_rules() -> None:
    """Nearest qualifying expiry, ATM by |delta| nearest 0.5, 25-delta wings, the last row per option."""
    exp_soon = START + 8 * 3_600 * SEC
    exp_next = START + US_PER_DAY + 8 * 3_600 * SEC
    t = START + 10 * SEC
    rows = [
        ("A-C", t, "call", 100.0, exp_soon, 0.53, 50.0),
        ("A-P", t, "put", 100.0, exp_soon, -0.46, 51.0),
        ("B-C", t, "call", 110.0, exp_soon, 0.26, 45.0),
        ("B-P", t, "put", 90.0, exp_soon, -0.20, 60.0),
        ("C-P", t, "put", 80.0, exp_soon, -0.27, 66.0),
        ("N-C", t, "call", 100.0, exp_next, 0.50, 70.0),
        ("N-P", t, "put", 95.0, exp_next, -0.25, 72.0),
        ("N-W", t, "call", 120.0, exp_next, 0.25, 60.0),
        ("A-P", t + 5 * SEC, "put", 100.0, exp_soon, -0.51, 52.0),  # replaces A-P: now the nearest to 0.5
        ("A-C", START + 20 * SEC, "call", 100.0, exp_soon, 0.5, 40.0),  # after bucket 0's end: not yet seen
    ]
    table = pa.table(
        {
            "timestamp": pa.array([r[1] for r in rows], pa.int64()).cast(TS),
            "local_timestamp": pa.array([r[1] + 1000 for r in rows], pa.int64()).cast(TS),
            "symbol": pa.array([r[0] for r in rows]).dictionary_encode(),
            "type": pa.array([r[2] for r in rows]).dictionary_encode(),
            "strike_price": [r[3] for r in rows],
            "expiration": pa.array([r[4] for r in rows], pa.int64()).cast(TS),
            "delta": [r[5] for r in rows],
            "mark_iv": [r[6] for r in rows],
        }
    )
    out = build_candles(DAY, trades=None, liquidations=None, derivative_ticker=None, book=None,
                        options_chain=table, timeframes=("15s", "1h"))  # fmt: skip
    atm = out["15s"].column("atm_mark_iv").to_pylist()
    skew = out["15s"].column("skew_25d_put_call_ratio").to_pylist()
    assert atm[0] == 52.0  # A-P after its second row (|-0.51| is 0.01 from 0.5)
    assert skew[0] == 66.0 / 45.0  # C-P (-0.27, 0.02 away) beats B-P (-0.20); call B-C (0.26)
    assert atm[1] == 40.0  # bucket 1 ends at 00:00:30: the new A-C row (delta 0.5) is in force
    # From 07:00 the 08:00 expiry is less than an hour away: the next expiry takes over.
    i = (7 * 3_600 - 15) * SEC // (15 * SEC)  # bucket ending exactly at 07:00 still uses it
    assert atm[i] == 40.0 and atm[i + 1] == 70.0
    assert skew[i + 1] == 72.0 / 60.0
    hours = out["1h"].column("atm_mark_iv").to_pylist()
    assert hours[6] == 40.0 and hours[7] == 70.0  # state at each hour's close (07:00 still qualifies)
    assert np.isnan(out["15s"].column("mid_price").to_pylist()[0])
