"""Deribit option chains, vectorised over every option of an underlying: books, trades and ticker rows.

Prices come from Black-Scholes on the forward with a smile in implied volatility (put skew, convexity,
term structure); BTC/ETH options are inverse (quoted in the coin), XRP_USDC options are linear.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import math

import numpy as np

from mdth_engine.core.timeframes import US_PER_DAY, day_start_us
from mdth_engine.simulator import calendar as cal
from mdth_engine.simulator import paths
from mdth_engine.simulator.market import (
    Depth,
    Grid,
    activity_share,
    choose_windows,
    depth_levels,
    latency,
    order_notional,
    strictly_increasing_ms,
    to_steps,
)
from mdth_engine.simulator.seeds import hash_combine, rng, seed64, unit
from mdth_engine.simulator.universe import Instrument, instruments_live

US_PER_YEAR = 365 * US_PER_DAY
_MS_BAND = 10**13  # separates options when millisecond times are made unique per option


def norm_cdf(x: np.ndarray) -> np.ndarray:
    """Standard normal CDF (Abramowitz-Stegun 7.1.26, error < 1.5e-7)."""
    z = np.abs(x) / math.sqrt(2.0)
    t = 1.0 / (1.0 + 0.3275911 * z)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    erf = 1.0 - poly * np.exp(-z * z)
    return 0.5 * (1.0 + np.sign(x) * erf)


def norm_pdf(x: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


@dataclasses.dataclass(frozen=True)
class Greeks:
    price_usd: np.ndarray
    delta: np.ndarray
    gamma: np.ndarray
    vega: np.ndarray  # USD per 1 vol point
    theta: np.ndarray  # USD per day
    rho: np.ndarray  # USD per 1 % rate


def black(
    forward: np.ndarray, strike: np.ndarray, years: np.ndarray, sigma: np.ndarray, call: np.ndarray
) -> Greeks:
    """Black-76 with zero rates (Deribit convention), vectorised."""
    t = np.maximum(years, 1e-6)
    sq = np.sqrt(t)
    d1 = (np.log(forward / strike) + 0.5 * sigma * sigma * t) / (sigma * sq)
    d2 = d1 - sigma * sq
    nd1, nd2 = norm_cdf(d1), norm_cdf(d2)
    price = np.where(call, forward * nd1 - strike * nd2, strike * (1 - nd2) - forward * (1 - nd1))
    price = np.maximum(price, np.where(call, forward - strike, strike - forward).clip(0))
    pdf = norm_pdf(d1)
    delta = np.where(call, nd1, nd1 - 1.0)
    gamma = pdf / (forward * sigma * sq)
    vega = forward * pdf * sq / 100.0
    theta = -(forward * pdf * sigma) / (2.0 * sq) / 365.0
    rho = np.where(call, strike * t * nd2, -strike * t * (1 - nd2)) / 100.0
    return Greeks(price, delta, gamma, vega, theta, rho)


@dataclasses.dataclass(frozen=True, eq=False)
class ChainCtx:
    """The options of one underlying live on a day, at a scale (hashable by that identity)."""

    underlying: str
    day: dt.date
    scale: float
    tag: str
    insts: tuple[Instrument, ...]
    tick: Grid
    step: Grid
    n_win: int
    strike: np.ndarray
    call: np.ndarray
    expiry: np.ndarray
    listing: np.ndarray
    inverse: bool

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.underlying, self.day.isoformat(), self.tag)

    def __hash__(self) -> int:
        return hash((self.underlying, self.day, self.scale, self.tag))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ChainCtx) and (self.underlying, self.day, self.scale, self.tag) == (
            other.underlying,
            other.day,
            other.scale,
            other.tag,
        )

    def index_of(self, dataset_id: str) -> int:
        for i, inst in enumerate(self.insts):
            if inst.dataset_id == dataset_id:
                return i
        raise KeyError(dataset_id)

    def bounds(self, w: int) -> tuple[np.ndarray, np.ndarray, int, int]:
        """Per-option active interval inside window ``w`` (t0 >= t1 means inactive), and the window."""
        start = day_start_us(self.day)
        span = US_PER_DAY // self.n_win
        w0, w1 = start + w * span, start + (w + 1) * span
        return np.maximum(self.listing, w0), np.minimum(self.expiry, w1), w0, w1

    def window_end(self, w: int) -> int:
        return day_start_us(self.day) + (w + 1) * (US_PER_DAY // self.n_win)


def chain_underlyings(day: dt.date) -> list[str]:
    seen: list[str] = []
    for inst in instruments_live("deribit", day):
        if inst.type == "option" and inst.underlying not in seen:
            seen.append(inst.underlying)
    return seen


@functools.lru_cache(maxsize=64)
def chain_ctx(underlying: str, day: dt.date, scale: float, tag: str) -> ChainCtx:
    insts = tuple(
        i for i in instruments_live("deribit", day) if i.type == "option" and i.underlying == underlying
    )
    volume = float(paths.daily_series(underlying).volume[paths.day_index(day)])
    rows = sum(i.profile.book_per_day + ticker_rate(1.0) for i in insts) * scale * volume
    inverse = bool(insts[0].inverse) if insts else True
    return ChainCtx(
        underlying,
        day,
        scale,
        tag,
        insts,
        Grid.of(insts[0].price_increment if insts else 0.0005),
        Grid.of(insts[0].amount_increment if insts else 0.1),
        choose_windows(rows),
        np.array([i.strike for i in insts], dtype=np.float64),
        np.array([i.option_type == "call" for i in insts], dtype=bool),
        np.array([i.expiry_us for i in insts], dtype=np.int64),
        np.array([i.listing_us for i in insts], dtype=np.int64),
        inverse,
    )


def ticker_rate(scale: float) -> float:
    """Ticker rows per option per day: one every ~10 s at full scale."""
    return 8_640.0 * scale


def implied_vol(cctx: ChainCtx, opt: np.ndarray, t: np.ndarray, forward: np.ndarray) -> np.ndarray:
    """Smile: ATM level from the daily series, falling as the price rises, plus skew and convexity."""
    u = cctx.underlying
    atm = paths.daily_value("atm_iv", u, t)
    open_log = paths.daily_series(u).log_open[paths.day_index(cctx.day)]
    atm = atm * np.exp(-1.5 * (paths.log_spot(u, t) - open_log))
    years = np.maximum((cctx.expiry[opt] - t) / US_PER_YEAR, 1.0 / (365 * 24))
    atm_t = atm * (1.0 + 0.05 * np.log((years * 365.0 + 1.0) / 30.0))
    x = np.clip(np.log(cctx.strike[opt] / forward) / (atm_t * np.sqrt(years)), -4.0, 4.0)
    iv = atm_t * (1.0 + 0.04 * x * x - 0.07 * x)
    return np.clip(iv, 0.5 * atm_t, 3.0 * atm_t)


@dataclasses.dataclass(frozen=True)
class Valuation:
    spot: np.ndarray
    forward: np.ndarray
    iv: np.ndarray
    greeks: Greeks
    fair: np.ndarray  # option price in its quote currency


def value(cctx: ChainCtx, opt: np.ndarray, t: np.ndarray) -> Valuation:
    s = paths.spot(cctx.underlying, t)
    years = np.maximum(cctx.expiry[opt] - t, 0) / US_PER_YEAR
    forward = s * np.exp(paths.daily_value("carry", cctx.underlying, t) * years)
    iv = implied_vol(cctx, opt, t, forward)
    g = black(forward, cctx.strike[opt], years, iv, cctx.call[opt])
    fair = g.price_usd / s if cctx.inverse else g.price_usd
    return Valuation(s, forward, iv, g, fair)


def _uniform_in(
    cctx: ChainCtx, opt: np.ndarray, t0: np.ndarray, t1: np.ndarray, r: np.random.Generator
) -> np.ndarray:
    """One time per row inside its option's interval, drawn with the activity profile."""
    path = paths.day_path(cctx.underlying, cctx.day)
    base = day_start_us(cctx.day)
    secs = np.arange(paths.SECONDS + 1, dtype=np.float64)
    c0 = np.interp((t0[opt] - base) / 1e6, secs, path.cum_activity)
    c1 = np.interp((t1[opt] - base) / 1e6, secs, path.cum_activity)
    s = np.interp(c0 + r.random(opt.size) * (c1 - c0), path.cum_activity, secs)
    return np.clip(base + (s * 1e6).astype(np.int64), t0[opt], t1[opt] - 1)


