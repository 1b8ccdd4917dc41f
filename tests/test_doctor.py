"""`mdth doctor` against the simulator (all good) and against a closed port and an unwritable lake (fails, says why)."""

import json
import os
import socket
import subprocess
import sys


def doctor(env, *args):
    return subprocess.run(
        [sys.executable, "-m", "mdth_engine.cli", "--json", "doctor", "--timeout", "2", *args],
        capture_output=True,
        text=True,
        env=env,
    )


def checks(proc):
    return {c["name"]: c for c in map(json.loads, proc.stdout.splitlines())}


def test_all_good_against_the_simulator(sim_server, tmp_path):
    env = {
        **os.environ,
        **sim_server.env(),
        "MDTH_LAKE": str(tmp_path / "lake"),
        "MDTH_TARDIS_API_KEY": "sk-doctor-secret",
    }
    proc = doctor(env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = checks(proc)
    assert {c["status"] for c in got.values()} == {"ok"}
    assert "sk-doctor-secret" not in proc.stdout + proc.stderr  # the key is never shown
    assert not list((tmp_path / "lake").rglob("probe-*"))  # the lake probe cleans up after itself


def test_failures_say_what_to_fix(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("x")
    env = {
        **{k: v for k, v in os.environ.items() if "TARDIS_API_KEY" not in k},
        "MDTH_TARDIS_API_URL": f"http://127.0.0.1:{port}/v1",
        "MDTH_TARDIS_DATASETS_URL": f"http://127.0.0.1:{port}/datasets/v1",
        "MDTH_LAKE": str(blocked / "lake"),
    }
    proc = doctor(env)
    assert proc.returncode == 1
    got = checks(proc)
    assert got["tardis api"]["status"] == "fail" and "MDTH_TARDIS_API_URL" in got["tardis api"]["fix"]
    assert got["tardis datasets"]["status"] == "fail"
    assert got["tardis api key"]["status"] == "warn" and "MDTH_TARDIS_API_KEY" in got["tardis api key"]["fix"]
    assert got["lake"]["status"] == "fail" and "--lake" in got["lake"]["fix"]
