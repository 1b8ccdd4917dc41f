"""Warm start: the last N candles of each (instrument, timeframe) that the lake holds before the stream begins.

Candle files are one per (day, timeframe, instrument) with a dense grid; days are read newest first (only
existing files: one stat each; a day file is at most 5,760 bars) until N bars that end at or before
``before_us`` are found, or the look-back (N bars of the timeframe, plus a day) is exhausted. The bars come back oldest first, ``warm=True``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pyarrow as pa

from mdth_engine.core.timeframes import TIMEFRAMES, US_PER_DAY
from mdth_engine.features.spec import CANDLE_COLUMNS
from mdth_engine.live.events import Bar
from mdth_engine.storage import layout

_UNIX = dt.date(1970, 1, 1)


def last_bars(store: Any, key: str, timeframe: str, before_us: int, count: int = 100) -> list[Bar]:
    """Up to ``count`` lake candles of ``key`` whose bar ended at or before ``before_us``, oldest first."""
    from mdth_engine.reader.scan import read_windows

    if count <= 0:
        return []
    tf_us = TIMEFRAMES[timeframe]
    last_day = _UNIX + dt.timedelta(days=(before_us - 1) // US_PER_DAY)
    days_back = (count * tf_us) // US_PER_DAY + 1
    window = (-(2**62), before_us - tf_us + 1)  # bucket starts of bars that ended by ``before_us``
    found: list[pa.Table] = []
    rows = 0
    for back in range(days_back + 1):
        day = last_day - dt.timedelta(days=back)
        path = layout.candles_path(day, timeframe, key)
        if store.stat(path) is None:
            continue
        (table,) = read_windows(store, path, [window])
        if table.num_rows:
            found.append(table)
            rows += table.num_rows
            if rows >= count:
                break
    if not found:
        return []
    table = pa.concat_tables(list(reversed(found)), promote_options="permissive")
    table = table.slice(max(0, table.num_rows - count))
    return [_bar(key, timeframe, row) for row in _rows(table)]


def _rows(table: pa.Table) -> list[dict[str, Any]]:
    columns = [c for c in CANDLE_COLUMNS if c in table.column_names]
    data: dict[str, list[Any]] = {}
    for name in columns:
        col = table.column(name)
        if pa.types.is_timestamp(col.type):
            col = col.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
        values = col.to_pylist()
        if pa.types.is_floating(col.type):
            values = [float("nan") if v is None else v for v in values]
        data[name] = values
    return [{name: data[name][i] for name in columns} for i in range(table.num_rows)]


def _bar(key: str, timeframe: str, row: dict[str, Any]) -> Bar:
    return Bar(key, timeframe, row, warm=True)
