"""A real sharded download: 4 local worker processes against the simulator (in its own process, answering
slowly so the job takes a while) make exactly the lake a 1-shard job makes, even when one shard's worker is
killed mid-run; the supervisor detects and heals it without anyone stepping in."""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib.util
import os
import signal
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from sim_fixtures import SIM_API_KEY, SimProcess, sim_cache_dir  # noqa: F401  (the session cache fixture)

from mdth_engine.core.events import Event, Kind
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


def test_four_local_shards_make_the_lake_one_shard_makes_even_with_a_kill(
    slow_sim: SimProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from mdth_engine.api import ensure_instruments

    monkeypatch.setenv("MDTH_WORKER_HEARTBEAT_S", "0.3")
    request = Request("download", DAYS[0], DAYS[-1], symbols=SYMBOLS, data_types=TYPES)
    results = {}
    events: list[Event] = []
    killed: list[int] = []
    target: list[int] = []

    def sink(ev: Event) -> None:
        events.append(ev)
        d = ev.data
        if ev.kind is Kind.STARTED and ev.data.get("shards") == 4:
            plan = rec.read_plan(open_store(str(tmp_path / "four")), ev.job)
            sizes = [sum(u.est_bytes for u, s in plan if s == i) for i in range(4)]
            target.append(sizes.index(max(sizes)))  # the longest shard
        if (
            target
            and not killed
            and d.get("shard") == target[0]
            and d.get("state") == "running"
            and d.get("pid")
        ):
            os.killpg(int(d["pid"]), signal.SIGKILL)
            killed.append(int(d["pid"]))

    for shards, name, concurrency in ((1, "one", 4), (4, "four", 1)):
        lake = tmp_path / name
        settings = _settings(slow_sim, lake, concurrency)
        asyncio.run(ensure_instruments(request, settings))
        status = run_job(
            open_store(str(lake)),
            request,
            shards=shards,
            backend="local",
            settings=settings,
            sink=sink,
            poll=0.2,
        )
        assert status.state == "done", [(s.state, s.last_error) for s in status.shards]
        assert status.units_failed == 0 and status.exit_code == 0
        results[shards] = (status, _lake(lake))

    one, four = results[1][1], results[4][1]
    assert len(one) >= 12 and sorted(one) == sorted(four)
    for path in one:
        assert one[path][0].equals(four[path][0]), path
        assert one[path][1] == four[path][1], path  # same source, sha256, rows, first/last timestamps
    status4 = results[4][0]
    assert status4.spec.shards == 4 and killed
    assert status4.shards[target[0]].attempt == 2
    assert any(e.kind is Kind.WARNING and f"shard {target[0]}: process exited" in e.message for e in events)
