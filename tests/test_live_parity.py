"""Parity: a lake day replayed through the live path gives the batch candles, every feature of every bar.

The lake is built the way a user builds it: ticks downloaded from the simulator with the real client
(``run_stage(Request("download"...))``), then ``candles`` (the batch path). The same day is replayed through
``LiveFeatureStream`` (source ``replay:...``, full speed: a virtual clock closes bars as event time passes
their end plus the grace). How bars are compared: the same bars (timestamps, count) in the same order; integer
columns (trade_count, liquidation_count) exactly, nulls in the same places; float columns with NaN in the
same places and every other value within 1e-12 relative (|live - batch| <= 1e-12 * max(|live|, |batch|)).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sim_fixtures import SIM_API_KEY

from mdth_engine.api import ensure_instruments, run_stage
from mdth_engine.core.settings import load_settings
from mdth_engine.core.timeframes import TIMEFRAMES
from mdth_engine.features.incremental import rows_to_tables
from mdth_engine.features.spec import CANDLE_COLUMNS
from mdth_engine.live.events import Bar
from mdth_engine.live.stream import LiveFeatureStream
from mdth_engine.stages.base import Request
from mdth_engine.storage import layout
from mdth_engine.storage.store import open_store

DAY = dt.date(2024, 3, 12)
SPOT, PERP = "BINANCE:SPOT_PAIR:BTC-USDT", "BINANCE-FUTURES:PERPETUAL:BTC-USDT"
ALL_TF = list(TIMEFRAMES)
REL = 1e-12


@pytest.fixture(scope="module")
def sim_lake(sim_server, tmp_path_factory):
    """A lake with one simulated day of both instruments (ticks from the simulator, batch candles)."""
    lake = tmp_path_factory.mktemp("live-lake")
    settings = load_settings(
        lake=str(lake),
        tardis_api_url=sim_server.api_url,
        tardis_datasets_url=sim_server.datasets_url,
        tardis_api_key=SIM_API_KEY,
    )
    request = Request("download", DAY, DAY, symbols=(SPOT, PERP))
    asyncio.run(ensure_instruments(request, settings))
    summary = asyncio.run(run_stage(request, settings, concurrency=4))
    assert summary.exit_code == 0, [f.reason for f in summary.failures]
    summary = asyncio.run(run_stage(Request("candles", DAY, DAY), settings))
    assert summary.exit_code == 0 and summary.outcomes == {"written": 2}
    return str(lake)


def batch_candles(lake: str, key: str, tf: str) -> pa.Table:
    return pq.read_table(open_store(lake).local_path(layout.candles_path(DAY, tf, key)))


def bars_table(bars: list[Bar], key: str, tf: str) -> pa.Table:
    rows = [(b.timeframe, b.values) for b in bars if b.instrument_key == key and b.timeframe == tf]
    return rows_to_tables(rows)[tf]


def compare(batch: pa.Table, live: pa.Table, label: str) -> int:
    """Assert the tables hold the same bars (see the module docstring); returns how many values were compared."""
    assert live.num_rows == batch.num_rows, label
    compared = 0
    for name in CANDLE_COLUMNS:
        b, v = batch[name].combine_chunks(), live[name].combine_chunks()
        where = f"{label} {name}"
        assert b.is_null().to_pylist() == v.is_null().to_pylist(), where
        if pa.types.is_floating(b.type):
            x, y = b.to_numpy(zero_copy_only=False), v.to_numpy(zero_copy_only=False)
            assert np.array_equal(np.isnan(x), np.isnan(y)), where
            ok = ~np.isnan(x)
            scale = np.maximum(np.abs(x[ok]), np.abs(y[ok]))
            worst = np.abs(x[ok] - y[ok]) - REL * scale
            assert (worst <= 0).all(), f"{where}: off by {float(np.max(np.abs(x[ok] - y[ok])))}"
        else:
            assert b.cast(v.type).to_pylist() == v.to_pylist(), where
        compared += len(b)
    return compared


async def test_replaying_a_lake_day_at_full_speed_gives_the_batch_candles(sim_lake):
    source = f"replay:{SPOT},{PERP}@{DAY}"
    bars: list[Bar] = []
    notices = []
    async with LiveFeatureStream(None, ALL_TF, source, lake=sim_lake, events=True) as stream:
        async for item in stream:
            (bars if isinstance(item, Bar) else notices).append(item)
        stats = stream.stats()
    assert stream.error is None
    assert [n.event for n in notices] == ["warm_start", "end"]
    assert stats["engine"]["late"] == 0 and stats["engine"]["invalid"] == 0
    assert not any(b.warm or b.partial or b.spans_disconnect for b in bars)
    raw_rows = sum(
        pq.read_metadata(open_store(sim_lake).local_path(layout.raw_path(DAY, t, k))).num_rows
        for k, t in [(SPOT, "trades"), (SPOT, "book_snapshot_5")]
        + [(PERP, t) for t in ("trades", "book_snapshot_5", "derivative_ticker", "liquidations")]
    )
    assert stats["engine"]["events_in"] == raw_rows  # every tick of every file went through the engine
    compared = 0
    for key in (SPOT, PERP):
        for tf in ALL_TF:
            compared += compare(batch_candles(sim_lake, key, tf), bars_table(bars, key, tf), f"{key} {tf}")
    assert compared == 2 * sum(86_400 // (TIMEFRAMES[tf] // 1_000_000) for tf in ALL_TF) * len(CANDLE_COLUMNS)
    # Bars come out as the clock closes them: in time order per timeframe, each timeframe's bars together.
    ends = [b.timestamp_out for b in bars if b.instrument_key == SPOT and b.timeframe == "15s"]
    assert ends == sorted(ends)
    perp_1h = batch_candles(sim_lake, PERP, "1h")
    assert np.isfinite(perp_1h["mark_price"].to_numpy()).all()  # the derivative features were really compared


async def test_a_paced_replay_closes_bars_on_its_clock_with_the_same_numbers(sim_lake):
    """At 120x the replay runs a scaled clock and a timer closes bars (no virtual clock): same numbers."""
    bars: list[Bar] = []
    started = time.monotonic()
    async with LiveFeatureStream(
        [SPOT], ["15s", "1m"], f"replay:{PERP}@{DAY}", lake=sim_lake, speed="120x"
    ) as stream:
        async for bar in stream:
            bars.append(bar)
            if sum(b.timeframe == "1m" for b in bars) >= 6:  # three minutes of both instruments
                break
        clock_now = stream.source.clock.now_us()
        stats = stream.stats()
    elapsed = time.monotonic() - started
    # Three minutes (plus the 5 s grace) of market at 120x take 1.54 s of wall time, not less: it is paced.
    assert 1.5 < elapsed < 20, elapsed
    assert stats["engine"]["late"] == 0
    last = max(b.timestamp_out for b in bars)
    assert (
        clock_now >= last + stream.engine.grace_us
    )  # each bar closed only once the clock passed end + grace
    for key in (SPOT, PERP):
        for tf in ("15s", "1m"):
            live = bars_table(bars, key, tf)
            batch = batch_candles(sim_lake, key, tf).slice(0, live.num_rows)
            assert live.num_rows >= 3
            compare(batch, live, f"{key} {tf} paced")
