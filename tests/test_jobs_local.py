"""Local backend with real worker processes: kills and stalls are detected and healed, crashes are bounded,
cancel and retry work from the records. The stage is the small real "fake" stage (test_jobs_support)."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
import test_jobs_support as support
from test_jobs_support import fake_request, lake_files, unit_bytes

from mdth_engine.core.events import Event, Kind
from mdth_engine.core.settings import load_settings
from mdth_engine.jobs import records as rec
from mdth_engine.jobs.backends.local import find_workers
from mdth_engine.jobs.follow import follow_job
from mdth_engine.jobs.manage import cancel_job, create_job, launch_job, retry_job, run_job
from mdth_engine.jobs.status import job_status
from mdth_engine.storage.store import open_store

fake_stage = support.fake_stage  # the fixture

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def fast_heartbeat(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MDTH_WORKER_HEARTBEAT_S", "0.4")


def expected_lake(store, job_id: str) -> dict[str, bytes]:
    return {u.output: unit_bytes(u.unit_id, u.params["size"]) for u, _ in rec.read_plan(store, job_id)}


def _settings(lake: Path, **kw):
    return load_settings(lake=str(lake), concurrency=1, **kw)


def test_killed_shard_is_detected_and_healed_and_resumes_from_the_lake(fake_stage: Path):
    store = open_store(str(fake_stage))
    events: list[Event] = []
    killed: dict[str, int] = {}

    def sink(ev: Event) -> None:
        events.append(ev)
        d = ev.data
        # kill shard 1's worker outright once it has written a few units (no chance to record anything)
        if (
            not killed
            and d.get("shard") == 1
            and d.get("state") == "running"
            and ev.units_done >= 2
            and d.get("pid")
        ):
            os.killpg(int(d["pid"]), signal.SIGKILL)
            killed["pid"], killed["done"] = int(d["pid"]), ev.units_done

    request = fake_request(days=6, delay=0.12)
    status = run_job(
        store, request, shards=2, backend="local", settings=_settings(fake_stage), sink=sink, poll=0.2
    )
    assert killed, "the test never saw shard 1 running"
    assert status.state == "done" and status.exit_code == 0
    warnings = [e.message for e in events if e.kind is Kind.WARNING]
    assert any(
        "shard 1: process exited before the shard finished" in w and "relaunching" in w for w in warnings
    )
    shard1 = status.shards[1]
    assert shard1.attempt == 2 and shard1.state == "done" and shard1.pid != killed["pid"]
    assert status.shards[0].attempt == 1
    # the lake is exactly what the plan says, byte for byte
    assert lake_files(fake_stage) == expected_lake(store, status.job_id)
    # the relaunch resumed: units written before the kill were found in the lake and skipped
    second = [r for r in rec.read_results(store, status.job_id, 1) if r["attempt"] == 2]
    assert sum(r["outcome"] == "skipped" for r in second) >= killed["done"]
    assert events[-1].kind is Kind.FINISHED and events[-1].data["state"] == "done"


def test_stalled_heartbeat_is_killed_and_relaunched(fake_stage: Path):
    store = open_store(str(fake_stage))
    stopped: dict[str, int] = {}

    def sink(ev: Event) -> None:
        d = ev.data
        if not stopped and d.get("shard") == 0 and d.get("state") == "running" and d.get("pid"):
            os.kill(int(d["pid"]), signal.SIGSTOP)  # alive but silent, like a hung worker
            stopped["pid"] = int(d["pid"])

    spec = create_job(
        store, fake_request(days=3, delay=0.1), shards=2, backend="local", settings=_settings(fake_stage)
    )
    launch_job(store, spec.job_id, _settings(fake_stage))
    status = follow_job(store, spec.job_id, sink, poll=0.2, stale_after=2.0, settings=_settings(fake_stage))
    assert stopped and status.state == "done"
    assert status.shards[0].attempt == 2 and "heartbeat stopped" in status.shards[0].last_error
    assert stopped["pid"] not in find_workers(spec.job_id)  # the stopped process was killed
    assert lake_files(fake_stage) == expected_lake(store, spec.job_id)


def test_a_shard_that_keeps_crashing_is_given_up_after_bounded_attempts(fake_stage: Path):
    store = open_store(str(fake_stage))
    events: list[Event] = []
    request = fake_request(days=2, crash_unit="2024-01-02/AAA", sizes={"AAA": 5000})
    status = run_job(
        store,
        request,
        shards=2,
        backend="local",
        settings=_settings(fake_stage),
        sink=events.append,
        poll=0.2,
        max_attempts=2,
    )
    plan = dict((u.unit_id, s) for u, s in rec.read_plan(store, status.job_id))
    bad = plan["2024-01-02/AAA"]
    assert status.state == "failed" and status.exit_code == 1
    assert status.shards[bad].state == "dead" and status.shards[bad].attempt == 2
    assert "gave up after 2 attempts" in status.shards[bad].last_error
    assert status.shards[1 - bad].state == "done"
    assert any(e.kind is Kind.ERROR and "gave up" in e.message for e in events)
    assert sum(e.kind is Kind.WARNING and "relaunching" in e.message for e in events) == 1


def test_cancel_from_the_records_then_retry_finishes_the_job(fake_stage: Path):
    store = open_store(str(fake_stage))
    settings = _settings(fake_stage)
    spec = create_job(store, fake_request(days=8, delay=0.1), shards=2, backend="local", settings=settings)
    launch_job(store, spec.job_id, settings)
    deadline = time.monotonic() + 30
    while not all(r.state == "running" and r.units_done for r in rec.read_shards(store, spec)):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    cancelled = cancel_job(store, spec.job_id, settings)
    assert cancelled == [0, 1]
    status = job_status(store, spec.job_id)
    assert status.state == "cancelled" and status.exit_code == 1 and status.cancel_requested
    assert all(r.state == "cancelled" for r in status.shards) and status.units_done < spec.units
    assert not find_workers(spec.job_id)
    partial = lake_files(fake_stage)
    assert 0 < len(partial) < spec.units

    assert retry_job(store, spec.job_id, settings) == [0, 1]
    assert not rec.cancel_requested(store, spec.job_id)
    status = follow_job(store, spec.job_id, lambda ev: None, poll=0.2, settings=settings)
    assert status.state == "done" and status.units_done == spec.units
    assert lake_files(fake_stage) == expected_lake(store, spec.job_id)
    assert all(r.attempt == 2 for r in status.shards)


def test_workers_survive_the_launching_process_and_another_follower_sees_them(fake_stage: Path):
    """Workers run in their own sessions; a second follower (no process handles) judges them by the records."""
    store = open_store(str(fake_stage))
    settings = _settings(fake_stage)
    spec = create_job(store, fake_request(days=2, delay=0.05), shards=2, backend="local", settings=settings)
    launch_job(store, spec.job_id, settings)
    from mdth_engine.jobs.backends import local

    local._CHILDREN.clear()  # forget the handles, as a different process would
    try:
        result: dict = {}
        t = threading.Thread(
            target=lambda: result.update(
                s=follow_job(store, spec.job_id, lambda ev: None, poll=0.2, settings=settings)
            )
        )
        t.start()
        t.join(60)
        assert result["s"].state == "done"
        assert all(r.attempt == 1 for r in result["s"].shards)  # nothing was wrongly judged dead
    finally:
        for pid in find_workers(spec.job_id):
            os.kill(pid, signal.SIGKILL)
