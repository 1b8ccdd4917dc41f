"""Job framework in one process: LPT sharding, byte estimates, job records, the worker's idempotent resume."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import itertools
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import test_jobs_support as support
from test_jobs_support import CALLS, FAIL_LIST, fake_request, lake_files, unit_bytes

from mdth_engine.core.errors import UsageError
from mdth_engine.core.settings import load_settings
from mdth_engine.jobs import records as rec
from mdth_engine.jobs.estimate import clear_cache, default_bytes, estimate_bytes
from mdth_engine.jobs.manage import create_job, needs_retry
from mdth_engine.jobs.sharding import assign_shards, lpt_assign, shard_loads, spread
from mdth_engine.jobs.status import JobStatus
from mdth_engine.jobs.worker import arun_shard, run_shard
from mdth_engine.stages.base import WorkUnit
from mdth_engine.storage import layout
from mdth_engine.storage.store import open_store

DAY = dt.date(2024, 3, 10)
fake_stage = support.fake_stage  # the fixture


# --- sharding ----------------------------------------------------------------------------------------------------


def test_lpt_balances_heavy_tails_and_is_order_independent():
    rng = random.Random(7)
    sizes = [(f"u{i:03d}", int(rng.paretovariate(1.2) * 1000)) for i in range(300)]
    shards = 8
    first = lpt_assign(sizes, shards)
    shuffled = sizes[:]
    rng.shuffle(shuffled)
    assert lpt_assign(shuffled, shards) == first  # the same inputs give the same split, whatever the order
    loads = shard_loads(first, dict(sizes), shards)
    total, biggest = sum(loads), max(b for _, b in sizes)
    lower_bound = max(biggest, total / shards)  # no split can beat this
    assert max(loads) <= 4 / 3 * lower_bound + 1  # Graham's bound for LPT
    assert spread(loads) < 1.1 or max(loads) == biggest


def test_lpt_ties_break_by_unit_id_and_zero_estimates_spread():
    assert lpt_assign([("b", 5), ("a", 5), ("c", 5)], 2) == {"a": 0, "b": 1, "c": 0}
    zeros = lpt_assign([(f"z{i}", 0) for i in range(10)], 3)
    counts = [list(zeros.values()).count(s) for s in range(3)]
    assert sorted(counts) == [3, 3, 4]


def test_assign_shards_rejects_duplicate_ids():
    units = [WorkUnit("x", "same", DAY, "a"), WorkUnit("x", "same", DAY, "b")]
    with pytest.raises(ValueError, match="duplicate unit id"):
        assign_shards(units, 2)


# --- estimates ---------------------------------------------------------------------------------------------------


def _master(store, day: dt.date, rows: list[tuple[str, str, str]]) -> None:
    table = pa.table(
        {
            "instrument_key": [r[2] for r in rows],
            "tardis_exchange": [r[0] for r in rows],
            "tardis_symbol": [r[1] for r in rows],
        }
    )
    buf = io.BytesIO()
    pq.write_table(table, buf)
    store.put_bytes(layout.instruments_path(day), buf.getvalue())


def test_estimate_uses_the_same_file_on_an_earlier_day(tmp_path: Path):
    clear_cache()
    store = open_store(str(tmp_path / "lake"))
    btc = "BINANCE:SPOT_PAIR:BTC-USDT"
    earlier = DAY - dt.timedelta(days=2)
    store.put_bytes(layout.raw_path(earlier, "trades", btc), b"x" * 12345)
    store.put_bytes(layout.raw_path(earlier, "trades", "BINANCE:SPOT_PAIR:XRP-USDT"), b"x" * 999)
    _master(
        store, earlier, [("binance", "BTCUSDT", btc), ("binance", "XRPUSDT", "BINANCE:SPOT_PAIR:XRP-USDT")]
    )
    assert estimate_bytes(store, "trades", "SPOT_PAIR", "binance", "BTCUSDT", DAY) == 12345
    assert estimate_bytes(store, "trades", "SPOT_PAIR", "binance", btc, DAY) == 12345  # a key works too
    # a grouped source (options chain) sums every file it produced
    chains = ["DERIBIT:OPTION_CHAIN:BTC-USD", "DERIBIT:OPTION_CHAIN:ETH-USD"]
    for key, size in zip(chains, (3000, 700), strict=True):
        store.put_bytes(layout.raw_path(earlier, "options_chain", key), b"x" * size)
    clear_cache()
    _master(store, earlier, [("deribit", "OPTIONS", chains[0]), ("deribit", "OPTIONS", chains[1])])
    assert estimate_bytes(store, "options_chain", "OPTION_CHAIN", "deribit", "OPTIONS", DAY) == 3700
    # nothing earlier: the default table, larger for majors, and only for days before
    assert estimate_bytes(store, "trades", "SPOT_PAIR", "binance", "SOLUSDT", DAY) == default_bytes(
        "trades", "SPOT_PAIR", "SOLUSDT"
    )
    assert estimate_bytes(store, "trades", "SPOT_PAIR", "binance", "BTCUSDT", earlier) == default_bytes(
        "trades", "SPOT_PAIR", "BTCUSDT"
    )
    # a backfill beyond the 7-day window keeps using the latest earlier day found while planning in day order
    later = DAY + dt.timedelta(days=20)
    assert estimate_bytes(store, "trades", "SPOT_PAIR", "binance", btc, later) == 12345
    clear_cache()
    assert estimate_bytes(store, "trades", "SPOT_PAIR", "binance", btc, later) == default_bytes(
        "trades", "SPOT_PAIR", btc
    )
    assert default_bytes("trades", "PERPETUAL", "BTCUSDT") > default_bytes("trades", "PERPETUAL", "DOGEUSDT")
    assert default_bytes("options_chain", "OPTION_CHAIN") > default_bytes("trades", "PERPETUAL", "BTCUSDT")


# --- records -----------------------------------------------------------------------------------------------------


def test_create_job_writes_spec_and_plan_and_no_secret(fake_stage: Path):
    store = open_store(str(fake_stage))
    settings = load_settings(lake=str(fake_stage), tardis_api_key="TD.very-secret-key", concurrency=3)
    request = fake_request(days=2, sizes={"AAA": 9000, "BBB": 10, "CCC": 3000, "DDD": 2500})
    spec = create_job(store, request, shards=3, backend="local", settings=settings)
    assert spec.job_id.startswith("fake-") and spec.units == 8 and spec.shards == 3
    saved = json.loads(store.get_bytes(layout.job_spec_path(spec.job_id)))
    assert saved["operation"] == "fake" and saved["request"]["symbols"] == ["AAA", "BBB", "CCC", "DDD"]
    assert saved["backend"] == "local" and saved["engine_version"] and "@" in saved["created_by"]
    assert saved["settings"]["concurrency"] == 3 and "tardis_api_key" not in saved["settings"]
    plan = rec.read_plan(store, spec.job_id)
    days, syms = ("2024-01-01", "2024-01-02"), ("AAA", "BBB", "CCC", "DDD")
    assert [u.unit_id for u, _ in plan] == [f"{d}/{s}" for d in days for s in syms]  # plan order kept
    loads = [0, 0, 0]
    for unit, shard in plan:
        loads[shard] += unit.est_bytes
    big = [shard for unit, shard in plan if unit.est_bytes == 9000]
    assert len(set(big)) == 2  # the two largest units never share a shard
    # Optimal here is 11000: a shard holding a 9000 unit plus a 2500/3000 one would exceed it, so the four
    # mid-size units (3000+3000+2500+2500) share the third shard; LPT finds exactly that split.
    assert sorted(loads) == [9010, 9010, 11000]
    for path in fake_stage.rglob("*"):
        if path.is_file():
            assert b"very-secret" not in path.read_bytes(), path
    # the same inputs shard the same way in a second job
    again = create_job(store, request, shards=3, backend="local", settings=settings)
    assert {u.unit_id: s for u, s in rec.read_plan(store, again.job_id)} == {u.unit_id: s for u, s in plan}


def test_bad_requests_fail_before_any_work(fake_stage: Path):
    store = open_store(str(fake_stage))
    settings = load_settings(lake=str(fake_stage))
    with pytest.raises(UsageError, match="shards"):
        create_job(store, fake_request(), shards=0, backend="local", settings=settings)
    with pytest.raises(UsageError, match="unknown backend"):
        create_job(store, fake_request(), shards=2, backend="k8s", settings=settings)
    with pytest.raises(UsageError, match="project"):
        create_job(store, fake_request(), shards=2, backend="gce", settings=settings)
    with pytest.raises(UsageError, match="planned no work"):
        create_job(store, fake_request(symbols=()), shards=2, backend="local", settings=settings)
    with pytest.raises(UsageError, match="no job"):
        rec.load_spec(store, "fake-20240101-000000-abcdef")
    assert not list(store.list("_jobs/"))  # nothing half-written


def test_more_shards_than_units_are_capped(fake_stage: Path):
    store = open_store(str(fake_stage))
    spec = create_job(
        store,
        fake_request(symbols=("AAA", "BBB")),
        shards=20,
        backend="local",
        settings=load_settings(lake=str(fake_stage)),
    )
    assert spec.shards == 2 and spec.shards_requested == 20


def test_a_job_is_stale_once_no_unfinished_shard_reports(fake_stage: Path):
    store = open_store(str(fake_stage))
    spec = create_job(
        store, fake_request(), shards=3, backend="local", settings=load_settings(lake=str(fake_stage))
    )
    now = 1_700_000_000.0

    def shard(i: int, state: str, silent_s: float) -> rec.ShardRecord:
        return rec.ShardRecord(spec.job_id, i, state=state, attempt=1, updated_at=now - silent_s)

    def state(*shards: rec.ShardRecord) -> str:
        return JobStatus(spec, list(shards), at=now).state

    done = shard(0, rec.DONE, 500)
    assert state(done, shard(1, rec.RUNNING, 500), shard(2, rec.RUNNING, 31)) == "stale"
    assert state(done, shard(1, rec.RUNNING, 500), shard(2, rec.RUNNING, 2)) == "running"  # one still reports
    assert state(done, shard(1, rec.INTERRUPTED, 500), shard(2, rec.RUNNING, 40)) == "stale"
    # an interrupted shard is relaunched soon, a launched one may still start: neither has stopped yet
    assert state(done, shard(1, rec.INTERRUPTED, 5), shard(2, rec.RUNNING, 40)) == "running"
    assert state(done, shard(1, rec.RUNNING, 500), shard(2, rec.LAUNCHED, 500)) == "running"
    assert state(done, shard(1, rec.RUNNING, 500), shard(2, rec.LAUNCHED, 901)) == "stale"  # never started
    assert state(shard(0, rec.PENDING, 0), shard(1, rec.PENDING, 0), shard(2, rec.PENDING, 0)) == "pending"
    assert state(done, shard(1, rec.DEAD, 500), shard(2, rec.DONE, 500)) == "failed"
    status = JobStatus(spec, [done, shard(1, rec.RUNNING, 500), shard(2, rec.RUNNING, 31)], at=now)
    assert status.to_dict()["state"] == "stale" and status.exit_code == 1 and not status.finished


# --- the worker --------------------------------------------------------------------------------------------------


def test_worker_runs_its_shard_and_resumes_idempotently(fake_stage: Path):
    store = open_store(str(fake_stage))
    settings = load_settings(lake=str(fake_stage))
    spec = create_job(store, fake_request(days=3), shards=2, backend="local", settings=settings)
    plan = rec.read_plan(store, spec.job_id)
    runs = [run_shard(store, spec.job_id, shard, settings) for shard in range(2)]
    assert [r.state for r in runs] == ["done", "done"]
    files = lake_files(fake_stage)
    assert set(files) == {u.output for u, _ in plan}
    assert all(files[u.output] == unit_bytes(u.unit_id, u.params["size"]) for u, _ in plan)
    assert all(CALLS[u.unit_id] == 1 for u, _ in plan)
    record = rec.read_shard(store, spec.job_id, 0)
    assert record.state == "done" and record.units_done == record.units_total == sum(s == 0 for _, s in plan)
    assert record.outcomes == {"written": record.units_total} and record.eta_s == 0.0 and record.pid

    # a second run finds every unit settled in the results: the stage is not even asked
    CALLS.clear()
    again = run_shard(store, spec.job_id, 0, settings)
    assert again.state == "done" and again.units_prior == again.units_total and CALLS == {}

    # results lost (a crash before the batch was flushed): those units run again, and the stage skips them
    for path in rec.result_files(store, spec.job_id, 1):
        store.delete(path)
    third = run_shard(store, spec.job_id, 1, settings)
    assert third.summary is not None and third.summary.outcomes == {"skipped": third.units_total}
    assert CALLS == {} and lake_files(fake_stage) == files


def test_a_worker_run_removes_what_killed_runs_left(
    fake_stage: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Temp files in the lake and spool folders here carry their writer's pid: those of dead writers go when a
    worker starts; a live writer's stay, and so does what is not ours."""
    from mdth_engine.storage.local import host_tag

    spools = tmp_path / "tmp"
    spools.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spools))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    store = open_store(str(fake_stage))
    settings = load_settings(lake=str(fake_stage))
    spec = create_job(store, fake_request(), shards=1, backend="local", settings=settings)
    folder = fake_stage / "fake" / "day-2023-12-31"
    folder.mkdir(parents=True)
    temps = {
        "dead": folder / f".X.bin.tmp-{host_tag()}-{dead.pid}-{'0' * 12}",
        "live": folder / f".Y.bin.tmp-{host_tag()}-{os.getpid()}-{'1' * 12}",
        "other host": folder / f".Z.bin.tmp-elsewhere-{dead.pid}-{'2' * 12}",
    }
    dirs = {
        "dead": spools / f"mdth-fake-20240101-000000-abcdef-0-p{dead.pid}-a1b2c3d4",
        "live": spools / f"mdth-fake-20240101-000000-abcdef-0-p{os.getpid()}-e5f6g7h8",
        "dead planner": spools / f"mdth-plan-p{dead.pid}-i9j0k1l2",
        "not a spool": spools / "mdth-bench-cache",
    }
    for path in temps.values():
        path.write_bytes(b"half")
    for path in dirs.values():
        (path / "sub").mkdir(parents=True)
    events: list = []
    assert run_shard(store, spec.job_id, 0, settings, events.append).state == "done"
    assert [k for k, p in temps.items() if p.exists()] == ["live", "other host"]
    assert [k for k, p in dirs.items() if p.exists()] == ["live", "not a spool"]
    assert any(e.message == "removed 3 leftovers of killed runs" for e in events)
    assert [p.name for p in spools.glob("mdth-fake-*")] == [dirs["live"].name]  # its own spool is gone too


