"""Simulator benchmark: how long a full-scale BTCUSDT trades day takes to generate (cold) and to serve (warm).

- generate: ``DatasetCache.ensure`` into an empty cache folder (model, CSV formatting and gzip, one process);
- serve, raw HTTP: one ``GET`` of the cached file over loopback with aiohttp (bytes as sent, no decompression);
- serve, tardis-dev: the official client's ``download_datasets`` for that day, ``endpoint=`` the simulator
  (what the download stage sees), with the file already cached;
- the same for any extra ``--data-types`` (full-scale book data is large: book_snapshot_5 takes ~40 s cold).

Rounds for the warm measurements are repeated and the median reported. Run:
``.venv/bin/python benchmarks/bench_simulator.py [--day 2024-03-05] [--data-types trades,quotes] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gzip
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

EXCHANGE, SYMBOL = "binance-futures", "BTCUSDT"


def _fmt_mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


async def _raw_get(url: str, key: str) -> int:
    import aiohttp

    async with (
        aiohttp.ClientSession(auto_decompress=False) as session,
        session.get(url, headers={"Authorization": f"Bearer {key}"}) as resp,
    ):
        resp.raise_for_status()
        total = 0
        async for chunk in resp.content.iter_chunked(1 << 20):
            total += len(chunk)
        return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--day", default="2024-03-05")
    parser.add_argument("--data-types", default="trades")
    parser.add_argument("--scale", default="full")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cache-dir", default=None, help="default: a fresh temp folder (cold generation)")
    args = parser.parse_args()
    day = dt.date.fromisoformat(args.day)
    cache_dir = Path(args.cache_dir or tempfile.mkdtemp(prefix="mdth-sim-bench-"))
    try:
        return _run(args, day, cache_dir)
    finally:
        if not args.cache_dir:
            shutil.rmtree(cache_dir, ignore_errors=True)


def _run(args: argparse.Namespace, day: dt.date, cache_dir: Path) -> int:
    import tardis_dev

    from mdth_engine.simulator import SimulatorServer
    from mdth_engine.simulator.config import SimConfig
    from mdth_engine.simulator.datasets import DatasetCache

    config = SimConfig(scale=args.scale, cache_dir=cache_dir)
    cache = DatasetCache(config.cache_path, config.scale_factor, config.scale_tag)
    key = "bench-key"
    rows_out = []
    print(
        f"simulator benchmark: {EXCHANGE} {SYMBOL} {day} scale {config.scale_tag}; "
        f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs; cache {cache_dir}"
    )

    for data_type in [t.strip() for t in args.data_types.split(",") if t.strip()]:
        path = cache.path_for(EXCHANGE, data_type, day, SYMBOL)
        was_cached = path.exists()
        start = time.perf_counter()
        cache.ensure(EXCHANGE, data_type, day, SYMBOL)
        gen_s = time.perf_counter() - start
        size = path.stat().st_size
        with gzip.open(path, "rb") as fh:
            raw_bytes, lines = 0, 0
            while chunk := fh.read(1 << 24):
                raw_bytes += len(chunk)
                lines += chunk.count(b"\n")
        rows = max(lines - 1, 0)

        raw_times, client_times = [], []
        with SimulatorServer(config) as sim:
            url = f"{sim.datasets_url}/{EXCHANGE}/{data_type}/{day:%Y/%m/%d}/{SYMBOL}.csv.gz"
            for i in range(args.rounds):
                t0 = time.perf_counter()
                got = asyncio.run(_raw_get(url, key))
                raw_times.append(time.perf_counter() - t0)
                assert got == size, f"served {got} bytes, cached {size}"
                with tempfile.TemporaryDirectory() as out:
                    t0 = time.perf_counter()
                    tardis_dev.download_datasets(
                        EXCHANGE,
                        [data_type],
                        [SYMBOL],
                        day.isoformat(),
                        (day + dt.timedelta(days=1)).isoformat(),
                        endpoint=sim.datasets_url,
                        api_key=key,
                        download_dir=out,
                    )
                    client_times.append(time.perf_counter() - t0)
                    got_path = Path(out) / f"{EXCHANGE}_{data_type}_{day}_{SYMBOL}.csv.gz"
                    assert got_path.stat().st_size == size, f"round {i}: client file differs in size"
        raw_s, client_s = statistics.median(raw_times), statistics.median(client_times)
        rows_out.append(
            (data_type, rows, size, raw_bytes, gen_s, "cached" if was_cached else "cold", raw_s, client_s)
        )

    print()
    header = (
        f"{'data type':<16} {'rows':>11} {'gzip':>10} {'csv':>10} {'generate':>14} {'serve raw':>10} "
        f"{'(MB/s)':>8} {'tardis-dev':>10}"
    )
    print(header)
    print("-" * len(header))
    for data_type, rows, size, raw_bytes, gen_s, state, raw_s, client_s in rows_out:
        print(
            f"{data_type:<16} {rows:>11,} {_fmt_mb(size):>10} {_fmt_mb(raw_bytes):>10} "
            f"{gen_s:>8.2f} s {state:<5}{raw_s:>8.3f} s {size / 1e6 / raw_s:>8.0f} {client_s:>8.3f} s"
        )
    print(
        "\ngenerate: cold build into the cache (model + CSV + gzip); serve: warm, median of "
        f"{args.rounds} rounds over loopback."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
