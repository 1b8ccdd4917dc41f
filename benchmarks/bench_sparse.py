"""Sparse reads benchmark: 20 windows of 2 minutes over a full-scale trades day, ranged reads vs whole files.

Writes one seeded day of ~2M trades (bursty minutes, like the simulator's full-scale BTCUSDT day) in two
layouts: the download stage's (``stages.download.tick_write_options``: 64k-row groups, 1024-row pages with a
page index, delta-encoded timestamps, zstd) and pyarrow's defaults (``pq.write_table`` as is: 1Mi-row groups,
1 MiB pages, no page index, snappy). Then, on a local lake and on GCS (fake-gcs-server behind the counting
proxy of tests/gcs_emulator.py: bytes served and GET requests), it times and counts:

- whole file x20: the original system's get_sparse_candles: download the whole object for every window;
- whole file x1: download once, filter the 20 windows in memory;
- pyarrow filters: ``pq.read_table(store.open_read(path), filters=...)`` (row-group pruning, 256 KiB reads);
- mdth cold: ``read_windows`` with an empty footer cache (footer, page indexes and pages);
- mdth warm: the same again (footer and page indexes cached).

Every method returns the same rows (checked). Run: ``.venv/bin/python benchmarks/bench_sparse.py [--trades N]
[--repeat K] [--no-gcs]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from lake_builders import DAY, PERP, SPOT, arrival_trades, write_ticks  # noqa: E402

from mdth_engine.core.timeframes import US_PER_DAY, US_PER_SECOND, day_start_us  # noqa: E402
from mdth_engine.reader.footer import FOOTERS  # noqa: E402
from mdth_engine.reader.scan import read_windows  # noqa: E402
from mdth_engine.storage import layout  # noqa: E402
from mdth_engine.storage.store import open_store  # noqa: E402

MINUTE = 60 * US_PER_SECOND
WINDOWS = 20


def windows(seed: int = 7) -> list[tuple[int, int]]:
    rng = np.random.default_rng(seed)
    centers = day_start_us(DAY) + MINUTE + rng.integers(0, US_PER_DAY - 2 * MINUTE, WINDOWS)
    return [(int(c) - MINUTE, int(c) + MINUTE) for c in centers]


def cut(table: pa.Table, wins: list[tuple[int, int]]) -> list[pa.Table]:
    stamps = table["timestamp"].cast(pa.int64())
    return [table.filter(pc.and_(pc.greater_equal(stamps, a), pc.less(stamps, b))) for a, b in wins]


def whole_each(store, path, wins):
    return [cut(pq.read_table(pa.BufferReader(store.get_bytes(path))), [w])[0] for w in wins]


def whole_once(store, path, wins):
    return cut(pq.read_table(pa.BufferReader(store.get_bytes(path))), wins)


def pyarrow_filters(store, path, wins):
    out = []
    for a, b in wins:
        lo, hi = (pa.scalar(v, pa.timestamp("us", tz="UTC")) for v in (a, b))
        with store.open_read(path) as handle:
            out.append(pq.read_table(handle, filters=[("timestamp", ">=", lo), ("timestamp", "<", hi)]))
    return out


def mdth_cold(store, path, wins):
    FOOTERS.clear()
    return read_windows(store, path, wins)


def mdth_warm(store, path, wins):
    return read_windows(store, path, wins)


METHODS: dict[str, Callable] = {
    "whole file x20": whole_each,
    "whole file x1": whole_once,
    "pyarrow filters": pyarrow_filters,
    "mdth cold": mdth_cold,
    "mdth warm": mdth_warm,
}


def download_layout(store, key: str, day: pa.Table) -> str:
    """The file as the download stage writes it."""
    return write_ticks(store, DAY, "trades", key, day)


def pyarrow_default_layout(store, key: str, day: pa.Table) -> str:
    """The file as ``pq.write_table`` writes it with no options."""
    path = layout.raw_path(DAY, "trades", key)
    sink = pa.BufferOutputStream()
    pq.write_table(day, sink)
    store.put_bytes(path, sink.getvalue().to_pybytes())
    return path


LAYOUTS: dict[str, tuple[Callable, str]] = {  # title -> (writer, a key to keep the two files apart)
    "download stage layout (64k-row groups, 1024-row pages, page index)": (download_layout, SPOT),
    "pyarrow defaults (1Mi-row groups, 1 MiB pages, no page index)": (pyarrow_default_layout, PERP),
}


def measure(store, path, wins, want, repeat: int, proxy=None):
    """Per method: bytes the store read, share of the file, bytes and GETs on the wire (GCS), median seconds."""
    size = store.stat(path).size
    rows = []
    for name, method in METHODS.items():
        times, fetched, over_wire, gets = [], 0, 0, 0
        for i in range(repeat):
            if name == "mdth warm":
                mdth_cold(store, path, wins)  # warm the cache outside the timing
            before = store.bytes_read
            wire, requests = (proxy.bytes_served, proxy.get_requests) if proxy else (0, 0)
            start = time.perf_counter()
            got = method(store, path, wins)
            times.append(time.perf_counter() - start)
            if i == 0:
                fetched = store.bytes_read - before
                if proxy:
                    over_wire, gets = proxy.bytes_served - wire, proxy.get_requests - requests
        for a, b in zip(got, want, strict=True):
            assert a.select(b.column_names).equals(b), name
        rows.append((name, fetched, fetched / size, over_wire, gets, statistics.median(times)))
    return size, rows


def report(title: str, size: int, rows, gcs: bool) -> None:
    print(f"\n{title}: file {size / 1e6:.1f} MB")
    head = f"  {'method':<16} {'bytes read':>12} {'of file':>8}"
    head += f" {'served (wire)':>14} {'GETs':>6}" if gcs else ""
    print(head + f" {'seconds':>9}")
    for name, fetched, share, wire, gets, seconds in rows:
        line = f"  {name:<16} {fetched / 1e6:>10.2f}MB {share:>8.2%}"
        line += f" {wire / 1e6:>12.2f}MB {gets:>6}" if gcs else ""
        print(line + f" {seconds:>9.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trades", type=int, default=2_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-gcs", action="store_true")
    args = parser.parse_args()
    import tempfile

    print(f"python {platform.python_version()}, pyarrow {pa.__version__}, {os.cpu_count()} cpus")
    t0 = time.perf_counter()
    day = arrival_trades(DAY, args.trades, seed=2024, bursty=True)
    wins = windows()
    want = cut(day, wins)
    print(
        f"{day.num_rows:,} trades generated in {time.perf_counter() - t0:.1f} s; {WINDOWS} windows of 2 min "
        f"hold {sum(t.num_rows for t in want):,} rows"
    )
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(tmp)
        for title, (write, key) in LAYOUTS.items():
            path = write(store, key, day)
            size, rows = measure(store, path, wins, want, args.repeat)
            report(f"local, {title}", size, rows, gcs=False)
        if args.no_gcs:
            return
        from gcs_emulator import GCSEmulator

        with GCSEmulator() as emulator:
            os.environ["STORAGE_EMULATOR_HOST"] = emulator.url
            emulator.create_bucket("bench-sparse")
            gcs = open_store("gs://bench-sparse/lake")
            for title, (write, key) in LAYOUTS.items():
                path = write(gcs, key, day)
                size, rows = measure(gcs, path, wins, want, args.repeat, emulator)
                report(f"GCS emulator, {title}", size, rows, gcs=True)


if __name__ == "__main__":
    main()
