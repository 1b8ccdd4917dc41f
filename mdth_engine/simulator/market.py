"""Per-instrument market events for one time window: book updates, depth, trades, tickers, liquidations.

A day is cut into windows (1 to 96, by expected volume); each window is generated independently from its
own seeded streams, starting with a book update at its first instant, so any window can be rebuilt alone.
Exchange timestamps are whole milliseconds; ``local`` adds the collector latency (a few ms, rare spikes).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import math
from decimal import Decimal

import numpy as np

from mdth_engine.core.timeframes import US_PER_DAY, day_start_us
from mdth_engine.simulator import paths
from mdth_engine.simulator.seeds import hash_combine, mix64, normal_from_hash, rng, seed64, unit
from mdth_engine.simulator.universe import Instrument

WINDOW_COUNTS = (1, 2, 4, 8, 12, 24, 48, 96)
ROWS_PER_WINDOW = 45_000
MAX_LATENCY_US = 1_500_000  # the day split relies on this bound
US_PER_YEAR = 365 * US_PER_DAY
FUNDING_PERIOD_US = 8 * 3_600_000_000
DEPTH_LEVELS = 25


@dataclasses.dataclass(frozen=True, slots=True)
class Grid:
    """A decimal step as ``num / 10**dec`` so values can be formatted exactly."""

    num: int
    dec: int

    @classmethod
    def of(cls, step: float) -> Grid:
        d = Decimal(repr(step)).normalize()
        exp = -d.as_tuple().exponent if d.as_tuple().exponent < 0 else 0
        return cls(int(d.scaleb(exp)), int(exp))

    @property
    def value(self) -> float:
        return self.num / 10**self.dec

    def to_float(self, ints: np.ndarray) -> np.ndarray:
        return (np.asarray(ints, dtype=np.int64) * self.num).astype(np.float64) / float(10**self.dec)


@dataclasses.dataclass(frozen=True, slots=True)
class Ctx:
    """An instrument on a day at a scale: the increments in force and the window layout."""

    inst: Instrument
    day: dt.date
    scale: float
    tag: str
    tick: Grid
    step: Grid
    n_win: int

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.inst.exchange, self.inst.dataset_id, self.day.isoformat(), self.tag)

    def window(self, w: int) -> tuple[int, int]:
        """Exchange-time bounds of window ``w``, clipped to the instrument's life."""
        start = day_start_us(self.day)
        span = US_PER_DAY // self.n_win
        t0, t1 = start + w * span, start + (w + 1) * span
        t0 = max(t0, self.inst.listing_us)
        if self.inst.end_us is not None:
            t1 = min(t1, self.inst.end_us)
        return t0, max(t0, t1)

    def window_end(self, w: int) -> int:
        return day_start_us(self.day) + (w + 1) * (US_PER_DAY // self.n_win)


def choose_windows(rows_per_day: float) -> int:
    for n in WINDOW_COUNTS:
        if rows_per_day / n <= ROWS_PER_WINDOW:
            return n
    return WINDOW_COUNTS[-1]


@functools.lru_cache(maxsize=2048)
def ctx_for(inst: Instrument, day: dt.date, scale: float, tag: str) -> Ctx:
    tick, step = inst.increments_on(day)
    volume = float(paths.daily_series(inst.underlying).volume[paths.day_index(day)])
    busiest = max(inst.profile.trades_per_day, inst.profile.book_per_day) * scale * volume
    return Ctx(inst, day, scale, tag, Grid.of(tick), Grid.of(step), choose_windows(busiest))


# ---------------------------------------------------------------------------------------------------------
# Shared building blocks


def sample_times(
    underlying: str, day: dt.date, t0: int, t1: int, n: int, r: np.random.Generator
) -> np.ndarray:
    """``n`` sorted times in ``[t0, t1)`` drawn with the day's activity profile as intensity."""
    if n <= 0 or t1 <= t0:
        return np.empty(0, dtype=np.int64)
    path = paths.day_path(underlying, day)
    base = day_start_us(day)
    secs = np.arange(paths.SECONDS + 1, dtype=np.float64)
    c0, c1 = np.interp([(t0 - base) / 1e6, (t1 - base) / 1e6], secs, path.cum_activity)
    gaps = r.exponential(1.0, n + 1)
    u = np.cumsum(gaps)[:-1] / gaps.sum()
    s = np.interp(c0 + u * (c1 - c0), path.cum_activity, secs)
    out = base + (s * 1e6).astype(np.int64)
    return np.clip(out, t0, t1 - 1)


def activity_share(underlying: str, day: dt.date, t0: int, t1: int) -> float:
    """Fraction of the day's activity that falls in ``[t0, t1)``."""
    if t1 <= t0:
        return 0.0
    path = paths.day_path(underlying, day)
    base = day_start_us(day)
    secs = np.arange(paths.SECONDS + 1, dtype=np.float64)
    c0, c1 = np.interp([(t0 - base) / 1e6, (t1 - base) / 1e6], secs, path.cum_activity)
    return float((c1 - c0) / path.cum_activity[-1])


def latency(r: np.random.Generator, n: int, base_ms: float) -> np.ndarray:
    """Collector latency in microseconds: lognormal around ``base_ms``, rare spikes of tens to hundreds of ms."""
    lat = base_ms * 1000.0 * (0.55 + r.lognormal(-0.3, 0.45, n))
    spikes = r.random(n) < 0.003
    lat[spikes] += r.exponential(90_000.0, int(spikes.sum()))
    return np.minimum(lat, MAX_LATENCY_US - 1).astype(np.int64) + 1


def strictly_increasing_ms(ts: np.ndarray) -> np.ndarray:
    """Millisecond times bumped forward so that no two are equal (one book update per millisecond)."""
    k = np.arange(ts.size, dtype=np.int64) * 1000
    return np.maximum.accumulate(ts - k) + k


def premium(inst: Instrument, t: np.ndarray) -> np.ndarray:
    key = f"premium|{inst.exchange}|{inst.dataset_id}"
    return paths.intraday_series(key, t, 0.85, 0.00012, 0.0001, 0.0004)


def fair_price(inst: Instrument, t: np.ndarray) -> np.ndarray:
    """The fair price of a non-option instrument in its quote currency."""
    s = paths.spot(inst.underlying, t)
    if inst.type == "spot" and inst.quote == "BTC":
        s = s / paths.spot("BTC", t)
    if inst.type == "perpetual":
        s = s * (1.0 + premium(inst, t))
    elif inst.type == "future" and inst.expiry_us is not None:
        years = np.maximum(inst.expiry_us - np.asarray(t, dtype=np.int64), 0) / US_PER_YEAR
        s = s * np.exp(paths.daily_value("carry", inst.underlying, t) * years)
    return s


def usd_per_unit(inst: Instrument, t: np.ndarray) -> np.ndarray:
    """USD value of one unit of ``amount`` at times ``t``."""
    if inst.amount_usd is not None:
        return np.full(np.shape(t), float(inst.amount_usd))
    return paths.spot(inst.underlying, t) * inst.amount_base


def to_steps(amount: np.ndarray, step: Grid) -> np.ndarray:
    return np.maximum(1, np.rint(amount / step.value)).astype(np.int64)


# ---------------------------------------------------------------------------------------------------------
# Book: best bid/ask at every update, and depth from a hashed level model


@dataclasses.dataclass(frozen=True)
class BookCore:
    ts: np.ndarray  # exchange time, strictly increasing ms
    local: np.ndarray
    bid: np.ndarray  # ticks; -1 when the side is empty
    ask: np.ndarray
    resnap: np.ndarray  # bool: the collector reconnected just before this update (a fresh L2 snapshot)

    def __len__(self) -> int:
        return int(self.ts.size)


def spread_ticks(
    r: np.random.Generator,
    fair: np.ndarray,
    tick: float,
    mean_extra: float,
    bps: float,
    vol_scale: np.ndarray | float = 1.0,
) -> np.ndarray:
    extra = r.poisson(np.maximum(mean_extra * vol_scale, 0.0))
    minimum = np.ceil(fair * bps / 1e4 / tick) if bps else 1.0
    return np.maximum(1 + extra, minimum).astype(np.int64)


def bbo_from_fair(fair: np.ndarray, tick: float, spread: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mid = fair / tick
    bid = np.floor(mid - spread / 2.0 + 0.5).astype(np.int64)
    ask = bid + spread
    bid = np.where(bid > 0, bid, -1)
    return bid, ask


BOOK_BURST = 6.0  # mean book updates per burst


def _bursty_updates(
    r: np.random.Generator, underlying: str, day: dt.date, t0: int, t1: int, n: int
) -> np.ndarray:
    """Book update times: bursts (placed by the activity profile) of a few updates tens of ms apart, plus
    one update at ``t0``; whole, strictly increasing milliseconds in ``[t0, t1)``."""
    bursts = max(round(n / BOOK_BURST), 0)
    times = np.empty(0, dtype=np.int64)
    if bursts:
        sizes = r.geometric(1.0 / BOOK_BURST, bursts)
        starts = sample_times(underlying, day, t0, t1, bursts, r)
        gaps = r.exponential(40_000.0, int(sizes.sum()))
        running = np.cumsum(gaps)
        first = np.repeat(np.cumsum(sizes) - sizes, sizes)
        within = running - (running[first] - gaps[first])
        times = np.repeat(starts, sizes) + within.astype(np.int64)
    ts = strictly_increasing_ms(np.sort(np.concatenate(([t0], times))) // 1000 * 1000)
    return ts[ts < t1]


@functools.lru_cache(maxsize=64)
def book_core(ctx: Ctx, w: int) -> BookCore:
    inst, prof = ctx.inst, ctx.inst.profile
    t0, t1 = ctx.window(w)
    r = rng("book", *ctx.key, w)
    if t1 <= t0:
        empty = np.empty(0, dtype=np.int64)
        return BookCore(empty, empty, empty, empty, np.empty(0, dtype=bool))
    volume = paths.day_path(inst.underlying, ctx.day).volume
    expected = prof.book_per_day * ctx.scale * volume * activity_share(inst.underlying, ctx.day, t0, t1)
    taker = orders(ctx, w).times
    # Every taker order moves the book at its own millisecond; the rest of the updates come in bursts.
    extra = max(expected - taker.size, 0.3 * expected)
    ts = np.sort(
        np.concatenate((_bursty_updates(r, inst.underlying, ctx.day, t0, t1, int(r.poisson(extra))), taker))
    )
    ts = ts[np.concatenate(([True], ts[1:] != ts[:-1]))]
    fair = fair_price(inst, ts)
    tick = ctx.tick.value
    spread = spread_ticks(r, fair, tick, prof.spread_ticks, prof.spread_bps)
    bid, ask = bbo_from_fair(fair, tick, spread)
    local = ts + latency(r, ts.size, prof.latency_ms)
    resnap = np.zeros(ts.size, dtype=bool)
    # About one collector reconnect every three days per instrument: a fresh snapshot in the L2 data.
    rr = rng("reconnect", *ctx.key)
    if rr.random() < 0.33:
        at = day_start_us(ctx.day) + int(rr.integers(0, US_PER_DAY))
        if t0 <= at < t1:
            resnap[min(int(np.searchsorted(ts, at)), ts.size - 1)] = True
    return BookCore(ts, local, bid, ask, resnap)


@dataclasses.dataclass(frozen=True)
class Depth:
    ask_px: np.ndarray  # (n, K) ticks, -1 = no level
    ask_amt: np.ndarray  # (n, K) amount steps
    bid_px: np.ndarray
    bid_amt: np.ndarray


def _side_levels(
    seed_col: np.ndarray, ts: np.ndarray, best: np.ndarray, side: int, m: int, k: int, density: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(prices, level hashes, offsets from the touch, number present) of the first ``k`` present levels
    among ``m`` candidate prices per row."""
    offsets = np.arange(m, dtype=np.int64)
    price = best[:, None] + side * offsets[None, :]
    valid = (best[:, None] > 0) & (price > 0)
    side_seed = mix64(seed_col ^ np.uint64(0xA5A5 if side > 0 else 0x5A5A))
    h_price = hash_combine(side_seed, price)
    period = (200_000 + (unit(h_price) ** 2) * 20_000_000).astype(np.int64)  # 0.2 s .. 20 s
    period = np.where(offsets[None, :] == 0, period // 4 + 50_000, period)
    phase = (unit(mix64(h_price ^ np.uint64(77))) * period).astype(np.int64)
    h = hash_combine(h_price, (ts[:, None] + phase) // period)
    present = valid & ((unit(h) < density) | (offsets[None, :] == 0))
    order = np.argsort(~present, axis=1, kind="stable")[:, :k]
    rows = np.arange(best.size)[:, None]
    chosen = present[rows, order]
    return (
        np.where(chosen, price[rows, order], -1),
        h[rows, order],
        np.where(chosen, order, -1),
        present.sum(1),
    )


def depth_levels(
    seed: np.ndarray | np.uint64,
    ts: np.ndarray,
    bid: np.ndarray,
    ask: np.ndarray,
    k: int,
    density: float,
    level_usd: float | np.ndarray,
    usd_unit: np.ndarray,
    step: Grid,
) -> Depth:
    """Top ``k`` levels per side at each update.

    A price level's presence and size are hashes of (instrument, price, epoch), where each level refreshes on
    its own period, so consecutive updates change only a few levels, as in real books. The result for ``k``
    levels is always the first ``k`` of the result for 25. ``usd_unit`` is the USD value of one amount unit at
    each update, ``level_usd`` the median level notional.
    """
    m_full = max(k, math.ceil(DEPTH_LEVELS / max(density, 0.05) * 1.6) + 4)
    m = 1 if k == 1 else min(m_full, math.ceil(k / max(density, 0.05) * 2.5) + 6)
    seed_arr = np.asarray(seed, dtype=np.uint64)
    level = np.asarray(level_usd, dtype=np.float64)
    out = []
    for side, best in ((1, ask), (-1, bid)):
        seed_col = seed_arr[:, None] if seed_arr.ndim else seed_arr
        px, h, off, count = _side_levels(seed_col, ts, best, side, m, k, density)
        short = np.nonzero((count < k) & (best > 0))[0] if m < m_full else np.empty(0, dtype=np.int64)
        if short.size:  # not enough levels near the touch: look as deep as the 25-level book does
            sub_seed = seed_arr[short][:, None] if seed_arr.ndim else seed_arr
            px[short], h[short], off[short], _ = _side_levels(
                sub_seed, ts[short], best[short], side, m_full, k, density
            )
        lvl = level[:, None] if level.ndim else level
        notional = (
            lvl * np.exp(normal_from_hash(h) - 0.5) * (0.35 + 0.65 * np.minimum(np.maximum(off, 0), 6) / 6)
        )
        amt = np.where(px >= 0, to_steps(notional / usd_unit[:, None], step), 0)
        out.append((px, amt))
    (ask_px, ask_amt), (bid_px, bid_amt) = out
    return Depth(ask_px, ask_amt, bid_px, bid_amt)


def book_depth(ctx: Ctx, core: BookCore, k: int) -> Depth:
    inst = ctx.inst
    return depth_levels(
        seed64("depth", inst.exchange, inst.dataset_id),
        core.ts,
        core.bid,
        core.ask,
        k,
        inst.profile.level_density,
        inst.profile.level_usd,
        usd_per_unit(inst, core.ts),
        ctx.step,
    )


# ---------------------------------------------------------------------------------------------------------
# Trades


@dataclasses.dataclass(frozen=True)
class Trades:
    ts: np.ndarray
    local: np.ndarray
    seq: np.ndarray  # int64 trade sequence numbers (ids are derived from them)
    buy: np.ndarray  # taker side is buy
    price: np.ndarray  # ticks
    amount: np.ndarray  # steps

    def __len__(self) -> int:
        return int(self.ts.size)


@functools.lru_cache(maxsize=256)
def _daily_trade_counts(inst: Instrument, scale: float) -> tuple[int, np.ndarray]:
    """(first day index, cumulative trade counts per day from listing) so ids run on across days."""
    series = paths.daily_series(inst.underlying)
    first = paths.day_index(inst.since)
    last = paths.N_DAYS - 1
    days = np.arange(first, last)
    frac = np.ones(days.size)
    start_frac = 1.0 - (inst.listing_us - day_start_us(inst.since)) / US_PER_DAY
    frac[0] = start_frac
    counts = np.rint(inst.profile.trades_per_day * scale * series.volume[first:last] * frac).astype(np.int64)
    if inst.end_us is not None:
        end_index = paths.day_index(inst.until) - first if inst.until else counts.size
        end_day_frac = ((inst.end_us - 1) % US_PER_DAY + 1) / US_PER_DAY
        if 0 < end_index <= counts.size:
            counts[end_index - 1] = np.rint(counts[end_index - 1] * end_day_frac)
            counts[end_index:] = 0
    return first, np.concatenate(([0], np.cumsum(counts)))


@functools.lru_cache(maxsize=512)
def trade_plan(ctx: Ctx) -> tuple[np.ndarray, np.ndarray]:
    """(trades per window, first sequence number per window) for the instrument-day."""
    first, cum = _daily_trade_counts(ctx.inst, ctx.scale)
    index = paths.day_index(ctx.day) - first
    if index < 0 or index + 1 >= cum.size:
        return np.zeros(ctx.n_win, dtype=np.int64), np.zeros(ctx.n_win, dtype=np.int64)
    total = int(cum[index + 1] - cum[index])
    shares = np.array(
        [activity_share(ctx.inst.underlying, ctx.day, *ctx.window(w)) for w in range(ctx.n_win)]
    )
    if shares.sum() <= 0:
        return np.zeros(ctx.n_win, dtype=np.int64), np.zeros(ctx.n_win, dtype=np.int64)
    counts = rng("talloc", *ctx.key).multinomial(total, shares / shares.sum())
    starts = int(cum[index]) + np.concatenate(([0], np.cumsum(counts)[:-1]))
    return counts.astype(np.int64), starts.astype(np.int64) + id_origin(ctx.inst)


def id_origin(inst: Instrument) -> int:
    return 10_000_000 + int(seed64("id-origin", inst.exchange, inst.dataset_id) % np.uint64(90_000_000))


def taker_buy_probability(inst: Instrument, t: np.ndarray) -> np.ndarray:
    """Takers lean into the instrument's last 30 s move: more buys while its price rises."""
    move = np.log(fair_price(inst, t)) - np.log(fair_price(inst, t - 30_000_000))
    vol = paths.daily_value("vol", inst.underlying, t) * math.sqrt(30 / 86_400)
    return 0.5 + 0.22 * np.tanh(move / np.maximum(vol, 1e-9))


def fill_sides(r: np.random.Generator, t: np.ndarray, inst: Instrument) -> np.ndarray:
    return r.random(t.size) < taker_buy_probability(inst, t)


def split_orders(r: np.random.Generator, n: int) -> np.ndarray:
    """Fills per taker order (1 + geometric), summing to exactly ``n``: one order sweeps several makers."""
    if n <= 0:
        return np.empty(0, dtype=np.int64)
    draws = r.geometric(0.62, size=int(n * 0.7) + 16)
    cum = np.cumsum(draws)
    while cum[-1] < n:
        draws = np.concatenate((draws, r.geometric(0.62, size=n)))
        cum = np.cumsum(draws)
    k = int(np.searchsorted(cum, n))
    fills = draws[: k + 1].copy()
    fills[k] -= cum[k] - n
    return fills.astype(np.int64)


def order_notional(r: np.random.Generator, n: int, median_usd: float) -> np.ndarray:
    """Heavy-tailed order sizes: lognormal body with a Pareto tail."""
    body = median_usd * r.lognormal(0.0, 1.25, n)
    tail = r.random(n) < 0.04
    body[tail] *= 1.0 + r.pareto(1.5, int(tail.sum())) * 4
    return body


@dataclasses.dataclass(frozen=True)
class Orders:
    times: np.ndarray  # whole ms, sorted: one per taker order
    fills: np.ndarray  # trades (maker fills) per order


@functools.lru_cache(maxsize=64)
def orders(ctx: Ctx, w: int) -> Orders:
    counts, _ = trade_plan(ctx)
    t0, t1 = ctx.window(w)
    r = rng("orders", *ctx.key, w)
    fills = split_orders(r, int(counts[w]))
    times = sample_times(ctx.inst.underlying, ctx.day, t0, t1, fills.size, r) // 1000 * 1000
    return Orders(times, fills)


@functools.lru_cache(maxsize=64)
def trades(ctx: Ctx, w: int) -> Trades:
    inst, prof = ctx.inst, ctx.inst.profile
    counts, starts = trade_plan(ctx)
    n = int(counts[w])
    r = rng("trades", *ctx.key, w)
    plan = orders(ctx, w)
    fills, orders_t = plan.fills, plan.times
    core = book_core(ctx, w)
    buy_order = fill_sides(r, orders_t, inst)
    notional = order_notional(r, fills.size, prof.notional_usd)
    lat_order = latency(r, fills.size, prof.latency_ms)
    ts = np.repeat(orders_t, fills)
    buy = np.repeat(buy_order, fills)
    share = r.lognormal(0.0, 0.6, n)
    fill_notional = np.repeat(notional / fills, fills) * share
    idx = np.searchsorted(core.ts, ts, side="right") - 1
    idx = np.clip(idx, 0, max(len(core) - 1, 0))
    ask = core.ask[idx] if len(core) else np.full(n, -1)
    bid = core.bid[idx] if len(core) else np.full(n, -1)
    buy = np.where(bid < 0, True, np.where(ask < 0, False, buy))
    price = np.where(buy, ask, bid)
    amount = to_steps(fill_notional / usd_per_unit(inst, ts), ctx.step)
    local = ts + np.repeat(lat_order, fills)
    seq = starts[w] + np.arange(n, dtype=np.int64)
    keep = price > 0
    return Trades(ts[keep], local[keep], seq[keep], buy[keep], price[keep], amount[keep])


# ---------------------------------------------------------------------------------------------------------
# Derivative ticker (funding, open interest, index, mark, last)


@dataclasses.dataclass(frozen=True)
class Ticker:
    ts: np.ndarray
    local: np.ndarray
    funding_ts: np.ndarray  # -1 = empty
    funding_rate: np.ndarray  # NaN = empty
    predicted: np.ndarray
    open_interest: np.ndarray
    last: np.ndarray  # ticks
    index: np.ndarray  # float, quote currency
    mark: np.ndarray  # float

    def __len__(self) -> int:
        return int(self.ts.size)


def ticker_interval_us(scale: float) -> int:
    """About one row a second at full scale, fewer at smaller scales (never more than 10 minutes apart)."""
    return int(min(600.0, max(1.0, 1.0 / (scale * 5.0))) * 1_000_000)


def funding_at(
    inst: Instrument, ts: np.ndarray, jitter: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(next funding time or -1, funding rate or NaN, predicted rate or NaN) as the venue publishes them.

    Binance/Bybit/OKX fund every 8 hours (00, 08, 16 UTC) and publish the next funding time; the rate tracks
    the average premium of the period. Deribit funds continuously and publishes no funding time.
    """
    nan = np.full(ts.size, np.nan)
    funding_ts = np.full(ts.size, -1, dtype=np.int64)
    funding_rate, predicted = nan.copy(), nan.copy()
    if inst.type != "perpetual":
        return funding_ts, funding_rate, predicted
    prem = premium(inst, ts)
    period_start = ts // FUNDING_PERIOD_US * FUNDING_PERIOD_US
    start_prem = premium(inst, period_start)
    rate = np.clip(0.0001 + 0.6 * ((prem + start_prem) / 2 - 0.0001), -0.003, 0.003)
    if inst.funding == "deribit":
        wobble = 0.8 + 0.4 * (jitter if jitter is not None else np.full(ts.size, 0.5))
        funding_rate = np.round(rate * wobble, 8)
    else:
        funding_ts = period_start + FUNDING_PERIOD_US
        funding_rate = np.round(rate, 8)
        if inst.funding in ("bybit", "okex"):
            predicted = np.round(np.clip(0.0001 + 0.6 * (prem - 0.0001), -0.003, 0.003), 8)
    return funding_ts, funding_rate, predicted


@functools.lru_cache(maxsize=64)
def ticker(ctx: Ctx, w: int) -> Ticker:
    inst, prof = ctx.inst, ctx.inst.profile
    t0, t1 = ctx.window(w)
    r = rng("ticker", *ctx.key, w)
    step = ticker_interval_us(ctx.scale)
    if t1 <= t0:
        grid = np.empty(0, dtype=np.int64)
    else:
        first = -(-t0 // step) * step
        grid = np.arange(first, t1, step, dtype=np.int64)
        grid = grid + r.integers(0, max(step // 4, 1000), grid.size)
        if inst.type == "perpetual" and inst.funding in ("binance", "bybit", "okex"):
            # A row right after every funding event, when the next funding time moves on.
            fund = np.arange(-(-t0 // FUNDING_PERIOD_US) * FUNDING_PERIOD_US, t1, FUNDING_PERIOD_US)
            grid = np.concatenate((grid, fund + 1000))
        grid = np.unique(grid[(grid >= t0) & (grid < t1)] // 1000 * 1000)
    ts = grid
    fair = fair_price(inst, ts)
    index = paths.spot(inst.underlying, ts)
    if inst.quote == "BTC":
        index = index / paths.spot("BTC", ts)
    funding_ts, funding_rate, predicted = funding_at(inst, ts, r.random(ts.size))
    oi_level = paths.intraday_series(f"oi|{inst.exchange}|{inst.dataset_id}", ts, 0.98, 0.03, 0.0, 0.05)
    oi_usd = prof.oi_usd * np.exp(oi_level)
    if inst.type == "future" and inst.expiry_us is not None:
        # Open interest builds up after listing and unwinds into expiry.
        age = np.clip((ts - inst.listing_us) / (30 * US_PER_DAY), 0.02, 1.0)
        left = np.clip((inst.expiry_us - ts) / (7 * US_PER_DAY), 0.05, 1.0)
        oi_usd = oi_usd * age * left
    oi = oi_usd / usd_per_unit(inst, ts)
    oi_step = ctx.step.value
    open_interest = np.round(np.rint(oi / oi_step) * oi_step, ctx.step.dec)
    tr = trades(ctx, w)
    pos = np.searchsorted(tr.ts, ts, side="right") - 1
    core = book_core(ctx, w)
    bpos = np.clip(np.searchsorted(core.ts, ts, side="right") - 1, 0, None)
    fallback = core.bid[bpos] if len(core) else np.full(ts.size, -1)
    last = np.where(pos >= 0, tr.price[np.clip(pos, 0, None)] if len(tr) else -1, fallback)
    local = ts + latency(r, ts.size, prof.latency_ms * 1.5)
    decimals = min(ctx.tick.dec + 2, 10)  # index/mark carry two more decimals than the tick
    return Ticker(
        ts,
        local,
        funding_ts,
        funding_rate,
        predicted,
        open_interest,
        last,
        np.round(index, decimals),
        np.round(fair, decimals),
    )


# ---------------------------------------------------------------------------------------------------------
# Liquidations, clustered where the price makes sharp new local extremes


@dataclasses.dataclass(frozen=True)
class Liquidations:
    ts: np.ndarray
    local: np.ndarray
    buy: np.ndarray  # buy = a short position was liquidated
    price: np.ndarray  # ticks
    amount: np.ndarray  # steps
    seq: np.ndarray

    def __len__(self) -> int:
        return int(self.ts.size)


@functools.lru_cache(maxsize=16)
def _extremes(underlying: str, day: dt.date) -> tuple[np.ndarray, np.ndarray]:
    """Per-second weights for short (up-move) and long (down-move) liquidations."""
    logp = paths.day_path(underlying, day).logp
    look = 300
    padded = np.concatenate((np.full(look, logp[0]), logp[:-1]))
    windows = np.lib.stride_tricks.sliding_window_view(padded, look)[: paths.SECONDS]
    prev_max = windows.max(axis=1)
    prev_min = windows.min(axis=1)
    ret = logp[:-1] - np.concatenate((np.full(60, logp[0]), logp[:-61]))
    sigma = max(float(np.std(np.diff(logp))) * math.sqrt(60), 1e-9)
    z = ret / sigma
    up = np.where(logp[:-1] >= prev_max, np.maximum(z - 0.5, 0.0) ** 2, 0.0)
    down = np.where(logp[:-1] <= prev_min, np.maximum(-z - 0.5, 0.0) ** 2, 0.0)
    return up, down


@functools.lru_cache(maxsize=64)
def liquidations_day(ctx: Ctx) -> Liquidations:
    inst, prof = ctx.inst, ctx.inst.profile
    r = rng("liquidations", *ctx.key)
    empty = np.empty(0, dtype=np.int64)
    t_start, t_end = ctx.window(0)[0], ctx.window(ctx.n_win - 1)[1]
    if prof.liq_per_day <= 0 or t_end <= t_start:
        return Liquidations(empty, empty, np.empty(0, dtype=bool), empty, empty, empty)
    up, down = _extremes(inst.underlying, ctx.day)
    base = day_start_us(ctx.day)
    secs = np.arange(paths.SECONDS)
    alive = (base + secs * 1_000_000 >= t_start) & (base + secs * 1_000_000 < t_end)
    total = (up + down)[alive].sum()
    volume = paths.day_path(inst.underlying, ctx.day).volume
    expected = prof.liq_per_day * ctx.scale * volume
    if total <= 0:
        return Liquidations(empty, empty, np.empty(0, dtype=bool), empty, empty, empty)
    out_t, out_buy = [], []
    for weights, is_buy in ((up, True), (down, False)):
        lam = np.where(alive, weights / total * expected, 0.0)
        counts = r.poisson(lam)
        sec = np.repeat(secs, counts)
        out_t.append(base + sec * 1_000_000 + r.integers(0, 1_000_000, sec.size))
        out_buy.append(np.full(sec.size, is_buy))
    t = np.concatenate(out_t)
    buy = np.concatenate(out_buy)
    order = np.argsort(t, kind="stable")
    ts = t[order] // 1000 * 1000
    buy = buy[order]
    fair = fair_price(inst, ts)
    slip = 1.0 + np.where(buy, 1, -1) * r.uniform(0.0002, 0.003, ts.size)
    price = np.maximum(1, np.rint(fair * slip / ctx.tick.value)).astype(np.int64)
    notional = prof.level_usd * 0.15 * r.lognormal(0.0, 1.4, ts.size)
    amount = to_steps(notional / usd_per_unit(inst, ts), ctx.step)
    local = ts + latency(r, ts.size, prof.latency_ms)
    seq = id_origin(inst) // 7 + paths.day_index(ctx.day) * 100_000 + np.arange(ts.size)
    return Liquidations(ts, local, buy, price, amount, seq)
