"""Candle checks of one instrument-day: current, on the grid, equal to their ticks, consistent across levels.

- candles: candle files exist where trades do, and list the inputs the lake holds now (the candles stage's
  own staleness rule); otherwise a warning saying what to rebuild.
- candle_grid: every timeframe file has exactly the day's buckets (UTC-aligned, ``timestamp_out`` = end).
- candle_totals: each timeframe's sum of ``trade_count`` equals the trades stamped inside the day (in the
  day's file and the neighbour files the candles list), and its sum of ``volume`` their summed amount
  within a relative ``VOLUME_RTOL`` (summation order differs).
- candle_aggregation: each present timeframe against the next finer present one: trade_count sums exactly,
  volume within ``VOLUME_RTOL``, high = max, low = min, open = first and close = last non-NaN child.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mdth_engine.core.timeframes import TIMEFRAMES, US_PER_DAY, day_start_us
from mdth_engine.storage import layout
from mdth_engine.validation import report as rp
from mdth_engine.validation.content import fmt_clock

VOLUME_RTOL = 1e-9
CANDLE_COLUMNS = ["timestamp", "timestamp_out", "open", "high", "low", "close", "volume", "trade_count"]


def _row(key: str, check: str, status: str, detail: str, **kw: Any) -> rp.Check:
    return rp.Check(key, rp.CANDLES, check, status, rp.PRESENT, detail=detail, **kw)


def read_candles(store: Any, path: str) -> tuple[pa.Table, dict[str, str]]:
    """The columns the checks need, and the file's provenance."""
    from mdth_engine.storage.parquet import provenance_of

    with store.open_read(path) as handle:
        parquet = pq.ParquetFile(handle)
        table = parquet.read(columns=CANDLE_COLUMNS)
        return table, provenance_of(parquet.metadata)


def _np(table: pa.Table, name: str, dtype: Any = np.float64) -> np.ndarray:
    column = table[name]
    if pa.types.is_timestamp(column.type):
        column = column.cast(pa.int64())
    if column.null_count:
        return column.cast(pa.float64()).fill_null(float("nan")).to_numpy()
    return column.to_numpy().astype(dtype, copy=False)


def grid_problem(table: pa.Table, day: dt.date, timeframe: str) -> str:
    """Why a timeframe file is not the day's dense bucket grid ("" when it is)."""
    tf = TIMEFRAMES[timeframe]
    n = US_PER_DAY // tf
    ts = _np(table, "timestamp", np.int64).astype(np.int64)
    out = _np(table, "timestamp_out", np.int64).astype(np.int64)
    grid = day_start_us(day) + np.arange(n, dtype=np.int64) * tf
    if ts.size == n and np.array_equal(ts, grid) and np.array_equal(out, grid + tf):
        return ""
    have = np.unique(ts)
    missing = np.setdiff1d(grid, have, assume_unique=True)
    extra = ts.size - np.isin(ts, grid).sum() + (ts.size - have.size)
    parts = []
    if missing.size:
        parts.append(f"{missing.size} buckets missing (first {fmt_clock(int(missing[0]))})")
    if extra:
        parts.append(f"{int(extra)} rows off the grid or repeated")
    if not parts:
        if not np.array_equal(ts, grid):
            parts.append("buckets out of order")
        else:
            parts.append("timestamp_out is not the bucket end")
    return f"{timeframe}: " + ", ".join(parts)


def _first_valid(children: np.ndarray, last: bool = False) -> np.ndarray:
    valid = ~np.isnan(children)
    if last:
        children, valid = children[:, ::-1], valid[:, ::-1]
    index = np.argmax(valid, axis=1)
    out = children[np.arange(children.shape[0]), index]
    return np.where(valid.any(axis=1), out, np.nan)


def _same(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a == b) | (np.isnan(a) & np.isnan(b))


