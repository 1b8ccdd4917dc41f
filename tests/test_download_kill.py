"""SIGKILL `mdth download` at random moments ten times, then finish: the lake equals a clean run's, with no
partial or temp file anywhere and no spool folder left (the finishing run removes what the killed ones left)."""

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest
from sim_fixtures import SIM_API_KEY

from mdth_engine.storage.store import open_store

ARGS = [
    "download",
    "--start",
    "2024-03-11",
    "--end",
    "2024-03-13",
    "--symbols",
    "BINANCE:SPOT_PAIR:BTC-USDT,BINANCE-FUTURES:PERPETUAL:BTC-USDT,DERIBIT:PERPETUAL:BTC-USD",
    "--concurrency",
    "3",
]


def run(env, lake):
    return subprocess.Popen(
        [sys.executable, "-m", "mdth_engine.cli", *ARGS],
        env={**env, "MDTH_LAKE": str(lake)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def snapshot(lake):
    """Every data file of the lake with its decoded content (footer timestamps of writing aside). The run's job
    records (`_jobs/`, a new job id each run) are only checked to be whole."""
    store = open_store(str(lake))
    out = {}
    for info in store.list():
        if info.path.startswith("_jobs/"):
            if info.path.endswith(".json"):
                json.loads(store.get_bytes(info.path))
            else:
                pq.read_metadata(store.local_path(info.path))
            continue
        table = pq.read_table(store.local_path(info.path))
        out[info.path] = table
    return out


@pytest.mark.slow
def test_killed_runs_end_identical_to_a_clean_run(sim_server, tmp_path):
    spools = tmp_path / "tmp"  # the runs' own temp folder, so their spool folders can be counted
    spools.mkdir()
    env = {**os.environ, **sim_server.env(), "MDTH_TARDIS_API_KEY": SIM_API_KEY, "TMPDIR": str(spools)}
    clean = tmp_path / "clean"
    started = time.monotonic()
    assert run(env, clean).wait(120) == 0
    span = max(2.5, time.monotonic() - started)  # kills land anywhere in a run's life, startup to last write
    expected = snapshot(clean)
    assert len(expected) > 20

    killed = tmp_path / "killed"
    rng = random.Random(int(os.environ.get("MDTH_KILL_SEED", time.time_ns() % 1000)))
    left_temps: set[str] = set()  # what the killed runs left (each run removes its predecessors' at start)
    left_spools: set[str] = set()
    for _ in range(10):
        proc = run(env, killed)
        time.sleep(rng.uniform(0.3, span))
        with contextlib.suppress(ProcessLookupError):  # it may have finished first
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        left_temps |= {p.name for p in killed.rglob("*") if p.is_file() and ".tmp-" in p.name}
        left_spools |= {p.name for p in spools.glob("mdth-*") if p.is_dir()}
        for path, table in snapshot(
            killed
        ).items():  # whatever is listed is whole and equal to the clean file
            assert table.equals(expected[path]), path
    assert run(env, killed).wait(120) == 0
    final = snapshot(killed)
    assert sorted(final) == sorted(expected)
    for path, table in final.items():
        assert table.equals(expected[path]), path
    # the clean run's worker removed what the killed runs left (their pids are dead), with no manual sweep
    assert not [p for p in killed.rglob("*") if p.is_file() and ".tmp-" in p.name]
    assert not [p.name for p in spools.glob("mdth-*") if p.name in left_spools]
    print(f"left by kills, removed by the next run: {len(left_temps)} temp files, {len(left_spools)} spools")
