"""Download-stage converter benchmark: a Tardis CSV.gz day -> zstd Parquet, ours vs pandas, polars and DuckDB.

Inputs are the built-in simulator's full-scale BTCUSDT day (binance-futures ``trades``, about 2M rows, and
``book_snapshot_5``), generated once into the simulator's cache (the book day takes a minute or two the first
time). If the simulator cannot be imported, a seeded generator writes the same Tardis format instead.

Contenders, each in its own subprocess (wall and CPU time around the conversion only; peak RSS of the whole
process, imports included), all writing zstd at the codec's default level:

- ``mdth``: ``convert_file`` + ``ParquetPublisher`` on a local lake, exactly as the download stage runs them
  (row groups of the stage's ``ROW_GROUP_ROWS``, statistics and page index on, atomic publish);
- ``mdth-tuned``: the same converter with the writer settings proposed for ``storage/parquet.py``
  (dictionary pages for values, DELTA_BINARY_PACKED timestamps, DELTA_BYTE_ARRAY strings) - shown so the
  proposal's effect is measured, not claimed;
- ``pandas``: ``pd.read_csv(src).to_parquet(out, compression="zstd")``;
- ``polars``: ``pl.scan_csv(src).sink_parquet(out, compression="zstd")``;
- ``duckdb``: ``COPY (SELECT * FROM read_csv(src)) TO out (FORMAT parquet, COMPRESSION zstd)``.

Rounds are interleaved; the table shows the best wall time of the rounds (the run a shared machine disturbed
least), the median CPU time (user+system of all threads, which contention barely changes), the highest peak
RSS and the output size. Ratios are theirs / ours, so ``2.0x`` means that contender took twice our time
(or memory, or bytes).

Run: ``.venv/bin/python benchmarks/bench_convert.py [--rounds 3] [--data-types trades,book_snapshot_5]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

EXCHANGE, SYMBOL, DAY = "binance-futures", "BTCUSDT", dt.date(2024, 3, 5)
DATA_TYPES = ("trades", "book_snapshot_5")
CONTENDERS = ("mdth", "mdth-tuned", "pandas", "polars", "duckdb")
GOAL_BOOK_PEAK_MB = 400


# --- inputs ----------------------------------------------------------------------------------------------------


def simulator_input(data_type: str) -> Path:
    """The simulator's full-scale file for this day (cached by the simulator's own cache layout)."""
    from mdth_engine.simulator.config import default_cache_dir
    from mdth_engine.simulator.datasets import DatasetCache

    cache = DatasetCache(default_cache_dir(), 1.0, "full")
    path = cache.path_for(EXCHANGE, data_type, DAY, SYMBOL)
    if not path.exists():
        print(
            f"generating the simulator's full-scale {data_type} day (once; cached in {path.parent}) ...",
            flush=True,
        )
    return cache.ensure(EXCHANGE, data_type, DAY, SYMBOL)


def fallback_input(data_type: str, folder: Path, rows: int) -> Path:
    """A seeded Tardis-format day (same header and number shapes) for when the simulator is unavailable."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv
    from isal import igzip

    from mdth_engine.core.schemas import CSV_COLUMNS

    path = folder / f"{EXCHANGE}_{data_type}_{DAY}_{SYMBOL}.csv.gz"
    if path.exists():
        return path
    rng = np.random.default_rng(20240305)
    start = int(dt.datetime.combine(DAY, dt.time(), tzinfo=dt.UTC).timestamp() * 1_000_000)
    ts = start + np.sort(rng.integers(0, 86_400_000_000, rows)) // 1000 * 1000
    local = ts + rng.integers(2_000, 15_000, rows)
    mid = np.round(60_000 + np.cumsum(rng.normal(0, 0.8, rows)), 1)
    cols: dict[str, object] = {
        "exchange": pa.array([EXCHANGE] * rows).dictionary_encode(),
        "symbol": pa.array([SYMBOL] * rows).dictionary_encode(),
        "timestamp": ts,
        "local_timestamp": local,
    }
    if data_type == "trades":
        cols["id"] = np.arange(rows, dtype=np.int64) + 3_459_623_809
        cols["side"] = np.where(rng.random(rows) < 0.5, "buy", "sell")
        cols["price"] = mid
        cols["amount"] = np.round(rng.exponential(0.05, rows), 3) + 0.001
    else:
        for level in range(5):
            cols[f"asks[{level}].price"] = np.round(mid + 0.1 * (level + 1), 1)
            cols[f"asks[{level}].amount"] = np.round(rng.exponential(0.5, rows), 3) + 0.001
            cols[f"bids[{level}].price"] = np.round(mid - 0.1 * level, 1)
            cols[f"bids[{level}].amount"] = np.round(rng.exponential(0.5, rows), 3) + 0.001
    table = pa.table(cols).select(CSV_COLUMNS[data_type])
    tmp = path.with_suffix(".tmp")
    with igzip.open(tmp, "wb", compresslevel=2) as out:
        out.write((",".join(CSV_COLUMNS[data_type]) + "\n").encode())
        for batch in table.to_batches(max_chunksize=200_000):
            pacsv.write_csv(
                pa.Table.from_batches([batch]),
                out,
                pacsv.WriteOptions(include_header=False, quoting_style="none"),
            )
    tmp.replace(path)
    return path


