"""Validation against lakes downloaded off the simulator with the real client, as recorded jobs.

A clean lake validates without a warning; damaged files (deleted, truncated, rows swapped, trades
duplicated) are each caught with the right check and class; the simulator's incident day, empty day and
injected faults are classed as what they are; ``--fix`` downloads exactly the broken files.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sim_fixtures import SIM_API_KEY

from mdth_engine.api import ensure_instruments, run_stage
from mdth_engine.core.settings import load_settings
from mdth_engine.core.timeframes import US_PER_DAY, day_start_us
from mdth_engine.jobs.manage import create_job
from mdth_engine.jobs.worker import run_shard
from mdth_engine.stages.base import Request
from mdth_engine.storage import layout
from mdth_engine.storage.store import open_store
from mdth_engine.validation.fix import FixTarget, fix_targets
from mdth_engine.validation.report import read_report, read_summary

DAY = dt.date(2024, 3, 12)
SPOT = "BINANCE:SPOT_PAIR:BTC-USDT"
PERP = "BINANCE-FUTURES:PERPETUAL:BTC-USDT"
DPERP = "DERIBIT:PERPETUAL:BTC-USD"
SYMBOLS = (SPOT, PERP, DPERP)
TYPES = ("trades", "book_snapshot_5", "derivative_ticker", "liquidations")


def sim_settings(sim, lake: Path, key: str | None = SIM_API_KEY):
    return load_settings(
        lake=str(lake), tardis_api_url=sim.api_url, tardis_datasets_url=sim.datasets_url, tardis_api_key=key
    )


def recorded_download(settings, request: Request) -> str:
    """A download run as a one-shard job in this process, so its unit outcomes are recorded in the lake."""
    asyncio.run(ensure_instruments(request, settings))
    store = open_store(settings.lake)
    spec = create_job(store, request, shards=1, backend="local", settings=settings)
    run_shard(store, spec.job_id, 0, settings)
    return spec.job_id


def validate(sim, settings, day=DAY, symbols=SYMBOLS, data_types=TYPES, **options):
    request = Request(
        "validate",
        day,
        day,
        symbols=symbols,
        data_types=data_types,
        options={"binance_rest_url": sim.base_url, **options},
    )
    summary = asyncio.run(run_stage(request, settings, concurrency=2))
    return summary, read_report(open_store(settings.lake), day)


def row(table: pa.Table, key: str, data_type: str, check: str) -> dict:
    found = [
        r
        for r in table.to_pylist()
        if (r["instrument_key"], r["data_type"], r["check"]) == (key, data_type, check)
    ]
    assert len(found) == 1, (key, data_type, check, found)
    return found[0]


def problems(table: pa.Table) -> list[tuple[str, str, str, str]]:
    return sorted(
        (r["instrument_key"], r["data_type"], r["check"], r["status"])
        for r in table.to_pylist()
        if r["status"] in ("warn", "error")
    )


@pytest.fixture(scope="module")
def clean_lake(sim_server, tmp_path_factory):
    """Three days of three instruments (the middle one validated), downloaded as a job; candles for DAY."""
    lake = tmp_path_factory.mktemp("validate-lake")
    settings = sim_settings(sim_server, lake)
    job = recorded_download(
        settings,
        Request(
            "download",
            DAY - dt.timedelta(days=1),
            DAY + dt.timedelta(days=1),
            symbols=SYMBOLS,
            data_types=TYPES,
        ),
    )
    summary = asyncio.run(run_stage(Request("candles", DAY, DAY, symbols=SYMBOLS), settings))
    assert summary.exit_code == 0
    return lake, job


def copy_lake(clean_lake, tmp_path: Path) -> Path:
    target = tmp_path / "lake"
    shutil.copytree(clean_lake[0], target)
    return target


def test_a_clean_lake_has_no_error_and_no_warning(sim_server, clean_lake):
    lake, _ = clean_lake
    settings = sim_settings(sim_server, lake)
    summary, table = validate(sim_server, settings)
    assert summary.exit_code == 0 and summary.outcomes == {"written": 1}
    assert problems(table) == []
    store = open_store(str(lake))
    # 2 data types for the spot pair, 4 for each perpetual: the instrument master's, via the download plan.
    day_summary = read_summary(store, DAY)
    assert day_summary["expected"] == 10 and day_summary["status"] == "ok"
    assert day_summary["classes"]["present"] + day_summary["classes"]["empty"] == 10
    for key in SYMBOLS:
        for data_type in TYPES:
            if (key, data_type) in (
                (SPOT, "derivative_ticker"),
                (SPOT, "liquidations"),
            ):
                continue
            r = row(table, key, data_type, "completeness")
            path = store.local_path(layout.raw_path(DAY, data_type, key))
            assert r["rows"] == pq.read_metadata(path).num_rows
            assert r["bytes"] == path.stat().st_size
    # Candle totals are the ticks': trades stamped in the day, from the day's and the next day's files.
    d0 = day_start_us(DAY)
    stamps = np.concatenate(
        [
            pq.read_table(store.local_path(layout.raw_path(d, "trades", SPOT)))["timestamp"]
            .cast(pa.int64())
            .to_numpy()
            for d in (DAY, DAY + dt.timedelta(days=1))
        ]
    )
    inside = int(((stamps >= d0) & (stamps < d0 + US_PER_DAY)).sum())
    assert row(table, SPOT, "candles", "candle_totals")["detail"].startswith(f"{inside:,} trades")
    assert row(table, SPOT, "candles", "cross_source")["detail"].startswith("1440 minutes equal")
    assert row(table, PERP, "candles", "cross_source")["detail"].startswith("1440 minutes equal")
    assert not [r for r in table.to_pylist() if r["instrument_key"] == DPERP and r["check"] == "cross_source"]


def rewrite(path: Path, table: pa.Table) -> None:
    """Replace a lake file's rows, keeping its footer metadata: damage that did not go through mdth."""
    metadata = {k: v for k, v in pq.read_metadata(path).metadata.items() if k != b"ARROW:schema"}
    assert b"mdth.rows" in metadata
    pq.write_table(table.replace_schema_metadata(metadata), path)


