"""The facade the console calls (mdth_engine/api.py, appended part), headless: launch requests and their
equivalent command line (checked against the real CLI's own plan), plans before launching, the lake overview,
recent jobs, failed units read incrementally, shard logs, and coverage fixes."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from lake_builders import write_master

from mdth_engine import api
from mdth_engine.core.errors import UsageError
from mdth_engine.core.settings import load_settings
from mdth_engine.jobs import records as rec
from mdth_engine.jobs.spec import JobSpec
from mdth_engine.stages.base import Request
from mdth_engine.storage import layout
from mdth_engine.storage.store import open_store

DAY = dt.date(2024, 1, 2)
KEYS = [
    "BINANCE:SPOT_PAIR:BTC-USDT",
    "BINANCE:SPOT_PAIR:ETH-USDT",
    "BINANCE-FUTURES:PERPETUAL:BTC-USDT",
    "DERIBIT:OPTION_CHAIN:BTC-USD",
]


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    path = tmp_path / "lake"
    store = open_store(str(path))
    for day in (DAY, DAY + dt.timedelta(days=1)):
        write_master(store, day, KEYS)
    return path


# -- launch requests and command lines -------------------------------------------------------------------------


def test_launch_request_keeps_what_each_stage_takes():
    r = api.launch_request(
        "candles",
        "2024-01-02",
        "2024-01-03",
        venues="binance",
        symbols="BTCUSDT",
        timeframes="1h,1m",
        data_types="trades",
    )
    assert (r.operation, r.start, r.end) == ("candles", DAY, dt.date(2024, 1, 3))
    assert r.venues == ("BINANCE",) and r.symbols == ("BTCUSDT",)
    assert r.timeframes == ("1m", "1h")  # shortest first
    assert r.data_types == ()  # candles take no data types
    up = api.launch_request(
        "upload", "2024-01-02", venues="DERIBIT", symbols="X", timeframes="1m", force=True
    )
    assert (up.venues, up.symbols, up.timeframes, up.options) == ((), (), ("1m",), {"force": True})
    dl = api.launch_request("download", "2024-01-02")
    assert dl.end == DAY and dl.data_types  # the default data types, as `mdth download` has them
    assert api.launch_request("pipeline", "2024-01-02").operation == "pipeline"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"start": "2024-02-30"}, "is not a date"),
        ({"start": "2024-01-03", "end": "2024-01-02"}, ""),
        ({"start": "2024-01-02", "venues": "NYSE"}, "unknown venue"),
        ({"start": "2024-01-02", "data_types": "trades,quotez"}, "unknown data type"),
        ({"start": "2024-01-02", "types": "STOCK"}, "unknown instrument type"),
        ({"start": "2024-01-02", "max_instruments": "many"}, "whole number"),
        ({"start": "2024-01-02", "max_instruments": 0}, "at least 1"),
        ({"start": ""}, "start day"),
    ],
)
def test_launch_request_refuses_bad_fields_with_one_line(kwargs, message):
    with pytest.raises(UsageError) as info:
        api.launch_request("download", **kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_launch_request_refuses_an_unknown_operation():
    with pytest.raises(UsageError, match="unknown operation"):
        api.launch_request("defragment", "2024-01-02")


def test_command_line_is_what_a_user_types():
    r = api.launch_request(
        "download", "2024-01-02", "2024-01-03", symbols="BINANCE:SPOT_PAIR:BTC-USDT", data_types="trades"
    )
    assert api.command_line(r, shards=4, lake="/data/my lake") == (
        "mdth --lake '/data/my lake' download --start 2024-01-02 --end 2024-01-03 --data-types trades "
        "--symbols BINANCE:SPOT_PAIR:BTC-USDT --shards 4"
    )
    assert api.command_line(api.launch_request("pipeline", "2024-01-02")) == "mdth pipeline --date 2024-01-02"
    gce = api.launch_request("candles", "2024-01-02", timeframes="1m", force=True)
    assert api.command_line(gce, backend="gce") == (
        "mdth candles --start 2024-01-02 --timeframes 1m --force --shards 1 --backend gce"
    )


def test_the_command_line_plans_exactly_what_the_console_would_run(lake: Path):
    """The equivalent command, run by the real CLI with --dry-run, plans the same units as the request."""
    request = api.launch_request(
        "download",
        "2024-01-02",
        "2024-01-03",
        venues="BINANCE",
        types="SPOT_PAIR",
        data_types="trades,book_snapshot_5",
    )
    line = api.command_line(request, lake=str(lake))
    args = [*shlex.split(line)[1:], "--dry-run", "--json"]
    out = subprocess.run(
        [sys.executable, "-m", "mdth_engine.cli", *args], capture_output=True, text=True, check=True
    )
    events = [json.loads(x) for x in out.stdout.splitlines()]
    cli_units = sorted(e["unit_id"] for e in events if e["kind"] == "plan_unit")
    units = api.plan_stage(request, load_settings(lake=str(lake)))
    assert (
        cli_units == sorted(u.unit_id for u in units) and len(cli_units) == 2 * 2 * 2
    )  # days x pairs x types


# -- plans before launching ------------------------------------------------------------------------------------


def test_plan_launch_counts_units_bytes_and_shards(lake: Path):
    settings = load_settings(lake=str(lake))
    request = api.launch_request(
        "download", "2024-01-02", "2024-01-03", venues="BINANCE", data_types="trades"
    )
    plan = api.plan_launch(request, settings, shards=16)
    units = api.plan_stage(request, settings)
    assert plan["units"] == len(units) == 4
    assert plan["est_bytes"] == sum(u.est_bytes for u in units) > 0
    assert plan["shards"] == 4  # never more shards than units
    assert plan["missing_master"] == [] and plan["note"] == ""


def test_plan_launch_says_when_the_master_is_built_first(lake: Path):
    settings = load_settings(lake=str(lake))
    request = api.launch_request("pipeline", "2024-01-03", "2024-01-04", symbols="BINANCE:SPOT_PAIR:BTC-USDT")
    plan = api.plan_launch(request, settings, shards=2)
    assert plan["units"] is None and plan["missing_master"] == ["2024-01-04"]
    assert "built first" in plan["note"] and "candles, validate and upload" in plan["note"]


# -- lake overview, jobs, failures, logs -------------------------------------------------------------------------


def test_lake_overview_counts_the_listing(lake: Path):
    store = open_store(str(lake))
    store.put_bytes(layout.raw_path(DAY, "trades", KEYS[0]), b"x" * 100)
    store.put_bytes(layout.raw_path(DAY, "book_snapshot_5", KEYS[0]), b"x" * 50)
    store.put_bytes(layout.raw_path(DAY + dt.timedelta(days=1), "trades", KEYS[2]), b"x" * 10)
    store.put_bytes(layout.candles_path(DAY, "1m", KEYS[0]), b"x" * 7)
    o = api.lake_overview(str(lake))
    assert o["tick_days"] == ["2024-01-02", "2024-01-03"] and o["master_days"] == ["2024-01-02", "2024-01-03"]
    assert o["tick_keys"] == sorted([KEYS[0], KEYS[2]]) and o["instruments_with_ticks"] == 2
    assert o["venues"] == ["BINANCE", "BINANCE-FUTURES"]
    assert o["tick_data_types"] == ["book_snapshot_5", "trades"]
    assert o["instruments_listed"] == len(KEYS)
    assert o["areas"]["raw_tick_data"] == {"files": 3, "bytes": 160}
    assert o["areas"]["processed_candles"] == {"files": 1, "bytes": 7}
    assert o["bytes"] == sum(a["bytes"] for a in o["areas"].values())


def _spec(job_id: str, shards: int = 2) -> JobSpec:
    return JobSpec(
        job_id, "download", Request("download", DAY, DAY).to_dict(), shards, "local", "0", "me", job_id[9:24]
    )


def test_recent_jobs_are_newest_first_and_limited(tmp_path: Path):
    store = open_store(str(tmp_path / "lake"))
    ids = [
        "download-20240101-000000-aaaaaa",
        "candles-20240103-000000-bbbbbb",
        "download-20240102-000000-cccccc",
    ]
    for job_id in ids:
        rec.save_spec(store, _spec(job_id))
    store.put_bytes(layout.job_spec_path("validate-20240104-000000-dddddd"), b"{not json")  # unreadable
    jobs = api.recent_jobs(store, limit=3)
    assert [j.job_id for j in jobs] == [ids[1], ids[2]]  # the unreadable newest is skipped, not fatal
    assert [j.job_id for j in api.recent_jobs(store)] == [ids[1], ids[2], ids[0]]


def _result(unit: str, outcome: str, reason: str = "") -> dict:
    return {
        "unit_id": unit,
        "outcome": outcome,
        "rows": 0,
        "bytes": 0,
        "reason": reason,
        "seconds": 0.1,
        "output": "",
        "attempt": 1,
        "finished_at": dt.datetime(2024, 1, 2, tzinfo=dt.UTC),
        "extra": "",
    }


def test_failure_tracker_reads_each_file_once_and_forgets_units_that_later_succeeded(
    tmp_path: Path, monkeypatch
):
    store = open_store(str(tmp_path / "lake"))
    job = "download-20240101-000000-aaaaaa"
    rec.write_results(store, job, 0, 0, [_result("u1", "failed", "HTTP 500"), _result("u2", "written")])
    rec.write_results(store, job, 1, 0, [_result("u3", "unauthorized", "401 [/x]")])
    tracker = api.FailureTracker(store, job)
    assert {f["unit_id"]: f["reason"] for f in tracker.update()} == {"u1": "HTTP 500", "u3": "401 [/x]"}
    reads = []
    original = rec.read_result_file
    monkeypatch.setattr(rec, "read_result_file", lambda s, p: reads.append(p) or original(s, p))
    rec.write_results(store, job, 0, 1, [_result("u1", "written")])  # the retry succeeded
    assert [f["unit_id"] for f in tracker.update()] == ["u3"]
    assert len(reads) == 1  # only the new file was read


def test_job_log_reads_the_lake_copy_and_checks_the_shard(tmp_path: Path):
    store = open_store(str(tmp_path / "lake"))
    job = "download-20240101-000000-eeeeee"
    rec.save_spec(store, _spec(job))
    store.put_bytes(layout.job_log_path(job, 1), "".join(f"line {i}\n" for i in range(50)).encode())
    assert api.job_log(store, job, 1, tail=3).splitlines() == ["line 47", "line 48", "line 49"]
    assert api.job_log(store, job, 0) == ""
    with pytest.raises(UsageError, match=r"shards 0\.\.1"):
        api.job_log(store, job, 2)


# -- coverage fixes ---------------------------------------------------------------------------------------------


def _cell(day: dt.date, key: str, data_type: str, cls: str, content: str = "") -> dict:
    return {"day": day, "instrument_key": key, "data_type": data_type, "class": cls, "content": content}


def test_coverage_fix_requests_download_exactly_the_gaps():
    d2 = DAY + dt.timedelta(days=1)
    rows = [
        _cell(DAY, KEYS[0], "trades", "missing"),
        _cell(d2, KEYS[0], "trades", "never_attempted"),
        _cell(DAY, KEYS[1], "trades", "present", "error"),  # bad content: fetched again, forced
        _cell(DAY, KEYS[1], "book_snapshot_5", "present", "ok"),
        _cell(DAY, KEYS[2], "trades", "empty"),
        _cell(DAY, KEYS[2], "liquidations", "not_found"),
    ]
    requests = api.coverage_fix_requests(rows)
    plain = [(r.start, r.end, r.symbols, r.data_types, bool(r.options.get("force"))) for r in requests]
    assert sorted(plain) == sorted(
        [(DAY, d2, (KEYS[0],), ("trades",), False), (DAY, DAY, (KEYS[1],), ("trades",), True)]
    )
    assert api.coverage_fix_requests(rows[3:]) == []


def test_coverage_fix_requests_rebuild_a_day_without_master_with_the_selection():
    base = api.launch_request("download", "2024-01-02", "2024-01-05", symbols=KEYS[0], data_types="trades")
    day = dt.date(2024, 1, 5)
    requests = api.coverage_fix_requests([_cell(day, "", "", "no_master")], base)
    assert len(requests) == 1
    r = requests[0]
    assert (r.start, r.end, r.symbols, r.data_types) == (day, day, (KEYS[0],), ("trades",))
    assert dataclasses.replace(r, start=base.start, end=base.end, options={}) == dataclasses.replace(
        base, options={}
    )


def test_recent_jobs_reuses_statuses_it_is_given(tmp_path: Path, monkeypatch):
    store = open_store(str(tmp_path / "lake"))
    old, new = "download-20240101-000000-aaaaaa", "download-20240102-000000-bbbbbb"
    for job_id in (old, new):
        rec.save_spec(store, _spec(job_id))
    held = {j.job_id: j for j in api.recent_jobs(store) if j.job_id == old}
    read = []
    from mdth_engine.jobs import status as status_mod

    original = status_mod.job_status
    monkeypatch.setattr(status_mod, "job_status", lambda s, j: read.append(j) or original(s, j))
    jobs = api.recent_jobs(store, reuse=held)
    assert [j.job_id for j in jobs] == [new, old] and jobs[1] is held[old]
    assert read == [new]
