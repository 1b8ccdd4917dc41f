"""Live candles: the same spec as ``batch`` fed one event at a time, closed by the clock.

Events go into base (15s) buckets; ``close_until(ts)`` closes every bucket whose end is at or before ``ts``
(empty ones too) and folds it into the coarser levels exactly as ``levels.Level.fold`` does, so a replay of
a day gives the batch numbers bit for bit. Per event the work is O(1) plus, for book and option rows, the
bucket boundaries they cross. An event whose bucket is already closed (or before the grid) is counted in
``counters["late"]`` and dropped; a late book/option row still updates the state from then on.
"""

from __future__ import annotations

import datetime as dt
import math
from array import array
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from mdth_engine.core.errors import UsageError
from mdth_engine.core.schemas import TS
from mdth_engine.core.timeframes import TIMEFRAMES, US_PER_DAY, day_start_us
from mdth_engine.features import _arrow as ax
from mdth_engine.features.batch import BOOK_DEPTH, check_timeframes, still_valid
from mdth_engine.features.formulas import (
    EXPIRY_MISSING,
    book_values,
    median_ms_from_pair,
    middle_pair,
    option_values,
)
from mdth_engine.features.spec import (
    BOOK_VALUES,
    CANDLE_COLUMNS,
    DERIVATIVE_VALUES,
    FEATURES,
    LEVELS,
    candle_schema,
    level_ratios,
)

NAN = math.nan
I64_MAX = (1 << 63) - 1
I64_MIN = -(1 << 63)
DEFAULT_SOURCES = frozenset({"trades", "liquidations", "derivative_ticker", "book_snapshot_5"})
_OI = DERIVATIVE_VALUES.index("open_interest")
_NB = len(BOOK_VALUES)
_ND = len(DERIVATIVE_VALUES)


class _Acc:
    """Accumulators of one bucket (any level); base buckets also use the ``*_ts`` ordering fields."""

    __slots__ = (
        "book",
        "buy",
        "close",
        "close_ts",
        "delays",
        "deriv",
        "deriv_ts",
        "dmax",
        "dmin",
        "dsum",
        "high",
        "low",
        "lq_buy",
        "lq_n",
        "lq_sell",
        "n",
        "notional",
        "open",
        "open_ts",
        "opt",
        "sell",
        "tw_den",
        "tw_num",
        "vol",
    )

    def __init__(self) -> None:
        self.n = 0
        self.vol = self.buy = self.sell = self.notional = 0.0
        self.open = self.high = self.low = self.close = NAN
        self.open_ts = I64_MAX
        self.close_ts = I64_MIN
        self.dsum = 0
        self.dmin = I64_MAX
        self.dmax = I64_MIN
        self.delays = array("q")
        self.lq_n = 0
        self.lq_buy = self.lq_sell = 0.0
        self.deriv = [NAN] * _ND
        self.deriv_ts = [I64_MIN] * _ND
        self.tw_num = [0.0] * _NB
        self.tw_den = [0] * _NB
        self.book: tuple[float, ...] | None = None
        self.opt: tuple[float, float] | None = None

    def fold(self, child: _Acc, keep_delays: bool) -> None:
        """Add a closed child bucket (children arrive in time order); mirrors ``Level.fold``."""
        self.n += child.n
        self.vol = self.vol + child.vol
        self.buy = self.buy + child.buy
        self.sell = self.sell + child.sell
        self.notional = self.notional + child.notional
        if self.open != self.open:
            self.open = child.open
        if child.close == child.close:
            self.close = child.close
        if child.high == child.high and not self.high >= child.high:
            self.high = child.high
        if child.low == child.low and not self.low <= child.low:
            self.low = child.low
        self.dsum += child.dsum
        self.dmin = min(self.dmin, child.dmin)
        self.dmax = max(self.dmax, child.dmax)
        if keep_delays:
            self.delays.extend(child.delays)
        self.lq_n += child.lq_n
        self.lq_buy = self.lq_buy + child.lq_buy
        self.lq_sell = self.lq_sell + child.lq_sell
        for k in range(_ND):
            v = child.deriv[k]
            if v == v:
                self.deriv[k] = v
        for k in range(_NB):
            self.tw_num[k] = self.tw_num[k] + child.tw_num[k]
            self.tw_den[k] += child.tw_den[k]
        self.book = child.book
        self.opt = child.opt


