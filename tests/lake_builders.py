"""Small lakes for the reader and candles tests: instrument masters and tick files in the lake schemas.

Tick files are split by arrival day like Tardis files: a day's file holds the rows whose ``local_timestamp``
falls in it, sorted by it, so rows stamped just before midnight sit in the next day's file.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

import numpy as np
import pyarrow as pa

from mdth_engine.core.keys import VENUE_TO_EXCHANGE, parse_key
from mdth_engine.core.schemas import TS, schema_for
from mdth_engine.core.timeframes import US_PER_DAY, US_PER_SECOND, day_start_us
from mdth_engine.stages.instruments import to_table
from mdth_engine.storage import layout
from mdth_engine.storage.parquet import write_table

DAY = dt.date(2024, 1, 1)
SPOT = "BINANCE:SPOT_PAIR:BTC-USDT"
PERP = "BINANCE-FUTURES:PERPETUAL:BTC-USDT"
CHAIN = "DERIBIT:OPTION_CHAIN:BTC-USD"
CALL = "DERIBIT:OPTION:BTC-USD-240628-60000-CALL"
PUT = "DERIBIT:OPTION:BTC-USD-240628-60000-PUT"


def master_row(key: str) -> dict[str, Any]:
    k = parse_key(key)
    data_types = ["options_chain"] if k.type == "OPTION_CHAIN" else ["trades", "book_snapshot_5"]
    if k.type == "PERPETUAL":
        data_types += ["derivative_ticker", "liquidations"]
    return {
        "instrument_key": key,
        "venue": k.venue,
        "instrument_type": k.type,
        "base_asset": k.base,
        "quote_asset": k.quote,
        "tardis_exchange": VENUE_TO_EXCHANGE[k.venue],
        "tardis_symbol": "OPTIONS" if k.type == "OPTION_CHAIN" else k.symbol.replace("-", ""),
        "data_types": sorted(data_types),
    }


def write_master(store: Any, day: dt.date, keys: list[str]) -> None:
    write_table(store, layout.instruments_path(day), to_table([master_row(k) for k in keys]), {})


def ts_array(values: np.ndarray) -> pa.Array:
    return pa.array(np.asarray(values, dtype=np.int64), type=TS)


def arrival_trades(
    day: dt.date, n: int, seed: int, *, max_delay_us: int = 3 * US_PER_SECOND, bursty: bool = False
) -> pa.Table:
    """``n`` trades arriving during ``day`` (sorted by local_timestamp); the first few are stamped the day before."""
    rng = np.random.default_rng(seed)
    start = day_start_us(day)
    if bursty:  # minute intensities vary like a real market's (lognormal), times uniform inside a minute
        weights = np.exp(rng.normal(0, 0.8, 1440)) * (1.2 + np.sin(np.arange(1440) / 1440 * 2 * np.pi))
        counts = rng.multinomial(n, weights / weights.sum())
        local = np.repeat(np.arange(1440, dtype=np.int64) * 60 * US_PER_SECOND, counts)
        local += rng.integers(0, 60 * US_PER_SECOND, n)
    else:
        local = rng.integers(0, US_PER_DAY, n)
    local = np.sort(local) + start
    local[0] = start + 1000  # always a row stamped the day before (arrived just after midnight)
    delay = rng.integers(1000, max_delay_us, n)
    delay[0] = 5000
    exchange = local - delay
    price = np.round(42_000 + np.cumsum(rng.normal(0, 0.5, n)), 1)
    table = pa.table(
        {
            "timestamp": ts_array(exchange),
            "local_timestamp": ts_array(local),
            "id": pa.array((np.arange(n) + 3_000_000_000 + seed * 10_000_000).astype(str)),
            "side": pa.array(np.where(rng.random(n) < 0.5, "buy", "sell")).dictionary_encode(),
            "price": price,
            "amount": np.round(rng.lognormal(-4, 1.3, n), 4),
        }
    )
    return table.cast(schema_for("trades"))


def book_table(day: dt.date, n: int, seed: int) -> pa.Table:
    """Book snapshots at regular arrival times through ``day``."""
    rng = np.random.default_rng(seed)
    start = day_start_us(day)
    local = start + 500 + np.arange(n, dtype=np.int64) * (US_PER_DAY // n)
    exchange = local - rng.integers(100, 5000, n)
    mid = 42_000 + np.cumsum(rng.normal(0, 1, n))
    columns: dict[str, Any] = {"timestamp": ts_array(exchange), "local_timestamp": ts_array(local)}
    for level in range(1, 6):
        columns[f"ask_price_{level}"] = mid + 0.5 * level
        columns[f"ask_amount_{level}"] = rng.uniform(0.1, 2, n)
        columns[f"bid_price_{level}"] = mid - 0.5 * level
        columns[f"bid_amount_{level}"] = rng.uniform(0.1, 2, n)
    return pa.table(columns).cast(schema_for("book_snapshot_5"))


def fake_sha(table: pa.Table, salt: str = "") -> str:
    """A stand-in for the Tardis source hash: changes whenever the rows do."""
    digest = hashlib.sha256(salt.encode())
    for column in table.columns:
        for chunk in column.chunks:
            for buf in chunk.buffers():
                if buf is not None:
                    digest.update(buf)
    return digest.hexdigest()


def write_ticks(
    store: Any,
    day: dt.date,
    data_type: str,
    key: str,
    table: pa.Table,
    *,
    row_group_size: int | None = None,
    page_rows: int | None = None,
    sha: str | None = None,
) -> str:
    """A tick file as the download stage writes it (``page_rows``: with pages of that many rows, see below)."""
    path = layout.raw_path(day, data_type, key)
    provenance = {"data_type": data_type, "instrument_key": key, "source_sha256": sha or fake_sha(table)}
    from mdth_engine.stages.download import tick_write_options

    schema = schema_for(data_type)
    options = tick_write_options(data_type, schema)
    options["row_group_size"] = row_group_size or options["row_group_size"]
    if page_rows:
        options["max_rows_per_page"] = page_rows
    write_table(store, path, table, provenance, schema=schema, **options)
    return path


def split_by_arrival(table: pa.Table, day: dt.date) -> tuple[pa.Table, pa.Table]:
    """(rows arriving on ``day``, rows arriving later)."""
    local = table["local_timestamp"].cast(pa.int64()).to_numpy()
    end = day_start_us(day) + US_PER_DAY
    inside = local < end
    return table.filter(pa.array(inside)), table.filter(pa.array(~inside))
