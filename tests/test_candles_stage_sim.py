"""Candles from ticks downloaded off the simulator with the real client: counts that match the raw files of both
days, derivative and option features present where their data is, every feature of every timeframe equal to the
independent computation of tests/test_features_batch.py on simulator days, and `mdth pipeline` ending with
candles."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sim_fixtures import SIM_API_KEY
from test_features_batch import EXACT, Oracle, _assert_close, _values

from mdth_engine.api import Lake, ensure_instruments, run_stage
from mdth_engine.core.settings import load_settings
from mdth_engine.core.timeframes import TIMEFRAMES, US_PER_DAY, day_start_us
from mdth_engine.features.spec import FEATURES
from mdth_engine.stages.base import Request
from mdth_engine.storage import layout
from mdth_engine.storage.store import open_store

DAY = dt.date(2024, 3, 12)
NEXT = DAY + dt.timedelta(days=1)
LAST = NEXT + dt.timedelta(days=1)
SPOT, PERP, CHAIN = (
    "BINANCE:SPOT_PAIR:BTC-USDT",
    "BINANCE-FUTURES:PERPETUAL:BTC-USDT",
    "DERIBIT:OPTION_CHAIN:BTC-USD",
)


@pytest.fixture(scope="module")
def sim_lake(sim_server, tmp_path_factory):
    lake = tmp_path_factory.mktemp("lake")
    settings = load_settings(
        lake=str(lake),
        tardis_api_url=sim_server.api_url,
        tardis_datasets_url=sim_server.datasets_url,
        tardis_api_key=SIM_API_KEY,
    )
    request = Request("download", DAY, LAST, symbols=(SPOT, PERP, CHAIN))
    asyncio.run(ensure_instruments(request, settings))
    summary = asyncio.run(run_stage(request, settings, concurrency=6))
    assert summary.exit_code == 0, [f.reason for f in summary.failures]
    return settings, open_store(str(lake))


def read(store, path: str) -> pa.Table:
    return pq.read_table(store.local_path(path))


def test_candles_match_the_raw_files_of_both_days(sim_lake):
    settings, store = sim_lake
    summary = asyncio.run(run_stage(Request("candles", DAY, DAY), settings))
    assert summary.exit_code == 0 and summary.outcomes == {"written": 3}
    start = day_start_us(DAY)
    per_minute = {}
    for key in (SPOT, PERP):
        stamps = np.concatenate(
            [
                read(store, layout.raw_path(day, "trades", key))["timestamp"].cast(pa.int64()).to_numpy()
                for day in (DAY, NEXT)
            ]
        )
        inside = (stamps >= start) & (stamps < start + US_PER_DAY)
        candles = read(store, layout.candles_path(DAY, "24h", key))
        assert candles["trade_count"].to_pylist() == [int(inside.sum())], key
        one = read(store, layout.candles_path(DAY, "1m", key))
        minute = (stamps[inside] - start) // (60 * 1_000_000)
        per_minute[key] = np.bincount(minute, minlength=1440).tolist()
        assert one["trade_count"].to_pylist() == per_minute[key], key
    perp = read(store, layout.candles_path(DAY, "1h", PERP))
    assert not np.isnan(perp["mark_price"].to_numpy()).any()  # derivative_ticker every hour
    assert perp["liquidation_count"].null_count == 0  # the liquidations file was there (maybe empty)
    chain = read(store, layout.candles_path(DAY, "1h", CHAIN))
    assert np.isfinite(chain["atm_mark_iv"].to_numpy()).all()
    assert np.isfinite(chain["skew_25d_put_call_ratio"].to_numpy()).all()
    # Read back through the Lake API.
    lake = Lake(settings.lake, settings)
    got = lake.candles(
        SPOT, "1m", "2024-03-12T10:00Z", "2024-03-12T11:00Z", columns=["timestamp", "trade_count"]
    )
    assert got.num_rows == 60 and got["trade_count"].to_pylist() == per_minute[SPOT][600:660]


# The oracle's name of each input of an instrument (not a chain) -> its data type in the lake.
ORACLE_SOURCES = {
    "trades": "trades",
    "liquidations": "liquidations",
    "derivative_ticker": "derivative_ticker",
    "book": "book_snapshot_5",
}


def oracle_inputs(store, day: dt.date, key: str) -> dict[str, pa.Table | None]:
    """A unit's inputs read with pyarrow, not mdth's reader: the day's file whole, after the previous day's
    rows stamped this day and before the next day's (tick files are split by arrival time)."""
    kinds = {"options_chain": "options_chain"} if key == CHAIN else ORACLE_SOURCES
    start = day_start_us(day)
    given: dict[str, pa.Table | None] = {}
    for name in ("trades", "liquidations", "derivative_ticker", "book", "options_chain"):
        kind = kinds.get(name)
        if kind is None or not store.exists(layout.raw_path(day, kind, key)):
            given[name] = None  # no file that day: neighbours do not count either
            continue
        parts = []
        for offset in (-1, 0, 1):
            path = layout.raw_path(day + dt.timedelta(days=offset), kind, key)
            if not store.exists(path):
                continue
            table = read(store, path)
            if offset:
                stamps = table["timestamp"].cast(pa.int64()).to_numpy()
                table = table.filter(pa.array((stamps >= start) & (stamps < start + US_PER_DAY)))
            parts.append(table)
        given[name] = pa.concat_tables(parts)
    return given