def _per_option_counts(
    cctx: ChainCtx, rate_full: np.ndarray, t0: np.ndarray, t1: np.ndarray, r: np.random.Generator
) -> np.ndarray:
    volume = paths.day_path(cctx.underlying, cctx.day).volume
    shares = np.array(
        [activity_share(cctx.underlying, cctx.day, int(a), int(b)) for a, b in zip(t0, t1, strict=True)]
    )
    return r.poisson(rate_full * cctx.scale * volume * shares)


@dataclasses.dataclass(frozen=True)
class ChainBook:
    opt: np.ndarray
    ts: np.ndarray
    local: np.ndarray
    bid: np.ndarray
    ask: np.ndarray
    resnap: np.ndarray

    def __len__(self) -> int:
        return int(self.ts.size)

    def select(self, i: int) -> ChainBook:
        m = self.opt == i
        return ChainBook(self.opt[m], self.ts[m], self.local[m], self.bid[m], self.ask[m], self.resnap[m])


def _sorted_unique_ms(opt: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((t, opt))
    opt, t = opt[order], t[order] // 1000
    banded = strictly_increasing_ms(opt.astype(np.int64) * _MS_BAND + t)
    return opt, (banded - opt.astype(np.int64) * _MS_BAND) * 1000


@functools.lru_cache(maxsize=32)
def chain_book(cctx: ChainCtx, w: int) -> ChainBook:
    t0, t1, _, _ = cctx.bounds(w)
    r = rng("chain-book", *cctx.key, w)
    alive = t1 > t0
    rate = np.array([i.profile.book_per_day for i in cctx.insts], dtype=np.float64)
    counts = np.where(alive, _per_option_counts(cctx, rate, t0, np.maximum(t1, t0), r), 0)
    opt = np.repeat(np.arange(len(cctx.insts)), counts)
    times = _uniform_in(cctx, opt, t0, t1, r)
    first = np.nonzero(alive)[0]
    opt = np.concatenate((first, opt))
    times = np.concatenate((t0[first], times))
    opt, ts = _sorted_unique_ms(opt, times)
    keep = ts < t1[opt]
    opt, ts = opt[keep], ts[keep]
    val = value(cctx, opt, ts)
    tick = cctx.tick.value
    spread = np.maximum(1 + r.poisson(2.0, ts.size), np.ceil(val.fair * 0.04 / tick)).astype(np.int64)
    mid = val.fair / tick
    bid = np.floor(mid - spread / 2.0 + 0.5).astype(np.int64)
    ask = np.maximum(bid + spread, 1)
    bid = np.where(bid > 0, bid, -1)
    # Deep in-the-money options often show no offers (as in real 2024 files): decided per option and day.
    itm = np.abs(val.greeks.delta) > 0.9
    no_ask_opt = unit(hash_combine(seed64("no-ask", *cctx.key), np.arange(len(cctx.insts)))) < 0.5
    ask = np.where(itm & no_ask_opt[opt] & (bid > 0), -1, ask)
    local = ts + latency(r, ts.size, 9.0)
    return ChainBook(opt, ts, local, bid, ask, np.zeros(ts.size, dtype=bool))


def chain_depth(cctx: ChainCtx, book: ChainBook, k: int) -> Depth:
    seeds = hash_combine(seed64("chain-depth", cctx.underlying), book.opt)
    usd_unit = paths.spot(cctx.underlying, book.ts)  # amounts count coins (BTC, ETH, XRP) either way
    level = (
        np.array([i.profile.level_usd for i in cctx.insts], dtype=np.float64)[book.opt] if len(book) else 0.0
    )
    density = cctx.insts[0].profile.level_density if cctx.insts else 0.35
    return depth_levels(seeds, book.ts, book.bid, book.ask, k, density, level, usd_unit, cctx.step)


@dataclasses.dataclass(frozen=True)
class ChainTrades:
    opt: np.ndarray
    ts: np.ndarray
    local: np.ndarray
    seq: np.ndarray
    buy: np.ndarray
    price: np.ndarray
    amount: np.ndarray

    def __len__(self) -> int:
        return int(self.ts.size)

    def select(self, i: int) -> ChainTrades:
        m = self.opt == i
        return ChainTrades(
            self.opt[m], self.ts[m], self.local[m], self.seq[m], self.buy[m], self.price[m], self.amount[m]
        )


def _book_index(book: ChainBook, opt: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Index of each (option, time)'s latest book update at or before it."""
    keys = book.opt.astype(np.int64) * _MS_BAND + book.ts // 1000
    q = opt.astype(np.int64) * _MS_BAND + t // 1000
    last = max(len(book) - 1, 0)
    idx = np.clip(np.searchsorted(keys, q, side="right") - 1, 0, last)
    # Before the option's first update in this window: use that first update.
    return np.where(book.opt[idx] == opt, idx, np.minimum(idx + 1, last)) if len(book) else idx


@functools.lru_cache(maxsize=32)
def chain_trades(cctx: ChainCtx, w: int) -> ChainTrades:
    t0, t1, _, _ = cctx.bounds(w)
    r = rng("chain-trades", *cctx.key, w)
    alive = t1 > t0
    rate = np.array([i.profile.trades_per_day for i in cctx.insts], dtype=np.float64)
    counts = np.where(alive, _per_option_counts(cctx, rate, t0, np.maximum(t1, t0), r), 0)
    opt = np.repeat(np.arange(len(cctx.insts)), counts)
    times = _uniform_in(cctx, opt, t0, t1, r) // 1000 * 1000
    order = np.lexsort((times, opt))
    opt, ts = opt[order], times[order]
    book = chain_book(cctx, w)
    if len(book) == 0 or opt.size == 0:
        e = np.empty(0, dtype=np.int64)
        return ChainTrades(e, e, e, e, np.empty(0, dtype=bool), e, e)
    idx = _book_index(book, opt, ts)
    buy = r.random(ts.size) < 0.5
    bid, ask = book.bid[idx], book.ask[idx]
    buy = np.where(bid < 0, True, np.where(ask < 0, False, buy))
    price = np.where(buy, ask, bid)
    notional = order_notional(r, ts.size, 20_000.0)
    amount = to_steps(notional / paths.spot(cctx.underlying, ts), cctx.step)
    local = ts + latency(r, ts.size, 9.0)
    seq = 100_000_000 + paths.day_index(cctx.day) * 1_000_000 + w * 50_000 + np.arange(ts.size)
    keep = price > 0
    return ChainTrades(opt[keep], ts[keep], local[keep], seq[keep], buy[keep], price[keep], amount[keep])


@dataclasses.dataclass(frozen=True)
class ChainTicker:
    """One options_chain row per entry, columns as Tardis writes them (NaN / -1 = empty cell)."""

    opt: np.ndarray
    ts: np.ndarray
    local: np.ndarray
    open_interest: np.ndarray
    last_price: np.ndarray  # ticks, -1 = empty
    bid: np.ndarray  # ticks, -1 = empty
    bid_amount: np.ndarray  # steps
    bid_iv: np.ndarray
    ask: np.ndarray
    ask_amount: np.ndarray
    ask_iv: np.ndarray
    mark_price: np.ndarray
    mark_iv: np.ndarray
    underlying_future: np.ndarray  # bool: underlying_index is a listed future, else the synthetic index
    underlying_price: np.ndarray
    delta: np.ndarray
    gamma: np.ndarray
    vega: np.ndarray
    theta: np.ndarray
    rho: np.ndarray

    def __len__(self) -> int:
        return int(self.ts.size)


def _futures_by_expiry(day: dt.date, underlying: str) -> dict[int, int]:
    return {
        i.expiry_us: i.listing_us
        for i in instruments_live("deribit", day)
        if i.type == "future" and i.underlying == underlying and i.expiry_us is not None
    }


@functools.lru_cache(maxsize=32)
def chain_ticker(cctx: ChainCtx, w: int) -> ChainTicker:
    t0, t1, w0, _ = cctx.bounds(w)
    r = rng("chain-ticker", *cctx.key, w)
    alive = t1 > t0
    n_opt = len(cctx.insts)
    counts = np.where(
        alive, _per_option_counts(cctx, np.full(n_opt, ticker_rate(1.0)), t0, np.maximum(t1, t0), r), 0
    )
    opt = np.repeat(np.arange(n_opt), counts)
    times = _uniform_in(cctx, opt, t0, t1, r)
    first = np.nonzero(alive)[0]
    start_rows = t0[first] + r.integers(0, 2_000_000, first.size)
    # A new day opens with every option's last ticker from before midnight, received just after it.
    from_before = (w == 0) & (cctx.listing[first] < w0)
    start_rows = np.where(from_before, w0 - r.integers(1_000, 3_000_000, first.size), start_rows)
    opt = np.concatenate((first, opt))
    times = np.concatenate((np.minimum(start_rows, t1[first] - 1), times))
    early = np.concatenate((from_before, np.zeros(times.size - first.size, dtype=bool)))
    order = np.lexsort((times, opt))
    opt, ts, early = opt[order], times[order] // 1000 * 1000, early[order]
    val = value(cctx, opt, ts)
    book = chain_book(cctx, w)
    idx = _book_index(book, opt, ts)
    bid, ask = book.bid[idx], book.ask[idx]
    top = chain_depth(
        cctx, ChainBook(book.opt[idx], book.ts[idx], book.local[idx], bid, ask, book.resnap[idx]), 1
    )
    tick = cctx.tick.value

    def price_usd(ticks: np.ndarray) -> np.ndarray:
        return ticks * tick * (val.spot if cctx.inverse else 1.0)

    vega = np.maximum(val.greeks.vega, 1e-9)
    mark_usd = val.greeks.price_usd

    def quote_iv(ticks: np.ndarray) -> np.ndarray:
        """IV of a quote, first order around the mark; empty where that is meaningless (no vega left)."""
        iv = val.iv * 100 + (price_usd(ticks) - mark_usd) / vega
        ok = (ticks > 0) & (val.greeks.vega > 0.05) & (iv > 5.0) & (iv < 300.0)
        return np.where(ok, iv, np.nan)

    bid_iv, ask_iv = quote_iv(bid), quote_iv(ask)
    trades = chain_trades(cctx, w)
    tidx = (
        np.searchsorted(
            trades.opt.astype(np.int64) * _MS_BAND + trades.ts // 1000,
            opt.astype(np.int64) * _MS_BAND + ts // 1000,
            side="right",
        )
        - 1
    )
    traded = (
        (tidx >= 0) & (trades.opt[np.clip(tidx, 0, None)] == opt) if len(trades) else np.zeros(ts.size, bool)
    )
    last = np.where(traded, trades.price[np.clip(tidx, 0, None)] if len(trades) else -1, -1)
    # Before any trade in this window, the last price is a stale one from earlier days (none if just listed).
    stale_val = value(cctx, opt, np.full(ts.size, w0))
    stale = np.maximum(1, np.rint(stale_val.fair * (1 + 0.08 * r.standard_normal(ts.size)) / tick)).astype(
        np.int64
    )
    listed_before = cctx.listing[opt] < w0
    last = np.where(last > 0, last, np.where(listed_before, stale, -1))
    oi_base = (
        unit(hash_combine(seed64("chain-oi", cctx.underlying), np.arange(n_opt)))
        * 400
        * np.exp(-0.5 * np.log(cctx.strike / paths.open_price(cctx.underlying, cctx.day)) ** 2 / 0.04)
    )
    day_frac = (ts - day_start_us(cctx.day)) / US_PER_DAY
    oi = np.round(np.rint(oi_base[opt] * (1 + 0.15 * day_frac) * 10) / 10, 1)
    futures = _futures_by_expiry(cctx.day, cctx.underlying)
    fut_listing = np.array([futures.get(int(e), -1) for e in cctx.expiry], dtype=np.int64)[opt]
    und_future = (fut_listing >= 0) & (fut_listing <= ts)
    local = ts + latency(r, ts.size, 9.0)
    local = np.where(early, w0 + r.integers(20_000, 400_000, ts.size), local)
    und_dec = 2 if cctx.underlying in ("BTC", "ETH") else 4
    return ChainTicker(
        opt,
        ts,
        local,
        oi,
        last,
        bid,
        np.where(bid > 0, top.bid_amt[:, 0], 0),
        np.round(bid_iv, 2),
        ask,
        np.where(ask > 0, top.ask_amt[:, 0], 0),
        np.round(ask_iv, 2),
        np.round(np.maximum(val.fair, 0.0001), 4),  # venues never mark an option at zero
        np.round(val.iv * 100, 2),
        und_future,
        np.round(val.forward, und_dec),
        np.round(val.greeks.delta, 5),
        np.round(val.greeks.gamma, 5),
        np.round(val.greeks.vega, 5),
        np.round(val.greeks.theta, 5),
        np.round(val.greeks.rho, 5),
    )


def underlying_names(cctx: ChainCtx) -> tuple[list[str], list[str]]:
    """Per option: (synthetic index name, future name) for the ``underlying_index`` column."""
    prefix = cctx.insts[0].dataset_id.split("-")[0] if cctx.insts else cctx.underlying
    syn, fut = [], []
    for inst in cctx.insts:
        code = cal.deribit_code(cal.us_day(inst.expiry_us or 0))
        syn.append(f"SYN.{prefix}-{code}")
        fut.append(f"{prefix}-{code}")
    return syn, fut
