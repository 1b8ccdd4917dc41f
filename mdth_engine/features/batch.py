"""Vectorised candles for one UTC day: every feature of ``spec.FEATURES`` on a dense grid per timeframe.

The base level (15s) is computed from raw rows with numpy (sums via ``np.bincount``, which adds in array
order, i.e. arrival order, exactly like the live path), then each coarser level is folded from the previous
one. No Python loop runs per row; the only Python loop is per bucket, for option chains.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterable

import numpy as np
import pyarrow as pa

from mdth_engine.core.errors import UsageError
from mdth_engine.core.schemas import TS
from mdth_engine.core.timeframes import TIMEFRAMES, US_PER_DAY, day_start_us, parse_timeframes
from mdth_engine.features import _arrow as ax
from mdth_engine.features.formulas import EXPIRY_MISSING, book_values_np, middle_pair, option_values
from mdth_engine.features.levels import Level, finalize
from mdth_engine.features.spec import (
    BASE_TIMEFRAME,
    DERIVATIVE_VALUES,
    FEATURES,
    LEVELS,
    OPTION_MIN_TIME_TO_EXPIRY_US,
    candle_schema,
    level_ratios,
)

BASE_US = TIMEFRAMES[BASE_TIMEFRAME]
BOOK_DEPTH = 5


def check_timeframes(timeframes: Iterable[str]) -> tuple[str, ...]:
    """Requested timeframes (names, or one comma-separated string) in level order; unknown names are a
    ``UsageError``."""
    if isinstance(timeframes, str):
        timeframes = parse_timeframes(timeframes) if timeframes.strip() else []
    names = list(dict.fromkeys(timeframes))
    unknown = [t for t in names if t not in TIMEFRAMES]
    if unknown:
        raise UsageError(f"unknown timeframe {unknown[0]!r}; known: {', '.join(LEVELS)}")
    if not names:
        raise UsageError("no timeframe requested")
    return tuple(t for t in LEVELS if t in names)


def build_candles(
    day: dt.date,
    *,
    trades: pa.Table | None,
    liquidations: pa.Table | None,
    derivative_ticker: pa.Table | None,
    book: pa.Table | None,
    options_chain: pa.Table | None = None,
    timeframes: Iterable[str] = LEVELS,
) -> dict[str, pa.Table]:
    """One dense-grid candle table (``candle_schema()``) per requested timeframe for ``day``.

    Tables are lake-schema tick tables in file (arrival) order and may hold rows outside the day; which
    rows count is defined in ``spec``.
    """
    tfs = check_timeframes(timeframes)
    start = day_start_us(day)
    nb = US_PER_DAY // BASE_US
    base = Level.empty(nb)
    medians = _trades(base, trades, start, tfs) if trades is not None else {}
    if book is not None:
        _book(base, book, start)
    if liquidations is not None:
        _liquidations(base, liquidations, start)
    if derivative_ticker is not None:
        _derivative(base, derivative_ticker, start)
    if options_chain is not None:
        _options(base, options_chain, start)

    out: dict[str, pa.Table] = {}
    level = base
    for name, ratio in zip(LEVELS, level_ratios(), strict=True):
        if ratio > 1:
            level = level.fold(ratio)
        if name in tfs:
            median = medians.get(name, np.full(len(level.n), np.nan))
            columns = finalize(
                level, median, has_trades=trades is not None, has_liquidations=liquidations is not None
            )
            out[name] = _table(start, TIMEFRAMES[name], columns)
        if name == tfs[-1]:
            break  # coarser levels are not needed
    return out


def _table(start: int, tf_us: int, columns: dict[str, tuple[np.ndarray, np.ndarray | None]]) -> pa.Table:
    nb = US_PER_DAY // tf_us
    starts = start + np.arange(nb, dtype=np.int64) * tf_us
    arrays: list[pa.Array] = [pa.array(starts, type=TS), pa.array(starts + tf_us, type=TS)]
    for feature in FEATURES:
        values, null = columns[feature.name]
        arrays.append(pa.array(values, type=feature.dtype, mask=null))
    return pa.Table.from_arrays(arrays, schema=candle_schema())


def _in_day(ts: np.ndarray, start: int) -> np.ndarray:
    return (ts >= start) & (ts < start + US_PER_DAY)


def _all_valid(ts: np.ndarray, start: int, *values: np.ndarray) -> bool:
    """Every row inside the day and no NaN value: the common case, checked without building masks."""
    if len(ts) == 0:
        return True
    if ts.min() < start or ts.max() >= start + US_PER_DAY:
        return False
    return not any(np.isnan(v.min()) for v in values)


def _ts_order(ts: np.ndarray) -> np.ndarray | None:
    """Stable order by exchange timestamp (ties keep arrival order), or None when already sorted."""
    if len(ts) < 2 or bool(np.all(ts[1:] >= ts[:-1])):
        return None
    return np.argsort(ts, kind="stable")


def _trades(base: Level, table: pa.Table, start: int, tfs: tuple[str, ...]) -> dict[str, np.ndarray]:
    what = "trades"
    ts = ax.ts_us(table, "timestamp", what)
    local = ax.ts_us(table, "local_timestamp", what)
    price = ax.f64(table, "price", what)
    amount = ax.f64(table, "amount", what)
    side = ax.codes(table, "side", what, ("buy", "sell"))
    if not _all_valid(ts, start, price, amount):
        keep = _in_day(ts, start) & ~np.isnan(price) & ~np.isnan(amount)
        ts, local, price, amount, side = ts[keep], local[keep], price[keep], amount[keep], side[keep]
    nb = len(base.n)
    bucket = (ts - start) // BASE_US
    # Sums in arrival order (bincount adds left to right): the live path adds the same way.
    base.n[:] = np.bincount(bucket, minlength=nb)
    base.vol[:] = np.bincount(bucket, amount, minlength=nb)
    by_side = np.bincount(bucket * 3 + side, amount, minlength=3 * nb).reshape(nb, 3)  # unknown, buy, sell
    base.buy[:] = by_side[:, ax.SIDE_BUY]
    base.sell[:] = by_side[:, ax.SIDE_SELL]
    base.notional[:] = np.bincount(bucket, price * amount, minlength=nb)
    delay = local - ts
    order = _ts_order(ts)
    if order is not None:
        price, delay, bucket = price[order], delay[order], bucket[order]
    has = base.n > 0
    if has.any():
        ends = np.cumsum(base.n)
        firsts = (ends - base.n)[has]
        base.open[has] = price[firsts]
        base.close[has] = price[ends[has] - 1]
        base.high[has] = np.maximum.reduceat(price, firsts)
        base.low[has] = np.minimum.reduceat(price, firsts)
        base.dsum[has] = np.add.reduceat(delay, firsts)
        base.dmin[has] = np.minimum.reduceat(delay, firsts)
        base.dmax[has] = np.maximum.reduceat(delay, firsts)
    return _delay_medians(bucket, delay, base.n, tfs)


PARTITION_MAX_BUCKETS = 400  # coarser levels select per bucket; finer ones sort packed keys once


def _delay_medians(
    bucket: np.ndarray, delay: np.ndarray, counts: np.ndarray, tfs: tuple[str, ...]
) -> dict[str, np.ndarray]:
    """Exact median delay (ms) per bucket of every requested timeframe, from raw delays (not aggregable).

    ``bucket``/``delay`` are in timestamp order, so every bucket of every level is a contiguous slice.
    """
    out: dict[str, np.ndarray] = {}
    nb_base = len(counts)
    low = int(delay.min()) if len(delay) else 0
    span_bits = max(1, (int(delay.max()) - low).bit_length()) if len(delay) else 1
    for tf in tfs:
        ratio = TIMEFRAMES[tf] // BASE_US
        nb = nb_base // ratio
        level_counts = counts.reshape(nb, ratio).sum(axis=1)
        has = level_counts > 0
        firsts = (np.cumsum(level_counts) - level_counts)[has]
        n = level_counts[has]
        lo_k, hi_k = firsts + (n - 1) // 2, firsts + n // 2
        if nb <= PARTITION_MAX_BUCKETS:
            lo = np.empty(len(n), dtype=np.int64)
            hi = np.empty(len(n), dtype=np.int64)
            for j, (first, count) in enumerate(zip(firsts.tolist(), n.tolist(), strict=True)):
                lo[j], hi[j] = middle_pair(delay[first : first + count])
        else:
            values = _sorted_within_buckets(
                bucket // ratio if ratio > 1 else bucket, delay - low, span_bits, nb
            )
            lo, hi = values[lo_k] + low, values[hi_k] + low
        median = np.full(nb, np.nan)
        median[has] = (lo + hi).astype(np.float64) / 2.0 / 1000.0
        out[tf] = median
    return out


def _sorted_within_buckets(bucket: np.ndarray, offset: np.ndarray, bits: int, nb: int) -> np.ndarray:
    """``offset`` (>= 0) sorted within each bucket, buckets in order: one packed-key sort when it fits."""
    bucket_bits = max(1, (nb - 1).bit_length())
    if bits + bucket_bits <= 32:
        key = (bucket.astype(np.uint32) << np.uint32(bits)) | offset.astype(np.uint32)
        return (np.sort(key) & np.uint32((1 << bits) - 1)).astype(np.int64)
    if bits + bucket_bits <= 63:
        return np.sort((bucket << bits) | offset) & ((1 << bits) - 1)
    return offset[np.lexsort((offset, bucket))]


def _liquidations(base: Level, table: pa.Table, start: int) -> None:
    what = "liquidations"
    ts = ax.ts_us(table, "timestamp", what)
    amount = ax.f64(table, "amount", what)
    price = ax.f64(table, "price", what)
    side = ax.codes(table, "side", what, ("buy", "sell"))
    keep = _in_day(ts, start) & ~np.isnan(amount) & ~np.isnan(price)
    ts, amount, side = ts[keep], amount[keep], side[keep]
    nb = len(base.n)
    bucket = (ts - start) // BASE_US
    base.lq_n[:] = np.bincount(bucket, minlength=nb)
    base.lq_buy[:] = np.bincount(bucket, np.where(side == ax.SIDE_BUY, amount, 0.0), minlength=nb)
    base.lq_sell[:] = np.bincount(bucket, np.where(side == ax.SIDE_SELL, amount, 0.0), minlength=nb)


def _derivative(base: Level, table: pa.Table, start: int) -> None:
    what = "derivative_ticker"
    ts = ax.ts_us(table, "timestamp", what)
    keep = _in_day(ts, start)
    ts = ts[keep]
    order = _ts_order(ts)
    bucket = (ts - start) // BASE_US
    if order is not None:
        bucket = bucket[order]
    for row, name in enumerate(DERIVATIVE_VALUES):
        values = ax.f64(table, name, what)[keep]
        if order is not None:
            values = values[order]
        idx = np.flatnonzero(~np.isnan(values))
        if len(idx) == 0:
            continue
        b = bucket[idx]
        last = np.flatnonzero(np.append(b[1:] != b[:-1], True))
        base.deriv[row, b[last]] = values[idx[last]]


BOOK_CHUNK_ROWS = 1 << 18  # book rows per pass: small temporaries stay in cache and out of fresh pages


def _book_columns(table: pa.Table) -> list[pa.ChunkedArray]:
    """bid_price_1, ask_price_1, bid_amount_1..5, ask_amount_1..5 (validated up front, converted per chunk)."""
    names = ["bid_price_1", "ask_price_1"]
    names += [f"bid_amount_{i}" for i in range(1, BOOK_DEPTH + 1)]
    names += [f"ask_amount_{i}" for i in range(1, BOOK_DEPTH + 1)]
    return [ax.column(table, name, "book") for name in names]


def _book_values(cols: list[pa.ChunkedArray], rows: slice | np.ndarray) -> tuple[np.ndarray, ...]:
    """Book values of a row range or of chosen rows."""
    if isinstance(rows, slice):
        arrays = [ax.chunked_f64(c.slice(rows.start, rows.stop - rows.start)) for c in cols]
    else:
        arrays = [ax.chunked_f64(c.take(pa.array(rows))) for c in cols]
    bids, asks = arrays[2 : 2 + BOOK_DEPTH], arrays[2 + BOOK_DEPTH :]
    return book_values_np([arrays[0]], bids, [arrays[1]], asks)


def _book(base: Level, table: pa.Table, start: int) -> None:
    """Book state at each base bucket close and the time-weighted sums of every book value.

    The day is split into piece sequences of constant state, in time order; each bucket opens with the
    state in force at its start. Work goes in chunks of whole buckets, so every bucket's sum is still
    one left-to-right ``bincount`` pass (the live path's order).
    """
    ts = ax.ts_us(table, "timestamp", "book")
    cols = _book_columns(table)
    if len(ts) == 0:
        return
    eff = ts if bool(np.all(ts[1:] >= ts[:-1])) else np.maximum.accumulate(ts)  # never rewinds (spec)
    nb = len(base.n)
    bounds = start + np.arange(nb, dtype=np.int64) * BASE_US
    end = start + US_PER_DAY
    at_close = np.searchsorted(eff, bounds + BASE_US, side="right") - 1
    closed = np.flatnonzero(at_close >= 0)
    if len(closed):
        base.book[:, closed] = np.array(_book_values(cols, at_close[closed]))
    at_start = np.searchsorted(eff, bounds, side="right") - 1
    no_state = at_start < 0  # no book yet: that time is not weighted
    opening = _book_values(cols, np.maximum(at_start, 0))
    lo = int(np.searchsorted(eff, start, side="right"))
    hi = int(np.searchsorted(eff, end, side="left"))
    pos = np.searchsorted(eff[lo:hi], bounds, side="left")  # first row of each bucket, relative to lo
    chunk = pos // BOOK_CHUNK_ROWS
    edges = [0, *(np.flatnonzero(np.diff(chunk)) + 1).tolist(), nb]
    for j0, j1 in itertools.pairwise(edges):
        r0, r1 = lo + int(pos[j0]), (lo + int(pos[j1]) if j1 < nb else hi)
        rel = pos[j0:j1] - pos[j0]
        firsts = rel + np.arange(j1 - j0)  # where each bucket's opening piece lands
        times = np.insert(eff[r0:r1], rel, bounds[j0:j1])
        dt_us = np.diff(times, append=bounds[j1] if j1 < nb else end)
        dt_us[firsts[no_state[j0:j1]]] = 0
        bucket = np.repeat(np.arange(j1 - j0), np.diff(firsts, append=len(times)))
        values = _book_values(cols, slice(r0, r1))
        # Zero-length pieces add exactly 0.0 (the live path skips them): same sums, no compaction pass.
        for row in range(len(values)):
            v = np.insert(values[row], rel, opening[row][j0:j1])
            undefined = np.isnan(v)
            v *= dt_us
            v[undefined] = 0.0
            base.tw_num[row, j0:j1] = np.bincount(bucket, v, minlength=j1 - j0)
            base.tw_den[row, j0:j1] = np.add.reduceat(np.where(undefined, 0, dt_us), firsts)


def _options(base: Level, table: pa.Table, start: int) -> None:
    """atm_mark_iv and skew at every base bucket close from the last row per option (Python loop per bucket)."""
    what = "options_chain"
    ts = ax.ts_us(table, "timestamp", what)
    if len(ts) == 0:
        return
    eff = np.maximum.accumulate(ts)
    slot, symbols = ax.strings_to_slots(table, "symbol", what)
    kind = ax.codes(table, "type", what, ("call", "put"))
    expiration = ax.optional_ts_us(table, "expiration", what, EXPIRY_MISSING)
    expiration = np.where(kind == 0, EXPIRY_MISSING, expiration)
    strike = ax.f64(table, "strike_price", what)
    delta = ax.f64(table, "delta", what)
    mark_iv = ax.f64(table, "mark_iv", what)
    nb = len(base.n)
    ends = start + (np.arange(nb, dtype=np.int64) + 1) * BASE_US
    seg = np.searchsorted(ends, eff, side="left")  # the first bucket end at or after the row
    m = int(np.searchsorted(seg, nb, side="left"))
    nslots = len(symbols)
    # Last row per (segment, option): later rows of the same option in the segment replace earlier ones.
    key = seg[:m] * nslots + slot[:m]
    _, first_rev = np.unique(key[::-1], return_index=True)
    rows = np.sort(m - 1 - first_rev)
    bounds = np.searchsorted(seg[rows], np.arange(nb + 1), side="left")
    s_exp = np.full(nslots, EXPIRY_MISSING, dtype=np.int64)
    s_call = np.zeros(nslots, dtype=bool)
    s_strike = np.full(nslots, np.nan)
    s_delta = np.full(nslots, np.nan)
    s_iv = np.full(nslots, np.nan)
    previous: tuple[float, float, int] | None = None
    for j in range(nb):
        r = rows[bounds[j] : bounds[j + 1]]
        if len(r):
            k = slot[r]
            s_exp[k], s_call[k], s_strike[k] = expiration[r], kind[r] == 1, strike[r]
            s_delta[k], s_iv[k] = delta[r], mark_iv[r]
        end_us = int(ends[j])
        if not len(r) and previous is not None and still_valid(previous[2], end_us):
            result = previous
        else:
            result = option_values(end_us, s_exp, s_call, s_strike, s_delta, s_iv)
        base.opt[0, j], base.opt[1, j] = result[0], result[1]
        previous = result


def still_valid(expiry: int, end_us: int) -> bool:
    """Whether an earlier option result still holds at ``end_us`` when no option row arrived since."""
    return expiry == EXPIRY_MISSING or expiry >= end_us + OPTION_MIN_TIME_TO_EXPIRY_US
