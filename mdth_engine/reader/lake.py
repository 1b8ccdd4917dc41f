"""Ticks and candles of one instrument over a time range, or around a list of instants, as Arrow tables.

What ``Lake.ticks`` / ``sparse_ticks`` / ``candles`` / ``sparse_candles`` do (DESIGN.md section 4):

- Times are UTC; ranges are ``[start, end)``; see ``times.py`` for what is accepted.
- Ticks are selected by exchange ``timestamp`` by default (``by="local_timestamp"`` for arrival time). Tick
  files are split by arrival day, so a range near midnight also looks into the neighbouring day's file (only
  its footer, unless rows match). Rows come in file (arrival) order, day after day.
- Candles are selected by bucket start (``timestamp``).
- Sparse reads take many instants at once and read each file once: ``sparse_ticks`` returns the rows in
  ``[t - buffer, t + buffer)``, ``sparse_candles`` the candles starting in ``[t - buffer, t + buffer]``, with a
  leading ``query_time`` column, queries in the order given (a row near two instants appears under both).
- A day whose file is missing gives a ``LakeWarning`` naming it (an empty file means "empty at source" and is
  silent); a key no instrument master lists is a UsageError with the closest keys.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from mdth_engine.core.errors import UsageError
from mdth_engine.core.schemas import DATA_TYPES, TS, schema_for
from mdth_engine.core.timeframes import TIMEFRAMES, US_PER_SECOND
from mdth_engine.reader import scan
from mdth_engine.reader.times import duration_us, to_us, us_day
from mdth_engine.storage import layout

# Tick rows whose exchange time is this far from their arrival day can sit in the neighbouring day's file.
SPILL_US = 10 * 60 * US_PER_SECOND
TIME_COLUMNS = ("timestamp", "local_timestamp")
QUERY_COLUMN = "query_time"
_MASTER_CACHE = 64


class LakeWarning(UserWarning):
    """Data the lake does not hold for a read (a day never downloaded or built): the result is partial."""


@dataclasses.dataclass(frozen=True)
class _Source:
    """Where one key's rows live and how to narrow them."""

    key: str  # canonical key asked for
    kind: str  # data type, or "candles"
    timeframe: str | None
    file_key: str  # the file's key (the chain for an option's options_chain rows)
    schema: pa.Schema
    row_filter: str | None  # instrument_key to keep, for rows of one option in its chain's file

    def path(self, day: dt.date) -> str:
        if self.timeframe is not None:
            return layout.candles_path(day, self.timeframe, self.file_key)
        return layout.raw_path(day, self.kind, self.file_key)

    def what(self) -> str:
        return f"{self.timeframe} candles" if self.timeframe else f"{self.kind} file"


def ticks(
    lake: Any,
    key: str,
    data_type: str,
    start: Any,
    end: Any,
    *,
    columns: Sequence[str] | None = None,
    by: str = "timestamp",
) -> pa.Table:
    source = _tick_source(lake, key, data_type)
    window = _range(start, end)
    return _read(lake, source, [window], columns, _check_by(by), SPILL_US)[0]


def sparse_ticks(
    lake: Any,
    key: str,
    data_type: str,
    times: Iterable[Any],
    *,
    buffer: Any = "1m",
    columns: Sequence[str] | None = None,
    by: str = "timestamp",
) -> pa.Table:
    source = _tick_source(lake, key, data_type)
    pad = duration_us(buffer)
    instants = _instants(times)
    windows = [(t - pad, t + pad) for t in instants]
    tables = _read(lake, source, windows, columns, _check_by(by), SPILL_US)
    return _with_queries(instants, tables, _project(source.schema, columns))


def candles(
    lake: Any, key: str, timeframe: str, start: Any, end: Any, *, columns: Sequence[str] | None = None
) -> pa.Table:
    source = _candle_source(lake, key, timeframe)
    return _read(lake, source, [_range(start, end)], columns, "timestamp", 0)[0]


def sparse_candles(
    lake: Any,
    key: str,
    times: Iterable[Any],
    timeframe: str = "1m",
    *,
    buffer: Any = "5m",
    columns: Sequence[str] | None = None,
) -> pa.Table:
    source = _candle_source(lake, key, timeframe)
    pad = duration_us(buffer)
    instants = _instants(times)
    windows = [(t - pad, t + pad + 1) for t in instants]  # both ends inclusive
    tables = _read(lake, source, windows, columns, "timestamp", 0)
    return _with_queries(instants, tables, _project(source.schema, columns))


# --- sources and arguments ----------------------------------------------------------------------------------


def _canonical(key: str) -> Any:
    from mdth_engine.core.keys import parse_key

    if not isinstance(key, str):
        raise UsageError(f"instrument key {key!r} must be a string like BINANCE:SPOT_PAIR:BTC-USDT")
    return parse_key(key)


def _tick_source(lake: Any, key: str, data_type: str) -> _Source:
    parsed = _canonical(key)
    if data_type not in DATA_TYPES:
        raise UsageError(f"unknown data type {data_type!r}; known: {', '.join(DATA_TYPES)}")
    canonical = str(parsed)
    file_key, row_filter = canonical, None
    if data_type == "options_chain" and parsed.type == "OPTION":
        file_key, row_filter = str(parsed.chain_key()), canonical
    return _Source(canonical, data_type, None, file_key, schema_for(data_type), row_filter)


def _candle_source(lake: Any, key: str, timeframe: str) -> _Source:
    from mdth_engine.features.spec import candle_schema

    canonical = str(_canonical(key))
    if timeframe not in TIMEFRAMES:
        raise UsageError(f"unknown timeframe {timeframe!r}; known: {', '.join(TIMEFRAMES)}")
    return _Source(canonical, "candles", timeframe, canonical, candle_schema(), None)


