"""Shared helpers for the warehouse tests (no tests here): candle files written like the candles stage does.

Files use the real feature spec's schema (``features.spec.candle_schema()``) when it is installed, else a small
stand-in schema, and are published through the lake's own Parquet writer with ``instrument_key`` provenance.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from mdth_engine.core.timeframes import TIMEFRAMES, day_start_us
from mdth_engine.stages.registry import StageContext
from mdth_engine.storage import layout
from mdth_engine.storage.parquet import write_table

UTC_US = pa.timestamp("us", tz="UTC")
KEYS = ("BINANCE:SPOT_PAIR:BTC-USDT", "BINANCE-FUTURES:PERPETUAL:BTC-USDT", "DERIBIT:PERPETUAL:BTC-USD")


def candle_schema() -> pa.Schema:
    try:
        from mdth_engine.features.spec import candle_schema as spec
    except ImportError:
        return pa.schema(
            [
                pa.field("timestamp", UTC_US, nullable=False),
                pa.field("timestamp_out", UTC_US, nullable=False),
                pa.field("open", pa.float64()),
                pa.field("close", pa.float64()),
                pa.field("volume", pa.float64()),
                pa.field("trade_count", pa.int64()),
                pa.field("price_vwap", pa.float64()),
            ]
        )
    return spec()


def candle_table(
    day: dt.date,
    timeframe: str,
    seed: int,
    *,
    extra: dict[str, pa.DataType] | None = None,
    retype: dict[str, pa.DataType] | None = None,
    shift_us: int = 0,
    rows: int | None = None,
) -> pa.Table:
    """A dense day of candles with seeded values (NaN prices in buckets without trades), like the real files."""
    schema = candle_schema()
    step = TIMEFRAMES[timeframe]
    n = rows if rows is not None else 86_400_000_000 // step
    rng = np.random.default_rng(seed)
    ts = day_start_us(day) + np.arange(n, dtype=np.int64) * step + shift_us
    trades = rng.integers(0, 40, n)
    trades[rng.random(n) < 0.1] = 0
    columns: dict[str, pa.Array] = {}
    fields = list(schema) + [pa.field(k, v) for k, v in (extra or {}).items()]
    for field in fields:
        typ = (retype or {}).get(field.name, field.type)
        if field.name == "timestamp":
            columns[field.name] = pa.array(ts, UTC_US)
        elif field.name == "timestamp_out":
            columns[field.name] = pa.array(ts + step, UTC_US)
        elif field.name == "trade_count":
            columns[field.name] = pa.array(trades, typ)
        elif pa.types.is_integer(typ):
            columns[field.name] = pa.array(rng.integers(0, 1000, n), typ)
        else:
            values = rng.normal(100.0, 5.0, n)
            values[trades == 0] = np.nan
            columns[field.name] = pa.array(values, typ)
    return pa.table(columns)


def write_candles(store: Any, day: dt.date, timeframe: str, key: str, table: pa.Table) -> str:
    path = layout.candles_path(day, timeframe, key)
    write_table(store, path, table, {"instrument_key": key, "data_type": "candles"})
    return path


def fill_lake(
    store: Any, days: list[dt.date], timeframes: list[str], keys: tuple[str, ...] = KEYS, seed: int = 0
) -> dict[tuple[dt.date, str, str], pa.Table]:
    """Candle files for every (day, timeframe, key); returns what was written."""
    written = {}
    for d_i, day in enumerate(days):
        for t_i, tf in enumerate(timeframes):
            for k_i, key in enumerate(keys):
                table = candle_table(day, tf, seed + 1000 * d_i + 100 * t_i + k_i)
                write_candles(store, day, tf, key, table)
                written[(day, tf, key)] = table
    return written


def context(store: Any, tmp_path: Path, warehouse: str | None = None) -> StageContext:
    from mdth_engine.core.settings import load_settings

    settings = load_settings(lake=store.url, warehouse=warehouse or f"duckdb:///{tmp_path / 'wh.duckdb'}")
    return StageContext(settings=settings, store=store, spool_dir=tmp_path / "spool")


def assert_same_rows(actual: pa.Table, expected: pa.Table, columns: list[str] | None = None) -> None:
    """Column by column, NaN equal to NaN; ``actual`` may carry more columns (day, instrument_key)."""
    assert actual.num_rows == expected.num_rows, (actual.num_rows, expected.num_rows)
    for name in columns or expected.column_names:
        got = actual.column(name).to_numpy(zero_copy_only=False)
        want = expected.column(name).to_numpy(zero_copy_only=False)
        np.testing.assert_array_equal(got, want, err_msg=name)