def test_every_feature_of_simulator_days_matches_the_independent_computation(sim_lake, tmp_path):
    settings, store = sim_lake
    lake = tmp_path / "lake"  # a copy: this test's candles leave the module's lake as the other tests expect
    shutil.copytree(settings.lake, lake)
    settings, store = load_settings(lake=str(lake)), open_store(str(lake))
    summary = asyncio.run(run_stage(Request("candles", DAY, LAST, options={"force": True}), settings))
    assert summary.exit_code == 0 and summary.outcomes == {"written": 9}
    defined: dict[str, int] = dict.fromkeys((f.name for f in FEATURES), 0)
    carried: set[str] = set()  # raw columns with a value in some input
    for day in (DAY, NEXT, LAST):
        for key in (SPOT, PERP, CHAIN):
            given = oracle_inputs(store, day, key)
            carried |= {
                n for t in given.values() if t is not None for n in t.column_names if has_values(t[n])
            }
            for tf in TIMEFRAMES:
                got = read(store, layout.candles_path(day, tf, key))
                compare_with_oracle(got, f"{day} {key} {tf}", Oracle(day, given, TIMEFRAMES[tf]), defined)
    # Not a vacuous comparison: every feature has a value somewhere, unless it copies a raw column the
    # simulator never fills (its Binance perpetual has no predicted funding rate, as on the real feed).
    undefined = {name for name, n in defined.items() if n == 0}
    assert undefined <= {f.name for f in FEATURES} - carried, undefined


def compare_with_oracle(got: pa.Table, where: str, oracle: Oracle, defined: dict[str, int]) -> None:
    """Every feature of one candles file against the oracle's; counts the defined values per feature."""
    for feature in FEATURES:
        values = _values(got, feature.name)
        want = np.asarray(oracle.cols[feature.name])
        _assert_close(feature.name, where, values, want, feature.name in EXACT)
        defined[feature.name] += int(np.sum(defined_values(values)))


def has_values(column: pa.ChunkedArray) -> bool:
    return column.null_count < len(column)


def defined_values(values: np.ndarray) -> np.ndarray:
    """Defined values: not None (integer columns) and not NaN (float columns)."""
    if values.dtype == object:
        return np.array([v is not None for v in values], dtype=bool)
    return ~np.isnan(values)


def test_pipeline_ends_with_candles(sim_server, tmp_path):
    env = {**os.environ, **sim_server.env(), "MDTH_TARDIS_API_KEY": SIM_API_KEY, "MDTH_LAKE": str(tmp_path)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mdth_engine.cli",
            "--json",
            "pipeline",
            "--date",
            str(DAY),
            "--symbols",
            SPOT,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    summaries = [json.loads(line) for line in proc.stdout.splitlines() if '"kind":"summary"' in line]
    assert [s["stage"] for s in summaries][:2] == ["download", "candles"]
    assert summaries[1]["outcomes"] == {"written": 1}
    store = open_store(str(tmp_path))
    assert all(store.exists(layout.candles_path(DAY, tf, SPOT)) for tf in ("15s", "1m", "24h"))
