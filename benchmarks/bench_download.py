"""Download end to end vs conversion alone, on the simulator's full-scale BTCUSDT trades day.

- convert alone: ``convert_file`` + ``ParquetPublisher`` on the cached source file (what the stage does after
  the fetch);
- end to end: ``mdth download`` for that unit through the real tardis-dev client from the simulator (warm cache:
  the file is generated once before timing), converted and published into a fresh lake.

Goal (issue "Download"): end to end within 1.5x of conversion alone. Run:
``.venv/bin/python benchmarks/bench_download.py [--data-type trades] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DAY = dt.date(2024, 3, 5)
KEY = "BINANCE-FUTURES:PERPETUAL:BTC-USDT"


def convert_alone(src: Path, data_type: str, lake: Path) -> float:
    from mdth_engine.core.schemas import schema_for
    from mdth_engine.stages.convert import convert_file
    from mdth_engine.stages.download import tick_write_options
    from mdth_engine.storage.local import LocalStore
    from mdth_engine.storage.parquet import ParquetPublisher

    schema = schema_for(data_type)
    t0 = time.perf_counter()
    with ParquetPublisher(
        LocalStore(lake), "x.parquet", schema, {}, **tick_write_options(data_type, schema)
    ) as pub:
        result = convert_file(
            src,
            data_type,
            exchange="binance-futures",
            symbol="BTCUSDT",
            sink=lambda _g, b: pub.write_batch(b),
        )
        pub.add_provenance({"source_sha256": result.source_sha256})
    return time.perf_counter() - t0


def end_to_end(sim, data_type: str, lake: Path) -> tuple[float, int]:
    from mdth_engine.api import ensure_instruments, run_stage
    from mdth_engine.core.settings import load_settings
    from mdth_engine.stages.base import Request

    settings = load_settings(
        lake=str(lake),
        tardis_api_url=sim.api_url,
        tardis_datasets_url=sim.datasets_url,
        tardis_api_key="bench",
    )
    request = Request("download", DAY, DAY, symbols=(KEY,), data_types=(data_type,))
    asyncio.run(ensure_instruments(request, settings))  # metadata is not part of the file's cost
    t0 = time.perf_counter()
    summary = asyncio.run(run_stage(request, settings))
    elapsed = time.perf_counter() - t0
    assert summary.exit_code == 0 and summary.outcomes == {"written": 1}, summary.to_dict()
    return elapsed, summary.rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-type", default="trades")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from mdth_engine.simulator import SimulatorServer
    from mdth_engine.simulator.config import default_cache_dir, parse_scale
    from mdth_engine.simulator.datasets import DatasetCache

    tag, factor = parse_scale("full")
    cache = DatasetCache(default_cache_dir(), factor, tag)
    src = cache.ensure("binance-futures", args.data_type, DAY, "BTCUSDT")
    alone, e2e, rows = [], [], 0
    with SimulatorServer(scale="full") as sim:
        for _ in range(args.rounds):
            with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
                alone.append(convert_alone(Path(src), args.data_type, Path(a)))
                seconds, rows = end_to_end(sim, args.data_type, Path(b))
                e2e.append(seconds)
    c, e = statistics.median(alone), statistics.median(e2e)
    print(f"{args.data_type} {DAY} BTCUSDT full scale: {rows:,} rows, median of {args.rounds} rounds")
    print(f"  convert + publish alone          {c:6.2f} s")
    print(f"  download + convert + publish     {e:6.2f} s   ({e / c:.2f}x; goal <= 1.5x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
