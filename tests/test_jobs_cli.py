"""`mdth jobs` over a lake written by other processes: watch (NDJSON, Live table in place, plain lines),
list, show, logs, cancel, retry, cleanup, a job whose workers all went silent, and one-line usage errors."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import test_jobs_support as support
from test_jobs_support import fake_request, lake_files, unit_bytes

from mdth_engine.core.settings import load_settings
from mdth_engine.jobs import records as rec
from mdth_engine.jobs.manage import create_job, launch_job
from mdth_engine.jobs.status import job_status
from mdth_engine.jobs.worker import run_shard
from mdth_engine.storage.local import pid_alive
from mdth_engine.storage.store import open_store

fake_stage = support.fake_stage  # the fixture

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def fast_heartbeat(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MDTH_WORKER_HEARTBEAT_S", "0.3")


def mdth(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mdth_engine.cli", *args], capture_output=True, text=True, timeout=timeout
    )


def _launched(lake: Path, days: int = 4, delay: float = 0.1, shards: int = 2):
    store = open_store(str(lake))
    settings = load_settings(lake=str(lake), concurrency=1)
    spec = create_job(
        store, fake_request(days=days, delay=delay), shards=shards, backend="local", settings=settings
    )
    launch_job(store, spec.job_id, settings)
    return store, spec


def test_watch_json_from_another_process_gives_per_shard_progress_and_eta(fake_stage: Path):
    _, spec = _launched(fake_stage)
    out = mdth("jobs", "watch", spec.job_id, "--json", "--lake", str(fake_stage), "--poll", "0.2")
    assert out.returncode == 0, out.stderr
    events = [json.loads(line) for line in out.stdout.splitlines()]
    assert events[0]["kind"] == "started" and events[0]["job"] == spec.job_id
    assert events[-1]["kind"] == "finished" and events[-1]["data"]["state"] == "done"
    shard_events = [e for e in events if e["kind"] == "progress" and "shard" in e.get("data", {})]
    assert {e["data"]["shard"] for e in shard_events} == {0, 1}
    running = [e["data"] for e in shard_events if e["data"]["state"] == "running"]
    assert running, "never saw a shard running"
    for d in running:
        assert {
            "units_done",
            "units_total",
            "rows",
            "bytes",
            "rate_bytes_s",
            "eta_s",
            "heartbeat_age_s",
            "last_error",
        } <= set(d)
    assert any(d["eta_s"] is not None and d["eta_s"] > 0 for d in running)
    done = [e["data"] for e in shard_events if e["data"]["state"] == "done"]
    assert sorted(d["shard"] for d in done) == [0, 1] and all(
        d["units_done"] == d["units_total"] for d in done
    )
    totals = [e for e in events if e["kind"] == "progress" and "shard" not in e.get("data", {})]
    assert totals[-1]["units_done"] == spec.units and totals[-1]["units_total"] == spec.units


def test_watch_on_a_terminal_redraws_in_place(fake_stage: Path):
    from rich.console import Console

    from mdth_engine.cli.jobs import follow_rendered

    store, spec = _launched(fake_stage)
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=180, color_system=None, legacy_windows=False)
    status = follow_rendered(
        store, spec.job_id, json_out=False, tty=True, console=console, supervise=False, poll=0.2
    )
    assert status.state == "done"
    text = buf.getvalue()
    assert "\x1b[2J" not in text and "\x1b[?1049h" not in text  # never clears the screen or switches to it
    assert text.count("\x1b[2K") >= 4 and "\x1b[1A" in text  # each refresh moves up and rewrites its lines
    final = text.rsplit("\x1b[2K", 12)[-12:]
    assert any("done" in part and f"{spec.units}/{spec.units} units" in part for part in final)
    assert "ETA" in text and "heartbeat" in text and "running" in text


def test_watch_plain_lines_list_show_logs(fake_stage: Path):
    _, spec = _launched(fake_stage, days=2, delay=0.02)
    out = mdth("jobs", "watch", spec.job_id, "--lake", str(fake_stage), "--poll", "0.2")
    assert out.returncode == 0, out.stderr
    assert f"[{spec.job_id}] shard 0 done" in out.stdout and f"[{spec.job_id}] shard 1 done" in out.stdout
    assert f"job done: written {spec.units}" in out.stdout

    listed = mdth("--json", "jobs", "list", "--lake", str(fake_stage))
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [r["job_id"] for r in rows] == [spec.job_id] and rows[0]["state"] == "done"

    shown = json.loads(mdth("jobs", "show", spec.job_id, "--json", "--lake", str(fake_stage)).stdout)
    assert shown["spec"]["operation"] == "fake" and len(shown["shard_records"]) == 2
    assert shown["failed_units"] == [] and shown["outcomes"] == {"written": spec.units}
    text = mdth("jobs", "show", spec.job_id, "--lake", str(fake_stage)).stdout
    assert "done" in text and f"{spec.units}/{spec.units} units" in text

    log = mdth("jobs", "logs", spec.job_id, "--shard", "1", "--lake", str(fake_stage))
    assert log.returncode == 0 and "[fake] finished" in log.stdout


def test_cancel_from_the_cli_and_usage_errors(fake_stage: Path):
    _, spec = _launched(fake_stage, days=20, delay=0.1)
    out = mdth("jobs", "cancel", spec.job_id, "--lake", str(fake_stage))
    assert out.returncode == 0 and "cancel requested" in out.stdout
    watch = mdth("jobs", "watch", spec.job_id, "--json", "--lake", str(fake_stage))
    assert watch.returncode == 1
    assert json.loads(watch.stdout.splitlines()[-1])["data"]["state"] == "cancelled"

    missing = mdth("jobs", "show", "fake-20200101-000000-000000", "--lake", str(fake_stage))
    assert missing.returncode == 2 and missing.stderr.strip().count("\n") == 0 and "no job" in missing.stderr
    bad = mdth("jobs", "logs", spec.job_id, "--shard", "7", "--lake", str(fake_stage))
    assert bad.returncode == 2 and "shards 0..1" in bad.stderr
    worker = mdth("worker", "--job", "nope", "--shard", "0", "--lake", str(fake_stage))
    assert worker.returncode == 2 and "no job nope" in worker.stderr


def _silent_job(lake: Path, silent_s: float = 3600.0):
    """A 2-shard job: shard 0 ran to its end here; shard 1's worker died mid-run an hour ago (SIGKILLed, so no
    final record) and nobody supervises the job: its last heartbeat is written with the clock set back."""
    store = open_store(str(lake))
    settings = load_settings(lake=str(lake), concurrency=1)
    spec = create_job(store, fake_request(days=2), shards=2, backend="local", settings=settings)
    assert run_shard(store, spec.job_id, 0, settings).state == rec.DONE
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    record = rec.ShardRecord(
        spec.job_id,
        1,
        state=rec.RUNNING,
        attempt=1,
        units_total=4,
        units_done=1,
        host=socket.gethostname(),
        pid=dead.pid,
        backend="local",
        started_at=time.time() - silent_s - 60,
    )
    with pytest.MonkeyPatch.context() as clock:
        clock.setattr(rec, "time", types.SimpleNamespace(time=lambda: time.time() - silent_s))
        rec.write_shard(store, record)
    return store, spec


def test_a_job_nobody_reports_on_is_stale_and_watch_ends_with_a_hint(fake_stage: Path):
    store, spec = _silent_job(fake_stage)
    job, lake = spec.job_id, str(fake_stage)
    assert job_status(store, job).state == "stale"

    listed = [json.loads(line) for line in mdth("--json", "jobs", "list", "--lake", lake).stdout.splitlines()]
    assert [(r["job_id"], r["state"]) for r in listed] == [(job, "stale")]
    shown = mdth("jobs", "show", job, "--lake", lake)
    assert shown.returncode == 0 and shown.stdout.splitlines()[1].startswith("stale: ")
    assert f"mdth jobs retry {job}" in shown.stdout

    started = time.monotonic()
    watch = mdth("jobs", "watch", job, "--lake", lake, "--poll", "0.2", timeout=30)
    assert watch.returncode == 1 and time.monotonic() - started < 20
    assert watch.stderr.strip().splitlines() == [
        f"mdth: error: {job}: shards stopped reporting: mdth jobs retry {job}"
    ]
    watch_json = mdth("jobs", "watch", job, "--json", "--lake", lake, "--poll", "0.2", timeout=30)
    assert watch_json.returncode == 1 and "shards stopped reporting" in watch_json.stderr
    events = [json.loads(line) for line in watch_json.stdout.splitlines()]  # stdout stays NDJSON
    assert events[0]["kind"] == "started"
    assert [e["data"]["shard"] for e in events if e["data"].get("stale")] == [1]

    # a heartbeat that moves again makes it a running job: watch would wait for it
    record = rec.read_shard(store, job, 1)
    rec.write_shard(store, record)
    assert job_status(store, job).state == "running"


def test_retry_from_the_cli_relaunches_what_did_not_finish(fake_stage: Path):
    store, spec = _silent_job(fake_stage)
    job, lake = spec.job_id, str(fake_stage)

    bad = mdth("jobs", "retry", job, "--shard", "5", "--lake", lake)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        f"mdth: error: job {job} has shards 0..1, not 5"
    ]
    assert rec.read_shard(store, job, 1).attempt == 1  # nothing was launched

    out = mdth("jobs", "retry", job, "--lake", lake)
    assert out.returncode == 0, out.stderr
    assert f"{job}: relaunched shard(s) 1" in out.stderr  # shard 0 finished cleanly: not run again
    assert f"[{job}] shard 1 done" in out.stdout
    status = job_status(store, job)
    assert status.state == "done" and status.shards[1].attempt == 2 and status.shards[0].attempt == 1
    assert lake_files(fake_stage) == {
        u.output: unit_bytes(u.unit_id, u.params["size"]) for u, _ in rec.read_plan(store, job)
    }

    again = mdth("jobs", "retry", job, "--lake", lake)
    assert again.returncode == 0 and f"{job}: relaunched shard(s) none (nothing to retry)" in again.stderr
    assert job_status(store, job).shards[1].attempt == 2


def test_cleanup_from_the_cli_stops_workers_marks_shards_dead_and_purges(fake_stage: Path):
    store, spec = _launched(fake_stage, days=40, delay=0.2)
    job, lake = spec.job_id, str(fake_stage)
    deadline = time.monotonic() + 30
    while not all(r.state == rec.RUNNING and r.pid for r in rec.read_shards(store, spec)):
        assert time.monotonic() < deadline, "the workers never started"
        time.sleep(0.1)
    pids = [r.pid for r in rec.read_shards(store, spec)]

    out = mdth("jobs", "cleanup", job, "--lake", lake)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"{job}: stopped 2 (shard 0 process, shard 1 process), marked dead: 0, 1"
    assert not [p for p in pids if pid_alive(p)]
    assert [r.state for r in rec.read_shards(store, spec)] == [rec.DEAD, rec.DEAD]
    assert job_status(store, job).state == "failed"

    purged = mdth("jobs", "cleanup", job, "--purge", "--json", "--lake", lake)
    assert purged.returncode == 0, purged.stderr
    result = json.loads(purged.stdout)
    assert result["stopped"] == [] and result["marked_dead"] == [] and result["deleted"] >= 4
    assert not list(store.list("_jobs/"))
    assert mdth("jobs", "list", "--lake", lake).stdout.strip() == f"no jobs in {store.url}"
    gone = mdth("jobs", "cleanup", job, "--lake", lake)
    assert gone.returncode == 2 and gone.stderr.strip().count("\n") == 0 and "no job" in gone.stderr