def damage(lake: Path) -> None:
    store = open_store(str(lake))
    spot_trades = store.local_path(layout.raw_path(DAY, "trades", SPOT))
    spot_trades.unlink()  # deleted
    book = store.local_path(layout.raw_path(DAY, "book_snapshot_5", PERP))
    book.write_bytes(book.read_bytes()[: book.stat().st_size // 2])  # truncated
    trades = store.local_path(layout.raw_path(DAY, "trades", PERP))
    table = pq.read_table(trades)
    order = np.arange(table.num_rows)
    order[[10, 200]] = [200, 10]  # two rows swapped
    rewrite(trades, table.take(pa.array(order)))
    deribit = store.local_path(layout.raw_path(DAY, "trades", DPERP))
    table = pq.read_table(deribit)
    resent = np.sort(np.concatenate([np.arange(table.num_rows), [47, 48, 49]]))  # 3 trades sent twice
    rewrite(deribit, table.take(pa.array(resent)))


def test_damaged_files_are_caught_with_the_right_reason(sim_server, clean_lake, tmp_path):
    lake = copy_lake(clean_lake, tmp_path)
    damage(lake)
    settings = sim_settings(sim_server, lake)
    summary, table = validate(sim_server, settings)
    assert summary.exit_code == 1 and summary.outcomes == {"failed": 1}
    assert "error(s)" in summary.failures[0].reason
    job = clean_lake[1]

    deleted = row(table, SPOT, "trades", "completeness")
    assert (deleted["status"], deleted["class"]) == ("error", "missing")
    assert "file is gone" in deleted["detail"] and job in deleted["detail"]

    truncated = row(table, PERP, "book_snapshot_5", "completeness")
    assert (truncated["status"], truncated["class"]) == ("error", "corrupt")
    assert "truncated or corrupt" in truncated["detail"]

    swapped = row(table, PERP, "trades", "local_timestamp")
    assert (
        swapped["status"] == "error" and swapped["issues"] == 2 and "goes back in time" in swapped["detail"]
    )

    duplicated = row(table, DPERP, "trades", "duplicate_ids")
    assert duplicated["status"] == "error" and duplicated["issues"] == 3
    assert "3 rows repeat an earlier trade id" in duplicated["detail"]
    ledger = row(table, DPERP, "trades", "file")
    assert ledger["status"] == "error" and "the file holds" in ledger["detail"]
    assert (
        row(table, DPERP, "trades", "local_timestamp")["status"] == "ok"
    )  # re-sent in place: still in order
    # The candles of the changed files are now stale; everything else is untouched.
    assert row(table, DPERP, "candles", "candles")["status"] == "warn"
    errors = {(r[0], r[1], r[2]) for r in problems(table) if r[3] == "error"}
    assert errors == {
        (SPOT, "trades", "completeness"),
        (PERP, "book_snapshot_5", "completeness"),
        (PERP, "trades", "local_timestamp"),
        (DPERP, "trades", "duplicate_ids"),
        (DPERP, "trades", "file"),
    }
    assert fix_targets(table) == [
        FixTarget(DAY, PERP, "book_snapshot_5", False),  # unreadable: a plain download replaces it
        FixTarget(DAY, PERP, "trades", True),  # readable but wrong: forced
        FixTarget(DAY, SPOT, "trades", False),
        FixTarget(DAY, DPERP, "trades", True),
    ]


def mdth(*args: str, env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mdth_engine.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def cli_env(sim, lake: Path) -> dict[str, str]:
    return {
        **os.environ,
        **sim.env(),
        "MDTH_TARDIS_API_KEY": SIM_API_KEY,
        "MDTH_LAKE": str(lake),
        "MDTH_BINANCE_REST_URL": sim.base_url,
    }


def test_fix_downloads_exactly_what_is_missing_or_broken(make_sim_server, clean_lake, tmp_path):
    sim = make_sim_server()
    lake = copy_lake(clean_lake, tmp_path)
    damage(lake)
    args = ["validate", "--date", str(DAY), "--symbols", ",".join(SYMBOLS), "--data-types", ",".join(TYPES)]
    proc = mdth("--json", *args, "--fix", env=cli_env(sim, lake))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    fetched = sorted(r.path for r in sim.requests if r.path.startswith("/datasets/"))
    assert fetched == sorted(
        [
            "/datasets/v1/binance/trades/2024/03/12/BTCUSDT.csv.gz",
            "/datasets/v1/binance-futures/book_snapshot_5/2024/03/12/BTCUSDT.csv.gz",
            "/datasets/v1/binance-futures/trades/2024/03/12/BTCUSDT.csv.gz",
            "/datasets/v1/deribit/trades/2024/03/12/BTC-PERPETUAL.csv.gz",
        ]
    )
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    fix = next(e for e in events if e.get("kind") == "fix")
    assert len(fix["targets"]) == 4
    final = [e for e in events if e.get("kind") == "summary"][-1]
    assert final["exit_code"] == 0 and final["errors"] == 0
    table = read_report(open_store(str(lake)), DAY)
    assert not [r for r in table.to_pylist() if r["status"] == "error"]
    # The repaired files equal the clean lake's (same source, same rows).
    store, clean = open_store(str(lake)), open_store(str(clean_lake[0]))
    for key, data_type in ((SPOT, "trades"), (DPERP, "trades"), (PERP, "trades"), (PERP, "book_snapshot_5")):
        path = layout.raw_path(DAY, data_type, key)
        assert pq.read_table(store.local_path(path)).equals(pq.read_table(clean.local_path(path)))


def test_validate_cli_exit_codes_and_table(sim_server, clean_lake, tmp_path):
    lake = copy_lake(clean_lake, tmp_path)
    env = cli_env(sim_server, lake)
    base = ["validate", "--date", str(DAY), "--symbols", ",".join(SYMBOLS), "--data-types", ",".join(TYPES)]
    clean = mdth(*base, env=env)
    assert clean.returncode == 0, clean.stderr
    assert "0 errors, 0 warnings: all good" in clean.stdout
    store = open_store(str(lake))
    store.local_path(layout.raw_path(DAY, "trades", SPOT)).unlink()
    broken = mdth(*base, env=env)
    assert broken.returncode == 1
    line = next(ln for ln in broken.stdout.splitlines() if ln.startswith(str(DAY)) and "completeness" in ln)
    assert line.split()[1:6] == [SPOT, "trades", "completeness", "error", "missing"]
    assert f"{DAY}  error" in broken.stdout
    for extra, needle in (
        (["--date", str(DAY), "--checks", "speed"], "unknown check group 'speed'"),
        (["--date", str(DAY), "--data-types", "trade"], "unknown data type 'trade'"),
        (["--start", str(DAY), "--end", "2024-03-01"], "before start"),
    ):
        bad = mdth("validate", *extra, env=env)
        assert bad.returncode == 2, (extra, bad.stderr)
        assert needle in bad.stderr
    unknown = mdth("validate", "--date", str(DAY), "--symbols", "BINANCE:SPOT_PAIR:BTC-USDX", env=env)
    assert unknown.returncode == 2 and "did you mean" in unknown.stderr


def test_gaps_grid_and_json(sim_server, clean_lake, tmp_path):
    lake = copy_lake(clean_lake, tmp_path)
    store = open_store(str(lake))
    store.local_path(layout.raw_path(DAY, "trades", SPOT)).unlink()
    env = cli_env(sim_server, lake)
    start, end = DAY - dt.timedelta(days=1), DAY + dt.timedelta(days=2)  # the last day has no master
    args = [
        "gaps",
        "--start",
        str(start),
        "--end",
        str(end),
        "--symbols",
        ",".join(SYMBOLS),
        "--data-types",
        "trades",
    ]
    proc = mdth(*args, env=env)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    grid = {ln.split()[0]: ln.split()[1:] for ln in lines if ln.split() and ln.split()[0] in SYMBOLS}
    assert grid[SPOT] == ["#M#?", "2/4"]  # 11th, 12th deleted (a job wrote it), 13th, 14th no master
    assert grid[PERP] == ["###?", "3/4"]
    assert lines[1].endswith("1111") and lines[2].endswith("1234")  # day-of-month header
    cells = [json.loads(line) for line in mdth("--json", *args, env=env).stdout.splitlines()]
    spot = {c["day"]: c["class"] for c in cells if c["instrument_key"] == SPOT}
    assert spot == {str(start): "present", str(DAY): "missing", str(DAY + dt.timedelta(days=1)): "present"}
    assert [c["day"] for c in cells if c["class"] == "no_master"] == [str(end)]


# --- what the source says, classed ------------------------------------------------------------------------


def test_incident_day_silence_and_klines_are_explained_by_the_incident_report(sim_server, tmp_path):
    day = dt.date(2023, 3, 24)  # the simulator's Binance spot collector outage 12:00-13:45
    settings = sim_settings(sim_server, tmp_path)
    recorded_download(
        settings,
        Request("download", day, day + dt.timedelta(days=1), symbols=(SPOT,), data_types=("trades",)),
    )
    asyncio.run(run_stage(Request("candles", day, day, symbols=(SPOT,)), settings))
    summary, table = validate(sim_server, settings, day=day, symbols=(SPOT,), data_types=("trades",))
    assert summary.exit_code == 0  # warnings only: nothing to re-download
    silence = row(table, SPOT, "trades", "silence")
    assert silence["status"] == "warn"
    assert (
        6300 <= silence["value"] <= 6300 + 900
    )  # the 1h45m outage, from the last trade before to the first after
    assert "Tardis incident 2023-03-24 12:00-13:45 UTC (resolved)" in silence["detail"]
    klines = row(table, SPOT, "candles", "cross_source")
    assert klines["status"] == "warn" and klines["issues"] > 30
    assert "explained by Tardis incident 2023-03-24 12:00-13:45" in klines["detail"]
    assert {r[2] for r in problems(table)} == {"silence", "cross_source"}


def test_source_outcomes_are_classed(make_sim_server, tmp_path):
    sim = make_sim_server(
        faults="404:p=1:path=/trades/.*ETHUSDT,truncate:p=1:path=/book_snapshot_5/.*ETHUSDT"
    )
    settings = sim_settings(sim, tmp_path)
    eth = "BINANCE:SPOT_PAIR:ETH-USDT"
    bybit = "BYBIT:PERPETUAL:BTC-USDT"
    recorded_download(
        settings, Request("download", DAY, DAY, symbols=(eth,), data_types=("trades", "book_snapshot_5"))
    )
    outage = dt.date(2024, 2, 20)  # the simulator's Bybit whole-day outage: empty files
    recorded_download(settings, Request("download", outage, outage, symbols=(bybit,), data_types=("trades",)))
    keyless = settings.model_copy(update={"tardis_api_key": None})
    recorded_download(
        keyless,
        Request(
            "download",
            outage - dt.timedelta(days=1),
            outage - dt.timedelta(days=1),
            symbols=(bybit,),
            data_types=("trades",),
        ),
    )

    _, table = validate(sim, settings, symbols=(eth,), data_types=("trades", "book_snapshot_5"))
    assert (
        row(table, eth, "trades", "completeness")["class"],
        row(table, eth, "trades", "completeness")["status"],
    ) == ("not_found", "warn")
    failed = row(table, eth, "book_snapshot_5", "completeness")
    assert (failed["class"], failed["status"]) == ("failed", "error") and "truncated gzip" in failed["detail"]

    _, table = validate(sim, settings, day=outage, symbols=(bybit,), data_types=("trades", "book_snapshot_5"))
    empty = row(table, bybit, "trades", "completeness")
    assert (empty["class"], empty["status"], empty["rows"]) == ("empty", "warn", 0)
    assert "Tardis incident 2024-02-20 00:00-2024-02-21 00:00 UTC (wontfix)" in empty["detail"]
    never = row(table, bybit, "book_snapshot_5", "completeness")
    assert (never["class"], never["status"]) == ("never_attempted", "error")

    _, table = validate(
        sim, settings, day=outage - dt.timedelta(days=1), symbols=(bybit,), data_types=("trades",)
    )
    refused = row(table, bybit, "trades", "completeness")
    assert (refused["class"], refused["status"]) == ("unauthorized", "error") and "401" in refused["detail"]

    later = dt.date(2025, 6, 3)  # after the simulator's exportedUntil (2025-06-01)
    asyncio.run(ensure_instruments(Request("download", later, later, symbols=(bybit,)), settings))
    _, table = validate(sim, settings, day=later, symbols=(bybit,), data_types=("trades",))
    waiting = row(table, bybit, "trades", "completeness")
    assert (waiting["class"], waiting["status"]) == ("not_exported", "warn")
    assert "exported until 2025-06-01" in waiting["detail"]


def test_a_narrower_run_keeps_the_other_rows_of_the_days_report(sim_server, clean_lake, tmp_path):
    lake = copy_lake(clean_lake, tmp_path)
    settings = sim_settings(sim_server, lake)
    _, full = validate(sim_server, settings)
    _, narrow = validate(sim_server, settings, symbols=(SPOT,), data_types=("trades",))
    keys = lambda t: {(r["instrument_key"], r["data_type"], r["check"]) for r in t.to_pylist()}  # noqa: E731
    assert keys(narrow) == keys(full)
    newest = max(r["validated_at"] for r in narrow.to_pylist())
    refreshed = {
        (r["instrument_key"], r["data_type"]) for r in narrow.to_pylist() if r["validated_at"] == newest
    }
    assert refreshed == {(SPOT, "trades"), (SPOT, "candles")}


def test_a_narrower_run_is_judged_on_what_it_checked(sim_server, clean_lake, tmp_path):
    """The day's report keeps an earlier run's error elsewhere; the narrower run's exit and counts are its own."""
    lake = copy_lake(clean_lake, tmp_path)
    book = open_store(str(lake)).local_path(layout.raw_path(DAY, "book_snapshot_5", PERP))
    book.write_bytes(book.read_bytes()[: book.stat().st_size // 2])  # truncated
    env = cli_env(sim_server, lake)
    base = ["validate", "--date", str(DAY), "--json"]
    wide = mdth(*base, "--symbols", ",".join(SYMBOLS), "--data-types", ",".join(TYPES), env=env)
    assert wide.returncode == 1, wide.stderr
    narrow = mdth(*base, "--symbols", SPOT, "--data-types", "trades", env=env)
    assert narrow.returncode == 0, narrow.stderr
    events = [json.loads(line) for line in narrow.stdout.splitlines() if line.startswith("{")]
    final = [e for e in events if e.get("kind") == "summary"][-1]
    assert (final["errors"], final["exit_code"]) == (0, 0)
    day = next(e for e in events if e.get("kind") == "day")
    assert day["status"] == "error" and any(
        PERP in line and "book_snapshot_5" in line for line in day["errors"]
    )


def test_many_rows_of_one_kind_print_as_one_line():
    """A venue never downloaded is thousands of alike rows: the table counts them; --all and --json list each."""
    from mdth_engine.cli.validate import GROUP_ABOVE, grouped

    def r(key: str, data_type: str = "trades", cls: str = "never_attempted") -> dict:
        detail = f"no file for {key}"
        return {"day": DAY, "instrument_key": key, "data_type": data_type, "check": "completeness",
                "status": "error", "class": cls, "rows": None, "detail": detail}  # fmt: skip

    many = [r(f"BINANCE:SPOT_PAIR:C{i}-USDT") for i in range(GROUP_ABOVE + 5)]
    few = [r(f"DERIBIT:PERPETUAL:C{i}-USD", "book_snapshot_5") for i in range(GROUP_ABOVE)]
    other = [r(SPOT, cls="missing")]
    out = grouped(many + few + other)
    assert [o["instrument_key"] for o in out] == [
        f"{GROUP_ABOVE + 5} instruments",
        *(f["instrument_key"] for f in few),
        SPOT,
    ]
    assert (
        out[0]["detail"].startswith(f"e.g. {many[0]['instrument_key']}: no file for")
        and "--all" in out[0]["detail"]
    )


def test_validate_runs_as_a_job_over_shards(sim_server, clean_lake, tmp_path):
    """`--shards N` validates as a recorded job over N worker processes: same reports, same exit codes."""
    lake = copy_lake(clean_lake, tmp_path)
    env = {**cli_env(sim_server, lake), "MDTH_WORKER_HEARTBEAT_S": "0.3"}
    base = ["validate", "--start", str(DAY - dt.timedelta(days=1)), "--end", str(DAY)]
    base += ["--symbols", ",".join(SYMBOLS), "--data-types", ",".join(TYPES), "--shards", "2"]
    clean = mdth(*base, env=env)
    assert clean.returncode == 0, clean.stdout[-2000:] + clean.stderr[-2000:]
    assert "0 errors" in clean.stdout and "over 2 shard(s)" in clean.stderr
    store = open_store(str(lake))
    jobs = [p for p in store.list("_jobs/") if p.path.endswith("spec.json")]
    specs = [json.loads(store.get_bytes(p.path)) for p in jobs]
    assert any(s["operation"] == "validate" and s["shards"] == 2 for s in specs)
    store.local_path(layout.raw_path(DAY, "trades", SPOT)).unlink()
    broken = mdth(*base, env=env)
    assert broken.returncode == 1
    assert row(read_report(store, DAY), SPOT, "trades", "completeness")["class"] == "missing"
