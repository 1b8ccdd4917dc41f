"""Candles benchmark: every feature on all seven timeframes vs polars ``group_by_dynamic`` on one.

Generates a full-scale-like BTCUSDT perpetual day in the lake schemas (seeded numpy, self-contained: about
2M trades, 4M book_snapshot_5 rows, a derivative ticker every second, a few thousand liquidations), then
times, in the same run and on the same Arrow tables:

- ours: ``build_candles`` for 15s..24h with every feature of the spec (trades, liquidations, derivative
  ticker, book close + time-weighted book values), and with trades only;
- baseline: polars ``group_by_dynamic`` computing OHLCV + VWAP + buy/sell volume for 1m only, starting from
  the same Arrow table (``pl.from_arrow``, sort by timestamp, aggregate).

Run: ``.venv/bin/python benchmarks/bench_candles.py [--trades N] [--book N] [--repeat K]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mdth_engine.core.schemas import SCHEMAS
from mdth_engine.core.timeframes import day_start_us
from mdth_engine.features.batch import build_candles

DAY = dt.date(2024, 3, 1)
MS = 1_000


def _times(rng: np.random.Generator, start: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Bursty ms-resolution exchange times and µs arrival times, in arrival (file) order."""
    weights = rng.gamma(0.7, 1.0, 1440)
    per = rng.multinomial(n, weights / weights.sum())
    offs = np.repeat(np.arange(1440, dtype=np.int64) * 60_000_000, per) + rng.integers(0, 60_000_000, n)
    ts = start + np.sort(offs) // MS * MS
    local = ts + (rng.lognormal(3.0, 0.5, n) * MS).astype(np.int64)
    order = np.argsort(local, kind="stable")
    return ts[order], local[order]


def _table(data_type: str, columns: dict[str, object]) -> pa.Table:
    arrays = []
    for field in SCHEMAS[data_type]:
        values = columns[field.name]
        if pa.types.is_timestamp(field.type):
            arrays.append(pa.array(values, type=pa.int64()).cast(field.type))
        elif pa.types.is_dictionary(field.type):
            arrays.append(values if isinstance(values, pa.Array) else pa.array(values, type=field.type))
        else:
            arrays.append(pa.array(values, type=field.type))
    return pa.Table.from_arrays(arrays, schema=SCHEMAS[data_type])


def make_day(n_trades: int, n_book: int, seed: int = 7) -> dict[str, pa.Table]:
    rng = np.random.default_rng(seed)
    start = day_start_us(DAY)
    ts, local = _times(rng, start, n_trades)
    price = np.round(62_000 + np.cumsum(rng.normal(0, 1.5, n_trades)), 1)
    amount = np.round(rng.exponential(0.02, n_trades), 3) + 0.001
    side = pa.DictionaryArray.from_arrays(
        pa.array(rng.choice(np.array([0, 1], dtype=np.int32), n_trades)), pa.array(["buy", "sell"])
    )
    trades = _table(
        "trades",
        {
            "timestamp": ts,
            "local_timestamp": local,
            "id": pa.nulls(n_trades, pa.string()),
            "side": side,
            "price": price,
            "amount": amount,
        },
    )
    bts, blocal = _times(rng, start, n_book)
    mid = 62_000 + np.cumsum(rng.normal(0, 0.8, n_book))
    cols: dict[str, object] = {"timestamp": bts, "local_timestamp": blocal}
    for lvl in range(1, 6):
        cols[f"ask_price_{lvl}"] = np.round(mid + 0.05 + (lvl - 1) * 0.1, 1)
        cols[f"ask_amount_{lvl}"] = np.round(rng.exponential(1.5, n_book), 3)
        cols[f"bid_price_{lvl}"] = np.round(mid - 0.05 - (lvl - 1) * 0.1, 1)
        cols[f"bid_amount_{lvl}"] = np.round(rng.exponential(1.5, n_book), 3)
    book = _table("book_snapshot_5", cols)
    n_dt = 86_400
    dts = start + np.arange(n_dt, dtype=np.int64) * 1_000_000
    oi = 80_000 + np.cumsum(rng.normal(0, 5, n_dt))
    derivative = _table(
        "derivative_ticker",
        {
            "timestamp": dts,
            "local_timestamp": dts + 20 * MS,
            "funding_timestamp": dts,
            "funding_rate": np.full(n_dt, 1e-4),
            "predicted_funding_rate": np.full(n_dt, 1e-4),
            "open_interest": oi,
            "last_price": np.full(n_dt, 62_000.0),
            "index_price": np.full(n_dt, 62_000.0),
            "mark_price": np.full(n_dt, 62_000.0),
        },
    )
    n_liq = 5_000
    lts, llocal = _times(rng, start, n_liq)
    liquidations = _table(
        "liquidations",
        {
            "timestamp": lts,
            "local_timestamp": llocal,
            "id": pa.nulls(n_liq, pa.string()),
            "side": pa.array(rng.choice(["buy", "sell"], n_liq)).dictionary_encode(),
            "price": np.full(n_liq, 62_000.0),
            "amount": rng.exponential(0.5, n_liq),
        },
    )
    return {"trades": trades, "book": book, "derivative_ticker": derivative, "liquidations": liquidations}


