"""Warehouse benchmark: a month of 1m candles for 50 instruments loaded into DuckDB by the upload stage, and
typical queries on the warehouse timed against the same queries run by DuckDB straight over the Parquet lake.

Self-contained: candle files with the feature spec's schema are generated with seeded numpy (a random-walk
price per instrument, bursty volume, ~10% buckets without trades whose prices are NaN as in the real files)
and published with the lake's own Parquet writer. Then, in one run:

- load: ``mdth upload`` for every day (the stage through the unit runner, as the CLI runs it), a re-run
  (every unit skipped by its load record) and a forced reload (every day replaced);
- queries, each on the warehouse table ``candles_1m`` and on ``read_parquet`` over the lake's files (the
  baseline: no load step at all), warm, median of ``--repeat`` runs, results checked equal:
  ``daily_vwap``: volume-weighted average price per instrument and day (sum(price_vwap * volume) / sum(volume)
  over buckets with trades), and ``one_instrument_week``: the 1m closes of one instrument over 7 days.

Run: ``.venv/bin/python benchmarks/bench_warehouse.py [--days 30] [--instruments 50] [--repeat 5] [--keep]``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mdth_engine.core.settings import load_settings
from mdth_engine.core.timeframes import day_start_us
from mdth_engine.features.spec import candle_schema
from mdth_engine.jobs.runner import run_units
from mdth_engine.stages.base import Request
from mdth_engine.stages.registry import StageContext
from mdth_engine.stages.warehouse import make_stage
from mdth_engine.storage import layout
from mdth_engine.storage.parquet import write_table
from mdth_engine.storage.store import open_store
from mdth_engine.warehouse.duck import connect

START = dt.date(2024, 1, 1)
STEP_US = 60_000_000
UTC_US = pa.timestamp("us", tz="UTC")
VENUES = ("BINANCE", "BINANCE-FUTURES", "DERIBIT", "BYBIT", "OKX")


def instrument_keys(n: int) -> list[str]:
    bases = [f"C{i:02d}" for i in range(n)]
    return [f"{VENUES[i % len(VENUES)]}:SPOT_PAIR:{b}-USDT" for i, b in enumerate(bases)]


def day_table(rng: np.random.Generator, day: dt.date, start_price: float) -> tuple[pa.Table, float]:
    """One instrument-day of 1m candles in the spec's schema; returns the table and the closing price."""
    n = 1440
    ts = day_start_us(day) + np.arange(n, dtype=np.int64) * STEP_US
    close = start_price * np.exp(np.cumsum(rng.normal(0, 0.0008, n)))
    trades = rng.poisson(rng.gamma(0.8, 30.0, n))
    trades[rng.random(n) < 0.1] = 0
    has = trades > 0
    volume = np.where(has, rng.gamma(1.2, 2.0, n) * trades, 0.0)
    vwap = close * (1 + rng.normal(0, 0.0002, n))
    columns: dict[str, np.ndarray] = {
        "open": close * (1 + rng.normal(0, 0.0003, n)),
        "high": close * 1.001,
        "low": close * 0.999,
        "close": close,
        "volume": volume,
        "trade_count": trades,
        "price_vwap": vwap,
    }
    arrays = []
    for field in candle_schema():
        if field.name == "timestamp":
            arrays.append(pa.array(ts, UTC_US))
        elif field.name == "timestamp_out":
            arrays.append(pa.array(ts + STEP_US, UTC_US))
        elif pa.types.is_integer(field.type):
            arrays.append(pa.array(columns.get(field.name, rng.integers(0, 5, n)), field.type))
        else:
            values = columns.get(field.name)
            if values is None:
                values = rng.normal(0, 1, n)
            if field.name not in ("volume",):
                values = np.where(has, values, np.nan)  # no trades -> NaN prices and trade features
            arrays.append(pa.array(values, field.type))
    return pa.Table.from_arrays(arrays, schema=candle_schema()), float(close[-1])


def generate(store, days: list[dt.date], keys: list[str], seed: int) -> tuple[int, int]:
    rng = np.random.default_rng(seed)
    prices = {k: float(rng.uniform(0.5, 60_000)) for k in keys}
    rows = 0
    for day in days:
        for key in keys:
            table, prices[key] = day_table(rng, day, prices[key])
            write_table(
                store,
                layout.candles_path(day, "1m", key),
                table,
                {"instrument_key": key, "data_type": "candles"},
            )
            rows += table.num_rows
    size = sum(info.size for info in store.list(layout.CANDLES_ROOT + "/"))
    return rows, size


def timed_upload(ctx: StageContext, days: list[dt.date], force: bool) -> tuple[float, dict]:
    stage = make_stage(ctx)
    units = stage.plan(Request("upload", days[0], days[-1], timeframes=("1m",), options={"force": force}))
    t0 = time.perf_counter()
    summary = asyncio.run(run_units(stage, units, concurrency=ctx.settings.concurrency))
    elapsed = time.perf_counter() - t0
    if summary.failures:
        raise SystemExit(f"upload failed: {summary.failures[0].reason}")
    return elapsed, dict(summary.outcomes)