def test_failed_units_are_recorded_and_retried(fake_stage: Path):
    store = open_store(str(fake_stage))
    settings = load_settings(lake=str(fake_stage))
    spec = create_job(store, fake_request(days=2), shards=1, backend="local", settings=settings)
    store.put_bytes(FAIL_LIST, json.dumps(["2024-01-01/BBB", "2024-01-02/DDD"]).encode())
    run = run_shard(store, spec.job_id, 0, settings)
    assert run.state == "failed" and run.exit_code == 1
    record = rec.read_shard(store, spec.job_id, 0)
    assert record.units_failed == 2 and record.outcomes == {"written": 6, "failed": 2}
    assert "source refused" in record.last_error
    latest = rec.latest_outcomes(rec.read_results(store, spec.job_id))
    assert latest["2024-01-01/BBB"]["reason"] == "RuntimeError: source refused 2024-01-01/BBB"
    assert needs_retry(record)

    store.delete(FAIL_LIST)
    CALLS.clear()
    again = run_shard(store, spec.job_id, 0, settings)
    assert again.state == "done" and sorted(CALLS) == ["2024-01-01/BBB", "2024-01-02/DDD"]
    record = rec.read_shard(store, spec.job_id, 0)
    assert record.outcomes == {"written": 8} and record.units_failed == 0


