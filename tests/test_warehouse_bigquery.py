"""The upload stage into BigQuery, with the real google-cloud-bigquery client pointed at a loopback stand-in
of the BigQuery REST API (tests/bigquery_standin.py). No BigQuery emulator installable here works
(reference/GCP_TESTING.md), so these tests assert what the client sends (load job configuration, partition
decorator, write disposition, clustering, schema, uploads, polling) and how retries behave, against a
stand-in that enforces the BigQuery rules mdth relies on (partition decorators, schema additions only).
"""

from __future__ import annotations

import datetime as dt
import json

import pyarrow as pa
import pytest
from bigquery_standin import BigQueryStandin
from test_warehouse_support import (
    KEYS,
    assert_same_rows,
    candle_schema,
    candle_table,
    context,
    fill_lake,
    write_candles,
)
from typer.testing import CliRunner

from mdth_engine.jobs.runner import run_units
from mdth_engine.stages.base import Outcome, Request
from mdth_engine.stages.warehouse import WarehouseStage, make_stage
from mdth_engine.warehouse import bigquery as bqmod
from mdth_engine.warehouse.bigquery import BigQueryWarehouse

PROJECT, DATASET = "mdth-test", "candles"
D1, D2 = dt.date(2024, 1, 1), dt.date(2024, 1, 2)
FAST = {"retry_initial": 0.01, "retry_maximum": 0.05, "poll_initial": 0.01, "poll_maximum": 0.02}


@pytest.fixture
def bq():
    with BigQueryStandin() as standin:
        yield standin


def warehouse(bq: BigQueryStandin, **kw) -> BigQueryWarehouse:
    return BigQueryWarehouse(PROJECT, DATASET, "EU", endpoint=bq.endpoint, **{**FAST, **kw})


async def upload(ctx, wh, start, end, timeframes=("1m",), force=False):
    stage = WarehouseStage(ctx, wh)
    req = Request("upload", start, end, timeframes=tuple(timeframes), options={"force": force})
    return await run_units(stage, stage.plan(req), concurrency=4)


def rows(bq: BigQueryStandin, table: str, day: dt.date, key: str) -> pa.Table:
    t = bq.rows(DATASET, table, order_by="instrument_key, timestamp")
    mask = [
        d == day and k == key
        for d, k in zip(t.column("day").to_pylist(), t.column("instrument_key").to_pylist(), strict=True)
    ]
    return t.filter(pa.array(mask))


async def test_load_job_configuration_as_sent_by_the_client(bq, local_store, tmp_path):
    written = fill_lake(local_store, [D1], ["1m"], keys=KEYS[:2])
    wh = warehouse(bq)
    summary = await upload(context(local_store, tmp_path), wh, D1, D1)
    assert summary.outcomes == {"written": 1}, summary.failures

    # Dataset created in the URL's location; table DAY-partitioned on timestamp, clustered by instrument_key.
    (create_ds,) = bq.requests_matching("POST", r"/datasets$")
    assert create_ds.body["location"] == "EU"
    create_table = next(
        r
        for r in bq.requests_matching("POST", r"/tables$")
        if r.body["tableReference"]["tableId"] == "candles_1m"
    )
    assert create_table.body["timePartitioning"] == {"type": "DAY", "field": "timestamp"}
    assert create_table.body["clustering"] == {"fields": ["instrument_key"]}
    fields = create_table.body["schema"]["fields"]
    spec = candle_schema()
    assert [f["name"] for f in fields] == ["day", "instrument_key", *spec.names]
    assert fields[:3] == [
        {"name": "day", "type": "DATE", "mode": "REQUIRED"},
        {"name": "instrument_key", "type": "STRING", "mode": "REQUIRED"},
        {"name": "timestamp", "type": "TIMESTAMP", "mode": "REQUIRED"},
    ]
    expected_types = {
        f.name: "INTEGER" if pa.types.is_integer(f.type) else "FLOAT"
        for f in spec
        if f.name not in ("timestamp", "timestamp_out")
    }
    assert {f["name"]: f["type"] for f in fields[4:]} == expected_types
    assert all(f["mode"] == "NULLABLE" for f in fields[3:])

    # One load job, uploaded as multipart (small file): the day's partition replaced from a Parquet file.
    (upload_req,) = bq.requests_matching("POST", r"^/upload/bigquery/v2/projects/mdth-test/jobs$")
    assert upload_req.query["uploadType"] == "multipart" and upload_req.data_bytes > 0
    job = upload_req.body
    assert job["jobReference"]["location"] == "EU" and job["jobReference"]["jobId"].startswith(
        "mdth_candles_1m_20240101_"
    )
    load = job["configuration"]["load"]
    assert load["sourceFormat"] == "PARQUET"
    assert load["destinationTable"] == {
        "projectId": PROJECT,
        "datasetId": DATASET,
        "tableId": "candles_1m$20240101",
    }
    assert load["writeDisposition"] == "WRITE_TRUNCATE"
    assert load["schemaUpdateOptions"] == ["ALLOW_FIELD_ADDITION"]
    assert load["timePartitioning"] == {"type": "DAY", "field": "timestamp"}
    assert load["clustering"] == {"fields": ["instrument_key"]}
    assert load["schema"]["fields"] == fields

    for key in KEYS[:2]:
        assert_same_rows(rows(bq, "candles_1m", D1, key), written[(D1, "1m", key)])
    (record,) = bq.rows(DATASET, "_loads").to_pylist()
    assert record["job_id"] == job["jobReference"]["jobId"] and record["rows"] == 2 * 1440
    assert [s["instrument_key"] for s in json.loads(record["sources"])] == sorted(KEYS[:2])


