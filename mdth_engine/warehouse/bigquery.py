"""BigQuery warehouse: a load job per (table, day) into ``table$YYYYMMDD`` with WRITE_TRUNCATE.

The day is restaged into one Parquet file (candle files lack ``instrument_key``; see staging.py), then loaded
from ``gs://`` when the lake is on GCS (staged next to the lake, deleted after) or uploaded from the local
spool otherwise. Tables are DAY-partitioned on ``timestamp`` (the bucket start; ``timestamp_out`` of a day's
last bucket is the next midnight and would land in the next partition) and clustered by ``instrument_key``;
one job per (table, day), never row-chunked jobs (per-table job quotas). New columns are added as NULLABLE
(tables.patch first, ALLOW_FIELD_ADDITION on the job), never dropped or retyped; the schema is explicit.
Retries: API calls retry on transient errors (the client's predicate, our backoff); a load job that ends with a
transient error (backendError, internalError, rateLimitExceeded) is resubmitted as a new job, since replacing a
partition is idempotent. Load records go to ``_loads`` by a DML INSERT after the job is DONE, so a crash
between the two only causes one extra (identical) reload on the next run.
The client is built lazily; google.cloud is imported only here, inside functions.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa

from mdth_engine import __version__
from mdth_engine.core.errors import UsageError
from mdth_engine.storage import layout
from mdth_engine.warehouse.base import DayBatch, LoadRecord, LoadResult, WarehouseError
from mdth_engine.warehouse.schema import (
    KEY,
    LOADS_TABLE,
    REQUIRED,
    TS,
    bigquery_type,
    bigquery_type_name,
    loads_schema,
    table_schema,
)
from mdth_engine.warehouse.staging import write_staging_file

STAGING_ROOT = layout.WAREHOUSE_STAGING_ROOT
MULTIPART_MAX = 5 * 1024 * 1024  # below this a file goes up in one multipart request, else resumable
TRANSIENT_JOB_REASONS = frozenset(
    {"backendError", "internalError", "rateLimitExceeded", "jobBackendError", "jobInternalError"}
)
CLUSTERING = [KEY]


def api_error_line(exc: BaseException) -> str:
    message = getattr(exc, "message", None) or str(exc)
    lines = [line for line in str(message).strip().splitlines() if line.strip()]
    return lines[0][:300] if lines else type(exc).__name__


class BigQueryWarehouse:
    """Candle tables in one BigQuery dataset."""

    kind = "bigquery"

    def __init__(
        self,
        project: str,
        dataset: str,
        location: str | None = None,
        *,
        endpoint: str | None = None,
        credentials: Any = None,
        retry_initial: float = 1.0,
        retry_maximum: float = 32.0,
        retry_deadline: float = 600.0,
        poll_initial: float = 0.5,
        poll_maximum: float = 10.0,
        job_timeout: float = 6 * 3600.0,
        job_attempts: int = 3,
    ) -> None:
        self.project, self.dataset, self.location = project, dataset, location
        self.endpoint = endpoint
        self.display = f"bigquery://{project}/{dataset}" + (f"?location={location}" if location else "")
        self._credentials = credentials
        self._retry_args = (retry_initial, retry_maximum, retry_deadline)
        self.poll_initial, self.poll_maximum = poll_initial, poll_maximum
        self.job_timeout, self.job_attempts = job_timeout, max(1, job_attempts)
        self._client: Any = None
        self._lock = threading.RLock()  # guards the client, dataset check and lock table
        self._table_locks: dict[str, threading.Lock] = {}
        self._dataset_ready = False
        self._schemas: dict[str, list[Any]] = {}  # table -> its SchemaFields as last seen
        self._loads: dict[str, dict[dt.date, LoadRecord]] = {}  # table -> day -> latest record

    # -- client --------------------------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._make_client()
        return self._client

    def _make_client(self) -> Any:
        from google.auth.exceptions import DefaultCredentialsError
        from google.cloud import bigquery

        kwargs: dict[str, Any] = {"project": self.project, "location": self.location}
        if self.endpoint:
            kwargs["client_options"] = {"api_endpoint": self.endpoint}
        credentials = self._credentials
        if credentials is None and self.endpoint and self.endpoint.startswith("http://"):
            from google.auth.credentials import AnonymousCredentials

            credentials = AnonymousCredentials()  # a plain-http endpoint is a loopback stand-in, never Google
        if credentials is not None:
            kwargs["credentials"] = credentials
        try:
            return bigquery.Client(**kwargs)
        except DefaultCredentialsError:
            raise WarehouseError(
                "no Google credentials for BigQuery: run `gcloud auth application-default login` "
                "or set GOOGLE_APPLICATION_CREDENTIALS"
            ) from None

    @property
    def retry(self) -> Any:
        from google.cloud.bigquery.retry import DEFAULT_RETRY

        initial, maximum, deadline = self._retry_args
        return DEFAULT_RETRY.with_delay(initial=initial, maximum=maximum).with_deadline(deadline)

    def _ref(self, table: str) -> str:
        return f"{self.project}.{self.dataset}.{table}"

    def _sql_ref(self, table: str) -> str:
        return f"`{self.project}.{self.dataset}.{table}`"

    # -- dataset and tables --------------------------------------------------------------------------------

    def _ensure_dataset(self) -> None:
        if self._dataset_ready:
            return
        from google.api_core.exceptions import NotFound
        from google.cloud import bigquery

        with self._lock:
            if self._dataset_ready:
                return
            ref = f"{self.project}.{self.dataset}"
            try:
                existing = self.client.get_dataset(ref, retry=self.retry)
                if self.location and existing.location and existing.location.upper() != self.location.upper():
                    raise WarehouseError(
                        f"dataset {ref} is in {existing.location}, not {self.location} as the warehouse URL says"
                    )
            except NotFound:
                dataset = bigquery.Dataset(ref)
                if self.location:
                    dataset.location = self.location
                dataset.description = "mdth candles (one table per timeframe) and their load records (_loads)"
                self.client.create_dataset(dataset, exists_ok=True, retry=self.retry)
            self._dataset_ready = True

    def _table_lock(self, table: str) -> threading.Lock:
        with self._lock:
            return self._table_locks.setdefault(table, threading.Lock())

    def _ensure_table(self, table: str, schema: pa.Schema) -> tuple[list[Any], list[str]]:
        """The table's full schema after creating it or adding the columns it lacks; and the names added."""
        from google.api_core.exceptions import NotFound
        from google.cloud import bigquery

        self._ensure_dataset()
        wanted = [_field(f) for f in schema]
        with self._table_lock(table):
            try:
                existing = self.client.get_table(self._ref(table), retry=self.retry)
            except NotFound:
                new = bigquery.Table(self._ref(table), schema=wanted)
                new.time_partitioning = bigquery.TimePartitioning(
                    type_=bigquery.TimePartitioningType.DAY, field=TS
                )
                new.clustering_fields = CLUSTERING
                new.description = (
                    f"mdth candles; one row per (instrument_key, timestamp); day = UTC day of {TS}"
                )
                created = self.client.create_table(new, exists_ok=True, retry=self.retry)
                self._schemas[table] = list(created.schema) or wanted
                return self._schemas[table], []
            _check_layout(table, existing)
            have = {f.name: f for f in existing.schema}
            added = []
            for field in wanted:
                old = have.get(field.name)
                if old is None:
                    added.append(field)
                elif bigquery_type_name(old.field_type) != bigquery_type_name(field.field_type):
                    raise WarehouseError(
                        f"column {field.name!r} of {table} is {old.field_type} in BigQuery "
                        f"but {field.field_type} in the lake files"
                    )
            if added:
                existing.schema = [*existing.schema, *(_nullable(f) for f in added)]
                existing = self.client.update_table(existing, ["schema"], retry=self.retry)
            self._schemas[table] = list(existing.schema)
            return self._schemas[table], [f.name for f in added]

    def _ensure_loads_table(self) -> None:
        if LOADS_TABLE in self._schemas:
            return
        from google.api_core.exceptions import NotFound
        from google.cloud import bigquery

        self._ensure_dataset()
        with self._table_lock(LOADS_TABLE):
            try:
                table = self.client.get_table(self._ref(LOADS_TABLE), retry=self.retry)
            except NotFound:
                new = bigquery.Table(self._ref(LOADS_TABLE), schema=[_field(f) for f in loads_schema()])
                new.clustering_fields = ["table_name", "day"]
                new.description = (
                    "mdth: one row per warehouse load; the latest per (table_name, day) is current"
                )
                table = self.client.create_table(new, exists_ok=True, retry=self.retry)
            self._schemas[LOADS_TABLE] = list(table.schema)

    # -- load records --------------------------------------------------------------------------------------

    def last_load(self, table: str, day: dt.date) -> LoadRecord | None:
        """From one query per table and process (latest record per day), kept current by our own loads."""
        with self._table_lock(f"{table}/records"):
            if table not in self._loads:
                self._loads[table] = self._read_records(table)
        return self._loads[table].get(day)

    def _read_records(self, table: str) -> dict[dt.date, LoadRecord]:
        from google.api_core.exceptions import NotFound
        from google.cloud import bigquery

        try:
            self.client.get_table(self._ref(LOADS_TABLE), retry=self.retry)
        except NotFound:
            return {}
        sql = (
            f"SELECT day, fingerprint, `rows`, files, job_id, loaded_at FROM {self._sql_ref(LOADS_TABLE)} "
            "WHERE table_name = @table_name "
            "QUALIFY ROW_NUMBER() OVER (PARTITION BY day ORDER BY loaded_at DESC) = 1"
        )
        config = bigquery.QueryJobConfig(
            query_parameters=[bigquery.ScalarQueryParameter("table_name", "STRING", table)]
        )
        rows = self.client.query_and_wait(sql, job_config=config, location=self.location, retry=self.retry)
        out = {}
        for row in rows:
            out[row["day"]] = LoadRecord(
                table=table,
                day=row["day"],
                fingerprint=row["fingerprint"],
                rows=int(row["rows"] or 0),
                files=int(row["files"] or 0),
                job_id=row["job_id"] or "",
                loaded_at=row["loaded_at"],
            )
        return out

    def _record(self, batch: DayBatch, rows: int, job_id: str) -> LoadRecord:
        from google.cloud import bigquery

        self._ensure_loads_table()
        now = dt.datetime.now(dt.UTC)
        sources = [f.to_record() for f in batch.files]
        names = [f.name for f in loads_schema()]
        values = {
            "table_name": ("STRING", batch.table),
            "day": ("DATE", batch.day),
            "timeframe": ("STRING", batch.timeframe),
            "fingerprint": ("STRING", batch.fingerprint),
            "files": ("INT64", len(batch.files)),
            "rows": ("INT64", rows),
            "job_id": ("STRING", job_id),
            "loaded_at": ("TIMESTAMP", now),
            "sources": ("STRING", json.dumps(sources, separators=(",", ":"))),
            "mdth_version": ("STRING", __version__),
        }
        sql = (
            f"INSERT INTO {self._sql_ref(LOADS_TABLE)} ({', '.join(f'`{n}`' for n in names)}) "
            f"VALUES ({', '.join('@p_' + n for n in names)})"
        )
        params = [bigquery.ScalarQueryParameter("p_" + n, values[n][0], values[n][1]) for n in names]
        self.client.query_and_wait(
            sql,
            job_config=bigquery.QueryJobConfig(query_parameters=params),
            location=self.location,
            retry=self.retry,
        )
        record = LoadRecord(
            batch.table, batch.day, batch.fingerprint, rows, len(batch.files), job_id, now, sources
        )
        with self._table_lock(f"{batch.table}/records"):
            self._loads.setdefault(batch.table, {})[batch.day] = record
        return record

    # -- loading -------------------------------------------------------------------------------------------

    def load_day(self, batch: DayBatch) -> LoadResult:
        """Stage, load (retrying transient job failures with a new job), check the row count, record."""
        from google.api_core.exceptions import GoogleAPICallError

        try:
            fields, added = self._ensure_table(batch.table, table_schema(batch.schema))
            schema = _arrow_schema(fields)
            staged = batch.spool / f"{batch.table}-{batch.day:%Y%m%d}-{uuid.uuid4().hex[:8]}.parquet"
            try:
                rows = write_staging_file(batch, schema, staged)
                job = self._load_with_retries(batch, staged, fields)
            finally:
                staged.unlink(missing_ok=True)
            if job.output_rows is not None and int(job.output_rows) != rows:
                raise WarehouseError(
                    f"BigQuery load job {job.job_id} wrote {job.output_rows} rows, expected {rows}"
                )
            self._record(batch, rows, job.job_id)
        except GoogleAPICallError as exc:
            raise WarehouseError(f"BigQuery: {api_error_line(exc)}") from None
        return LoadResult(rows=rows, job_id=job.job_id, added_columns=added)

    def _job_config(self, batch: DayBatch, fields: list[Any]) -> Any:
        from google.cloud import bigquery

        return bigquery.LoadJobConfig(
            source_format=bigquery.SourceFormat.PARQUET,
            write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
            create_disposition=bigquery.CreateDisposition.CREATE_IF_NEEDED,
            schema=fields,
            time_partitioning=bigquery.TimePartitioning(type_=bigquery.TimePartitioningType.DAY, field=TS),
            clustering_fields=CLUSTERING,
            schema_update_options=[bigquery.SchemaUpdateOption.ALLOW_FIELD_ADDITION],
            labels={"mdth_stage": "upload", "mdth_timeframe": batch.timeframe.lower()},
        )

    def _load_with_retries(self, batch: DayBatch, staged: Path, fields: list[Any]) -> Any:
        remote = None
        store = batch.store
        if store is not None and str(getattr(store, "url", "")).startswith("gs://"):
            remote = (
                f"{STAGING_ROOT}/{batch.table}/day-{batch.day.isoformat()}-{uuid.uuid4().hex[:12]}.parquet"
            )
            store.put_file(remote, staged)
        try:
            last_error = ""
            for attempt in range(1, self.job_attempts + 1):
                job = self._submit(batch, staged, fields, store.join(remote) if remote else None)
                self._wait(job)
                if job.error_result is None:
                    return job
                reason = str(job.error_result.get("reason", ""))
                last_error = f"{reason}: {job.error_result.get('message', '')}".strip(": ")
                if reason not in TRANSIENT_JOB_REASONS or attempt == self.job_attempts:
                    break
                time.sleep(min(self.poll_maximum, self.poll_initial * 2**attempt))
            raise WarehouseError(f"BigQuery load job {job.job_id} failed: {last_error}")
        finally:
            if remote:
                with contextlib.suppress(
                    Exception
                ):  # a stray staging object is harmless; never mask the outcome
                    store.delete(remote)

    def _submit(self, batch: DayBatch, staged: Path, fields: list[Any], uri: str | None) -> Any:
        from google.api_core.exceptions import Conflict

        destination = f"{self._ref(batch.table)}${batch.day:%Y%m%d}"
        config = self._job_config(batch, fields)
        job_id = f"mdth_{batch.table}_{batch.day:%Y%m%d}_{uuid.uuid4().hex}"
        if uri is not None:
            try:
                return self.client.load_table_from_uri(
                    uri,
                    destination,
                    job_id=job_id,
                    job_config=config,
                    location=self.location,
                    retry=self.retry,
                )
            except Conflict:  # our insert went through but its response was lost: the job exists, follow it
                return self.client.get_job(job_id, location=self.location, retry=self.retry)
        size = staged.stat().st_size
        with open(staged, "rb") as f:
            return self.client.load_table_from_file(
                f,
                destination,
                size=size if size < MULTIPART_MAX else None,
                job_id=job_id,
                job_config=config,
                location=self.location,
            )

    def _wait(self, job: Any) -> None:
        """Poll jobs.get with backoff until DONE; a job past ``job_timeout`` is cancelled and reported."""
        deadline = time.monotonic() + self.job_timeout
        delay = self.poll_initial
        while not job.done(retry=self.retry):
            if time.monotonic() >= deadline:
                with contextlib.suppress(Exception):
                    job.cancel(retry=self.retry)
                raise WarehouseError(
                    f"BigQuery job {job.job_id} not done after {self.job_timeout:.0f}s; cancelled"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, self.poll_maximum)

    # -- queries -------------------------------------------------------------------------------------------

    def query(self, sql: str, max_rows: int | None = None) -> tuple[pa.Table, bool]:
        from google.api_core.exceptions import BadRequest, Forbidden, GoogleAPICallError, NotFound

        try:
            rows = self.client.query_and_wait(
                sql,
                location=self.location,
                retry=self.retry,
                max_results=None if max_rows is None else max_rows + 1,
            )
            table = rows.to_arrow(create_bqstorage_client=False)
        except (BadRequest, NotFound, Forbidden) as exc:
            raise UsageError(f"SQL error: {api_error_line(exc)}") from None
        except GoogleAPICallError as exc:
            raise WarehouseError(f"BigQuery: {api_error_line(exc)}") from None
        if max_rows is not None and table.num_rows > max_rows:
            return table.slice(0, max_rows), True
        return table, False

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def _field(field: pa.Field) -> Any:
    from google.cloud import bigquery

    mode = "REQUIRED" if (field.name in REQUIRED or not field.nullable) else "NULLABLE"
    return bigquery.SchemaField(field.name, bigquery_type(field), mode=mode)


