"""A real sharded download: `mdth download --shards 4` (4 local worker processes) against the simulator (in
its own process, answering slowly so the job takes a while) makes exactly the lake a 1-shard job makes, even
when one shard's worker is killed mid-run from outside; the command's supervisor detects and heals it
without anyone stepping in."""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from sim_fixtures import SIM_API_KEY, SimProcess, sim_cache_dir  # noqa: F401  (the session cache fixture)

from mdth_engine.core.settings import load_settings
from mdth_engine.jobs import records as rec
from mdth_engine.jobs.manage import run_job
from mdth_engine.stages.base import Request
from mdth_engine.storage import layout
from mdth_engine.storage.store import open_store

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(
        importlib.util.find_spec("mdth_engine.stages.download") is None,
        reason="the download stage (mdth_engine.stages.download) is not in this tree yet",
    ),
]

DAYS = (dt.date(2024, 3, 11), dt.date(2024, 3, 12))
SYMBOLS = ("BINANCE:SPOT_PAIR:BTC-USDT", "BINANCE-FUTURES:PERPETUAL:BTC-USDT", "DERIBIT:PERPETUAL:ETH-USD")
TYPES = ("trades", "book_snapshot_5", "derivative_ticker", "liquidations")


@pytest.fixture
def slow_sim(sim_cache_dir: Path):  # noqa: F811
    """The simulator as a process, every dataset answer delayed, so shards are still busy when one is killed."""
    sim = SimProcess("--scale", "tiny", "--faults", "slow:delay=0.25:p=1", cache_dir=sim_cache_dir)
    try:
        yield sim
    finally:
        sim.stop()


def _settings(sim: SimProcess, lake: Path, concurrency: int):
    return load_settings(
        lake=str(lake),
        tardis_api_url=sim.api_url,
        tardis_datasets_url=sim.datasets_url,
        tardis_api_key=SIM_API_KEY,
        concurrency=concurrency,
    )


def _lake(lake: Path) -> dict[str, tuple]:
    """Every tick file: (table, provenance without the write time) by path."""
    store = open_store(str(lake))
    out = {}
    for info in store.list(layout.RAW_ROOT + "/"):
        table = pq.read_table(lake / info.path)
        meta = {k: v for k, v in (table.schema.metadata or {}).items() if b"written_at" not in k}
        out[info.path] = (table.replace_schema_metadata(None), meta)
    return out


def _kill_the_longest_shard(lake: Path, killed: list, stop: threading.Event) -> None:
    """From outside, as an OOM killer would: once the job exists, SIGKILL its longest shard's worker."""
    from mdth_engine.jobs.status import list_job_ids

    store = open_store(str(lake))
    while not stop.is_set():
        ids = list_job_ids(store) if lake.exists() else []
        if ids:
            plan = rec.read_plan(store, ids[0])
            shards = 1 + max(s for _, s in plan)
            sizes = [sum(u.est_bytes for u, s in plan if s == i) for i in range(shards)]
            target = sizes.index(max(sizes))
            record = rec.read_shard(store, ids[0], target)
            if record is not None and record.state == "running" and record.pid:
                os.killpg(record.pid, signal.SIGKILL)
                killed.append((target, record.pid))
                return
        time.sleep(0.05)


def test_four_local_shards_make_the_lake_one_shard_makes_even_with_a_kill(
    slow_sim: SimProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """1 shard through the Python API; 4 shards through `mdth download --shards 4 --json`, one worker killed."""
    from mdth_engine.api import ensure_instruments
    from mdth_engine.jobs.backends import local

    monkeypatch.setenv("MDTH_WORKER_HEARTBEAT_S", "0.3")
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # worker logs of the CLI's job stay in this test's folder
    monkeypatch.setattr(local, "log_dir", lambda job_id: tmp_path / "worker-logs" / job_id)
    request = Request("download", DAYS[0], DAYS[-1], symbols=SYMBOLS, data_types=TYPES)
    settings = _settings(slow_sim, tmp_path / "one", 4)
    asyncio.run(ensure_instruments(request, settings))
    status = run_job(
        open_store(str(tmp_path / "one")), request, shards=1, backend="local", settings=settings, poll=0.2
    )
    assert status.state == "done" and status.units_failed == 0 and status.exit_code == 0
    one = _lake(tmp_path / "one")

    env = {**os.environ, **slow_sim.env(), "MDTH_TARDIS_API_KEY": SIM_API_KEY, "MDTH_CONCURRENCY": "1"}
    killed: list[tuple[int, int]] = []
    stop = threading.Event()
    killer = threading.Thread(target=_kill_the_longest_shard, args=(tmp_path / "four", killed, stop))
    killer.start()
    try:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "mdth_engine.cli",
                "download",
                "--start",
                str(DAYS[0]),
                "--end",
                str(DAYS[-1]),
                "--symbols",
                ",".join(SYMBOLS),
                "--data-types",
                ",".join(TYPES),
                "--shards",
                "4",
                "--lake",
                str(tmp_path / "four"),
                "--json",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
    finally:
        stop.set()
        killer.join()
    assert out.returncode == 0, out.stderr[-2000:]
    events = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert killed, "the worker was never seen running"
    target = killed[0][0]
    assert any(e["kind"] == "warning" and f"shard {target}: process exited" in e["message"] for e in events)
    finished = events[-1]
    assert finished["kind"] == "finished" and finished["data"]["state"] == "done"
    assert finished["data"]["shards"] == 4 and finished["data"]["units_failed"] == 0

    four = _lake(tmp_path / "four")
    assert len(one) >= 12 and sorted(one) == sorted(four)
    for path in one:
        assert one[path][0].equals(four[path][0]), path
        assert one[path][1] == four[path][1], path  # same source, sha256, rows, first/last timestamps
    job_id = next(
        e["job"] for e in events if e["kind"] == "started" and e.get("job", "").startswith("download-")
    )
    record = rec.read_shard(open_store(str(tmp_path / "four")), job_id, target)
    assert record.attempt == 2 and record.state == "done" and record.pid != killed[0][1]