# --- contenders (run in a child process) -----------------------------------------------------------------------


def tuned_writer_options(schema) -> dict:  # type: ignore[no-untyped-def]
    """Writer settings proposed for storage/parquet.py, measured here as ``mdth-tuned``."""
    import pyarrow as pa

    encodings = {}
    for field in schema:
        if pa.types.is_timestamp(field.type):
            encodings[field.name] = "DELTA_BINARY_PACKED"
        elif pa.types.is_string(field.type):
            encodings[field.name] = "DELTA_BYTE_ARRAY"
    return {
        "use_dictionary": [f.name for f in schema if f.name not in encodings],
        "column_encoding": encodings,
    }


def run_contender(name: str, data_type: str, src: Path, out: Path) -> dict:
    """Convert ``src`` into ``out`` with one contender; returns wall/CPU seconds of the conversion itself."""
    if name in ("mdth", "mdth-tuned"):
        from mdth_engine.core.schemas import SCHEMAS
        from mdth_engine.stages.convert import convert_file
        from mdth_engine.stages.download import ROW_GROUP_ROWS, tick_write_options
        from mdth_engine.storage.local import LocalStore
        from mdth_engine.storage.parquet import ParquetPublisher
    elif name == "pandas":
        import pandas as pd
    elif name == "polars":
        import polars as pl
    elif name == "duckdb":
        import duckdb
    import pyarrow.parquet as pq

    cpu0, wall0 = os.times(), time.perf_counter()
    if name == "mdth":
        store = LocalStore(out.parent)
        provenance = {"data_type": data_type, "instrument_key": "BINANCE-FUTURES:PERPETUAL:BTC-USDT"}
        schema = SCHEMAS[data_type]
        with ParquetPublisher(
            store, out.name, schema, provenance, **tick_write_options(data_type, schema)
        ) as pub:
            result = convert_file(
                src,
                data_type,
                exchange=EXCHANGE,
                symbol=SYMBOL,
                sink=lambda _group, batch: pub.write_batch(batch),
            )
            pub.add_provenance({"source_bytes": result.source_bytes, "source_sha256": result.source_sha256})
    elif name == "mdth-tuned":
        schema = SCHEMAS[data_type]
        tmp = out.with_name(out.name + ".tmp")
        with pq.ParquetWriter(
            tmp, schema, compression="zstd", write_page_index=True, **tuned_writer_options(schema)
        ) as writer:
            pending: list = []

            def sink(_group, batch) -> None:  # type: ignore[no-untyped-def]
                # whole row groups of ROW_GROUP_ROWS, as the publisher buffers them
                pending.append(batch)
                if sum(b.num_rows for b in pending) >= ROW_GROUP_ROWS:
                    table = pa_table(pending)
                    whole = table.num_rows - table.num_rows % ROW_GROUP_ROWS
                    writer.write_table(table.slice(0, whole), row_group_size=ROW_GROUP_ROWS)
                    pending[:] = table.slice(whole).to_batches()

            convert_file(src, data_type, exchange=EXCHANGE, symbol=SYMBOL, sink=sink)
            if pending:
                writer.write_table(pa_table(pending), row_group_size=ROW_GROUP_ROWS)
        tmp.replace(out)
    elif name == "pandas":
        pd.read_csv(src).to_parquet(out, compression="zstd")
    elif name == "polars":
        pl.scan_csv(src).sink_parquet(out, compression="zstd")
    elif name == "duckdb":
        with duckdb.connect() as con:
            con.execute(
                f"COPY (SELECT * FROM read_csv('{src}')) TO '{out}' (FORMAT parquet, COMPRESSION zstd)"
            )
    else:
        raise SystemExit(f"unknown contender {name}")
    wall = time.perf_counter() - wall0
    cpu1 = os.times()
    return {
        "wall": wall,
        "cpu": (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system),
        "peak_mb": peak_rss_mb(),
        "bytes": out.stat().st_size,
        "rows": pq.read_metadata(out).num_rows,
    }


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM; unlike ru_maxrss it does not inherit the parent's size at fork)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource  # not Linux: ru_maxrss is the best there is

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def pa_table(batches: list):  # type: ignore[no-untyped-def]
    import pyarrow as pa

    return pa.Table.from_batches(batches)


# --- parent ------------------------------------------------------------------------------------------------------


