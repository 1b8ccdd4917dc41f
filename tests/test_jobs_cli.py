"""`mdth jobs` over a lake written by other processes: watch (NDJSON, Live table in place, plain lines),
list, show, logs, cancel, and one-line usage errors."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import test_jobs_support as support
from test_jobs_support import fake_request

from mdth_engine.core.settings import load_settings
from mdth_engine.jobs.manage import create_job, launch_job
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
