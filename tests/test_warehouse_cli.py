"""`mdth upload` and `mdth sql` end to end on a DuckDB warehouse, and warehouse URL parsing."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from test_warehouse_support import KEYS, fill_lake
from typer.testing import CliRunner

from mdth_engine.cli import app
from mdth_engine.core.errors import UsageError
from mdth_engine.storage import layout
from mdth_engine.storage.store import open_store
from mdth_engine.warehouse import parse_warehouse_url

runner = CliRunner()
D1, D2 = dt.date(2024, 5, 1), dt.date(2024, 5, 2)


def mdth(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mdth_engine.cli", *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=120,
    )


@pytest.fixture
def lake(tmp_path: Path) -> tuple[str, dict]:
    root = tmp_path / "lake"
    written = fill_lake(open_store(str(root)), [D1, D2], ["1h", "24h"])
    return str(root), written


def test_upload_then_rerun_then_sql(lake, monkeypatch):
    monkeypatch.delenv("MDTH_WAREHOUSE", raising=False)
    root, written = lake
    first = runner.invoke(
        app,
        [
            "--json",
            "upload",
            "--start",
            "2024-05-01",
            "--end",
            "2024-05-02",
            "--timeframes",
            "1h,24h",
            "--lake",
            root,
        ],
    )
    assert first.exit_code == 0, first.output
    events = [json.loads(line) for line in first.stdout.splitlines()]
    summary = events[-1]
    assert summary["kind"] == "summary" and summary["outcomes"] == {"written": 4}
    assert summary["rows"] == 2 * 3 * (24 + 1)
    assert Path(root, "warehouse.duckdb").is_file()  # the default: a DuckDB file inside the lake folder

    again = runner.invoke(
        app,
        ["upload", "--start", "2024-05-01", "--end", "2024-05-02", "--timeframes", "1h,24h", "--lake", root],
    )
    assert again.exit_code == 0 and "(4 skipped)" in again.stdout, again.output

    # The daily volume per instrument from the warehouse equals the sum over the lake's files.
    sql = (
        "SELECT instrument_key, day, sum(volume) FILTER (WHERE trade_count > 0) AS volume, count(*) AS n "
        "FROM candles_1h GROUP BY ALL ORDER BY instrument_key, day"
    )
    out = runner.invoke(app, ["sql", sql, "--lake", root, "--csv"])
    assert out.exit_code == 0, out.output
    got = list(csv.DictReader(io.StringIO(out.stdout)))
    assert len(got) == 6
    for row in got:
        table = written[(dt.date.fromisoformat(row["day"]), "1h", row["instrument_key"])]
        volume = sum(v for v in table.column("volume").to_pylist() if not math.isnan(v))
        assert int(row["n"]) == 24
        assert float(row["volume"]) == pytest.approx(volume, rel=1e-12)

    as_json = runner.invoke(
        app, ["--json", "sql", "SELECT count(*) AS n, max(day) AS last FROM candles_24h", "--lake", root]
    )
    assert as_json.exit_code == 0 and json.loads(as_json.stdout) == {"n": 6, "last": "2024-05-02"}

    plain = runner.invoke(
        app,
        [
            "sql",
            "SELECT instrument_key FROM candles_24h ORDER BY 1 LIMIT 5",
            "--lake",
            root,
            "--max-rows",
            "2",
        ],
    )
    assert plain.exit_code == 0
    lines = plain.stdout.strip().splitlines()
    assert lines[0].strip() == "instrument_key" and lines[1:] == sorted(KEYS)[:1] * 2
    assert "first 2 rows shown" in plain.stderr


def test_sql_reads_the_statement_from_stdin_and_nan_is_null_in_json(lake):
    root, _ = lake
    assert mdth("upload", "--start", "2024-05-01", "--timeframes", "24h", "--lake", root).returncode == 0
    proc = mdth("--json", "sql", "-", "--lake", root, stdin="SELECT 'nan'::DOUBLE AS x, 1.5 AS y")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"x": None, "y": 1.5}


USAGE_ERRORS = [
    (["sql", "SELEC 1"], "SQL error: Parser Error"),
    (["sql", "SELECT * FROM candles_nope"], "SQL error: Catalog Error"),
    (["sql", "DELETE FROM candles_24h"], "SQL error"),  # mdth sql is read-only
    (["sql", "SELECT 1", "--warehouse", "duckdb:///missing.duckdb"], "no DuckDB warehouse at"),
    (["sql", "SELECT 1", "--warehouse", "postgres://x/y"], "expected duckdb:///path or bigquery://"),
    (["upload", "--start", "2024-05-01", "--timeframes", "7m"], "unknown timeframe '7m'"),
    (
        ["upload", "--start", "2024-05-01", "--warehouse", "bigquery://only-project"],
        "bigquery://project/dataset",
    ),
    (["upload", "--start", "2024-05-03", "--end", "2024-05-01"], "before start"),
]


def test_usage_errors_are_one_line_exit_2(lake):
    root, _ = lake
    assert mdth("upload", "--start", "2024-05-01", "--timeframes", "24h", "--lake", root).returncode == 0
    for args, needle in USAGE_ERRORS:
        result = runner.invoke(app, [*args, "--lake", root])
        assert result.exit_code == 2, (args, result.output)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and needle in lines[0], (args, result.stderr)
    # The same contract seen from a real process: one line on stderr, no traceback.
    proc = mdth("sql", "SELEC 1", "--lake", root)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_a_gce_upload_refuses_a_duckdb_warehouse_before_any_vm(gcs_bucket, tmp_path, monkeypatch):
    """Each VM would load into a DuckDB file on its own boot disk and delete it with itself (the job would say
    success), so `--backend gce` with a duckdb: warehouse is a usage error. The lake is on the GCS emulator and
    the Compute API is the loopback stand-in (tests/compute_standin.py, not Google), which must see no call."""
    from compute_standin import ComputeStandIn

    lake = f"gs://{gcs_bucket}/lake"
    fill_lake(open_store(lake), [D1], ["1h"])
    monkeypatch.delenv("MDTH_WAREHOUSE", raising=False)  # the default: duckdb:///./mdth-warehouse.duckdb
    monkeypatch.setenv("MDTH_CONFIG", str(tmp_path / "no-mdth.toml"))
    with ComputeStandIn(project="test-project", zone="europe-west1-b") as api:
        api.boot = False
        monkeypatch.setenv("MDTH_GCE_API_ENDPOINT", api.url)
        monkeypatch.setenv("MDTH_GCP_PROJECT", "test-project")
        monkeypatch.setenv("MDTH_GCP_ZONE", "europe-west1-b")
        for extra in ([], ["--warehouse", f"duckdb:///{tmp_path / 'wh.duckdb'}"]):
            proc = mdth(
                "upload",
                "--start",
                "2024-05-01",
                "--timeframes",
                "1h",
                "--backend",
                "gce",
                "--lake",
                lake,
                *extra,
            )
            assert proc.returncode == 2, (extra, proc.stdout, proc.stderr)
            err = [line for line in proc.stderr.splitlines() if line.strip()]
            assert len(err) == 1 and err[0].endswith(
                "--backend gce needs a warehouse the VMs share: "
                "set MDTH_WAREHOUSE=bigquery://project/dataset (or --warehouse)"
            ), proc.stderr
        assert api.requests == []  # no VM was asked for
    assert list(open_store(lake).list(layout.JOBS_ROOT + "/")) == []  # and no job was created


def test_dry_run_lists_units_and_target(lake):
    root, _ = lake
    proc = mdth(
        "upload",
        "--start",
        "2024-05-01",
        "--end",
        "2024-05-02",
        "--timeframes",
        "1m",
        "--dry-run",
        "--lake",
        root,
    )
    assert proc.returncode == 0, proc.stderr
    assert "2024-05-01/1m  ->  candles_1m$20240501" in proc.stdout
    assert f"2 units into duckdb:///{Path(root).resolve()}/warehouse.duckdb" in proc.stdout
    assert not Path(root, "warehouse.duckdb").exists()


def test_a_failed_unit_exits_1_and_keeps_the_rest(lake):
    root, _ = lake
    bad = Path(root) / "processed_candles/by_date/day-2024-05-02/timeframe-24h" / f"{KEYS[0]}.parquet"
    bad.write_bytes(b"garbage")
    proc = mdth(
        "upload", "--start", "2024-05-01", "--end", "2024-05-02", "--timeframes", "24h", "--lake", root
    )
    assert proc.returncode == 1
    assert (
        "failed: 2024-05-02/24h: WarehouseError:" in proc.stderr
        and "not a readable Parquet file" in proc.stderr
    )
    ok = mdth("--json", "sql", "SELECT count(*) AS n FROM candles_24h", "--lake", root)
    assert json.loads(ok.stdout) == {"n": 3}  # the good day is loaded


def test_warehouse_urls():
    rel = parse_warehouse_url("duckdb:///wh/x.duckdb")
    assert rel.kind == "duckdb" and rel.path == Path("wh/x.duckdb")
    absolute = parse_warehouse_url("duckdb:////data/x.duckdb")
    assert absolute.path == Path("/data/x.duckdb")
    bq = parse_warehouse_url("bigquery://my-proj/market_data?location=EU")
    assert (bq.kind, bq.project, bq.dataset, bq.location, bq.endpoint) == (
        "bigquery",
        "my-proj",
        "market_data",
        "EU",
        None,
    )
    assert bq.display == "bigquery://my-proj/market_data?location=EU"
    local = parse_warehouse_url("bigquery://p1/d1?endpoint=http://127.0.0.1:9050/")
    assert local.endpoint == "http://127.0.0.1:9050" and "endpoint" not in local.display
    assert parse_warehouse_url("bigquery:///d2", default_project="fallback").project == "fallback"
    for bad in (
        "duckdb://x.duckdb",
        "duckdb:///",
        "bigquery://p",
        "bigquery://p/d/e",
        "bigquery://p/bad-name",
        "bigquery://p/d?region=EU",
        "sqlite:///x",
        "",
    ):
        with pytest.raises(UsageError):
            parse_warehouse_url(bad)


def test_the_endpoint_can_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("MDTH_BIGQUERY_API_ENDPOINT", "http://127.0.0.1:1234")
    assert parse_warehouse_url("bigquery://p/d").endpoint == "http://127.0.0.1:1234"


def test_a_remote_upload_job_needs_a_shared_warehouse_whoever_creates_it():
    """The check lives in create_job, so the console and the API are refused like the CLI, before any plan."""
    import datetime as dt

    import pytest

    from mdth_engine.core.errors import UsageError
    from mdth_engine.core.settings import load_settings
    from mdth_engine.jobs.manage import create_job
    from mdth_engine.stages.base import Request
    from mdth_engine.storage.store import open_store

    settings = load_settings(lake="gs://no-such-bucket/lake", gcp_project="p", warehouse=None)
    day = dt.date(2024, 3, 1)
    with pytest.raises(UsageError, match="needs a warehouse the VMs share"):
        create_job(
            open_store(settings.lake), Request("upload", day, day), shards=2, backend="gce", settings=settings
        )