QUERIES = {
    "daily_vwap": (
        "SELECT instrument_key, day, sum(price_vwap * volume) / sum(volume) AS vwap "
        "FROM {src} WHERE trade_count > 0 GROUP BY ALL ORDER BY instrument_key, day"
    ),
    "one_instrument_week": (
        "SELECT timestamp, close FROM {src} WHERE instrument_key = '{key}' "
        "AND day BETWEEN DATE '{start}' AND DATE '{end}' ORDER BY timestamp"
    ),
}


def lake_source(root: Path) -> str:
    """The baseline: DuckDB over the lake's Parquet files, the key from the file name, the UTC day computed."""
    glob = f"{root}/{layout.CANDLES_ROOT}/day-*/timeframe-1m/*.parquet"
    return (
        "(SELECT regexp_extract(filename, '([^/]+)\\.parquet$', 1) AS instrument_key, "
        "CAST(timestamp AS DATE) AS day, * EXCLUDE (filename) "
        f"FROM read_parquet('{glob}', filename = true))"
    )


def time_query(con, sql: str, repeat: int) -> tuple[float, float, pa.Table]:
    first = None
    times = []
    result = None
    for _ in range(repeat + 1):
        t0 = time.perf_counter()
        result = con.sql(sql).to_arrow_table()
        elapsed = time.perf_counter() - t0
        if first is None:
            first = elapsed
        else:
            times.append(elapsed)
    assert result is not None and first is not None
    return first, statistics.median(times), result


def same(a: pa.Table, b: pa.Table) -> bool:
    if a.num_rows != b.num_rows or a.column_names != b.column_names:
        return False
    for name in a.column_names:
        x, y = a.column(name).to_numpy(zero_copy_only=False), b.column(name).to_numpy(zero_copy_only=False)
        if x.dtype.kind == "f":
            if not np.allclose(x, y, rtol=1e-12, atol=0, equal_nan=True):
                return False
        elif not np.array_equal(x, y):
            return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--instruments", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="Keep the generated lake and warehouse.")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="mdth-bench-wh-"))
    lake = root / "lake"
    store = open_store(str(lake))
    days = [START + dt.timedelta(days=i) for i in range(args.days)]
    keys = instrument_keys(args.instruments)
    try:
        t0 = time.perf_counter()
        rows, lake_bytes = generate(store, days, keys, args.seed)
        gen_s = time.perf_counter() - t0
        settings = load_settings(lake=str(lake))
        ctx = StageContext(settings=settings, store=store, spool_dir=root / "spool")
        db_path = Path(settings.warehouse_url()[len("duckdb:///") :])

        load_s, load_out = timed_upload(ctx, days, force=False)
        skip_s, skip_out = timed_upload(ctx, days, force=False)
        force_s, force_out = timed_upload(ctx, days, force=True)
        db_bytes = db_path.stat().st_size + sum(
            p.stat().st_size for p in db_path.parent.glob(db_path.name + ".wal")
        )

        wh = connect(db_path, read_only=True)
        base = connect(root / "baseline.duckdb")  # an empty database: the baseline only reads the lake
        results = []
        week = days[min(7, len(days) - 1) : 14] or days[-1:]
        params = {"key": keys[len(keys) // 2], "start": week[0], "end": week[-1]}
        for name, template in QUERIES.items():
            w_first, w_med, w_res = time_query(wh, template.format(src="candles_1m", **params), args.repeat)
            l_first, l_med, l_res = time_query(
                base, template.format(src=lake_source(lake), **params), args.repeat
            )
            if not same(w_res, l_res):
                raise SystemExit(f"{name}: the warehouse and the lake disagree")
            results.append((name, w_first, w_med, l_first, l_med, w_res.num_rows))
        wh.close()
        base.close()
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    print(
        f"# bench_warehouse  {platform.python_version()}  {platform.machine()}  cpus={__import__('os').cpu_count()}"
    )
    print(
        f"data: {args.days} days x {args.instruments} instruments x 1440 1m candles = {rows:,} rows, "
        f"{len(candle_schema())} columns; lake {lake_bytes / 1e6:.1f} MB in {args.days * args.instruments} files "
        f"(generated in {gen_s:.1f} s); warehouse file {db_bytes / 1e6:.1f} MB"
    )
    print()
    print(f"{'load step':<28}{'seconds':>10}{'rows/s':>14}  outcomes")
    for label, secs, out in (
        ("upload (first load)", load_s, load_out),
        ("upload re-run (no changes)", skip_s, skip_out),
        ("upload --force (reload)", force_s, force_out),
    ):
        rate = f"{rows / secs:,.0f}" if "written" in out else "-"
        print(f"{label:<28}{secs:>10.3f}{rate:>14}  {out}")
    print()
    print(
        f"{'query':<22}{'rows':>7}{'warehouse first':>17}{'warehouse med':>15}{'lake first':>12}{'lake med':>10}{'speed-up':>10}"
    )
    for name, w_first, w_med, l_first, l_med, n in results:
        print(
            f"{name:<22}{n:>7}{w_first:>17.4f}{w_med:>15.4f}{l_first:>12.4f}{l_med:>10.4f}{l_med / w_med:>9.1f}x"
        )
    print(
        "\n(seconds; 'med' = median of warm runs; 'lake' = DuckDB read_parquet over the lake files, same SQL)"
    )


if __name__ == "__main__":
    main()