async def test_heartbeat_shows_live_progress_and_cancel_stops_the_worker(fake_stage: Path):
    store = open_store(str(fake_stage))
    settings = load_settings(lake=str(fake_stage), concurrency=1)
    spec = create_job(
        store,
        fake_request(days=10, symbols=("AAA", "BBB"), delay=0.05),
        shards=1,
        backend="local",
        settings=settings,
    )
    task = asyncio.create_task(arun_shard(store, spec.job_id, 0, settings, heartbeat_s=0.2, flush_s=0.3))
    seen = []
    for _ in itertools.count():
        await asyncio.sleep(0.1)
        record = rec.read_shard(store, spec.job_id, 0)
        if record and record.state == "running":
            seen.append(record)
        if len([r for r in seen if r.units_done > 0]) >= 3:
            break
        assert not task.done()
    live = seen[-1]
    assert live.units_total == 20 and 0 < live.units_done < 20 and live.pid and live.host
    assert live.rate_bytes_s > 0 and live.eta_s is not None and live.eta_s > 0 and live.age() < 2
    assert [r.units_done for r in seen] == sorted(r.units_done for r in seen)

    rec.request_cancel(store, spec.job_id, "test")
    run = await asyncio.wait_for(task, 10)
    assert run.state == "cancelled"
    record = rec.read_shard(store, spec.job_id, 0)
    assert record.state == "cancelled" and record.units_done < 20 and record.finished_at
    done = rec.latest_outcomes(rec.read_results(store, spec.job_id))
    assert set(done) == {
        k for k in done if (fake_stage / f"fake/day-{k.split('/')[0]}/{k.split('/')[1]}.bin").exists()
    }