def _close(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.isclose(a, b, rtol=VOLUME_RTOL, atol=1e-12, equal_nan=True)


def aggregation_problem(fine: pa.Table, coarse: pa.Table, fine_tf: str, coarse_tf: str) -> tuple[int, str]:
    """Buckets of ``coarse`` that do not follow from ``fine`` (both on the grid), and the first in words."""
    ratio = TIMEFRAMES[coarse_tf] // TIMEFRAMES[fine_tf]
    n = coarse.num_rows
    bad = np.zeros(n, dtype=bool)
    first_reason: dict[int, str] = {}

    def mark(mask: np.ndarray, what: str) -> None:
        for i in np.nonzero(mask & ~bad)[0][:1]:
            first_reason.setdefault(int(i), what)
        bad[:] |= mask

    counts_f, counts_c = fine["trade_count"], coarse["trade_count"]
    if counts_f.null_count == 0 and counts_c.null_count == 0:
        mark(
            _np(fine, "trade_count", np.int64).reshape(n, ratio).sum(axis=1)
            != _np(coarse, "trade_count", np.int64),
            "trade_count",
        )
    mark(~_close(_np(fine, "volume").reshape(n, ratio).sum(axis=1), _np(coarse, "volume")), "volume")
    with np.errstate(invalid="ignore"):
        mark(~_same(np.fmax.reduce(_np(fine, "high").reshape(n, ratio), axis=1), _np(coarse, "high")), "high")
        mark(~_same(np.fmin.reduce(_np(fine, "low").reshape(n, ratio), axis=1), _np(coarse, "low")), "low")
    mark(~_same(_first_valid(_np(fine, "open").reshape(n, ratio)), _np(coarse, "open")), "open")
    mark(~_same(_first_valid(_np(fine, "close").reshape(n, ratio), last=True), _np(coarse, "close")), "close")
    count = int(bad.sum())
    if not count:
        return 0, ""
    i = min(first_reason)
    ts = int(_np(coarse, "timestamp", np.int64)[i])
    return (
        count,
        f"{coarse_tf} vs {fine_tf}: {count} buckets disagree (first {fmt_clock(ts)}: {first_reason[i]})",
    )


def tick_totals(
    store: Any, day: dt.date, inputs: list[dict[str, Any]], day_scan: Any
) -> tuple[int, float] | None:
    """Trades stamped inside the day, with a price and an amount, over the trades files the candles list."""
    from mdth_engine.reader.scan import read_windows

    trades = [item for item in inputs if item.get("data_type") == "trades"]
    if not trades:
        return None
    d0 = day_start_us(day)
    count, volume = 0, 0.0
    for item in trades:
        if item.get("role") == "day":
            if day_scan is None:
                return None
            count += day_scan.trade_count
            volume += day_scan.trade_volume
            continue
        (table,) = read_windows(
            store, item["path"], [(d0, d0 + US_PER_DAY)], columns=["timestamp", "price", "amount"]
        )
        price, amount = _np(table, "price"), _np(table, "amount")
        keep = ~np.isnan(price) & ~np.isnan(amount)
        count += int(keep.sum())
        volume += float(amount[keep].sum())
    return count, volume


def candle_checks(
    ctx: Any,
    day: dt.date,
    key: str,
    instrument_type: str,
    listings: dict[str, dict[str, int]],
    trades_scan: Any,
    has_ticks: bool,
) -> tuple[list[rp.Check], pa.Table | None, list[dict[str, Any]]]:
    """The candle rows of one instrument-day, its 1m candles (for the cross-source check) and their inputs."""
    from mdth_engine.stages.candles import CandlesStage, inputs_for

    store = ctx.store
    present = [tf for tf in TIMEFRAMES if key in listings.get(tf, {})]
    if not present:
        if has_ticks:
            detail = f"no candles for this day; build them: mdth candles --start {day} --symbols {key}"
            return (
                [rp.Check(key, rp.CANDLES, "candles", rp.WARN, rp.NEVER_ATTEMPTED, detail=detail)],
                None,
                [],
            )
        return [], None, []
    tables: dict[str, pa.Table] = {}
    recorded: list[dict[str, Any]] | None = None
    unreadable = []
    for tf in present:
        try:
            table, prov = read_candles(store, layout.candles_path(day, tf, key))
        except Exception as exc:
            unreadable.append(f"{tf}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
            continue
        tables[tf] = table
        if recorded is None:
            try:
                recorded = json.loads(prov.get("inputs") or "[]")
            except ValueError:
                recorded = []
    out: list[rp.Check] = []
    if unreadable:
        detail = (
            f"unreadable candle files ({'; '.join(unreadable)}); rebuild: mdth candles --start {day} --force"
        )
        out.append(rp.Check(key, rp.CANDLES, "candles", rp.ERROR, rp.CORRUPT, detail=detail))
        return out, None, []
    recorded = recorded or []
    try:
        current = CandlesStage(ctx).input_files(day, key, list(inputs_for(instrument_type)))
        stale = _describe_change(recorded, current)
    except Exception as exc:  # a tick file that cannot be read (its own row says so)
        text = str(exc).strip().splitlines()
        stale = f"an input cannot be read: {text[0] if text else type(exc).__name__}"
    absent = [tf for tf in TIMEFRAMES if tf not in present]
    if stale:
        detail = f"built from other inputs than the lake holds now ({stale}); rebuild: mdth candles --start {day} --symbols {key}"
        out.append(_row(key, "candles", rp.WARN, detail))
    else:
        detail = f"{len(present)} timeframes" + (f" (not built: {', '.join(absent)})" if absent else "")
        out.append(_row(key, "candles", rp.OK, detail))
    problems = [p for tf in present if (p := grid_problem(tables[tf], day, tf))]
    on_grid = [tf for tf in present if not grid_problem(tables[tf], day, tf)]
    if problems:
        out.append(_row(key, "candle_grid", rp.ERROR, "; ".join(problems), issues=len(problems)))
    else:
        out.append(_row(key, "candle_grid", rp.OK, f"{len(present)} timeframes on the day's grid"))
    out.append(_totals_check(store, day, key, tables, on_grid, recorded, trades_scan, bool(stale)))
    out.append(_aggregation_check(key, tables, on_grid))
    one_minute = tables.get("1m") if "1m" in on_grid else None
    return out, one_minute, recorded


def _describe_change(recorded: list[dict[str, Any]], current: list[dict[str, Any]]) -> str:
    if recorded == current:
        return ""
    before = {(i.get("data_type"), i.get("role")): i for i in recorded}
    now = {(i.get("data_type"), i.get("role")): i for i in current}
    changed = sorted(k for k in before.keys() & now.keys() if before[k] != now[k])
    added = sorted(now.keys() - before.keys())
    gone = sorted(before.keys() - now.keys())
    parts = []
    for label, items in (("changed", changed), ("new", added), ("gone", gone)):
        if items:
            parts.append(f"{label}: " + ", ".join(f"{t} ({r.replace('_', ' ')})" for t, r in items))
    return "; ".join(parts) or "inputs differ"


def _totals_check(
    store: Any,
    day: dt.date,
    key: str,
    tables: dict[str, pa.Table],
    on_grid: list[str],
    recorded: list[dict[str, Any]],
    trades_scan: Any,
    stale: bool,
) -> rp.Check:
    if stale:
        return _row(key, "candle_totals", rp.SKIP, "candles are stale (see the candles row)")
    if not on_grid:
        return _row(key, "candle_totals", rp.SKIP, "no timeframe on its grid")
    if not any(item.get("data_type") == "trades" for item in recorded):
        return _row(key, "candle_totals", rp.SKIP, "no trades behind these candles")
    totals = tick_totals(store, day, recorded, trades_scan)
    if totals is None:
        return _row(key, "candle_totals", rp.SKIP, "trades not scanned in this run (validate trades too)")
    count, volume = totals
    bad = []
    for tf in on_grid:
        table = tables[tf]
        if table["trade_count"].null_count:
            bad.append(f"{tf}: trade_count is null although trades exist")
            continue
        got_count = int(_np(table, "trade_count", np.int64).sum())
        got_volume = float(np.nansum(_np(table, "volume")))
        if got_count != count:
            bad.append(f"{tf}: {got_count:,} trades, the ticks {count:,}")
        elif not np.isclose(got_volume, volume, rtol=VOLUME_RTOL, atol=1e-12):
            bad.append(f"{tf}: volume {got_volume!r}, the ticks {volume!r}")
    if bad:
        detail = "; ".join(bad[:3]) + f"; rebuild: mdth candles --start {day} --symbols {key} --force"
        return _row(key, "candle_totals", rp.ERROR, detail, issues=len(bad))
    return _row(key, "candle_totals", rp.OK, f"{count:,} trades, volume {volume:.10g} in every timeframe")


def _aggregation_check(key: str, tables: dict[str, pa.Table], on_grid: list[str]) -> rp.Check:
    if len(on_grid) < 2:
        return _row(key, "candle_aggregation", rp.SKIP, "fewer than two timeframes on their grid")
    issues, details = 0, []
    for fine, coarse in itertools.pairwise(on_grid):
        count, detail = aggregation_problem(tables[fine], tables[coarse], fine, coarse)
        if count:
            issues += count
            details.append(detail)
    if issues:
        return _row(key, "candle_aggregation", rp.ERROR, "; ".join(details[:3]), issues=issues)
    return _row(key, "candle_aggregation", rp.OK, f"{' -> '.join(on_grid)} agree")
