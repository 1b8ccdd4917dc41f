"""Seeded synthetic tick tables for the feature tests (lake schemas), plus checks that they hold the hard cases.

The days include: bursts and a silent hour (empty buckets), millisecond timestamp ties, out-of-order
exchange timestamps, rows stamped on the previous and next day, unknown/null sides, NaN prices, NaN fields
in derivative_ticker, books with empty levels (also an empty best ask) and out-of-order stamps, and an
options chain whose nearest expiry (08:00 UTC) stops qualifying during the day.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pyarrow as pa

from mdth_engine.core.schemas import SCHEMAS
from mdth_engine.core.timeframes import US_PER_DAY, day_start_us

MS = 1_000
SEC = 1_000_000
HOUR = 3_600 * SEC


@dataclasses.dataclass
class Day:
    day: dt.date
    trades: pa.Table
    liquidations: pa.Table
    derivative_ticker: pa.Table
    book: pa.Table
    options_chain: pa.Table

    def tables(self) -> dict[str, pa.Table]:
        return {
            "trades": self.trades,
            "liquidations": self.liquidations,
            "derivative_ticker": self.derivative_ticker,
            "book": self.book,
            "options_chain": self.options_chain,
        }


def _table(data_type: str, columns: dict[str, object]) -> pa.Table:
    schema = SCHEMAS[data_type]
    arrays = []
    for field in schema:
        values = columns[field.name]
        if pa.types.is_dictionary(field.type):
            arrays.append(pa.array(values, type=pa.string()).dictionary_encode())
        elif pa.types.is_timestamp(field.type):
            arr = np.asarray(values, dtype=np.int64)
            arrays.append(pa.array(arr, type=pa.int64()).cast(field.type))
        else:
            arrays.append(pa.array(values, type=field.type, from_pandas=True))
    return pa.Table.from_arrays(
        arrays, schema=pa.schema([pa.field(f.name, a.type) for f, a in zip(schema, arrays, strict=True)])
    )


def _event_times(rng: np.random.Generator, start: int, n: int, silent: tuple[int, int]) -> np.ndarray:
    """Bursty exchange times (ms resolution, many ties) over the day, none inside ``silent`` (µs offsets)."""
    weights = rng.gamma(0.6, 1.0, 288)  # 5-minute intensity buckets
    per = rng.multinomial(n, weights / weights.sum())
    offs = np.concatenate([rng.integers(i * 300 * SEC, (i + 1) * 300 * SEC, c) for i, c in enumerate(per)])
    offs = offs[(offs < silent[0]) | (offs >= silent[1])]
    return start + np.sort(offs // MS * MS)


def _arrival(rng: np.random.Generator, ts: np.ndarray, out_of_order: float) -> tuple[np.ndarray, np.ndarray]:
    """(timestamp, local_timestamp) in file order: sorted by arrival, some exchange stamps out of order."""
    delay = (rng.lognormal(3.0, 0.6, len(ts)) * MS).astype(np.int64) + rng.integers(0, MS, len(ts))
    skewed = rng.random(len(ts)) < 0.002  # clock skew: arrives "before" it happened
    delay[skewed] = -rng.integers(1, 500, int(skewed.sum()))
    shuffle = rng.random(len(ts)) < out_of_order
    ts = ts.copy()
    ts[shuffle] += rng.integers(-800 * MS, 800 * MS, int(shuffle.sum())) // MS * MS
    local = ts + delay
    order = np.argsort(local, kind="stable")
    return ts[order], local[order]


def _edge_rows(start: int, ts: np.ndarray, local: np.ndarray, rng: np.random.Generator) -> tuple:
    """Append rows stamped just before the day (arriving after midnight) and on the next day."""
    prev = start - rng.integers(1, 900, 5) * MS
    nxt = start + US_PER_DAY + rng.integers(0, 2_000, 5) * MS
    ts = np.concatenate([prev, ts, nxt])
    local = np.concatenate([start + rng.integers(1, 50, 5) * MS, local, nxt + 30 * MS])
    order = np.argsort(local, kind="stable")
    return ts[order], local[order]


def _on_boundaries(rng: np.random.Generator, ts: np.ndarray) -> np.ndarray:
    """Stamp about 1% of rows exactly on a 15s bucket edge (the edge belongs to the next bucket)."""
    ts = ts.copy()
    pick = rng.random(len(ts)) < 0.01
    ts[pick] = ts[pick] // (15 * SEC) * (15 * SEC)
    return ts


def make_day(day: dt.date, seed: int, *, n_trades: int = 20_000, n_book: int = 30_000) -> Day:
    rng = np.random.default_rng(seed)
    start = day_start_us(day)
    silent = (3 * HOUR + 7 * 60 * SEC, 4 * HOUR + 11 * 60 * SEC)  # no trades, liquidations or book

    # trades
    ts, local = _arrival(rng, _on_boundaries(rng, _event_times(rng, start, n_trades, silent)), 0.01)
    fills = np.where(rng.random(len(ts)) < 0.1, rng.integers(2, 6, len(ts)), 1)  # one taker, several makers
    ts, local = np.repeat(ts, fills), np.repeat(local, fills) + rng.integers(0, 3, int(fills.sum()))
    order = np.argsort(local, kind="stable")
    ts, local = _edge_rows(start, ts[order], local[order], rng)
    n = len(ts)
    price = 40_000 + np.cumsum(rng.normal(0, 2.0, n)).round(1)
    amount = np.round(rng.exponential(0.05, n), 4) + 0.0001
    price[rng.random(n) < 0.0005] = np.nan
    side = rng.choice(np.array(["buy", "sell", "unknown"], dtype=object), n, p=[0.48, 0.48, 0.04])
    side[rng.random(n) < 0.002] = None
    trades = _table(
        "trades",
        {
            "timestamp": ts,
            "local_timestamp": local,
            "id": [str(i) for i in range(n)],
            "side": side,
            "price": price,
            "amount": amount,
        },
    )

    # liquidations
    ts, local = _edge_rows(start, *_arrival(rng, _event_times(rng, start, 400, silent), 0.05), rng)
    n = len(ts)
    liquidations = _table(
        "liquidations",
        {
            "timestamp": ts,
            "local_timestamp": local,
            "id": [None] * n,
            "side": rng.choice(np.array(["buy", "sell", "unknown"], dtype=object), n, p=[0.45, 0.45, 0.1]),
            "price": 40_000 + rng.normal(0, 50, n),
            "amount": np.round(rng.exponential(0.5, n), 3),
        },
    )

    # derivative_ticker: about every 3 s, fields missing at random, a silent stretch
    offs = np.sort(rng.choice(US_PER_DAY // (3 * SEC), 25_000, replace=False)) * 3 * SEC
    offs = offs[(offs < 13 * HOUR) | (offs >= 13 * HOUR + 40 * 60 * SEC)]
    ts, local = _edge_rows(
        start, *_arrival(rng, start + offs + rng.integers(0, 1000, len(offs)) * MS, 0.02), rng
    )
    n = len(ts)

    def maybe(values: np.ndarray, p: float) -> np.ndarray:
        values = values.astype(float)
        values[rng.random(n) < p] = np.nan
        return values

    oi = 80_000 + np.cumsum(rng.normal(0, 20, n))
    derivative = _table(
        "derivative_ticker",
        {
            "timestamp": ts,
            "local_timestamp": local,
            "funding_timestamp": start + 8 * HOUR * (1 + (ts - start) // (8 * HOUR)),
            "funding_rate": maybe(rng.normal(1e-4, 5e-5, n), 0.7),
            "predicted_funding_rate": maybe(rng.normal(1e-4, 5e-5, n), 0.5),
            "open_interest": maybe(oi.round(3), 0.6),
            "last_price": maybe(40_000 + rng.normal(0, 30, n), 0.3),
            "index_price": maybe(40_000 + rng.normal(0, 30, n), 0.2),
            "mark_price": maybe(40_000 + rng.normal(0, 30, n), 0.2),
        },
    )

    # book_snapshot_5
    book_times = _on_boundaries(rng, _event_times(rng, start, n_book, silent))
    ts, local = _edge_rows(start, *_arrival(rng, book_times, 0.005), rng)
    n = len(ts)
    mid = 40_000 + np.cumsum(rng.normal(0, 1.0, n))
    half = rng.integers(1, 30, n) * 0.05
    cols: dict[str, object] = {"timestamp": ts, "local_timestamp": local}
    for lvl in range(1, 6):
        ask_p = np.round(mid + half + (lvl - 1) * 0.5, 2)
        bid_p = np.round(mid - half - (lvl - 1) * 0.5, 2)
        ask_a = np.round(rng.exponential(2.0, n), 3) + 0.001
        bid_a = np.round(rng.exponential(2.0, n), 3) + 0.001
        empty_ask = rng.random(n) < 0.02 * lvl
        empty_bid = rng.random(n) < 0.02 * lvl
        if lvl == 1:
            empty_ask = rng.random(n) < 0.003  # whole ask side gone: mid/spread/microprice undefined
            empty_bid[:] = False
        for arr, mask in ((ask_p, empty_ask), (ask_a, empty_ask), (bid_p, empty_bid), (bid_a, empty_bid)):
            arr[mask] = np.nan
        cols.update(
            {
                f"ask_price_{lvl}": ask_p,
                f"ask_amount_{lvl}": ask_a,
                f"bid_price_{lvl}": bid_p,
                f"bid_amount_{lvl}": bid_a,
            }
        )
    book = _table("book_snapshot_5", cols)

    options_chain = _make_options(rng, start)
    return Day(day, trades, liquidations, derivative, book, options_chain)


def _make_options(rng: np.random.Generator, start: int) -> pa.Table:
    expiries = [start + 8 * HOUR, start + US_PER_DAY + 8 * HOUR, start + 7 * US_PER_DAY + 8 * HOUR]
    strikes = np.arange(36_000, 44_001, 1_000)
    symbols = [(e, k, t) for e in expiries for k in strikes for t in ("call", "put")]
    n = 12_000
    pick = rng.integers(0, len(symbols), n)
    ts = np.sort(start - 10 * SEC + rng.integers(0, US_PER_DAY, n) // MS * MS)
    ts[0:40] = start - rng.integers(1, 60, 40) * SEC  # state carried in from before the day
    pick[0 : len(symbols)] = np.arange(len(symbols))  # every option seen early
    ts = np.sort(_on_boundaries(rng, ts))
    local = ts + 40 * MS  # file order = arrival order
    ts[rng.random(n) < 0.01] -= 400 * MS  # some exchange stamps out of order
    exp = np.array([symbols[i][0] for i in pick])
    strike = np.array([symbols[i][1] for i in pick], dtype=float)
    kind = np.array([symbols[i][2] for i in pick], dtype=object)
    under = 40_000 + rng.normal(0, 300, n)
    tau = np.maximum((exp - ts) / (365 * US_PER_DAY), 1e-6)
    x = np.log(under / strike) / (0.6 * np.sqrt(tau))
    cdf = 0.5 * (1 + np.tanh(x * 0.8))
    delta = np.where(kind == "call", cdf, cdf - 1).round(4)
    iv = (55 + 30 * np.log(strike / under) ** 2 * 100 + rng.normal(0, 0.5, n)).round(2)
    delta[rng.random(n) < 0.01] = np.nan
    iv[rng.random(n) < 0.01] = np.nan
    names = [
        f"BTC-{dt.datetime.fromtimestamp(e / SEC, dt.UTC):%d%b%y}-{int(k)}-{'C' if t == 'call' else 'P'}".upper()
        for e, k, t in (symbols[i] for i in pick)
    ]
    nan = np.full(n, np.nan)
    return _table(
        "options_chain",
        {
            "timestamp": ts,
            "local_timestamp": local,
            "symbol": names,
            "instrument_key": [None] * n,
            "type": kind,
            "strike_price": strike,
            "expiration": exp,
            "open_interest": nan,
            "last_price": nan,
            "bid_price": nan,
            "bid_amount": nan,
            "bid_iv": nan,
            "ask_price": nan,
            "ask_amount": nan,
            "ask_iv": nan,
            "mark_price": nan,
            "mark_iv": iv,
            "underlying_index": ["BTC-USD"] * n,
            "underlying_price": under,
            "delta": delta,
            "gamma": nan,
            "vega": nan,
            "theta": nan,
            "rho": nan,
        },
    )


# -- the generator really produces the hard cases the other tests rely on ---------------------------------


def test_synthetic_day_has_the_hard_cases() -> None:
    d = make_day(dt.date(2024, 3, 1), 1)
    start = day_start_us(d.day)
    ts = d.trades.column("timestamp").cast(pa.int64()).to_numpy()
    local = d.trades.column("local_timestamp").cast(pa.int64()).to_numpy()
    assert np.all(np.diff(local) >= 0), "file order is arrival order"
    assert np.sum(np.diff(ts) < 0) > 50, "out-of-order exchange timestamps"
    assert np.sum(np.diff(ts) == 0) > 100, "millisecond ties"
    assert (ts < start).sum() > 0 and (ts >= start + US_PER_DAY).sum() > 0
    assert d.trades.column("side").null_count > 0
    assert "unknown" in d.trades.column("side").to_pylist()
    in_day = ts[(ts >= start) & (ts < start + US_PER_DAY)]
    assert len(np.unique((in_day - start) // (15 * SEC))) < 5760 - 200, "empty 15s buckets"
    assert d.book.column("ask_price_1").null_count > 0 and d.book.column("bid_amount_5").null_count > 0
    assert d.derivative_ticker.column("open_interest").null_count > 0
    assert d.options_chain.num_rows > 0
    for table in (d.trades, d.book, d.options_chain):
        stamps = table.column("timestamp").cast(pa.int64()).to_numpy()
        assert np.sum(stamps % (15 * SEC) == 0) > 50, "rows stamped exactly on bucket edges"