async def test_rerun_skips_and_a_changed_day_replaces_its_partition(bq, local_store, tmp_path):
    written = fill_lake(local_store, [D1, D2], ["1h"])
    ctx = context(local_store, tmp_path)
    first = await upload(ctx, warehouse(bq), D1, D2, ("1h",))
    assert first.outcomes == {"written": 2}
    jobs = len(bq.load_jobs())
    # A new process (fresh warehouse object): the load records are read back from _loads with one query.
    again = await upload(ctx, warehouse(bq), D1, D2, ("1h",))
    assert again.outcomes == {"skipped": 2} and len(bq.load_jobs()) == jobs

    new = candle_table(D1, "1h", seed=4242)
    write_candles(local_store, D1, "1h", KEYS[0], new)
    third = await upload(ctx, warehouse(bq), D1, D2, ("1h",))
    assert {r.unit_id: r.outcome for r in third.results} == {
        "2024-01-01/1h": Outcome.WRITTEN,
        "2024-01-02/1h": Outcome.SKIPPED,
    }
    table = bq.rows(DATASET, "candles_1h")
    assert table.num_rows == 2 * 3 * 24  # replaced, not appended
    assert_same_rows(rows(bq, "candles_1h", D1, KEYS[0]), new)
    for key in KEYS:
        assert_same_rows(rows(bq, "candles_1h", D2, key), written[(D2, "1h", key)])
    forced = await upload(ctx, warehouse(bq), D1, D1, ("1h",), force=True)
    assert forced.outcomes == {"written": 1} and bq.rows(DATASET, "candles_1h").num_rows == 2 * 3 * 24


async def test_jobs_are_polled_until_done(bq, local_store, tmp_path):
    fill_lake(local_store, [D1], ["4h"], keys=KEYS[:1])
    bq.polls_before_done = 4
    summary = await upload(context(local_store, tmp_path), warehouse(bq), D1, D1, ("4h",))
    assert summary.outcomes == {"written": 1}, summary.failures
    (job,) = bq.load_jobs()
    polls = bq.requests_matching("GET", rf"/jobs/{job['jobReference']['jobId']}$")
    assert len(polls) == 4 and all(p.query["location"] == "EU" for p in polls)
    assert job["status"] == {"state": "DONE"}


async def test_transient_api_errors_are_retried(bq, local_store, tmp_path):
    fill_lake(local_store, [D1], ["4h"], keys=KEYS[:1])
    bq.polls_before_done = 1
    bq.fail("GET", r"/datasets/candles$", status=503, reason="backendError", times=2)
    bq.fail("GET", r"/jobs/", status=500, reason="internalError", times=2)
    bq.fail("POST", r"/queries$", status=429, reason="rateLimitExceeded", times=1)
    summary = await upload(context(local_store, tmp_path), warehouse(bq), D1, D1, ("4h",))
    assert summary.outcomes == {"written": 1}, summary.failures
    dataset_gets = [r.status for r in bq.requests_matching("GET", r"/datasets/candles$")]
    assert dataset_gets[:3] == [503, 503, 404]
    (job,) = bq.load_jobs()
    assert [r.status for r in bq.requests_matching("GET", rf"/jobs/{job['jobReference']['jobId']}$")] == [
        500,
        500,
        200,
    ]
    assert [r.status for r in bq.requests_matching("POST", r"/queries$")] == [429, 200]
    assert len(bq.rows(DATASET, "_loads")) == 1