def _nullable(field: Any) -> Any:
    from google.cloud import bigquery

    return bigquery.SchemaField(field.name, field.field_type, mode="NULLABLE")


_ARROW = {
    "INTEGER": pa.int64(),
    "FLOAT": pa.float64(),
    "BOOLEAN": pa.bool_(),
    "STRING": pa.string(),
    "DATE": pa.date32(),
    "TIMESTAMP": pa.timestamp("us", tz="UTC"),
    "DATETIME": pa.timestamp("us"),
}


def _arrow_schema(fields: list[Any]) -> pa.Schema:
    """The staged file's schema: the table's columns in the table's order, modes as nullability."""
    out = []
    for f in fields:
        typ = _ARROW.get(bigquery_type_name(f.field_type))
        if typ is None:
            raise WarehouseError(
                f"column {f.name!r} is {f.field_type} in BigQuery, which mdth does not write"
            )
        out.append(pa.field(f.name, typ, nullable=(f.mode or "NULLABLE") != "REQUIRED"))
    return pa.schema(out)


def _check_layout(table: str, existing: Any) -> None:
    """An existing table must be partitioned and clustered as mdth loads it (a partition decorator needs it)."""
    tp = existing.time_partitioning
    if tp is None or (tp.type_ or "DAY") != "DAY" or tp.field != TS:
        got = "none" if tp is None else f"{tp.type_} on {tp.field or '_PARTITIONTIME'}"
        raise WarehouseError(f"table {table} is partitioned {got}; mdth needs DAY partitions on {TS}")
    if list(existing.clustering_fields or []) != CLUSTERING:
        raise WarehouseError(
            f"table {table} is clustered by {existing.clustering_fields or 'nothing'}; mdth needs {CLUSTERING}"
        )