def polars_baseline(trades: pa.Table):
    import polars as pl

    df = pl.from_arrow(trades.select(["timestamp", "side", "price", "amount"])).sort("timestamp")
    return polars_aggregate(df)


def polars_aggregate(df):
    """The baseline's aggregation alone, on a frame already sorted by timestamp."""
    import polars as pl

    buy = pl.col("side") == "buy"
    sell = pl.col("side") == "sell"
    return df.group_by_dynamic("timestamp", every="1m", closed="left", label="left").agg(
        pl.col("price").first().alias("open"),
        pl.col("price").max().alias("high"),
        pl.col("price").min().alias("low"),
        pl.col("price").last().alias("close"),
        pl.col("amount").sum().alias("volume"),
        pl.len().alias("trade_count"),
        ((pl.col("price") * pl.col("amount")).sum() / pl.col("amount").sum()).alias("vwap"),
        pl.col("amount").filter(buy).sum().alias("buy_volume"),
        pl.col("amount").filter(sell).sum().alias("sell_volume"),
    )


def _time(fn: Callable[[], object], repeat: int) -> tuple[float, float, float]:
    """(best wall, median wall, best CPU) seconds; CPU time counts every thread (polars uses several)."""
    fn()  # warm-up
    walls, cpus = [], []
    for _ in range(repeat):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return min(walls), statistics.median(walls), min(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=2_000_000)
    parser.add_argument("--book", type=int, default=4_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    t0 = time.perf_counter()
    data = make_day(args.trades, args.book)
    print(
        f"generated {args.trades:,} trades, {args.book:,} book_snapshot_5 rows, "
        f"{data['derivative_ticker'].num_rows:,} derivative_ticker, {data['liquidations'].num_rows:,} "
        f"liquidations in {time.perf_counter() - t0:.1f}s"
    )
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, pyarrow {pa.__version__}, "
        f"polars {__import__('polars').__version__}, cpus {len(__import__('os').sched_getaffinity(0))}"
    )

    # Sanity: same 1m OHLCV and volumes as polars before timing anything.
    ours_1m = build_candles(
        DAY, trades=data["trades"], liquidations=None, derivative_ticker=None, book=None, timeframes=("1m",)
    )["1m"]
    theirs = polars_baseline(data["trades"])
    # polars leaves out empty minutes; our dense grid has them with trade_count 0.
    start = day_start_us(DAY)
    minute = (theirs["timestamp"].dt.epoch("us").to_numpy() - start) // 60_000_000
    assert ours_1m.num_rows == 1440 and int(np.sum(ours_1m.column("trade_count").to_numpy() > 0)) == len(
        minute
    )
    for a, b in (
        ("open", "open"),
        ("high", "high"),
        ("close", "close"),
        ("trade_count", "trade_count"),
        ("volume", "volume"),
        ("buy_volume_sum", "buy_volume"),
        ("price_vwap", "vwap"),
    ):
        x = ours_1m.column(a).to_numpy(zero_copy_only=False).astype(float)[minute]
        y = theirs[b].to_numpy().astype(float)
        assert np.allclose(x, y, rtol=1e-9, equal_nan=True), f"{a} differs from polars"

    cases = [
        ("polars group_by_dynamic, 1m, OHLCV+VWAP+buy/sell", lambda: polars_baseline(data["trades"])),
        (
            "ours, 7 timeframes, trade features only",
            lambda: build_candles(
                DAY, trades=data["trades"], liquidations=None, derivative_ticker=None, book=None
            ),
        ),
        ("ours, 7 timeframes, every feature", lambda: build_candles(DAY, **data)),
    ]
    import polars as pl

    sorted_df = pl.from_arrow(data["trades"].select(["timestamp", "side", "price", "amount"])).sort(
        "timestamp"
    )
    cases.insert(1, ("polars, aggregation only (frame pre-sorted)", lambda: polars_aggregate(sorted_df)))
    rows = []
    for name, fn in cases:
        rows.append((name, *_time(fn, args.repeat)))
    base_wall, base_cpu = rows[0][1], rows[0][3]
    width = max(len(r[0]) for r in rows)
    print(
        f"\n{'case':<{width}}  {'best ms':>8}  {'median ms':>9}  {'cpu ms':>7}  {'wall ratio':>10}  {'cpu ratio':>9}"
    )
    for name, best, median, cpu in rows:
        print(
            f"{name:<{width}}  {best * 1000:8.1f}  {median * 1000:9.1f}  {cpu * 1000:7.1f}  "
            f"{best / base_wall:9.2f}x  {cpu / base_cpu:8.2f}x"
        )
    print(f"\n(day {DAY}; ratios = case / polars end-to-end, best of {args.repeat} runs after a warm-up)")
    live_rates(data, min(args.trades, 300_000))


