"""The GCE backend with the real google-cloud-compute client against a loopback STAND-IN of the Compute REST
API (tests/compute_standin.py; it is not Google). The stand-in "boots" each VM by running the startup script
from the instance's metadata (mdth_engine/jobs/backends/startup.sh) on this machine, with its own metadata server and Secret
Manager, so the script's key handling and self-deletion run for real."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import test_jobs_support as support
from compute_standin import ComputeStandIn
from pydantic import SecretStr
from test_jobs_support import fake_request, lake_files, unit_bytes

import mdth_engine
from mdth_engine.core.errors import UsageError
from mdth_engine.core.events import Event, Kind
from mdth_engine.core.settings import load_settings
from mdth_engine.jobs import records as rec
from mdth_engine.jobs.backends.gce import GceBackend, check_settings
from mdth_engine.jobs.follow import follow_job
from mdth_engine.jobs.manage import cleanup_job, create_job, launch_job
from mdth_engine.storage.store import open_store

fake_stage = support.fake_stage  # the fixture

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[1]
SECRET = "projects/test-project/secrets/tardis-key"
KEY = "TD.standin-secret-4242"
SA = "mdth-worker@test-project.iam.gserviceaccount.com"


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch, fake_stage: Path):
    with ComputeStandIn(project="test-project", zone="europe-west1-b", secrets={SECRET: KEY}) as standin:
        monkeypatch.setenv("MDTH_GCE_API_ENDPOINT", standin.url)
        monkeypatch.setenv("MDTH_GCE_STATUS_TTL", "0")
        monkeypatch.setenv("MDTH_WORKER_HEARTBEAT_S", "0.4")
        yield standin


def _settings(lake: Path):
    return load_settings(
        lake=str(lake),
        gcp_project="test-project",
        gcp_zone="europe-west1-b",
        gce_machine_type="e2-standard-8",
        gce_service_account=SA,
        gce_spot=True,
        tardis_api_key_secret="tardis-key",
        concurrency=1,
        gce_disk_gb=80,
        gce_network="global/networks/mdth-net",
    )


def test_gce_job_launch_preemption_relaunch_and_cleanup(api: ComputeStandIn, fake_stage: Path):
    store = open_store(str(fake_stage))
    settings = _settings(fake_stage)
    spec = create_job(store, fake_request(days=5, delay=0.1), shards=2, backend="gce", settings=settings)
    launch_job(store, spec.job_id, settings)

    # --- what the real client sent ---
    inserts = api.inserts()
    assert [b["name"] for b in inserts] == [f"mdth-{spec.job_id}-s0-a1", f"mdth-{spec.job_id}-s1-a1"]
    startup = (REPO / "mdth_engine" / "jobs" / "backends" / "startup.sh").read_text()
    for shard, body in enumerate(inserts):
        assert body["machineType"] == "zones/europe-west1-b/machineTypes/e2-standard-8"
        assert body["labels"] == {
            "mdth": "worker",
            "mdth-job": spec.job_id,
            "mdth-shard": str(shard),
            "mdth-attempt": "1",
        }
        assert body["scheduling"]["provisioningModel"] == "SPOT"
        assert body["scheduling"]["instanceTerminationAction"] == "DELETE"
        assert body["serviceAccounts"] == [
            {"email": SA, "scopes": ["https://www.googleapis.com/auth/cloud-platform"]}
        ]
        assert (
            body["disks"][0]["boot"]
            and body["disks"][0]["initializeParams"]["sourceImage"] == settings.gce_image
        )
        assert int(body["disks"][0]["initializeParams"]["diskSizeGb"]) == 80
        assert body["networkInterfaces"][0]["network"] == "global/networks/mdth-net"
        items = {i["key"]: i["value"] for i in body["metadata"]["items"]}
        assert items["startup-script"] == startup
        assert items["mdth-pip-spec"] == f"mdth[gcp]=={mdth_engine.__version__}"  # MDTH_GCE_PIP_SPEC unset
        assert items["mdth-job"] == spec.job_id and items["mdth-shard"] == str(shard)
        assert items["mdth-lake"] == store.url and items["mdth-tardis-key-secret"] == "tardis-key"
        assert KEY not in json.dumps(body)  # the key is never in metadata
    # operations were awaited through our own ZoneOperationsClient on the stand-in (the client bug)
    op_polls = [r for r in api.requests if "/operations/operation-" in r["path"]]
    assert len(op_polls) >= 2

    # --- follow; preempt shard 1's VM once it is working ---
    events: list[Event] = []
    preempted: list[str] = []

    def sink(ev: Event) -> None:
        events.append(ev)
        d = ev.data
        if not preempted and d.get("shard") == 1 and d.get("state") == "running" and ev.units_done >= 1:
            preempted.append(d["vm"])
            api.preempt(d["vm"])

    status = follow_job(store, spec.job_id, sink, poll=0.2, settings=settings)
    assert preempted == [f"mdth-{spec.job_id}-s1-a1"]
    assert status.state == "done" and status.exit_code == 0
    assert any(
        e.kind is Kind.WARNING and "preempted" in e.message and "relaunching" in e.message for e in events
    )
    relaunch = api.inserts()[-1]
    assert relaunch["name"] == f"mdth-{spec.job_id}-s1-a2" and relaunch["labels"]["mdth-attempt"] == "2"
    assert status.shards[1].attempt == 2 and status.shards[1].vm == relaunch["name"]
    deletes = [r["path"].rsplit("/", 1)[-1] for r in api.requests if r["method"] == "DELETE"]
    assert f"mdth-{spec.job_id}-s1-a1" in deletes  # the supervisor removed the preempted VM

    # every finished VM deleted itself; the key came from Secret Manager with each VM's own token
    for name in (f"mdth-{spec.job_id}-s0-a1", f"mdth-{spec.job_id}-s1-a2"):
        assert api.wait_vm(name) == 0
    assert sorted(api.self_deletes) == sorted([f"mdth-{spec.job_id}-s0-a1", f"mdth-{spec.job_id}-s1-a2"])
    assert not api.instances
    assert {r["vm"] for r in api.secret_reads} == {b["name"] for b in api.inserts()}
    results = rec.read_results(store, spec.job_id)
    written = [json.loads(r["extra"]) for r in results if r["outcome"] == "written"]
    assert written and all(x["key_sha"] == hashlib.sha256(KEY.encode()).hexdigest()[:12] for x in written)

    # the lake is complete and exact; the key is in no record, log or request the stand-in received
    assert lake_files(fake_stage) == {
        u.output: unit_bytes(u.unit_id, u.params["size"]) for u, _ in rec.read_plan(store, spec.job_id)
    }
    for path in fake_stage.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path
    assert (fake_stage / "_jobs" / spec.job_id / "logs" / "0.log").is_file()
    assert KEY not in json.dumps([{k: r[k] for k in ("path", "query", "body")} for r in api.requests])

    # --- cleanup: a VM left behind (its script hung) is found by label and deleted ---
    api.boot = False
    GceBackend(store, settings).launch(spec, 1, 9)
    assert list(api.instances) == [f"mdth-{spec.job_id}-s1-a9"]
    result = cleanup_job(store, spec.job_id, settings)
    assert result["stopped"] == [f"mdth-{spec.job_id}-s1-a9"] and not api.instances
    lists = [r for r in api.requests if r["method"] == "GET" and r["path"].endswith("/instances")]
    assert lists[-1]["query"]["filter"] == [f'labels.mdth-job = "{spec.job_id}"']


def test_gce_needs_a_project_and_a_reachable_lake(fake_stage: Path, monkeypatch: pytest.MonkeyPatch):
    store = open_store(str(fake_stage))
    with pytest.raises(UsageError, match="MDTH_GCP_PROJECT"):
        create_job(
            store, fake_request(), shards=2, backend="gce", settings=load_settings(lake=str(fake_stage))
        )
    with pytest.raises(UsageError, match="gs://"):
        create_job(
            store,
            fake_request(),
            shards=2,
            backend="gce",
            settings=load_settings(lake=str(fake_stage), gcp_project="p"),
        )
    assert not list(store.list("_jobs/"))


def test_a_rejected_insert_is_a_clear_error(api: ComputeStandIn, fake_stage: Path):
    store = open_store(str(fake_stage))
    settings = _settings(fake_stage).model_copy(update={"gce_machine_type": "NOT_A_TYPE"})
    spec = create_job(store, fake_request(), shards=2, backend="gce", settings=settings)
    with pytest.raises(
        Exception, match=r"no shard of .* could be launched: shard 0: creating VM .*machineType"
    ):
        launch_job(store, spec.job_id, settings)
    assert all(r.state == "dead" for r in rec.read_shards(store, spec))
    assert not api.instances


def test_a_download_without_a_key_secret_stops_before_any_vm(
    api: ComputeStandIn, fake_stage: Path, sim_server: Any
):
    """A key in this shell but no Secret Manager secret named: the VMs would run keyless (unauthorized on every
    day but the 1st of a month), so `mdth download --backend gce` stops with one line, exit 2, no VM, no job."""
    env = {
        **os.environ,
        **sim_server.env(),
        "MDTH_TARDIS_API_KEY": KEY,
        "MDTH_GCP_PROJECT": "test-project",
        "MDTH_GCE_API_ENDPOINT": api.url,
    }
    env.pop("MDTH_TARDIS_API_KEY_SECRET", None)
    args = [
        "download",
        "--start",
        "2024-03-11",
        "--end",
        "2024-03-11",
        "--symbols",
        "BINANCE:SPOT_PAIR:BTC-USDT",
    ]
    out = subprocess.run(
        [sys.executable, "-m", "mdth_engine.cli", *args, "--shards", "2", "--backend", "gce"],
        env={**env, "MDTH_LAKE": str(fake_stage)},
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "MDTH_TARDIS_API_KEY_SECRET" in lines[0] and "Secret Manager" in lines[0]
    assert KEY not in out.stderr + out.stdout
    assert not api.inserts() and not api.instances
    assert not (fake_stage / "_jobs").exists()


def test_which_gce_jobs_need_a_key_secret(fake_stage: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MDTH_GCE_API_ENDPOINT", "http://127.0.0.1:9")  # a local lake passes the lake check
    base = load_settings(lake=str(fake_stage), gcp_project="p")
    with_key = base.model_copy(update={"tardis_api_key": SecretStr(KEY)})
    with pytest.raises(UsageError, match="MDTH_TARDIS_API_KEY_SECRET"):
        check_settings(
            base, "download"
        )  # known to download: keyless VMs are refused even without a local key
    check_settings(base, "candles")  # reads the lake only
    check_settings(with_key)  # watching, cancelling, cleaning up: no key needed, whatever the shell holds
    check_settings(with_key.model_copy(update={"tardis_api_key_secret": "tardis-key"}), "download")
    download = dataclasses.replace(fake_request(), operation="download")
    with pytest.raises(UsageError, match="MDTH_TARDIS_API_KEY_SECRET"):
        create_job(open_store(str(fake_stage)), download, shards=2, backend="gce", settings=with_key)
    assert not (fake_stage / "_jobs").exists()
