"""Binance-style klines (``GET /api/v3/klines``, ``/fapi/v1/klines``) computed from the simulated trades.

They are the exchange's view: every trade by exchange time, including those a collector incident removed
from the datasets, so a validation stage can compare its candles against them and find the gaps.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np

from mdth_engine.core.timeframes import US_PER_DAY
from mdth_engine.simulator import market
from mdth_engine.simulator.universe import Instrument, find_instrument

INTERVALS_S = {
    "1s": 1,
    "1m": 60,
    "3m": 180,
    "5m": 300,
    "15m": 900,
    "30m": 1800,
    "1h": 3600,
    "2h": 7200,
    "4h": 14400,
    "6h": 21600,
    "8h": 28800,
    "12h": 43200,
    "1d": 86400,
    "3d": 259200,
    "1w": 604800,
}
MAX_LIMIT = 1000
DEFAULT_LIMIT = 500
MAX_DAYS = 62  # bound the work one request can cause


class KlineError(ValueError):
    """A Binance error body ``{"code": ..., "msg": ...}`` with HTTP 400."""

    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


def _day_trades(inst: Instrument, day: dt.date, scale: float, tag: str) -> tuple[np.ndarray, ...]:
    if not inst.live_on(day):
        e = np.empty(0)
        return np.empty(0, dtype=np.int64), e, e, np.empty(0, dtype=bool)
    ctx = market.ctx_for(inst, day, scale, tag)
    parts = [market.trades(ctx, w) for w in range(ctx.n_win)]
    ts = np.concatenate([p.ts for p in parts])
    price = np.concatenate([ctx.tick.to_float(p.price) for p in parts])
    amount = np.concatenate([ctx.step.to_float(p.amount) for p in parts])
    buy = np.concatenate([p.buy for p in parts])
    return ts, price, amount, buy


def _fmt(values: np.ndarray, decimals: int) -> list[str]:
    return [f"{v:.{decimals}f}" for v in values]


def klines(
    exchange: str,
    symbol: str,
    interval: str,
    start_ms: int | None,
    end_ms: int | None,
    limit: int | None,
    now_us: int,
    scale: float,
    tag: str,
) -> list[list[Any]]:
    """Rows ``[open_time, open, high, low, close, volume, close_time, quote_volume, trades, taker_buy_base,
    taker_buy_quote, "0"]`` exactly as Binance returns them."""
    inst = find_instrument(exchange, symbol)
    if inst is None or (exchange == "binance" and inst.type != "spot"):
        raise KlineError(-1121, "Invalid symbol.")
    if interval not in INTERVALS_S:
        raise KlineError(-1120, "Invalid interval.")
    limit = DEFAULT_LIMIT if limit is None else limit
    if not 1 <= limit <= MAX_LIMIT:
        raise KlineError(
            -1100, f"Illegal characters found in parameter 'limit'; legal range is '1' to '{MAX_LIMIT}'."
        )
    step_ms = INTERVALS_S[interval] * 1000
    now_ms = now_us // 1000
    if start_ms is None:
        last_open = ((min(end_ms, now_ms) if end_ms is not None else now_ms) // step_ms) * step_ms
        opens = last_open - step_ms * np.arange(limit - 1, -1, -1, dtype=np.int64)
    else:
        first_open = -(-start_ms // step_ms) * step_ms
        opens = first_open + step_ms * np.arange(limit, dtype=np.int64)
        last_allowed = min(end_ms if end_ms is not None else now_ms, now_ms)
        opens = opens[opens <= last_allowed]
    opens = opens[opens + step_ms > inst.listing_us // 1000]
    if inst.end_us is not None:
        opens = opens[opens < inst.end_us // 1000]
    if opens.size == 0:
        return []
    lo_us, hi_us = int(opens[0]) * 1000, min(int(opens[-1] + step_ms) * 1000, now_us)
    first_day = dt.date(1970, 1, 1) + dt.timedelta(days=lo_us // US_PER_DAY)
    last_day = dt.date(1970, 1, 1) + dt.timedelta(days=(hi_us - 1) // US_PER_DAY)
    if (last_day - first_day).days > MAX_DAYS:
        raise KlineError(-1130, f"The simulator serves at most {MAX_DAYS} days of klines per request.")
    ts_l, px_l, amt_l, buy_l = [], [], [], []
    day = first_day - dt.timedelta(days=1)  # the day before supplies the previous close
    while day <= last_day:
        ts, px, amt, buy = _day_trades(inst, day, scale, tag)
        ts_l.append(ts)
        px_l.append(px)
        amt_l.append(amt)
        buy_l.append(buy)
        day += dt.timedelta(days=1)
    ts, px, amt, buy = (np.concatenate(x) for x in (ts_l, px_l, amt_l, buy_l))
    order = np.argsort(ts, kind="stable")
    ts, px, amt, buy = ts[order], px[order], amt[order], buy[order]
    before = ts < lo_us
    prev_close = (
        float(px[before][-1]) if before.any() else (float(px[~before][0]) if (~before).any() else np.nan)
    )
    inside = (ts >= lo_us) & (ts < hi_us)
    ts, px, amt, buy = ts[inside], px[inside], amt[inside], buy[inside]
    bucket = np.searchsorted(opens * 1000, ts, side="right") - 1
    n = opens.size
    count = np.bincount(bucket, minlength=n)
    volume = np.bincount(bucket, weights=amt, minlength=n)
    quote = np.bincount(bucket, weights=amt * px, minlength=n)
    buy_vol = np.bincount(bucket, weights=amt * buy, minlength=n)
    buy_quote = np.bincount(bucket, weights=amt * px * buy, minlength=n)
    high = np.full(n, -np.inf)
    low = np.full(n, np.inf)
    np.maximum.at(high, bucket, px)
    np.minimum.at(low, bucket, px)
    first_idx = np.searchsorted(bucket, np.arange(n), side="left")
    last_idx = np.searchsorted(bucket, np.arange(n), side="right") - 1
    has = count > 0
    close = np.where(has, px[np.clip(last_idx, 0, None)] if px.size else np.nan, np.nan)
    # Empty buckets repeat the previous close, as Binance does.
    filled = close.copy()
    carry = prev_close
    for i in range(n):
        if has[i]:
            carry = filled[i]
        else:
            filled[i] = carry
    prev = np.concatenate(([prev_close], filled[:-1]))
    open_ = np.where(has, px[np.clip(first_idx, 0, max(px.size - 1, 0))] if px.size else np.nan, prev)
    high = np.where(has, high, filled)
    low = np.where(has, low, filled)
    tick, step = inst.increments_on(first_day)
    spot = exchange == "binance"
    pdec = 8 if spot else max(market.Grid.of(tick).dec, 2)
    qdec = 8 if spot else market.Grid.of(step).dec
    cols = [
        _fmt(open_, pdec),
        _fmt(high, pdec),
        _fmt(low, pdec),
        _fmt(filled, pdec),
        _fmt(volume, qdec),
        _fmt(quote, 8 if spot else 5),
        _fmt(buy_vol, qdec),
        _fmt(buy_quote, 8 if spot else 5),
    ]
    rows = []
    for i in range(n):
        if np.isnan(filled[i]):
            continue  # before the first trade ever
        o = int(opens[i])
        rows.append(
            [
                o,
                cols[0][i],
                cols[1][i],
                cols[2][i],
                cols[3][i],
                cols[4][i],
                o + step_ms - 1,
                cols[5][i],
                int(count[i]),
                cols[6][i],
                cols[7][i],
                "0",
            ]
        )
    return rows