async def test_a_transient_job_failure_is_resubmitted_as_a_new_job(bq, local_store, tmp_path):
    fill_lake(local_store, [D1], ["4h"], keys=KEYS[:2])
    bq.fail_next_job("backendError", "Backend error. Please try again.")
    summary = await upload(context(local_store, tmp_path), warehouse(bq), D1, D1, ("4h",))
    assert summary.outcomes == {"written": 1}, summary.failures
    first, second = bq.load_jobs()
    assert first["status"]["errorResult"]["reason"] == "backendError" and second["status"] == {
        "state": "DONE"
    }
    assert first["jobReference"]["jobId"] != second["jobReference"]["jobId"]
    (record,) = bq.rows(DATASET, "_loads").to_pylist()
    assert record["job_id"] == second["jobReference"]["jobId"]
    assert summary.results[0].extra["job_id"] == second["jobReference"]["jobId"]


async def test_an_invalid_job_fails_the_unit_once_and_keeps_the_partition(bq, local_store, tmp_path):
    written = fill_lake(local_store, [D1], ["4h"], keys=KEYS[:2])
    ctx = context(local_store, tmp_path)
    await upload(ctx, warehouse(bq), D1, D1, ("4h",))
    write_candles(local_store, D1, "4h", KEYS[0], candle_table(D1, "4h", seed=77))
    bq.fail_next_job("invalid", "Error while reading data, error message: boom")
    summary = await upload(ctx, warehouse(bq), D1, D1, ("4h",))
    assert summary.exit_code == 1
    reason = summary.failures[0].reason
    assert "failed: invalid: Error while reading data, error message: boom" in reason and "\n" not in reason
    assert len(bq.load_jobs()) == 2  # not retried: the error is not transient
    for key in KEYS[:2]:
        assert_same_rows(rows(bq, "candles_4h", D1, key), written[(D1, "4h", key)])
    assert len(bq.rows(DATASET, "_loads")) == 1


async def test_an_empty_file_adds_no_rows(bq, local_store, tmp_path):
    written = fill_lake(local_store, [D1], ["4h"], keys=KEYS[:1])
    write_candles(local_store, D1, "4h", KEYS[1], candle_table(D1, "4h", 0, rows=0))
    summary = await upload(context(local_store, tmp_path), warehouse(bq), D1, D1, ("4h",))
    assert summary.outcomes == {"written": 1} and summary.rows == 6, summary.failures
    assert_same_rows(bq.rows(DATASET, "candles_4h"), written[(D1, "4h", KEYS[0])])


async def test_rows_outside_the_partition_are_refused_before_any_job(bq, local_store, tmp_path):
    write_candles(local_store, D1, "4h", KEYS[0], candle_table(D1, "4h", 1, shift_us=4 * 3_600_000_000))
    summary = await upload(context(local_store, tmp_path), warehouse(bq), D1, D1, ("4h",))
    assert summary.exit_code == 1 and "outside 2024-01-01" in summary.failures[0].reason
    assert bq.load_jobs() == []


async def test_schema_evolution_adds_nullable_fields(bq, local_store, tmp_path):
    fill_lake(local_store, [D1], ["24h"])
    ctx = context(local_store, tmp_path)
    await upload(ctx, warehouse(bq), D1, D1, ("24h",))
    newer = {}
    for i, key in enumerate(KEYS):
        newer[key] = candle_table(D2, "24h", seed=i, extra={"new_feature": pa.float64()})
        write_candles(local_store, D2, "24h", key, newer[key])
    summary = await upload(ctx, warehouse(bq), D1, D2, ("24h",))
    assert {r.unit_id: r.outcome for r in summary.results} == {
        "2024-01-01/24h": Outcome.SKIPPED,
        "2024-01-02/24h": Outcome.WRITTEN,
    }
    (patch,) = bq.requests_matching("PATCH", r"/tables/candles_24h$")
    assert patch.body["schema"]["fields"][-1] == {"name": "new_feature", "type": "FLOAT", "mode": "NULLABLE"}
    load = bq.load_jobs()[-1]["configuration"]["load"]
    assert load["schema"]["fields"][-1]["name"] == "new_feature"
    table = bq.rows(DATASET, "candles_24h", order_by="day, instrument_key")
    assert table.num_rows == 6
    assert table.column("new_feature").to_pylist()[:3] == [None, None, None]  # old rows kept, NULL
    for key in KEYS:
        assert_same_rows(rows(bq, "candles_24h", D2, key), newer[key])
    # A changed type is refused before any job, with both types named; so are files of a day that disagree.
    d3 = dt.date(2024, 1, 3)
    write_candles(
        local_store, d3, "24h", KEYS[0], candle_table(d3, "24h", 9, retype={"trade_count": pa.float64()})
    )
    bad = await upload(ctx, warehouse(bq), d3, d3, ("24h",))
    assert bad.exit_code == 1 and "INTEGER in BigQuery but FLOAT" in bad.failures[0].reason
    write_candles(local_store, d3, "24h", KEYS[1], candle_table(d3, "24h", 9))
    bad = await upload(ctx, warehouse(bq), d3, d3, ("24h",))
    assert bad.exit_code == 1 and "'trade_count' is int64 in" in bad.failures[0].reason
    assert len(bq.load_jobs()) == 2


