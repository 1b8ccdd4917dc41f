"""Validation benchmark: one full-scale day of BTCUSDT trades + book_snapshot_5, time and peak memory.

Builds (once, kept in ``--work-dir``) a lake with the simulator at full scale: the day's trades and
book_snapshot_5 of ``--symbol`` downloaded through the real download stage, and its candles. Then runs the
validate stage for that day in a fresh subprocess per measurement, so peak RSS is the validation's alone:

- ``all``: completeness, content scans, candle checks and the cross-source check (klines from the simulator,
  which runs in this parent process; the first run warms its kline cache and is not reported);
- ``no cross-source``: the same without the klines (what a lake without network access costs);
- reference: reading both files whole with ``pyarrow.parquet.read_table`` (what an unbounded check costs).

Run: ``.venv/bin/python benchmarks/bench_validate.py [--symbol BINANCE-FUTURES:PERPETUAL:BTC-USDT]
[--day 2024-03-12] [--work-dir /tmp/mdth-bench-validate] [--budget-mb 400]``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TYPES = ("trades", "book_snapshot_5")

CHILD = r"""
import asyncio, datetime as dt, json, sys, time
mode, lake, day, key, url = sys.argv[1:6]
day = dt.date.fromisoformat(day)
t0 = time.perf_counter()
if mode == "read":
    import pyarrow.parquet as pq
    from mdth_engine.storage import layout
    rows = 0
    for data_type in ("trades", "book_snapshot_5"):
        table = pq.read_table(f"{lake}/{layout.raw_path(day, data_type, key)}")
        rows += table.num_rows
        local = table["local_timestamp"].cast("int64").to_numpy()
        assert (local[1:] >= local[:-1]).all()
        del table, local
    result = {"rows": rows}
else:
    from mdth_engine.api import run_stage
    from mdth_engine.core.settings import load_settings
    from mdth_engine.stages.base import Request
    checks = ["completeness", "content", "candles"] + (["cross_source"] if mode == "all" else [])
    settings = load_settings(lake=lake, tardis_api_url=url + "/v1", tardis_datasets_url=url + "/datasets/v1")
    request = Request("validate", day, day, symbols=(key,), data_types=("trades", "book_snapshot_5"),
                      options={"checks": checks, "binance_rest_url": url})
    summary = asyncio.run(run_stage(request, settings, concurrency=1))
    result = {"outcomes": dict(summary.outcomes), "failures": [f.reason for f in summary.failures]}
result["seconds"] = time.perf_counter() - t0
with open("/proc/self/status") as status:  # VmHWM starts afresh at exec (ru_maxrss would not)
    hwm = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
result["peak_rss_mb"] = hwm / 1024
print(json.dumps(result))
"""


def build_lake(work: Path, key: str, day: dt.date, sim) -> Path:
    """The day's trades + book_snapshot_5 and candles of ``key``, downloaded once and kept."""
    from mdth_engine.api import ensure_instruments, run_stage
    from mdth_engine.core.settings import load_settings
    from mdth_engine.stages.base import Request
    from mdth_engine.storage import layout

    lake = work / "lake"
    done = lake / layout.candles_path(day, "24h", key)
    if done.exists():
        return lake
    settings = load_settings(
        lake=str(lake),
        tardis_api_url=sim.api_url,
        tardis_datasets_url=sim.datasets_url,
        tardis_api_key="bench",
    )
    request = Request("download", day, day, symbols=(key,), data_types=TYPES)
    t0 = time.perf_counter()
    asyncio.run(ensure_instruments(request, settings))
    summary = asyncio.run(run_stage(request, settings, concurrency=2))
    if summary.exit_code:
        raise SystemExit(f"download failed: {[f.reason for f in summary.failures]}")
    candles = asyncio.run(run_stage(Request("candles", day, day, symbols=(key,)), settings))
    if candles.exit_code:
        raise SystemExit(f"candles failed: {[f.reason for f in candles.failures]}")
    print(f"built the lake in {time.perf_counter() - t0:.0f} s (simulator generation included)", flush=True)
    return lake


def child(mode: str, lake: Path, day: dt.date, key: str, url: str) -> dict:
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(lake), day.isoformat(), key, url],
        capture_output=True,
        text=True,
        env=env,
        timeout=3600,
    )
    if proc.returncode:
        raise SystemExit(f"{mode} run failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def time_klines(url: str, key: str, day: dt.date) -> float:
    """Seconds the reference takes to answer one day of 1m klines (the simulator computes them from trades)."""
    from mdth_engine.core.timeframes import day_start_us
    from mdth_engine.stages.instruments import read_instruments  # noqa: F401  (warm imports outside the timing)
    from mdth_engine.validation.cross_source import KlineSource

    kind = "spot" if key.startswith("BINANCE:") else "futures"
    symbol = key.rsplit(":", 1)[1].replace("-", "")
    t0 = time.perf_counter()
    asyncio.run(KlineSource({"binance_rest_url": url}).day(kind, symbol, day_start_us(day)))
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbol", default="BINANCE-FUTURES:PERPETUAL:BTC-USDT")
    parser.add_argument("--day", default="2024-03-12")
    parser.add_argument("--work-dir", default="/tmp/mdth-bench-validate")
    parser.add_argument("--budget-mb", type=float, default=400.0)
    args = parser.parse_args()

    import pyarrow.parquet as pq

    from mdth_engine.simulator import SimulatorServer
    from mdth_engine.storage import layout

    day = dt.date.fromisoformat(args.day)
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    with SimulatorServer(scale="full", cache_dir=work / "sim-cache") as sim:
        lake = build_lake(work, args.symbol, day, sim)
        sizes = {}
        for data_type in TYPES:
            path = lake / layout.raw_path(day, data_type, args.symbol)
            sizes[data_type] = (pq.read_metadata(path).num_rows, path.stat().st_size)
        child("all", lake, day, args.symbol, sim.base_url)  # warms the simulator's caches
        klines_s = time_klines(sim.base_url, args.symbol, day)
        runs = {
            "validate, all checks": child("all", lake, day, args.symbol, sim.base_url),
            "validate, no cross-source": child("no-cross", lake, day, args.symbol, sim.base_url),
            "reference: read_table of both files": child("read", lake, day, args.symbol, sim.base_url),
        }
    rows = sum(n for n, _ in sizes.values())
    print(f"\nmdth validate benchmark: {args.symbol} {day}, full scale")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    for data_type, (n, size) in sizes.items():
        print(f"  {data_type:16s} {n:>12,} rows  {size / 1e6:8.1f} MB on disk")
    print(f"\n  {'run':38s} {'seconds':>8s} {'rows/s':>12s} {'peak RSS':>10s}")
    for name, result in runs.items():
        if result.get("failures"):
            print(f"  ({name}: validation found: {result['failures'][0][:150]})")
        rate = rows / result["seconds"] if result["seconds"] else 0
        print(f"  {name:38s} {result['seconds']:8.2f} {rate:12,.0f} {result['peak_rss_mb']:8.0f} MB")
    print(f"  (the simulator takes {klines_s:.2f} s to serve the day's klines: part of the first run's time)")
    peak = max(r["peak_rss_mb"] for name, r in runs.items() if name.startswith("validate"))
    verdict = "within" if peak <= args.budget_mb else "OVER"
    print(f"\n  peak memory of validation {peak:.0f} MB: {verdict} the {args.budget_mb:.0f} MB budget")
    if peak > args.budget_mb:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