def test_worker_rejects_a_shard_outside_the_job(fake_stage: Path):
    store = open_store(str(fake_stage))
    settings = load_settings(lake=str(fake_stage))
    spec = create_job(store, fake_request(), shards=2, backend="local", settings=settings)
    with pytest.raises(UsageError, match=r"shards 0\.\.1"):
        run_shard(store, spec.job_id, 2, settings)


def test_job_records_and_worker_on_gcs(fake_stage: Path, gcs_store):
    """The same records through the GCS emulator: spec, plan, heartbeats, result batches, listing."""
    from mdth_engine.jobs.status import job_status, list_jobs

    settings = load_settings(lake=gcs_store.url)
    spec = create_job(gcs_store, fake_request(days=2), shards=2, backend="local", settings=settings)
    assert [j.job_id for j in list_jobs(gcs_store)] == [spec.job_id]
    assert job_status(gcs_store, spec.job_id).state == "pending"
    runs = [run_shard(gcs_store, spec.job_id, shard, settings) for shard in range(2)]
    assert [r.state for r in runs] == ["done", "done"]
    status = job_status(gcs_store, spec.job_id)
    assert status.state == "done" and status.units_done == spec.units == 8 and status.exit_code == 0
    for unit, _ in rec.read_plan(gcs_store, spec.job_id):
        assert gcs_store.get_bytes(unit.output) == unit_bytes(unit.unit_id, unit.params["size"])
    # a second batch never overwrites the first: sequence numbers move on
    first = rec.result_files(gcs_store, spec.job_id, 0)
    rec.write_results(gcs_store, spec.job_id, 0, 0, rec.read_result_file(gcs_store, first[0]))
    assert len(rec.result_files(gcs_store, spec.job_id, 0)) == len(first) + 1