async def test_a_large_day_goes_up_as_a_resumable_upload(bq, local_store, tmp_path, monkeypatch):
    written = fill_lake(local_store, [D1], ["5m"], keys=KEYS[:1])
    monkeypatch.setattr(bqmod, "MULTIPART_MAX", 0)  # as if the day's file were over 5 MiB
    summary = await upload(context(local_store, tmp_path), warehouse(bq), D1, D1, ("5m",))
    assert summary.outcomes == {"written": 1}, summary.failures
    (start,) = bq.requests_matching("POST", r"^/upload/")
    assert start.query["uploadType"] == "resumable"
    assert start.body["configuration"]["load"]["destinationTable"]["tableId"] == "candles_5m$20240101"
    puts = bq.requests_matching("PUT", r"^/upload/")
    assert puts and puts[-1].headers["content-range"].startswith("bytes ")
    assert_same_rows(rows(bq, "candles_5m", D1, KEYS[0]), written[(D1, "5m", KEYS[0])])


async def test_a_gcs_lake_is_loaded_straight_from_gs_uris(gcs_emulator, gcs_store, tmp_path):
    with BigQueryStandin(gcs_endpoint=gcs_emulator.url) as bq:
        written = fill_lake(gcs_store, [D1], ["1h"], keys=KEYS[:2])
        # The first jobs.insert does its work but its response is lost: the client retries, gets 409, and the
        # warehouse follows the job that exists instead of loading twice.
        bq.fail("POST", r"/projects/mdth-test/jobs$", status=503, reason="backendError", after=True)
        summary = await upload(context(gcs_store, tmp_path), warehouse(bq), D1, D1, ("1h",))
        assert summary.outcomes == {"written": 1}, summary.failures
        (job,) = bq.load_jobs()
        (uri,) = job["configuration"]["load"]["sourceUris"]
        assert uri.startswith(
            f"gs://{gcs_store.bucket_name}/lake/_warehouse/staging/candles_1h/day-2024-01-01-"
        )
        assert [r.status for r in bq.requests_matching("POST", r"/projects/mdth-test/jobs$")] == [503, 409]
        assert not bq.requests_matching("POST", r"^/upload/")  # nothing uploaded through BigQuery
        assert list(gcs_store.list("_warehouse/")) == []  # the staging object is gone
        for key in KEYS[:2]:
            assert_same_rows(rows(bq, "candles_1h", D1, key), written[(D1, "1h", key)])


async def test_make_stage_reads_the_url_and_the_endpoint_setting(bq, local_store, tmp_path, monkeypatch):
    fill_lake(local_store, [D1], ["24h"], keys=KEYS[:1])
    monkeypatch.setenv("MDTH_BIGQUERY_API_ENDPOINT", bq.endpoint)
    ctx = context(local_store, tmp_path, warehouse=f"bigquery://{PROJECT}/{DATASET}?location=EU")
    stage = make_stage(ctx)
    summary = await run_units(stage, stage.plan(Request("upload", D1, D1, timeframes=("24h",))))
    assert summary.outcomes == {"written": 1}, summary.failures
    assert bq.rows(DATASET, "candles_24h").num_rows == 1


def test_mdth_sql_against_bigquery(bq, local_store, tmp_path):
    import asyncio

    from mdth_engine.cli import app

    fill_lake(local_store, [D1], ["1h"], keys=KEYS[:2])
    asyncio.run(upload(context(local_store, tmp_path), warehouse(bq), D1, D1, ("1h",)))
    url = f"bigquery://{PROJECT}/{DATASET}?location=EU&endpoint={bq.endpoint}"
    runner = CliRunner()
    # an integer SUM is INT64 in BigQuery (the stand-in's DuckDB makes it HUGEINT and answers INTEGER too)
    sql = (
        f"SELECT instrument_key, count(*) AS n, SUM(1) AS ones FROM `{PROJECT}.{DATASET}.candles_1h` "
        "GROUP BY 1 ORDER BY 1"
    )
    result = runner.invoke(app, ["sql", sql, "--warehouse", url, "--json"])
    assert result.exit_code == 0, result.output
    assert [json.loads(line) for line in result.stdout.splitlines()] == [
        {"instrument_key": k, "n": 24, "ones": 24} for k in sorted(KEYS[:2])
    ]
    bad = runner.invoke(app, ["sql", "SELEC nonsense", "--warehouse", url])
    assert bad.exit_code == 2 and "SQL error" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
