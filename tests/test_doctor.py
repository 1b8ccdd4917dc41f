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


def offline_env(tmp_path, **extra):
    """No Tardis key, no Google credentials (no GOOGLE_APPLICATION_CREDENTIALS, a HOME without gcloud config)."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    drop = ("TARDIS_API_KEY", "GOOGLE_APPLICATION_CREDENTIALS", "CLOUDSDK_CONFIG", "MDTH_")
    return {
        **{k: v for k, v in os.environ.items() if not any(d in k for d in drop)},
        "HOME": str(home),
        "MDTH_CONFIG": str(tmp_path / "mdth.toml"),
        "MDTH_LAKE": str(tmp_path / "lake"),
        "MDTH_TARDIS_API_URL": "http://127.0.0.1:9/v1",  # the discard port: nothing answers, nothing leaves
        "MDTH_TARDIS_DATASETS_URL": "http://127.0.0.1:9/datasets/v1",
        **extra,
    }


def test_a_bad_setting_is_a_failing_row_naming_it(tmp_path):
    env = offline_env(tmp_path, MDTH_CONCURRENCY="abc", MDTH_GCE_SPOT="maybe")
    proc = doctor(env)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # a failing check, not a usage error
    row = checks(proc)["settings"]
    assert row["status"] == "fail" and row["fix"]
    assert "MDTH_CONCURRENCY='abc': Input should be a valid integer" in row["detail"]
    assert "(env MDTH_CONCURRENCY or mdth.toml key concurrency)" in row["detail"]
    assert "MDTH_GCE_SPOT='maybe'" in row["detail"] and "; " in row["detail"]


def test_a_misspelled_mdth_toml_key_warns_with_the_closest_valid_key(tmp_path):
    (tmp_path / "mdth.toml").write_text('concurency = 4\nlake = "' + str(tmp_path / "lake") + '"\n')
    proc = doctor(offline_env(tmp_path))
    row = checks(proc)["settings"]
    assert row["status"] == "warn"
    assert "'concurency'" in row["detail"] and "did you mean concurrency?" in row["detail"]
    assert "mdth: warning" not in proc.stderr  # shown once, as the row


def test_bigquery_without_credentials_fails_with_the_fix(tmp_path):
    proc = doctor(offline_env(tmp_path, MDTH_WAREHOUSE="bigquery://mdth-test/candles"))
    row = checks(proc)["warehouse"]
    assert proc.returncode == 1
    assert row["status"] == "fail" and "no Google credentials" in row["detail"]
    assert "gcloud auth application-default login" in row["fix"]
    assert "roles/bigquery.dataEditor" in row["fix"] and "roles/bigquery.jobUser" in row["fix"]


def test_bigquery_dataset_found_missing_or_refused(tmp_path):
    """Against the BigQuery stand-in (tests/bigquery_standin.py), reached through MDTH_BIGQUERY_API_ENDPOINT."""
    from bigquery_standin import BigQueryStandin

    with BigQueryStandin(location="EU") as bq:
        env = offline_env(
            tmp_path, MDTH_WAREHOUSE="bigquery://mdth-test/candles", MDTH_BIGQUERY_API_ENDPOINT=bq.endpoint
        )
        missing = checks(doctor(env))["warehouse"]
        assert missing["status"] == "warn" and "does not exist yet" in missing["detail"]
        assert "mdth upload" in missing["fix"]

        from google.auth.credentials import AnonymousCredentials
        from google.cloud import bigquery

        client_options = {"api_endpoint": bq.endpoint}
        bigquery.Client("mdth-test", AnonymousCredentials(), client_options=client_options).create_dataset(
            "mdth-test.candles"
        )
        assert checks(doctor(env))["warehouse"]["status"] == "ok"
        wrong_place = checks(doctor({**env, "MDTH_WAREHOUSE": "bigquery://mdth-test/candles?location=US"}))
        assert (
            wrong_place["warehouse"]["status"] == "fail" and "location=EU" in wrong_place["warehouse"]["fix"]
        )

        bq.fail("GET", r"/datasets/candles$", status=403, reason="accessDenied")
        refused = checks(doctor(env))["warehouse"]
        assert refused["status"] == "fail" and "access refused" in refused["detail"]
        assert "roles/bigquery.dataEditor" in refused["fix"]
        assert len(bq.requests_matching("GET", r"/projects/mdth-test/datasets/candles$")) == 4