def _check_by(by: str) -> str:
    if by not in TIME_COLUMNS:
        raise UsageError(f"by={by!r}: select ticks by 'timestamp' (exchange time) or 'local_timestamp'")
    return by


def _range(start: Any, end: Any) -> tuple[int, int]:
    first, last = to_us(start, "start"), to_us(end, "end")
    if last < first:
        raise UsageError(f"end {end!r} is before start {start!r}")
    return first, last


def _instants(times: Iterable[Any]) -> list[int]:
    if isinstance(times, str | dt.date):
        times = [times]
    try:
        values = list(times)
    except TypeError:
        raise UsageError(f"times {times!r} must be a list of instants") from None
    return [to_us(t, f"times[{i}]") for i, t in enumerate(values)]


def _with_queries(instants: list[int], tables: list[pa.Table], schema: pa.Schema) -> pa.Table:
    """One table: each query's rows behind a ``query_time`` column, in query order."""
    parts = []
    for t, table in zip(instants, tables, strict=True):
        query = pa.array([t] * table.num_rows, type=pa.int64()).cast(TS)
        parts.append(table.add_column(0, pa.field(QUERY_COLUMN, TS, nullable=False), query))
    if not parts:
        return pa.schema([pa.field(QUERY_COLUMN, TS, nullable=False), *schema]).empty_table()
    return pa.concat_tables(parts)


# --- reading ------------------------------------------------------------------------------------------------


def _read(
    lake: Any,
    source: _Source,
    windows: list[tuple[int, int]],
    columns: Sequence[str] | None,
    by: str,
    spill: int,
) -> list[pa.Table]:
    """Per window, the rows of every day file that may hold them, concatenated day after day."""
    wanted = _check_columns(source.schema, columns)
    read_columns = wanted
    if source.row_filter and "instrument_key" not in wanted:
        read_columns = [*wanted, "instrument_key"]
    core: set[dt.date] = set()
    files: dict[dt.date, list[int]] = {}
    for w, (start, end) in enumerate(windows):
        if end <= start:
            continue
        core.update(_days(start, end - 1))
        for day in _days(start - spill, end - 1 + spill):
            files.setdefault(day, []).append(w)
    _check_key(lake, source, sorted(core))
    results: list[list[pa.Table]] = [[] for _ in windows]
    missing: list[dt.date] = []
    for day in sorted(files):
        path = source.path(day)
        if lake.store.stat(path) is None:
            if day in core:
                missing.append(day)
            continue
        ws = files[day]
        tables = scan.read_windows(lake.store, path, [windows[w] for w in ws], columns=read_columns, by=by)
        for w, table in zip(ws, tables, strict=True):
            if source.row_filter:
                keep = pc.fill_null(
                    pc.equal(table["instrument_key"].cast(pa.string()), source.row_filter), False
                )
                table = table.filter(keep).select(wanted)
            if table.num_rows:
                results[w].append(table)
    if missing:
        shown = ", ".join(d.isoformat() for d in missing[:5]) + (", ..." if len(missing) > 5 else "")
        warnings.warn(
            f"{source.key}: no {source.what()} in the lake for {len(missing)} day(s): {shown} "
            "(not downloaded or not built); the result holds the other days",
            LakeWarning,
            stacklevel=4,
        )
    empty = _project(source.schema, wanted).empty_table()
    return [pa.concat_tables(parts) if parts else empty for parts in results]


def _check_columns(schema: pa.Schema, columns: Sequence[str] | None) -> list[str]:
    if columns is None:
        return list(schema.names)
    if isinstance(columns, str):
        columns = [columns]
    wanted = list(dict.fromkeys(columns))
    unknown = [c for c in wanted if c not in schema.names]
    if unknown:
        raise UsageError(f"unknown column {unknown[0]!r}; columns: {', '.join(schema.names)}")
    return wanted


def _project(schema: pa.Schema, columns: Sequence[str] | None) -> pa.Schema:
    return pa.schema([schema.field(c) for c in _check_columns(schema, columns)])


def _days(start_us: int, end_us: int) -> list[dt.date]:
    first, last = us_day(start_us), us_day(end_us)
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


# --- instrument masters -------------------------------------------------------------------------------------

_masters: OrderedDict[tuple[str, str, str | None], frozenset[str]] = OrderedDict()
_masters_lock = threading.Lock()


def master_keys(store: Any, day: dt.date) -> frozenset[str] | None:
    """Keys of the day's instrument master (cached per file generation), or None when it was never built."""
    from mdth_engine.stages.instruments import read_instruments

    path = layout.instruments_path(day)
    info = store.stat(path)
    if info is None:
        return None
    cache_key = (store.url, path, info.generation)
    with _masters_lock:
        if cache_key in _masters:
            _masters.move_to_end(cache_key)
            return _masters[cache_key]
    table = read_instruments(store, path)
    keys = frozenset(table["instrument_key"].to_pylist()) if table is not None else frozenset()
    with _masters_lock:
        _masters[cache_key] = keys
        while len(_masters) > _MASTER_CACHE:
            _masters.popitem(last=False)
    return keys


def _check_key(lake: Any, source: _Source, days: list[dt.date]) -> None:
    """The key must be listed on some day of the range whose master exists; else the closest keys are named."""
    first_built = None
    for day in days:
        keys = master_keys(lake.store, day)
        if keys is None:
            continue
        if source.key in keys:
            return
        first_built = first_built or day
    if first_built is not None:
        lake.instrument(source.key, first_built)  # raises the UsageError with the closest keys
        raise UsageError(f"{source.key} is not in the instrument master of {first_built}")
    # No master for any day of the range: nothing to check against; missing files are warned about.
