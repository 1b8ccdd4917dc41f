"""SIGKILL a writer at random moments: the lake never shows a file that is not whole and exactly right."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

from mdth_engine.storage.layout import is_temp_name
from mdth_engine.storage.local import LocalStore
from mdth_engine.storage.parquet import format_timestamp, provenance_of

REPO = Path(__file__).resolve().parents[1]
T0_US = 1_704_067_200_000_000  # 2024-01-01T00:00:00Z
ROUNDS = 15

# Writes ~25-30 MB files (incompressible floats) forever; file contents follow from `seq` alone.
WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    import pyarrow as pa
    from mdth_engine.storage.local import LocalStore
    from mdth_engine.storage.parquet import ParquetPublisher

    root, round_, T0_US = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    store = LocalStore(root)
    schema = pa.schema(
        [("local_timestamp", pa.timestamp("us", tz="UTC")), ("i", pa.int64())]
        + [(f"f{k}", pa.float64()) for k in range(8)]
    )
    print("started", flush=True)
    for k in range(1000):
        seq = round_ * 1000 + k
        rows = 400_000 + (seq * 7919) % 100_000
        offset = seq * 1_000_000
        path = f"data/day-{seq % 3}/file-{seq % 2}.parquet"
        rng = np.random.default_rng(seq)
        with ParquetPublisher(store, path, schema, {"source_url": f"sim://{seq}", "seq": seq},
                              row_group_size=131_072) as w:
            for start in range(0, rows, 50_000):
                n = min(50_000, rows - start)
                i = np.arange(offset + start, offset + start + n, dtype=np.int64)
                cols = [pa.array(T0_US + i, pa.timestamp("us", tz="UTC")), pa.array(i)]
                cols += [pa.array(c) for c in rng.random((8, n))]
                w.write_batch(pa.record_batch(cols, schema=schema))
        print("wrote", seq, path, flush=True)
    """
)


def expected_rows(seq: int) -> int:
    return 400_000 + (seq * 7919) % 100_000


def temp_files(root: Path) -> set[str]:
    return {
        os.path.relpath(os.path.join(d, f), root)
        for d, _, files in os.walk(root)
        for f in files
        if is_temp_name(f)
    }


def verify(store: LocalStore, path: str, full: bool) -> int:
    """A listed file opens as Parquet and its footer, rows and data agree exactly with its ``seq``."""
    local = store.local_path(path)
    assert local is not None
    parquet = pq.ParquetFile(local)
    provenance = provenance_of(parquet.metadata)
    seq = int(provenance["seq"])
    rows = expected_rows(seq)
    offset = seq * 1_000_000
    assert parquet.metadata.num_rows == rows, (path, seq)
    assert provenance["rows"] == str(rows)
    assert provenance["source_url"] == f"sim://{seq}"
    assert provenance["first_timestamp"] == format_timestamp(T0_US + offset)
    assert provenance["last_timestamp"] == format_timestamp(T0_US + offset + rows - 1)
    assert path == f"data/day-{seq % 3}/file-{seq % 2}.parquet"
    if full:
        table = parquet.read(columns=["i", "f5"])
        assert table.num_rows == rows
        assert pc.sum(table.column("i")).as_py() == rows * offset + rows * (rows - 1) // 2
        assert table.column("f5").null_count == 0
    return seq


def _seconds_per_file(root: Path, env: dict[str, str]) -> float:
    """How long the writer takes for one file on this machine now (a loaded CI box is several times slower)."""
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(root), "999", str(T0_US)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "started"
    began = time.monotonic()
    assert child.stdout.readline().startswith("wrote")
    took = time.monotonic() - began
    child.kill()
    child.wait(timeout=10)
    child.stdout.close()
    return took


def test_sigkill_never_leaves_a_file_that_looks_finished(tmp_path: Path) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    store = LocalStore(tmp_path / "lake")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # Kill moments span about two files' time, so some rounds finish files and most kills land mid-write.
    window = max(0.7, 2.0 * _seconds_per_file(tmp_path / "warm-up", env))
    verified: dict[str, str | None] = {}  # path -> generation already fully read
    completed = 0
    seen_temps: set[str] = set()
    killed_mid_write = 0
    deadline = time.monotonic() + 60 + ROUNDS * window
    for round_ in range(ROUNDS):
        child = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(store.root), str(round_), str(T0_US)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "started", f"writer did not start (seed {seed})"
        time.sleep(rng.uniform(0.0, window))
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        completed += sum(1 for line in child.stdout.read().splitlines() if line.startswith("wrote"))
        child.stdout.close()

        temps = temp_files(store.root)
        killed_mid_write += bool(temps - seen_temps)
        seen_temps |= temps
        listed = list(store.list())
        assert not any(is_temp_name(info.path) for info in listed), f"seed {seed}"
        for info in listed:
            fresh = verified.get(info.path) != info.generation
            verify(store, info.path, full=fresh)
            verified[info.path] = info.generation
        assert time.monotonic() < deadline, "the kill test is too slow"

    print(
        f"seed {seed}, window {window:.2f} s: {completed} files finished, {killed_mid_write} kills mid-write, {len(seen_temps)} temps"
    )
    assert completed >= 3, f"the writer never finished a file (seed {seed}); the test proves nothing"
    assert killed_mid_write >= 3, f"few kills hit a write in progress (seed {seed})"
    listing = [(i.path, i.generation) for i in store.list()]
    assert listing, "nothing was published"

    removed = store.sweep_temp(older_than_s=0)
    assert set(removed) == seen_temps
    assert temp_files(store.root) == set()
    assert [(i.path, i.generation) for i in store.list()] == listing  # finished files untouched
    for path, _ in listing:
        verify(store, path, full=True)