def live_rates(data: dict[str, pa.Table], n: int) -> None:
    """Events per second and per-event latency of the incremental (live) path, trades and book rows."""
    from mdth_engine.features.incremental import IncrementalCandles

    live = IncrementalCandles(day_or_start=DAY)
    trades = data["trades"].slice(0, n)
    ts = trades.column("timestamp").cast(pa.int64()).to_pylist()
    local = trades.column("local_timestamp").cast(pa.int64()).to_pylist()
    price = trades.column("price").to_pylist()
    amount = trades.column("amount").to_pylist()
    side = trades.column("side").cast(pa.string()).to_pylist()
    book = data["book"].slice(0, n)
    bts = book.column("timestamp").cast(pa.int64()).to_pylist()
    blocal = book.column("local_timestamp").cast(pa.int64()).to_pylist()
    level = range(1, 6)
    bp = list(zip(*[book.column(f"bid_price_{i}").to_pylist() for i in level], strict=True))
    ba = list(zip(*[book.column(f"bid_amount_{i}").to_pylist() for i in level], strict=True))
    ap = list(zip(*[book.column(f"ask_price_{i}").to_pylist() for i in level], strict=True))
    aa = list(zip(*[book.column(f"ask_amount_{i}").to_pylist() for i in level], strict=True))
    lat = np.empty(2 * n)
    clock = time.perf_counter_ns
    t0 = time.perf_counter()
    for i in range(n):
        a = clock()
        live.on_trade(ts[i], local[i], price[i], amount[i], side[i])
        b = clock()
        live.on_book(bts[i], blocal[i], bp[i], ba[i], ap[i], aa[i])
        c = clock()
        lat[2 * i], lat[2 * i + 1] = b - a, c - b
        if i % 1000 == 0:
            live.close_until(min(local[i], blocal[i]) - 2_000_000)
    elapsed = time.perf_counter() - t0
    p50, p99, worst = np.percentile(lat, [50, 99, 100]) / 1000
    print(
        f"\nincremental path: {2 * n:,} events (trades + book rows interleaved, clock every 1000) in "
        f"{elapsed:.2f}s = {2 * n / elapsed:,.0f} events/s incl. timing overhead; "
        f"per event p50 {p50:.1f} us, p99 {p99:.1f} us, max {worst:.0f} us"
    )


if __name__ == "__main__":
    main()
