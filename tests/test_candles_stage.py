"""The candles stage: units for instruments with ticks, dense grids for the seven timeframes, rows stamped
this day picked up from the next day's file (reading only its first pages), provenance of the inputs, and
idempotent re-runs that rebuild exactly when an input or the feature spec changed."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import subprocess
import sys
from collections import defaultdict
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from lake_builders import (
    CALL,
    CHAIN,
    DAY,
    PERP,
    PUT,
    SPOT,
    arrival_trades,
    book_table,
    split_by_arrival,
    ts_array,
    write_master,
    write_ticks,
)
from typer.testing import CliRunner

from mdth_engine.api import plan_stage, run_stage
from mdth_engine.cli import app
from mdth_engine.core.events import Kind
from mdth_engine.core.schemas import schema_for
from mdth_engine.core.settings import load_settings
from mdth_engine.core.timeframes import TIMEFRAMES, US_PER_DAY, US_PER_SECOND, day_start_us
from mdth_engine.features.spec import FEATURE_SPEC_VERSION, candle_schema
from mdth_engine.reader.footer import FOOTERS
from mdth_engine.stages.base import Outcome, Request
from mdth_engine.storage import layout
from mdth_engine.storage.local import LocalStore
from mdth_engine.storage.parquet import read_provenance, write_table

NEXT = DAY + dt.timedelta(days=1)
T0 = day_start_us(DAY)
MIN = 60 * US_PER_SECOND
runner = CliRunner()


def run(settings, request: Request, sink=None):
    kwargs = {"sink": sink} if sink else {}
    return asyncio.run(run_stage(request, settings, **kwargs))


def chain_table(day: dt.date) -> pa.Table:
    """Four options of one expiry far ahead, re-quoted every 10 minutes: ATM call 55%, 25-delta put 60%,
    25-delta call 50%, ATM put 57%."""
    expiry = day_start_us(dt.date(2024, 6, 28)) + 8 * 3600 * US_PER_SECOND
    quotes = [  # symbol, key, type, strike, delta, mark_iv
        ("BTC-28JUN24-60000-C", CALL, "call", 60000.0, 0.5, 55.0),
        ("BTC-28JUN24-60000-P", PUT, "put", 60000.0, -0.5, 57.0),
        ("BTC-28JUN24-50000-P", "DERIBIT:OPTION:BTC-USD-240628-50000-PUT", "put", 50000.0, -0.25, 60.0),
        ("BTC-28JUN24-70000-C", "DERIBIT:OPTION:BTC-USD-240628-70000-CALL", "call", 70000.0, 0.25, 50.0),
    ]
    times = day_start_us(day) + np.arange(0, US_PER_DAY, 10 * MIN)
    rows: dict[str, list[Any]] = defaultdict(list)
    for t in times:
        for symbol, key, kind, strike, delta, iv in quotes:
            for name, value in (
                ("timestamp", t),
                ("local_timestamp", t + 2000),
                ("symbol", symbol),
                ("instrument_key", key),
                ("type", kind),
                ("strike_price", strike),
                ("expiration", expiry),
                ("delta", delta),
                ("mark_iv", iv),
            ):
                rows[name].append(value)
    schema = schema_for("options_chain")
    n = len(rows["timestamp"])
    columns = {f.name: rows[f.name] if f.name in rows else pa.nulls(n, f.type) for f in schema}
    for name in ("timestamp", "local_timestamp", "expiration"):
        columns[name] = ts_array(np.array(rows[name]))
    return pa.table(columns).cast(schema)


@pytest.fixture
def lake(local_store):
    """SPOT: trades of DAY and NEXT (split by arrival; NEXT in small row groups), book of DAY.
    PERP: trades only. CHAIN: its options_chain. CALL and PUT are listed but have no files of their own."""
    FOOTERS.clear()
    keys = [SPOT, PERP, CHAIN, CALL, PUT]
    write_master(local_store, DAY, keys)
    write_master(local_store, NEXT, keys)
    trades = pa.concat_tables([arrival_trades(DAY, 60_000, seed=1), arrival_trades(NEXT, 60_000, seed=2)])
    today, tomorrow = split_by_arrival(trades, DAY)
    write_ticks(local_store, DAY, "trades", SPOT, today)
    write_ticks(local_store, NEXT, "trades", SPOT, tomorrow, row_group_size=4096, page_rows=256)
    write_ticks(local_store, DAY, "book_snapshot_5", SPOT, book_table(DAY, 5_000, seed=3))
    write_ticks(local_store, DAY, "trades", PERP, arrival_trades(DAY, 5_000, seed=4))
    write_ticks(local_store, DAY, "options_chain", CHAIN, chain_table(DAY))
    settings = load_settings(lake=str(local_store.root))
    return local_store, settings, trades


def read_candles(store, key: str, timeframe: str) -> pa.Table:
    with store.open_read(layout.candles_path(DAY, timeframe, key)) as handle:
        return pq.read_table(handle)


def test_plan_has_units_for_instruments_with_ticks_and_warns_about_the_rest(lake):
    store, settings, _ = lake
    units = plan_stage(Request("candles", DAY, DAY), settings)
    assert [u.params["key"] for u in units] == sorted([SPOT, PERP, CHAIN])  # master order
    assert units[2].params["inputs"] == ["options_chain"] and units[1].params["key"] == SPOT
    assert units[1].est_bytes == sum(
        store.stat(layout.raw_path(DAY, t, SPOT)).size for t in ("trades", "book_snapshot_5")
    )
    events = []
    summary = run(settings, Request("candles", DAY, DAY, types=("OPTION",)), events.append)
    assert summary.units == 0
    warning = next(e for e in events if e.kind is Kind.WARNING)
    assert "2 selected instrument(s)" in warning.message and CALL in warning.message


def test_dense_grids_and_trade_sums_from_both_days_files(lake):
    store, settings, trades = lake
    summary = run(settings, Request("candles", DAY, DAY, symbols=(SPOT,)))
    assert summary.exit_code == 0 and summary.outcomes == {"written": 1}
    for timeframe, length in TIMEFRAMES.items():
        table = read_candles(store, SPOT, timeframe)
        assert table.schema == candle_schema()
        starts = table["timestamp"].cast(pa.int64()).to_numpy()
        assert len(starts) == US_PER_DAY // length
        assert (starts == T0 + np.arange(len(starts)) * length).all()
        assert (table["timestamp_out"].cast(pa.int64()).to_numpy() == starts + length).all()
    # Independently: every trade stamped this day, wherever it arrived, bucketed by exchange minute.
    stamps = trades["timestamp"].cast(pa.int64()).to_numpy()
    inside = (stamps >= T0) & (stamps < T0 + US_PER_DAY)
    minute = (stamps[inside] - T0) // MIN
    amount = trades["amount"].to_numpy()[inside]
    one = read_candles(store, SPOT, "1m")
    assert one["trade_count"].to_pylist() == np.bincount(minute, minlength=1440).tolist()
    np.testing.assert_allclose(
        one["volume"].to_numpy(), np.bincount(minute, amount, minlength=1440), rtol=1e-12
    )
    arrived_late = (trades["local_timestamp"].cast(pa.int64()).to_numpy() >= T0 + US_PER_DAY)[inside]
    assert 0 < arrived_late.sum() == np.bincount(minute[arrived_late], minlength=1440)[-1]
    assert (stamps < T0).sum() >= 1  # the day's file holds a row stamped the day before: left out above
    day = read_candles(store, SPOT, "24h")
    assert day["trade_count"].to_pylist() == [int(inside.sum())]
    assert not np.isnan(one["mid_price"].to_numpy()[-1])  # the book was read too
    assert np.isnan(one["funding_rate"].to_numpy()).all()  # no derivative_ticker: NaN, not zero


def test_next_day_pickup_reads_only_the_first_pages(lake, monkeypatch):
    store, settings, _ = lake
    counted: dict[str, int] = defaultdict(int)
    original = LocalStore.get_range

    def counting(self, path: str, start: int, length: int) -> bytes:
        data = original(self, path, start, length)
        counted[path] += len(data)
        return data

    monkeypatch.setattr(LocalStore, "get_range", counting)
    run(settings, Request("candles", DAY, DAY, symbols=(SPOT,), timeframes=("1h",)))
    nxt = layout.raw_path(NEXT, "trades", SPOT)
    size = store.stat(nxt).size
    # The footer (one 16 KiB tail read), the first row group's page index and first pages: ~2% of ~1 MB.
    assert 0 < counted[nxt] < 0.03 * size, (counted[nxt], size)
    today = layout.raw_path(DAY, "trades", SPOT)
    assert counted[today] > 0.5 * store.stat(today).size  # the day's own file is read (its needed columns)


def test_rows_stamped_this_day_in_the_previous_days_file_count(lake):
    store, settings, _ = lake
    before = DAY - dt.timedelta(days=1)
    quiet = arrival_trades(before, 200, seed=12)  # all stamped before midnight: not an input
    write_ticks(store, before, "trades", SPOT, quiet)
    # PERP: one trade arrived 1 ms before midnight, stamped 2 ms after it (the exchange clock runs ahead).
    ahead = quiet.slice(0, 1)
    ahead = ahead.set_column(0, "timestamp", ts_array(np.array([T0 + 2000])))
    ahead = ahead.set_column(1, "local_timestamp", ts_array(np.array([T0 - 1000])))
    write_ticks(store, before, "trades", PERP, pa.concat_tables([quiet, ahead.cast(quiet.schema)]))
    run(settings, Request("candles", DAY, DAY, symbols=(SPOT, PERP), timeframes=("1m",)))
    own = arrival_trades(DAY, 5_000, seed=4)["timestamp"].cast(pa.int64()).to_numpy()  # PERP's day file
    first_minute = int(((own >= T0) & (own < T0 + MIN)).sum())
    assert read_candles(store, PERP, "1m")["trade_count"][0].as_py() == first_minute + 1
    roles = {
        key: [
            i["role"]
            for i in json.loads(read_provenance(store, layout.candles_path(DAY, "1m", key))["inputs"])
        ]
        for key in (SPOT, PERP)
    }
    assert roles == {SPOT: ["day", "next_day", "day"], PERP: ["previous_day", "day"]}


def test_provenance_lists_inputs_and_spec_version(lake):
    store, settings, _ = lake
    run(settings, Request("candles", DAY, DAY, symbols=(SPOT,), timeframes=("5m",)))
    prov = read_provenance(store, layout.candles_path(DAY, "5m", SPOT))
    assert prov["feature_spec_version"] == FEATURE_SPEC_VERSION and prov["timeframe"] == "5m"
    assert prov["instrument_key"] == SPOT and prov["data_type"] == "candles" and prov["rows"] == "288"
    inputs = json.loads(prov["inputs"])
    assert [(i["data_type"], i["role"]) for i in inputs] == [
        ("trades", "day"),
        ("trades", "next_day"),
        ("book_snapshot_5", "day"),
    ]
    for item in inputs:
        tick = read_provenance(store, item["path"])
        assert item["source_sha256"] == tick["source_sha256"] and item["rows"] == int(tick["rows"])
    assert not store.exists(layout.candles_path(DAY, "1m", SPOT))  # only the timeframes asked for


def test_rerun_skips_and_rebuilds_when_an_input_or_force_says_so(lake):
    store, settings, _ = lake
    request = Request("candles", DAY, DAY, symbols=(SPOT, PERP))
    assert run(settings, request).outcomes == {"written": 2}
    assert run(settings, request).outcomes == {"skipped": 2}
    forced = dataclasses.replace(request, options={"force": True})
    assert run(settings, forced).outcomes == {"written": 2}
    # A new next-day file for PERP: its spill-over rows now belong to the day -> rebuilt.
    write_ticks(store, NEXT, "trades", PERP, arrival_trades(NEXT, 1_000, seed=8))
    results = {r.unit_id: r.outcome for r in run(settings, request).results}
    assert results == {f"{DAY}/{SPOT}": Outcome.SKIPPED, f"{DAY}/{PERP}": Outcome.WRITTEN}
    # A re-downloaded day with other content (another source hash) -> rebuilt.
    write_ticks(store, DAY, "trades", SPOT, arrival_trades(DAY, 500, seed=9))
    results = {r.unit_id: r.outcome for r in run(settings, request).results}
    assert results == {f"{DAY}/{SPOT}": Outcome.WRITTEN, f"{DAY}/{PERP}": Outcome.SKIPPED}
    # An output written by another feature spec version -> rebuilt.
    path = layout.candles_path(DAY, "4h", PERP)
    old = read_candles(store, PERP, "4h")
    prov = read_provenance(store, path)
    kept = {k: v for k, v in prov.items() if k not in ("rows", "first_timestamp", "last_timestamp")}
    kept = {k: v for k, v in kept.items() if k not in ("schema_version", "mdth_version", "written_at")}
    write_table(store, path, old, {**kept, "feature_spec_version": "0"}, schema=candle_schema())
    results = {r.unit_id: r.outcome for r in run(settings, request).results}
    assert results[f"{DAY}/{PERP}"] == Outcome.WRITTEN
    assert read_provenance(store, path)["feature_spec_version"] == FEATURE_SPEC_VERSION


def test_day_file_missing_ignores_next_day_rows_and_no_input_is_not_found(lake):
    store, settings, _ = lake
    units = plan_stage(Request("candles", DAY, DAY, symbols=(SPOT,)), settings)
    store.delete(layout.raw_path(DAY, "trades", SPOT))
    summary = run(settings, Request("candles", DAY, DAY, symbols=(SPOT,)), None)
    assert summary.outcomes == {"written": 1}  # from the book alone
    one = read_candles(store, SPOT, "1m")
    assert one["trade_count"].null_count == 1440  # trades absent: null counts, even with NEXT's file present
    inputs = json.loads(read_provenance(store, layout.candles_path(DAY, "1m", SPOT))["inputs"])
    assert [i["data_type"] for i in inputs] == ["book_snapshot_5"]
    store.delete(layout.raw_path(DAY, "book_snapshot_5", SPOT))
    summary = asyncio.run(run_stage(Request("candles", DAY, DAY), settings, units=units))
    assert summary.outcomes == {"not_found": 1} and summary.exit_code == 0
    assert "download it first" in summary.results[0].reason


def test_option_chain_candles_carry_the_option_features(lake):
    store, settings, _ = lake
    assert run(settings, Request("candles", DAY, DAY, types=("OPTION_CHAIN",))).outcomes == {"written": 1}
    table = read_candles(store, CHAIN, "1h")
    assert table["atm_mark_iv"].to_pylist() == [55.0] * 24  # the call: delta tie with the put, calls first
    assert table["skew_25d_put_call_ratio"].to_pylist() == pytest.approx([60.0 / 50.0] * 24)
    assert table["trade_count"].null_count == 24  # no trades for a chain


def test_candles_on_gcs(gcs_store):
    write_master(gcs_store, DAY, [SPOT])
    write_ticks(gcs_store, DAY, "trades", SPOT, arrival_trades(DAY, 3_000, seed=5))
    settings = load_settings(lake=gcs_store.url)
    assert run(settings, Request("candles", DAY, DAY)).outcomes == {"written": 1}
    assert run(settings, Request("candles", DAY, DAY)).outcomes == {"skipped": 1}
    with gcs_store.open_read(layout.candles_path(DAY, "24h", SPOT)) as handle:
        assert pq.read_table(handle)["trade_count"].to_pylist() == [2999]  # one row is stamped the day before


def test_cli_runs_validates_and_plans(lake):
    store, _, _ = lake
    root = str(store.root)
    result = runner.invoke(
        app, ["candles", "--start", "2024-01-01", "--timeframes", "1h,15m", "--lake", root]
    )
    assert result.exit_code == 0, result.output
    assert store.exists(layout.candles_path(DAY, "15m", SPOT)) and not store.exists(
        layout.candles_path(DAY, "1m", SPOT)
    )
    result = runner.invoke(app, ["candles", "--start", "2024-01-01", "--timeframes", "2m", "--lake", root])
    assert result.exit_code == 2 and "unknown timeframe '2m'" in result.output
    result = runner.invoke(app, ["candles", "--start", "2024-01-05", "--lake", root])
    assert result.exit_code == 2 and "no instrument master for 2024-01-05" in result.output
    result = runner.invoke(app, ["--json", "candles", "--start", "2024-01-01", "--dry-run", "--lake", root])
    assert result.exit_code == 0
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["params"]["key"] for line in lines if line["kind"] == "unit"] == sorted([SPOT, PERP, CHAIN])
    result = runner.invoke(app, ["--json", "candles", "--start", "2024-01-01", "--lake", root])
    summary = json.loads(result.stdout.splitlines()[-1])
    assert result.exit_code == 0 and summary["outcomes"] == {"written": 3}


def test_cli_as_a_sharded_job(lake):
    store, _, _ = lake
    args = [
        "candles",
        "--start",
        "2024-01-01",
        "--shards",
        "2",
        "--timeframes",
        "1h",
        "--lake",
        str(store.root),
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "mdth_engine.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert all(store.exists(layout.candles_path(DAY, "1h", key)) for key in (SPOT, PERP, CHAIN))


def test_cli_date_builds_that_one_day(lake):
    """`mdth candles --date D` is `--start D --end D`; with --start too it is a usage error."""
    store, _, _ = lake
    root = str(store.root)
    result = runner.invoke(
        app, ["--json", "candles", "--date", "2024-01-01", "--timeframes", "1h", "--lake", root]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["outcomes"] == {"written": 3}
    assert all(store.exists(layout.candles_path(DAY, "1h", key)) for key in (SPOT, PERP, CHAIN))
    assert not store.exists(layout.candles_path(DAY, "1m", SPOT))
    result = runner.invoke(app, ["candles", "--date", "2024-01-01", "--start", "2024-01-01", "--lake", root])
    assert result.exit_code == 2 and "give --date or --start/--end, not both" in result.output
