"""Price paths: one per underlying, shared by every venue, continuous across days.

Day opens follow a rough history (anchors) plus an AR(1) deviation; inside a day the log price is a
variance-weighted Brownian bridge from today's open to tomorrow's, with volatility that follows a bursty
activity profile (the same profile drives trade arrivals), and occasional jumps.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools

import numpy as np

from mdth_engine.core.timeframes import US_PER_DAY
from mdth_engine.simulator.seeds import rng

EPOCH = dt.date(2018, 1, 1)
HORIZON = dt.date(2042, 1, 1)
N_DAYS = (HORIZON - EPOCH).days
SECONDS = 86_400
_UNIX = dt.date(1970, 1, 1)
MINUTES = 1_440

# Rough daily closes (USD) the synthetic history wanders around.
ANCHORS: dict[str, list[tuple[str, float]]] = {
    "BTC": [
        ("2018-01-01", 13500),
        ("2018-12-15", 3300),
        ("2019-06-26", 12000),
        ("2019-12-31", 7200),
        ("2020-03-13", 5000),
        ("2020-12-31", 29000),
        ("2021-04-14", 63000),
        ("2021-07-20", 30000),
        ("2021-11-10", 68000),
        ("2022-06-18", 19000),
        ("2022-11-21", 16000),
        ("2023-12-31", 42000),
        ("2024-03-14", 72000),
        ("2024-08-05", 54000),
        ("2024-12-17", 106000),
        ("2025-04-08", 77000),
        ("2025-10-06", 124000),
        ("2026-06-30", 100000),
    ],
    "ETH": [
        ("2018-01-01", 750),
        ("2018-12-15", 85),
        ("2019-06-26", 330),
        ("2019-12-31", 130),
        ("2020-03-13", 110),
        ("2020-12-31", 740),
        ("2021-05-12", 4300),
        ("2021-07-20", 1800),
        ("2021-11-10", 4800),
        ("2022-06-18", 1000),
        ("2022-12-31", 1200),
        ("2023-12-31", 2300),
        ("2024-03-12", 4000),
        ("2024-08-05", 2400),
        ("2024-12-16", 4000),
        ("2025-04-08", 1500),
        ("2025-08-24", 4900),
        ("2026-06-30", 3500),
    ],
    "SOL": [
        ("2018-01-01", 1.0),
        ("2020-08-11", 3.5),
        ("2020-12-31", 1.5),
        ("2021-09-09", 250),
        ("2021-11-06", 260),
        ("2022-06-18", 30),
        ("2022-12-29", 10),
        ("2023-12-31", 100),
        ("2024-03-18", 200),
        ("2025-01-19", 260),
        ("2025-04-08", 100),
        ("2026-06-30", 180),
    ],
    "XRP": [
        ("2018-01-01", 2.3),
        ("2018-12-15", 0.29),
        ("2020-03-13", 0.14),
        ("2021-04-14", 1.9),
        ("2022-06-18", 0.32),
        ("2023-07-13", 0.8),
        ("2024-06-30", 0.47),
        ("2024-12-03", 2.7),
        ("2025-07-18", 3.6),
        ("2026-06-30", 2.5),
    ],
}
DAILY_VOL = {"BTC": 0.03, "ETH": 0.04, "SOL": 0.055, "XRP": 0.045}
ATM_IV = {"BTC": 0.55, "ETH": 0.68, "SOL": 0.85, "XRP": 0.8}


def day_index(day: dt.date) -> int:
    index = (day - EPOCH).days
    if not 0 <= index < N_DAYS - 1:
        raise ValueError(f"day {day} is outside the simulated range {EPOCH}..{HORIZON}")
    return index


def _ar1(r: np.random.Generator, n: int, phi: float, sigma: float) -> np.ndarray:
    eps = r.standard_normal(n) * sigma
    out = np.empty(n)
    acc = 0.0
    for i in range(n):
        acc = phi * acc + eps[i]
        out[i] = acc
    return out


@dataclasses.dataclass(frozen=True)
class DailySeries:
    log_open: np.ndarray  # log USD price at 00:00 UTC of each day
    vol: np.ndarray  # daily volatility of that day
    volume: np.ndarray  # activity multiplier of that day (mean ~1)
    carry: np.ndarray  # annualised futures basis
    atm_iv: np.ndarray  # at-the-money implied volatility at 00:00 (fraction)


@functools.cache
def daily_series(underlying: str) -> DailySeries:
    r = rng("daily", underlying)
    pts = ANCHORS[underlying]
    xs = np.array([(dt.date.fromisoformat(d) - EPOCH).days for d, _ in pts], dtype=np.float64)
    ys = np.log(np.array([p for _, p in pts]))
    days = np.arange(N_DAYS, dtype=np.float64)
    anchor = np.interp(days, xs, ys)
    deviation = _ar1(r, N_DAYS, 0.96, 0.022)
    regime = _ar1(r, N_DAYS, 0.9, 0.22)
    vol = DAILY_VOL[underlying] * np.exp(regime - 0.05)
    volume = np.exp(0.8 * regime + r.standard_normal(N_DAYS) * 0.15)
    carry = 0.08 + _ar1(r, N_DAYS, 0.97, 0.01)
    atm_iv = ATM_IV[underlying] * np.exp(0.7 * regime + _ar1(r, N_DAYS, 0.9, 0.05))
    return DailySeries(anchor + deviation, vol, volume, carry, atm_iv)


def open_price(underlying: str, day: dt.date) -> float:
    return float(np.exp(daily_series(underlying).log_open[day_index(day)]))


@dataclasses.dataclass(frozen=True)
class DayPath:
    logp: np.ndarray  # 86,401 log prices at whole seconds (the last one is tomorrow's open)
    activity: np.ndarray  # 86,400 per-second intensities, mean 1
    cum_activity: np.ndarray  # 86,401 running integral of activity, from 0 to 86,400
    volume: float  # the day's activity multiplier


@functools.lru_cache(maxsize=40)
def day_path(underlying: str, day: dt.date) -> DayPath:
    series = daily_series(underlying)
    index = day_index(day)
    r = rng("intraday", underlying, day.isoformat())
    hours = np.arange(SECONDS, dtype=np.float64) / 3600.0
    seasonal = (
        0.7 + 0.55 * np.exp(-(((hours - 14.5) / 3.2) ** 2)) + 0.2 * np.exp(-(((hours - 1.5) / 2.0) ** 2))
    )
    minute_state = np.repeat(np.exp(_ar1(r, MINUTES, 0.97, 0.12)), 60)
    bursts = np.zeros(SECONDS)
    n_bursts = int(r.poisson(6))
    centers = np.sort(r.integers(0, SECONDS, n_bursts))
    jump_sizes = np.where(
        r.random(n_bursts) < 0.45, r.standard_normal(n_bursts) * series.vol[index] * 0.35, 0.0
    )
    for c, amp, tau in zip(
        centers, r.lognormal(0.9, 0.6, n_bursts), r.uniform(60, 900, n_bursts), strict=True
    ):
        span = np.arange(SECONDS - c, dtype=np.float64)
        bursts[c:] += amp * np.exp(-span / tau)
    activity = seasonal * minute_state * (1.0 + bursts)
    activity /= activity.mean()
    sigma = series.vol[index] * np.sqrt(activity / SECONDS)
    increments = r.standard_normal(SECONDS) * sigma
    increments[centers] += jump_sizes
    walk = np.concatenate(([0.0], np.cumsum(increments)))
    var_clock = np.concatenate(([0.0], np.cumsum(sigma * sigma)))
    target = series.log_open[index + 1] - series.log_open[index]
    bridge = walk - var_clock / var_clock[-1] * (walk[-1] - target)
    logp = series.log_open[index] + bridge
    cum = np.concatenate(([0.0], np.cumsum(activity)))
    return DayPath(logp, activity, cum, float(series.volume[index]))


def _by_day(t_us: np.ndarray):
    """Yield (day, where, seconds-into-day) for times that may span several days."""
    t = np.asarray(t_us, dtype=np.int64)
    if t.size == 0:
        return
    days = t // US_PER_DAY
    lo, hi = int(days.min()), int(days.max())
    for d in range(lo, hi + 1):
        where = slice(None) if lo == hi else (days == d)
        sub = t if lo == hi else t[where]
        if sub.size:
            yield _UNIX + dt.timedelta(days=d), where, (sub - d * US_PER_DAY) / 1e6


def log_spot(underlying: str, t_us: np.ndarray) -> np.ndarray:
    """Log USD price of ``underlying`` at the given microsecond times (linear between whole seconds)."""
    t = np.asarray(t_us, dtype=np.int64)
    out = np.empty(t.shape, dtype=np.float64)
    for day, where, secs in _by_day(t):
        logp = day_path(underlying, day).logp
        i = np.minimum(secs.astype(np.int64), SECONDS - 1)
        frac = secs - i
        out[where] = logp[i] + frac * (logp[i + 1] - logp[i])
    return out


def spot(underlying: str, t_us: np.ndarray) -> np.ndarray:
    return np.exp(log_spot(underlying, t_us))


def daily_value(name: str, underlying: str, t_us: np.ndarray) -> np.ndarray:
    """A daily series (``carry``, ``atm_iv``, ``vol``) interpolated linearly through the day."""
    series = getattr(daily_series(underlying), name)
    t = np.asarray(t_us, dtype=np.int64)
    pos = t / US_PER_DAY - (EPOCH - _UNIX).days
    return np.interp(pos, np.arange(N_DAYS, dtype=np.float64), series)


@functools.lru_cache(maxsize=256)
def minute_bridge(key: str, day: dt.date, start: float, end: float, sigma: float) -> np.ndarray:
    """1,441 values at whole minutes from ``start`` to ``end`` with Brownian noise ``sigma`` per sqrt(day)."""
    r = rng("bridge", key, day.isoformat())
    steps = r.standard_normal(MINUTES) * sigma / np.sqrt(MINUTES)
    walk = np.concatenate(([0.0], np.cumsum(steps)))
    frac = np.arange(MINUTES + 1) / MINUTES
    return start + frac * (end - start) + walk - frac * walk[-1]


@functools.lru_cache(maxsize=64)
def daily_ar(key: str, phi: float, sigma: float, mean: float) -> np.ndarray:
    """A per-key daily AR(1) series over the whole horizon (premium levels, open interest...)."""
    return mean + _ar1(rng("daily-ar", key), N_DAYS, phi, sigma)


def intraday_series(
    key: str, t_us: np.ndarray, phi: float, sigma: float, mean: float, noise: float
) -> np.ndarray:
    """A slowly varying per-key quantity, continuous across days, at the given times."""
    daily = daily_ar(key, phi, sigma, mean)
    t = np.asarray(t_us, dtype=np.int64)
    out = np.empty(t.shape, dtype=np.float64)
    for day, where, secs in _by_day(t):
        index = day_index(day)
        grid = minute_bridge(key, day, float(daily[index]), float(daily[index + 1]), noise)
        out[where] = np.interp(secs / 60.0, np.arange(MINUTES + 1, dtype=np.float64), grid)
    return out