def measure(name: str, data_type: str, src: Path, workdir: Path) -> dict:
    out = workdir / f"{name}-{data_type}.parquet"
    out.unlink(missing_ok=True)
    proc = subprocess.run(
        [sys.executable, __file__, "--child", name, data_type, str(src), str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{name} on {data_type} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    out.unlink(missing_ok=True)
    return result


def report(data_type: str, src: Path, runs: dict[str, list[dict]]) -> list[str]:
    med = {
        name: {
            "wall": min(r["wall"] for r in rs),  # best of N: the run the shared machine disturbed least
            "cpu": statistics.median(r["cpu"] for r in rs),
            "peak_mb": max(r["peak_mb"] for r in rs),
            "bytes": statistics.median(r["bytes"] for r in rs),
            "rows": rs[0]["rows"],
        }
        for name, rs in runs.items()
    }
    ours = med["mdth"]
    raw_mb = src.stat().st_size / 1e6
    lines = [
        f"\n{data_type}: {int(ours['rows']):,} rows, source {raw_mb:.1f} MB gzip ({src})",
        f"{'contender':12s} {'wall s':>7s} {'cpu s':>6s} {'peak MB':>8s} {'out MB':>7s}  "
        f"{'wall/ours':>9s} {'cpu/ours':>8s} {'peak/ours':>9s} {'out/ours':>8s}",
    ]
    for name, m in med.items():
        lines.append(
            f"{name:12s} {m['wall']:7.2f} {m['cpu']:6.2f} {m['peak_mb']:8.0f} {m['bytes'] / 1e6:7.2f}  "
            f"{m['wall'] / ours['wall']:8.2f}x {m['cpu'] / ours['cpu']:7.2f}x "
            f"{m['peak_mb'] / ours['peak_mb']:8.2f}x {m['bytes'] / ours['bytes']:7.2f}x"
        )
    rows = {int(m["rows"]) for m in med.values()}
    if len(rows) != 1:
        lines.append(f"!! row counts differ between contenders: {sorted(rows)}")
    others = [n for n in med if not n.startswith("mdth")]
    for variant in [n for n in med if n.startswith("mdth")]:
        ours = med[variant]
        checks = []
        if "polars" in med:
            checks.append(("faster than polars", ours["wall"] < med["polars"]["wall"]))
        if "pandas" in med:
            checks.append((">= 3x faster than pandas", med["pandas"]["wall"] >= 3 * ours["wall"]))
        if others:
            checks.append(
                ("output no larger than any other", all(ours["bytes"] <= med[n]["bytes"] for n in others))
            )
        if data_type.startswith("book"):
            checks.append((f"peak < {GOAL_BOOK_PEAK_MB} MB", ours["peak_mb"] < GOAL_BOOK_PEAK_MB))
        lines.append(
            f"goals ({variant}): " + "; ".join(f"{text}: {'yes' if ok else 'NO'}" for text, ok in checks)
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data-types", default=",".join(DATA_TYPES))
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--fallback", action="store_true", help="use the seeded generator, not the simulator")
    parser.add_argument("--json", type=Path, help="also write the raw measurements here")
    parser.add_argument(
        "--child", nargs=4, metavar=("CONTENDER", "DATA_TYPE", "SRC", "OUT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        name, data_type, src, out = args.child
        print(json.dumps(run_contender(name, data_type, Path(src), Path(out))))
        return

    data_types = [d for d in args.data_types.split(",") if d]
    contenders = [c for c in args.contenders.split(",") if c]
    if "mdth" not in contenders:
        contenders.insert(0, "mdth")
    workdir = Path(tempfile.mkdtemp(prefix="mdth-bench-convert-"))
    fallback_dir = Path(tempfile.gettempdir()) / "mdth-bench-convert-inputs"
    inputs: dict[str, Path] = {}
    for data_type in data_types:
        if not args.fallback:
            try:
                inputs[data_type] = simulator_input(data_type)
                continue
            except ImportError as exc:
                print(f"simulator unavailable ({exc}); using the seeded fallback generator")
        fallback_dir.mkdir(exist_ok=True)
        inputs[data_type] = fallback_input(
            data_type, fallback_dir, 2_000_000 if data_type == "trades" else 2_300_000
        )

    load = os.getloadavg()
    print(
        f"bench_convert: {platform.python_version()}, {os.cpu_count()} CPUs, load average {load[0]:.1f}, "
        f"{args.rounds} rounds, contenders in their own processes"
    )
    try:
        runs: dict[str, dict[str, list[dict]]] = {d: {c: [] for c in contenders} for d in data_types}
        for round_no in range(args.rounds):
            for data_type in data_types:
                for name in contenders:
                    runs[data_type][name].append(measure(name, data_type, inputs[data_type], workdir))
            print(f"round {round_no + 1}/{args.rounds} done", flush=True)
        for data_type in data_types:
            print("\n".join(report(data_type, inputs[data_type], runs[data_type])))
        print(
            f"\nload average at the end: {os.getloadavg()[0]:.1f} (wall times stretch when the machine is shared)"
        )
        if args.json:
            args.json.write_text(
                json.dumps({"inputs": {k: str(v) for k, v in inputs.items()}, "runs": runs}, indent=1)
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