class IncrementalCandles:
    """Candles for ``timeframes`` on the UTC grid starting at ``day_or_start``, fed event by event.

    ``sources`` names the data types this instrument has: as in batch, a missing ``trades`` or
    ``liquidations`` source makes its counts null and sums NaN instead of 0.
    """

    def __init__(
        self,
        timeframes: Iterable[str] = LEVELS,
        day_or_start: dt.date | int | None = None,
        *,
        sources: Iterable[str] = DEFAULT_SOURCES,
    ) -> None:
        self.timeframes = check_timeframes(timeframes)
        top = LEVELS.index(self.timeframes[-1])
        self._levels = LEVELS[: top + 1]
        self._ratios = level_ratios()[: top + 1]
        self._lengths = [TIMEFRAMES[name] for name in self._levels]
        self._emit = [name in self.timeframes for name in self._levels]
        if day_or_start is None:
            raise UsageError(
                "IncrementalCandles needs day_or_start: the UTC day (or µs grid start) it begins at"
            )
        start = day_start_us(day_or_start) if isinstance(day_or_start, dt.date) else int(day_or_start)
        if start % self._lengths[-1]:
            raise UsageError(f"grid start {start} is not aligned to the {self._levels[-1]} timeframe")
        self.start_us = start
        self.sources = frozenset(sources)
        self._has_trades = "trades" in self.sources
        self._has_liqs = "liquidations" in self.sources
        self._base = self._lengths[0]
        self._next = 0  # index of the next base bucket to close
        self._buckets: dict[int, _Acc] = {}
        self._open: list[_Acc | None] = [None] * len(self._levels)
        self._oi_ref = [NAN] * len(self._levels)
        # Highest level that needs raw delays for its median.
        self._delay_top = max(i for i, emit in enumerate(self._emit) if emit)
        self._bk_t = start  # book cursor: time up to which book pieces are accounted
        self._bk_i = 0  # base bucket holding the cursor
        self._bk_vals: tuple[float, ...] | None = None
        self._op_t = start
        self._op_i = 0
        self._op_slots: dict[str, int] = {}
        self._op_dirty = False
        self._op_prev: tuple[float, float, int] | None = None
        cap = 64
        self._op_exp = np.full(cap, EXPIRY_MISSING, dtype=np.int64)
        self._op_call = np.zeros(cap, dtype=bool)
        self._op_strike = np.full(cap, NAN)
        self._op_delta = np.full(cap, NAN)
        self._op_iv = np.full(cap, NAN)
        self.counters = {"late": 0, "invalid": 0}

    # -- events ---------------------------------------------------------------------------------------

    def _bucket(self, ts: int) -> _Acc | None:
        i = (ts - self.start_us) // self._base
        if i < self._next:
            self.counters["late"] += 1
            return None
        acc = self._buckets.get(i)
        if acc is None:
            acc = self._buckets[i] = _Acc()
        return acc

    def on_trade(self, ts_us: int, local_ts_us: int, price: float, amount: float, side: str) -> None:
        """One trade; ``side`` is the taker side (``buy``/``sell``; anything else counts in neither)."""
        if price != price or amount != amount:
            self.counters["invalid"] += 1
            return
        acc = self._bucket(ts_us)
        if acc is None:
            return
        acc.n += 1
        acc.vol += amount
        if side == "buy":
            acc.buy += amount
        elif side == "sell":
            acc.sell += amount
        acc.notional += price * amount
        if ts_us < acc.open_ts:
            acc.open_ts = ts_us
            acc.open = price
        if ts_us >= acc.close_ts:
            acc.close_ts = ts_us
            acc.close = price
        if not price <= acc.high:
            acc.high = price
        if not price >= acc.low:
            acc.low = price
        d = local_ts_us - ts_us
        acc.dsum += d
        if d < acc.dmin:
            acc.dmin = d
        if d > acc.dmax:
            acc.dmax = d
        acc.delays.append(d)

    def on_liquidation(self, ts_us: int, local_ts_us: int, price: float, amount: float, side: str) -> None:
        """One liquidation; ``buy`` = a short was liquidated, ``sell`` = a long (Tardis)."""
        if price != price or amount != amount:
            self.counters["invalid"] += 1
            return
        acc = self._bucket(ts_us)
        if acc is None:
            return
        acc.lq_n += 1
        if side == "buy":
            acc.lq_buy += amount
        elif side == "sell":
            acc.lq_sell += amount

    def on_derivative_ticker(
        self,
        ts_us: int,
        local_ts_us: int,
        *,
        funding_rate: float | None = NAN,
        predicted_funding_rate: float | None = NAN,
        index_price: float | None = NAN,
        mark_price: float | None = NAN,
        open_interest: float | None = NAN,
    ) -> None:
        """One derivative ticker row; NaN/None fields are "not sent" and keep the bucket's last value."""
        acc = self._bucket(ts_us)
        if acc is None:
            return
        values = (funding_rate, predicted_funding_rate, index_price, mark_price, open_interest)
        for k in range(_ND):
            v = values[k]
            if v is not None and v == v and ts_us >= acc.deriv_ts[k]:
                acc.deriv_ts[k] = ts_us
                acc.deriv[k] = v

    def on_book(
        self,
        ts_us: int,
        local_ts_us: int,
        bid_prices: Sequence[float],
        bid_amounts: Sequence[float],
        ask_prices: Sequence[float],
        ask_amounts: Sequence[float],
    ) -> None:
        """One top-N book snapshot, levels best first, NaN for empty levels (top 5 amounts are used)."""
        values = book_values(bid_prices, bid_amounts[:BOOK_DEPTH], ask_prices, ask_amounts[:BOOK_DEPTH])
        if ts_us > self._bk_t:
            self._book_advance(ts_us, strict=True)
        self._bk_vals = values

    def on_option(
        self,
        ts_us: int,
        local_ts_us: int,
        symbol: str,
        option_type: str,
        strike: float,
        expiration_us: int | None,
        mark_iv: float,
        delta: float,
    ) -> None:
        """One options_chain row of this underlying (last row per ``symbol`` is its state)."""
        t = ts_us if ts_us > self._op_t else self._op_t
        if t > self._op_t:
            self._options_advance(t, strict=True)
        slot = self._op_slots.get(symbol)
        if slot is None:
            slot = self._op_slots[symbol] = len(self._op_slots)
            if slot >= len(self._op_exp):
                self._grow_options()
        known = option_type in ("call", "put") and expiration_us is not None
        self._op_exp[slot] = expiration_us if known else EXPIRY_MISSING
        self._op_call[slot] = option_type == "call"
        self._op_strike[slot] = NAN if strike is None else strike
        self._op_delta[slot] = NAN if delta is None else delta
        self._op_iv[slot] = NAN if mark_iv is None else mark_iv
        self._op_dirty = True

    # -- clock ----------------------------------------------------------------------------------------

    def close_until(self, ts_us: int) -> list[tuple[str, dict[str, Any]]]:
        """Close every bucket whose end is at or before ``ts_us``; rows of requested timeframes, in time order.

        Row timestamps are int µs (``rows_to_tables`` makes candle tables of them).
        """
        out: list[tuple[str, dict[str, Any]]] = []
        base = self._base
        while self.start_us + (self._next + 1) * base <= ts_us:
            i = self._next
            end = self.start_us + (i + 1) * base
            if self._bk_i <= i:
                self._book_advance(end, strict=False)
            if self._op_i <= i:
                self._options_advance(end, strict=False)
            acc = self._buckets.pop(i, None) or _Acc()
            self._next = i + 1
            self._close(0, i, acc, out)
        return out

    @property
    def closed_until_us(self) -> int:
        """End of the last closed base bucket: events stamped before it are late."""
        return self.start_us + self._next * self._base

    def _close(self, li: int, idx: int, acc: _Acc, out: list[tuple[str, dict[str, Any]]]) -> None:
        length = self._lengths[li]
        start = self.start_us + idx * length
        if self._emit[li]:
            out.append((self._levels[li], self._row(li, acc, start, start + length)))
        if li + 1 >= len(self._levels):
            return
        parent = self._open[li + 1]
        if parent is None:
            parent = self._open[li + 1] = _Acc()
        parent.fold(acc, li + 1 <= self._delay_top)
        ratio = self._ratios[li + 1]
        if (idx + 1) % ratio == 0:
            self._open[li + 1] = None
            self._close(li + 1, idx // ratio, parent, out)

    def _row(self, li: int, acc: _Acc, start: int, end: int) -> dict[str, Any]:
        """Feature values of one closed bucket; the scalar twin of ``levels.finalize``."""
        n = acc.n
        has = n > 0
        trades, liqs = self._has_trades, self._has_liqs
        row: dict[str, Any] = {"timestamp": start, "timestamp_out": end}
        row["open"], row["high"], row["low"], row["close"] = acc.open, acc.high, acc.low, acc.close
        row["volume"] = acc.vol if trades else NAN
        row["trade_count"] = n if trades else None
        row["buy_volume_sum"] = acc.buy if trades else NAN
        row["sell_volume_sum"] = acc.sell if trades else NAN
        row["size_avg"] = acc.vol / n if has else NAN
        row["price_vwap"] = acc.notional / acc.vol if acc.vol > 0.0 else NAN
        row["delay_median"] = _median_ms(acc.delays) if has else NAN
        row["delay_mean"] = float(acc.dsum) / n / 1000.0 if has else NAN
        row["delay_min"] = acc.dmin / 1000.0 if has else NAN
        row["delay_max"] = acc.dmax / 1000.0 if has else NAN
        row["liquidation_buy_volume"] = acc.lq_buy if liqs else NAN
        row["liquidation_sell_volume"] = acc.lq_sell if liqs else NAN
        row["liquidation_count"] = acc.lq_n if liqs else None
        for k, name in enumerate(DERIVATIVE_VALUES):
            row[name] = acc.deriv[k]
        if start % US_PER_DAY == 0:
            self._oi_ref[li] = NAN  # the reference carries forward within the UTC day only
        oi = acc.deriv[_OI]
        oi_change = oi - self._oi_ref[li]
        if oi == oi:
            self._oi_ref[li] = oi
        row["oi_change"] = oi_change
        liq = acc.lq_buy + acc.lq_sell
        unknown = oi_change != oi_change or not liqs
        row["liquidation_with_rising_oi"] = NAN if unknown else (liq if oi_change > 0.0 else 0.0)
        row["liquidation_with_falling_oi"] = NAN if unknown else (liq if oi_change < 0.0 else 0.0)
        book = acc.book or (NAN,) * _NB
        for k, name in enumerate(BOOK_VALUES):
            row[name] = book[k]
        for k, name in enumerate(BOOK_VALUES):
            den = acc.tw_den[k]
            row[f"{name}_twa"] = acc.tw_num[k] / den if den > 0 else NAN
        opt = acc.opt or (NAN, NAN)
        row["atm_mark_iv"], row["skew_25d_put_call_ratio"] = opt
        return row

    # -- state cursors (book, options) ------------------------------------------------------------------

    def _acc(self, i: int) -> _Acc:
        acc = self._buckets.get(i)
        if acc is None:
            acc = self._buckets[i] = _Acc()
        return acc

    def _book_advance(self, t: int, *, strict: bool) -> None:
        """Account the book state in force from the cursor up to ``t``, recording closes of crossed buckets.

        ``strict``: a bucket whose end equals ``t`` stays open (a row stamped at the end still counts at
        its close); otherwise (closing by the clock) it is recorded too.
        """
        base = self._base
        cur, i, vals = self._bk_t, self._bk_i, self._bk_vals
        end = self.start_us + (i + 1) * base
        while end < t or (not strict and end == t):
            if vals is not None:
                if end > cur:
                    self._piece(i, vals, end - cur)
                self._acc(i).book = vals
            cur, i, end = end, i + 1, end + base
        if vals is not None and t > cur:
            self._piece(i, vals, t - cur)
        self._bk_t = t if t > cur else cur
        self._bk_i = i

    def _piece(self, i: int, vals: tuple[float, ...], dt_us: int) -> None:
        acc = self._acc(i)
        num, den = acc.tw_num, acc.tw_den
        for k in range(_NB):
            v = vals[k]
            if v == v:
                num[k] = num[k] + v * dt_us
                den[k] += dt_us

    def _options_advance(self, t: int, *, strict: bool) -> None:
        base = self._base
        i = self._op_i
        end = self.start_us + (i + 1) * base
        while end < t or (not strict and end == t):
            if self._op_slots:
                prev = self._op_prev
                if not self._op_dirty and prev is not None and still_valid(prev[2], end):
                    result = prev
                else:
                    n = len(self._op_slots)
                    result = option_values(
                        end,
                        self._op_exp[:n],
                        self._op_call[:n],
                        self._op_strike[:n],
                        self._op_delta[:n],
                        self._op_iv[:n],
                    )
                self._op_prev, self._op_dirty = result, False
                self._acc(i).opt = (result[0], result[1])
            i, end = i + 1, end + base
        self._op_i = i
        if t > self._op_t:
            self._op_t = t

    def _grow_options(self) -> None:
        cap = 2 * len(self._op_exp)

        def grow(a: np.ndarray, fill: Any) -> np.ndarray:
            out = np.full(cap, fill, dtype=a.dtype)
            out[: len(a)] = a
            return out

        self._op_exp = grow(self._op_exp, EXPIRY_MISSING)
        self._op_call = grow(self._op_call, False)
        self._op_strike = grow(self._op_strike, NAN)
        self._op_delta = grow(self._op_delta, NAN)
        self._op_iv = grow(self._op_iv, NAN)


CandleState = IncrementalCandles  # the name the issue uses


def _median_ms(delays: array) -> float:
    return median_ms_from_pair(*middle_pair(np.frombuffer(delays, dtype=np.int64)))


# -- replay ---------------------------------------------------------------------------------------------


def rows_to_tables(rows: Iterable[tuple[str, dict[str, Any]]]) -> dict[str, pa.Table]:
    """Emitted ``(timeframe, row)`` pairs as one ``candle_schema()`` table per timeframe."""
    by_tf: dict[str, list[dict[str, Any]]] = {}
    for tf, row in rows:
        by_tf.setdefault(tf, []).append(row)
    schema = candle_schema()
    out = {}
    for tf, items in by_tf.items():
        columns = {name: [r[name] for r in items] for name in CANDLE_COLUMNS}
        arrays = [pa.array(columns["timestamp"], type=TS), pa.array(columns["timestamp_out"], type=TS)]
        arrays += [pa.array(columns[f.name], type=f.dtype, from_pandas=False) for f in FEATURES]
        out[tf] = pa.Table.from_arrays(arrays, schema=schema)
    return out


def replay_table(
    candles: IncrementalCandles,
    *,
    trades: pa.Table | None = None,
    liquidations: pa.Table | None = None,
    derivative_ticker: pa.Table | None = None,
    book: pa.Table | None = None,
    options_chain: pa.Table | None = None,
    close_lag_us: int | None = None,
    until_us: int | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    """Feed lake tables through ``candles`` in arrival order, as a live feed would, and collect the rows.

    Events of all tables are merged by ``local_timestamp`` (each table keeps its file order). With
    ``close_lag_us`` the clock closes buckets while replaying (``close_until(local_ts - lag)`` before each
    event, like a live timer with a grace period); at the end everything up to ``until_us`` is closed.
    """
    feeds = []
    if trades is not None:
        feeds.append(_trade_feed(trades, "trades", candles.on_trade))
    if liquidations is not None:
        feeds.append(_trade_feed(liquidations, "liquidations", candles.on_liquidation))
    if derivative_ticker is not None:
        feeds.append(_derivative_feed(derivative_ticker, candles))
    if book is not None:
        feeds.append(_book_feed(book, candles))
    if options_chain is not None:
        feeds.append(_option_feed(options_chain, candles))
    keys, kinds, rows = [], [], []
    for kind, (local, _) in enumerate(feeds):
        keys.append(np.maximum.accumulate(local) if len(local) else local)
        kinds.append(np.full(len(local), kind, dtype=np.int64))
        rows.append(np.arange(len(local), dtype=np.int64))
    out: list[tuple[str, dict[str, Any]]] = []
    if keys:
        key, kind_all, row_all = np.concatenate(keys), np.concatenate(kinds), np.concatenate(rows)
        order = np.lexsort((row_all, kind_all, key))
        calls = [call for _, call in feeds]
        clock = key[order].tolist()
        for j, kind, row in zip(clock, kind_all[order].tolist(), row_all[order].tolist(), strict=True):
            if close_lag_us is not None:
                out += candles.close_until(j - close_lag_us)
            calls[kind](row)
    if until_us is not None:
        out += candles.close_until(until_us)
    return out


def _trade_feed(table: pa.Table, what: str, on: Any) -> tuple[np.ndarray, Any]:
    ts = ax.ts_us(table, "timestamp", what).tolist()
    local = ax.ts_us(table, "local_timestamp", what)
    local_list = local.tolist()
    price = ax.f64(table, "price", what).tolist()
    amount = ax.f64(table, "amount", what).tolist()
    codes = ax.codes(table, "side", what, ("buy", "sell")).tolist()
    names = ("unknown", "buy", "sell")

    def call(i: int) -> None:
        on(ts[i], local_list[i], price[i], amount[i], names[codes[i]])

    return local, call


def _derivative_feed(table: pa.Table, candles: IncrementalCandles) -> tuple[np.ndarray, Any]:
    what = "derivative_ticker"
    ts = ax.ts_us(table, "timestamp", what).tolist()
    local = ax.ts_us(table, "local_timestamp", what)
    local_list = local.tolist()
    cols = {name: ax.f64(table, name, what).tolist() for name in DERIVATIVE_VALUES}

    def call(i: int) -> None:
        candles.on_derivative_ticker(
            ts[i], local_list[i], **{name: cols[name][i] for name in DERIVATIVE_VALUES}
        )

    return local, call


def _book_feed(table: pa.Table, candles: IncrementalCandles) -> tuple[np.ndarray, Any]:
    what = "book"
    ts = ax.ts_us(table, "timestamp", what).tolist()
    local = ax.ts_us(table, "local_timestamp", what)
    local_list = local.tolist()
    levels = range(1, BOOK_DEPTH + 1)
    bp = [ax.f64(table, f"bid_price_{i}", what).tolist() for i in levels]
    ba = [ax.f64(table, f"bid_amount_{i}", what).tolist() for i in levels]
    ap = [ax.f64(table, f"ask_price_{i}", what).tolist() for i in levels]
    aa = [ax.f64(table, f"ask_amount_{i}", what).tolist() for i in levels]

    def call(i: int) -> None:
        candles.on_book(
            ts[i],
            local_list[i],
            [c[i] for c in bp],
            [c[i] for c in ba],
            [c[i] for c in ap],
            [c[i] for c in aa],
        )

    return local, call


def _option_feed(table: pa.Table, candles: IncrementalCandles) -> tuple[np.ndarray, Any]:
    what = "options_chain"
    ts = ax.ts_us(table, "timestamp", what).tolist()
    local = ax.ts_us(table, "local_timestamp", what)
    local_list = local.tolist()
    slot, symbols = ax.strings_to_slots(table, "symbol", what)
    symbol = [symbols[s] for s in slot.tolist()]
    names = (None, "call", "put")
    kind = [names[c] for c in ax.codes(table, "type", what, ("call", "put")).tolist()]
    expiration = ax.optional_ts_us(table, "expiration", what, EXPIRY_MISSING).tolist()
    strike = ax.f64(table, "strike_price", what).tolist()
    mark_iv = ax.f64(table, "mark_iv", what).tolist()
    delta = ax.f64(table, "delta", what).tolist()

    def call(i: int) -> None:
        exp = expiration[i]
        candles.on_option(
            ts[i],
            local_list[i],
            symbol[i],
            kind[i] or "",
            strike[i],
            None if exp == EXPIRY_MISSING else exp,
            mark_iv[i],
            delta[i],
        )

    return local, call
