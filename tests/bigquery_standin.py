"""A loopback stand-in of the BigQuery REST API, for driving the real google-cloud-bigquery client in tests.

No BigQuery emulator installable here works (reference/GCP_TESTING.md), so this serves the endpoints the client
uses for our flows and behaves as BigQuery does where it matters to mdth: datasets, tables (DAY partitioning,
clustering, schema patches that may only add NULLABLE columns), load jobs (multipart and resumable uploads,
``gs://`` sources read from the GCS emulator, ``table$YYYYMMDD`` partition decorators with WRITE_TRUNCATE /
WRITE_APPEND / WRITE_EMPTY, rows outside the decorator's partition rejected, ALLOW_FIELD_ADDITION), job polling
(jobs can report RUNNING for a number of polls), and queries (jobs.query with named parameters, executed by
DuckDB after translating the BigQuery dialect bits we use). It records every request so tests can assert what
the client sent, and injects faults: HTTP errors on matching requests (optionally after doing the work, to
simulate a lost response) and failed jobs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import itertools
import json
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

_CONFIG = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}
_BQ_TYPES = {"INT64": "INTEGER", "FLOAT64": "FLOAT", "BOOL": "BOOLEAN"}
_DUCK = {
    "INTEGER": "BIGINT",
    "FLOAT": "DOUBLE",
    "BOOLEAN": "BOOLEAN",
    "STRING": "VARCHAR",
    "DATE": "DATE",
    "TIMESTAMP": "TIMESTAMPTZ",
    "DATETIME": "TIMESTAMP",
}


def _bq_type(name: str) -> str:
    return _BQ_TYPES.get(name.upper(), name.upper())


def _arrow_to_bq(typ: pa.DataType) -> str:
    if pa.types.is_dictionary(typ):
        typ = typ.value_type
    if pa.types.is_integer(typ):
        return "INTEGER"
    if pa.types.is_decimal(typ):  # DuckDB's SUM over BIGINT is HUGEINT; BigQuery's SUM over INT64 is INT64
        return "INTEGER" if typ.scale == 0 else "NUMERIC"
    if pa.types.is_floating(typ):
        return "FLOAT"
    if pa.types.is_boolean(typ):
        return "BOOLEAN"
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        return "STRING"
    if pa.types.is_date(typ):
        return "DATE"
    if pa.types.is_timestamp(typ):
        return "TIMESTAMP" if typ.tz else "DATETIME"
    raise ValueError(f"unsupported type {typ}")


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message

    def body(self) -> dict[str, Any]:
        status = {
            400: "INVALID_ARGUMENT",
            404: "NOT_FOUND",
            409: "ALREADY_EXISTS",
            412: "FAILED_PRECONDITION",
        }
        return {
            "error": {
                "code": self.code,
                "message": self.message,
                "errors": [{"message": self.message, "domain": "global", "reason": self.reason}],
                "status": status.get(self.code, "UNAVAILABLE" if self.code >= 500 else "UNKNOWN"),
            }
        }


class JobFailed(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


@dataclasses.dataclass
class Recorded:
    """One request as the stand-in received it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any  # parsed JSON (the metadata part for multipart uploads), or None
    data_bytes: int = 0  # upload payload bytes in this request
    status: int = 0


@dataclasses.dataclass
class Fault:
    method: str
    pattern: re.Pattern[str]
    status: int
    reason: str
    times: int
    after: bool  # do the work, then answer with the error (a lost response)


@dataclasses.dataclass
class Table:
    project: str
    dataset: str
    table: str
    fields: list[dict[str, Any]]
    time_partitioning: dict[str, Any] | None = None
    clustering: list[str] | None = None
    created: float = dataclasses.field(default_factory=time.time)
    etag: int = 1

    @property
    def duck(self) -> str:
        return f'"{self.dataset}__{self.table}"'

    def resource(self, rows: int) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": "bigquery#table",
            "id": f"{self.project}:{self.dataset}.{self.table}",
            "etag": str(self.etag),
            "tableReference": {"projectId": self.project, "datasetId": self.dataset, "tableId": self.table},
            "schema": {"fields": self.fields},
            "numRows": str(rows),
            "type": "TABLE",
            "creationTime": str(int(self.created * 1000)),
        }
        if self.time_partitioning:
            out["timePartitioning"] = self.time_partitioning
        if self.clustering:
            out["clustering"] = {"fields": self.clustering}
        return out


class BigQueryStandin:
    """Start with ``start()`` (or as a context manager); point the client at ``endpoint``."""

    def __init__(self, *, gcs_endpoint: str | None = None, location: str = "US") -> None:
        self.gcs_endpoint = gcs_endpoint
        self.default_location = location
        self.requests: list[Recorded] = []
        self.datasets: dict[tuple[str, str], dict[str, Any]] = {}
        self.tables: dict[tuple[str, str, str], Table] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.faults: list[Fault] = []
        self.job_errors: list[dict[str, str]] = []  # errorResults the next load jobs end with
        self.polls_before_done = 0
        self._pending: dict[str, dict[str, Any]] = {}  # job id -> {"polls": n, "data": bytes | None}
        self._uploads: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count(1)
        self._lock = threading.RLock()
        self.db = duckdb.connect(config=_CONFIG)
        self.db.execute("SET TimeZone = 'UTC'")
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> BigQueryStandin:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                standin._handle(self, "GET")

            def do_POST(self) -> None:
                standin._handle(self, "POST")

            def do_PUT(self) -> None:
                standin._handle(self, "PUT")

            def do_PATCH(self) -> None:
                standin._handle(self, "PATCH")

            def do_DELETE(self) -> None:
                standin._handle(self, "DELETE")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self.db.close()
        self.db = None  # type: ignore[assignment]  # no DuckDB object outlives the stand-in

    def __enter__(self) -> BigQueryStandin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # -- test helpers --------------------------------------------------------------------------------------

    def fail(
        self,
        method: str,
        pattern: str,
        *,
        status: int = 503,
        reason: str = "backendError",
        times: int = 1,
        after: bool = False,
    ) -> None:
        """The next ``times`` requests matching (method, path regex) get an HTTP error."""
        with self._lock:
            self.faults.append(Fault(method, re.compile(pattern), status, reason, times, after))

    def fail_next_job(
        self, reason: str = "backendError", message: str = "Backend error, please retry"
    ) -> None:
        with self._lock:
            self.job_errors.append({"reason": reason, "message": message})

    def rows(self, dataset: str, table: str, order_by: str = "") -> pa.Table:
        t = self.tables[(self._project_of(dataset), dataset, table)]
        with self._lock:
            sql = f"SELECT * FROM {t.duck}" + (f" ORDER BY {order_by}" if order_by else "")
            return self.db.sql(sql).to_arrow_table()

    def load_jobs(self) -> list[dict[str, Any]]:
        """Every load job created, in order (their full resources)."""
        return [j for j in self.jobs.values() if "load" in j["configuration"]]

    def requests_matching(self, method: str, pattern: str) -> list[Recorded]:
        rx = re.compile(pattern)
        return [r for r in self.requests if r.method == method and rx.search(r.path)]

    def _project_of(self, dataset: str) -> str:
        return next(p for (p, d) in self.datasets if d == dataset)

    # -- HTTP plumbing -------------------------------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        parts = urllib.parse.urlsplit(h.path)
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(parts.query, keep_blank_values=True).items()}
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in h.headers.items()}
        record = Recorded(method, parts.path, query, headers, None)
        ctype = headers.get("content-type", "")
        if ctype.startswith("application/json") and raw:
            record.body = json.loads(raw)
        with self._lock:
            self.requests.append(record)
            fault = next(
                (
                    f
                    for f in self.faults
                    if f.times > 0 and f.method == method and f.pattern.search(parts.path)
                ),
                None,
            )
            if fault is not None:
                fault.times -= 1
        status, body, extra = 500, None, {}
        try:
            if fault is not None and not fault.after:
                raise ApiError(fault.status, fault.reason, f"injected {fault.reason}")
            status, body, extra = self._route(method, parts.path, query, headers, raw, record)
            if fault is not None:
                raise ApiError(fault.status, fault.reason, f"injected {fault.reason} (after doing the work)")
        except ApiError as exc:
            status, body, extra = exc.code, exc.body(), {}
        except Exception as exc:  # a stand-in bug: make it loud in the test
            status, body, extra = 500, ApiError(500, "internalError", f"stand-in error: {exc!r}").body(), {}
        record.status = status
        payload = b"" if body is None else json.dumps(body).encode()
        h.send_response(status)
        for k, v in extra.items():
            h.send_header(k, v)
        if body is not None:
            h.send_header("Content-Type", "application/json; charset=UTF-8")
        h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        h.wfile.write(payload)

    def _route(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        headers: dict[str, str],
        raw: bytes,
        record: Recorded,
    ) -> tuple[int, Any, dict[str, str]]:
        m = re.fullmatch(r"/upload/bigquery/v2/projects/([^/]+)/jobs", path)
        if m:
            return self._upload(method, m.group(1), query, headers, raw, record)
        m = re.fullmatch(r"/bigquery/v2/projects/([^/]+)(/.*)?", path)
        if not m:
            raise ApiError(404, "notFound", f"no such endpoint {path}")
        project, rest = m.group(1), m.group(2) or ""
        body = record.body
        with self._lock:
            if rest == "/datasets" and method == "POST":
                return 200, self._create_dataset(project, body), {}
            if (m := re.fullmatch(r"/datasets/([^/]+)", rest)) and method == "GET":
                return 200, self._dataset(project, m.group(1)), {}
            if (m := re.fullmatch(r"/datasets/([^/]+)/tables", rest)) and method == "POST":
                return 200, self._create_table(project, m.group(1), body), {}
            if m := re.fullmatch(r"/datasets/([^/]+)/tables/([^/]+)", rest):
                if method == "GET":
                    return 200, self._table_resource(self._table(project, m.group(1), m.group(2))), {}
                if method in ("PATCH", "PUT"):
                    return 200, self._patch_table(project, m.group(1), m.group(2), body), {}
            if rest == "/jobs" and method == "POST":
                return 200, self._insert_job(project, body, None), {}
            if (m := re.fullmatch(r"/jobs/([^/]+)", rest)) and method == "GET":
                return 200, self._get_job(m.group(1), query), {}
            if (m := re.fullmatch(r"/jobs/([^/]+)/cancel", rest)) and method == "POST":
                return (
                    200,
                    {"kind": "bigquery#jobCancelResponse", "job": self._get_job(m.group(1), query)},
                    {},
                )
            if rest == "/queries" and method == "POST":
                return 200, self._query(project, body), {}
        raise ApiError(404, "notFound", f"no such endpoint {method} {path}")

    # -- uploads -------------------------------------------------------------------------------------------

    def _upload(
        self,
        method: str,
        project: str,
        query: dict[str, str],
        headers: dict[str, str],
        raw: bytes,
        record: Recorded,
    ) -> tuple[int, Any, dict[str, str]]:
        kind = query.get("uploadType")
        if kind == "multipart" and method == "POST":
            boundary = re.search(r'boundary="?([^";]+)"?', headers.get("content-type", ""))
            if not boundary:
                raise ApiError(400, "invalid", "multipart upload without a boundary")
            parts = raw.split(b"--" + boundary.group(1).encode())
            bodies = []
            for part in parts[1:]:
                if part.startswith(b"--"):
                    break
                head, _, content = part.partition(b"\r\n\r\n")
                bodies.append((head.decode("latin-1").lower(), content.removesuffix(b"\r\n")))
            if len(bodies) != 2 or "application/json" not in bodies[0][0]:
                raise ApiError(400, "invalid", "multipart upload: expected a JSON part and a data part")
            record.body = json.loads(bodies[0][1])
            record.data_bytes = len(bodies[1][1])
            with self._lock:
                return 200, self._insert_job(project, record.body, bodies[1][1]), {}
        if kind == "resumable" and method == "POST":
            upload_id = f"up{next(self._ids)}"
            with self._lock:
                self._uploads[upload_id] = {"project": project, "job": record.body, "data": bytearray()}
            location = f"{self.endpoint}/upload/bigquery/v2/projects/{project}/jobs?uploadType=resumable&upload_id={upload_id}"
            return 200, None, {"Location": location}
        if kind == "resumable" and method == "PUT":
            upload = self._uploads.get(query.get("upload_id", ""))
            if upload is None:
                raise ApiError(404, "notFound", "no such upload session")
            record.data_bytes = len(raw)
            content_range = headers.get("content-range", "")
            m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)|bytes \*/(\d+)", content_range)
            if not m:
                raise ApiError(400, "invalid", f"bad Content-Range {content_range!r}")
            if m.group(1) is not None:
                start, end = int(m.group(1)), int(m.group(2))
                if start != len(upload["data"]) or end - start + 1 != len(raw):
                    raise ApiError(400, "invalid", f"chunk {content_range} does not continue the upload")
                upload["data"].extend(raw)
                total = m.group(3)
            else:
                total = m.group(4)
            if total == "*" or int(total) != len(upload["data"]):
                return 308, None, {"Range": f"bytes=0-{len(upload['data']) - 1}"}
            with self._lock:
                del self._uploads[query["upload_id"]]
                return 200, self._insert_job(upload["project"], upload["job"], bytes(upload["data"])), {}
        raise ApiError(400, "invalid", f"unsupported upload {method} {kind}")

    # -- datasets and tables -------------------------------------------------------------------------------

    def _create_dataset(self, project: str, body: dict[str, Any]) -> dict[str, Any]:
        ref = body["datasetReference"]
        key = (ref.get("projectId", project), ref["datasetId"])
        if key in self.datasets:
            raise ApiError(409, "duplicate", f"Already Exists: Dataset {key[0]}:{key[1]}")
        self.datasets[key] = {
            "kind": "bigquery#dataset",
            "id": f"{key[0]}:{key[1]}",
            "datasetReference": {"projectId": key[0], "datasetId": key[1]},
            "location": body.get("location") or self.default_location,
            "etag": "1",
        }
        return self.datasets[key]

    def _dataset(self, project: str, dataset: str) -> dict[str, Any]:
        if (project, dataset) not in self.datasets:
            raise ApiError(404, "notFound", f"Not found: Dataset {project}:{dataset}")
        return self.datasets[(project, dataset)]

    def _table(self, project: str, dataset: str, table: str) -> Table:
        self._dataset(project, dataset)
        t = self.tables.get((project, dataset, table))
        if t is None:
            raise ApiError(404, "notFound", f"Not found: Table {project}:{dataset}.{table}")
        return t

    def _table_resource(self, t: Table) -> dict[str, Any]:
        rows = self.db.execute(f"SELECT count(*) FROM {t.duck}").fetchall()[0][0]
        return t.resource(rows)

    def _new_table(
        self,
        project: str,
        dataset: str,
        table: str,
        fields: list[dict[str, Any]],
        partitioning: dict[str, Any] | None,
        clustering: list[str] | None,
    ) -> Table:
        self._dataset(project, dataset)
        if (project, dataset, table) in self.tables:
            raise ApiError(409, "duplicate", f"Already Exists: Table {project}:{dataset}.{table}")
        if not fields:
            raise ApiError(400, "invalid", "a table needs a schema")
        fields = [{**f, "type": _bq_type(f["type"]), "mode": f.get("mode") or "NULLABLE"} for f in fields]
        names = {f["name"] for f in fields}
        if partitioning and partitioning.get("field") and partitioning["field"] not in names:
            raise ApiError(
                400,
                "invalid",
                f"The field specified for time partitioning can only be of type TIMESTAMP, DATE or DATETIME. The type found is: missing ({partitioning['field']})",
            )
        for c in clustering or []:
            if c not in names:
                raise ApiError(
                    400,
                    "invalid",
                    f"The field specified for clustering cannot be found in the schema. Invalid field: {c}.",
                )
        t = Table(project, dataset, table, fields, partitioning, clustering)
        cols = ", ".join(f'"{f["name"]}" {_DUCK[f["type"]]}' for f in fields)
        self.db.execute(f"CREATE TABLE {t.duck} ({cols})")
        self.tables[(project, dataset, table)] = t
        return t

    def _create_table(self, project: str, dataset: str, body: dict[str, Any]) -> dict[str, Any]:
        ref = body["tableReference"]
        t = self._new_table(
            project,
            dataset,
            ref["tableId"],
            body.get("schema", {}).get("fields", []),
            body.get("timePartitioning"),
            (body.get("clustering") or {}).get("fields"),
        )
        return self._table_resource(t)

    def _merge_fields(self, t: Table, fields: list[dict[str, Any]], *, allow_add: bool, what: str) -> None:
        """Apply a new schema: only NULLABLE additions (if allowed); types and modes must not change."""
        have = {f["name"]: f for f in t.fields}
        for f in fields:
            old = have.get(f["name"])
            typ, mode = _bq_type(f["type"]), f.get("mode") or "NULLABLE"
            if old is None:
                continue
            if old["type"] != typ:
                raise ApiError(
                    400, "invalid", f"{what} Field {f['name']} has changed type from {old['type']} to {typ}"
                )
            if old["mode"] != mode:
                raise ApiError(
                    400, "invalid", f"{what} Field {f['name']} has changed mode from {old['mode']} to {mode}"
                )
        new = [f for f in fields if f["name"] not in have]
        if new and not allow_add:
            raise ApiError(400, "invalid", f"{what} Cannot add fields (field: {new[0]['name']})")
        for f in new:
            if (f.get("mode") or "NULLABLE") == "REQUIRED":
                raise ApiError(
                    400,
                    "invalid",
                    f"{what} Cannot add required fields to an existing schema. (field: {f['name']})",
                )
            typ = _bq_type(f["type"])
            self.db.execute(f'ALTER TABLE {t.duck} ADD COLUMN "{f["name"]}" {_DUCK[typ]}')
            t.fields.append({**f, "type": typ, "mode": "NULLABLE"})
        if new:
            t.etag += 1

    def _patch_table(self, project: str, dataset: str, table: str, body: dict[str, Any]) -> dict[str, Any]:
        t = self._table(project, dataset, table)
        if "schema" in body:
            fields = body["schema"]["fields"]
            missing = {f["name"] for f in t.fields} - {f["name"] for f in fields}
            if missing:
                raise ApiError(
                    400,
                    "invalid",
                    f"Provided Schema does not match Table. Field {sorted(missing)[0]} is missing in new schema",
                )
            self._merge_fields(t, fields, allow_add=True, what="Provided Schema does not match Table.")
        return self._table_resource(t)

    # -- jobs ----------------------------------------------------------------------------------------------

    def _insert_job(self, project: str, body: dict[str, Any], data: bytes | None) -> dict[str, Any]:
        ref = dict(body.get("jobReference") or {})
        job_id = ref.get("jobId") or f"standin_{next(self._ids)}"
        if job_id in self.jobs:
            raise ApiError(
                409, "duplicate", f"Already Exists: Job {project}:{ref.get('location', 'US')}.{job_id}"
            )
        ref.update(
            {"projectId": project, "jobId": job_id, "location": ref.get("location") or self.default_location}
        )
        job = {
            "kind": "bigquery#job",
            "id": f"{project}:{ref['location']}.{job_id}",
            "jobReference": ref,
            "configuration": body.get("configuration", {}),
            "status": {"state": "RUNNING"},
            "statistics": {"creationTime": str(int(time.time() * 1000))},
        }
        self.jobs[job_id] = job
        self._pending[job_id] = {"polls": self.polls_before_done, "data": data}
        if self.polls_before_done == 0:
            self._finish(job_id)
        return job

    def _get_job(self, job_id: str, query: dict[str, str]) -> dict[str, Any]:
        job = self.jobs.get(job_id)
        if job is None or (query.get("location") and query["location"] != job["jobReference"]["location"]):
            raise ApiError(404, "notFound", f"Not found: Job {job_id}")
        pending = self._pending.get(job_id)
        if pending is not None:
            if pending["polls"] > 0:
                pending["polls"] -= 1
            if pending["polls"] == 0:
                self._finish(job_id)
        return job

    def _finish(self, job_id: str) -> None:
        """Run the job (atomically, under the lock) and mark it DONE, with an errorResult if it failed."""
        job = self.jobs[job_id]
        pending = self._pending.pop(job_id)
        try:
            if "load" in job["configuration"]:
                if self.job_errors:
                    err = self.job_errors.pop(0)
                    raise JobFailed(err["reason"], err["message"])
                rows = self._run_load(job, pending["data"])
                job["statistics"]["load"] = {"outputRows": str(rows), "inputFiles": "1"}
            else:
                raise JobFailed("invalid", "the stand-in runs only load jobs via jobs.insert")
            job["status"] = {"state": "DONE"}
        except JobFailed as exc:
            error = {"reason": exc.reason, "message": exc.message}
            job["status"] = {"state": "DONE", "errorResult": error, "errors": [error]}
        job["statistics"]["endTime"] = str(int(time.time() * 1000))

    def _fetch_gcs(self, uri: str) -> bytes:
        if not self.gcs_endpoint:
            raise JobFailed("invalid", f"no GCS endpoint configured for {uri}")
        bucket, _, name = uri[len("gs://") :].partition("/")
        url = f"{self.gcs_endpoint}/storage/v1/b/{bucket}/o/{urllib.parse.quote(name, safe='')}?alt=media"
        try:
            with urllib.request.urlopen(url, timeout=30) as resp:
                return resp.read()
        except urllib.error.HTTPError as exc:
            raise JobFailed("notFound", f"Not found: URI {uri}") from exc

    def _run_load(self, job: dict[str, Any], data: bytes | None) -> int:
        cfg = job["configuration"]["load"]
        dest = cfg["destinationTable"]
        table_id, _, decorator = dest["tableId"].partition("$")
        project, dataset = dest.get("projectId"), dest["datasetId"]
        sources = [data] if data is not None else [self._fetch_gcs(u) for u in cfg.get("sourceUris", [])]
        fmt = cfg.get("sourceFormat", "CSV")
        if fmt == "PARQUET":
            tables = [pq.read_table(io.BytesIO(s)) for s in sources]
        elif fmt == "NEWLINE_DELIMITED_JSON":
            tables = [
                pa.Table.from_pylist([json.loads(line) for line in s.splitlines() if line.strip()])
                for s in sources
            ]
        else:
            raise JobFailed("invalid", f"the stand-in does not load {fmt}")
        incoming = pa.concat_tables(tables, promote_options="default") if len(tables) > 1 else tables[0]
        given = (cfg.get("schema") or {}).get("fields")
        fields = given or [
            {"name": f.name, "type": _arrow_to_bq(f.type), "mode": "NULLABLE" if f.nullable else "REQUIRED"}
            for f in incoming.schema
        ]
        fields = [{**f, "type": _bq_type(f["type"]), "mode": f.get("mode") or "NULLABLE"} for f in fields]
        by_name = {f["name"]: f for f in fields}
        for col in incoming.schema:
            f = by_name.get(col.name)
            if f is None:
                raise JobFailed(
                    "invalid", f"Error while reading data, error message: no such field: {col.name}."
                )
            if _arrow_to_bq(col.type) != f["type"]:
                raise JobFailed(
                    "invalid",
                    f"Provided schema is not compatible with the file. Field '{col.name}' is specified as "
                    f"'{f['type']}' but the file has '{_arrow_to_bq(col.type)}'",
                )
            if f["mode"] == "REQUIRED" and incoming.column(col.name).null_count:
                raise JobFailed("invalid", f"Required field {col.name} cannot be null")
        for f in fields:
            if f["mode"] == "REQUIRED" and f["name"] not in incoming.column_names:
                raise JobFailed("invalid", f"Required field {f['name']} is missing from the file")
        key = (project, dataset, table_id)
        t = self.tables.get(key)
        partitioning = cfg.get("timePartitioning")
        clustering = (cfg.get("clustering") or {}).get("fields")
        try:
            if t is None:
                if cfg.get("createDisposition") == "CREATE_NEVER":
                    raise JobFailed("notFound", f"Not found: Table {project}:{dataset}.{table_id}")
                t = self._new_table(project, dataset, table_id, fields, partitioning, clustering)
            else:
                if partitioning and (
                    (partitioning.get("type") or "DAY") != (t.time_partitioning or {}).get("type")
                    or partitioning.get("field") != (t.time_partitioning or {}).get("field")
                ):
                    raise JobFailed(
                        "invalid",
                        f"Incompatible table partitioning specification. Expects partitioning specification "
                        f"{t.time_partitioning} but input partitioning specification is {partitioning}",
                    )
                if clustering is not None and clustering != (t.clustering or []):
                    raise JobFailed(
                        "invalid",
                        f"Incompatible table clustering specification. Expects {t.clustering} but got {clustering}",
                    )
                allow = "ALLOW_FIELD_ADDITION" in (cfg.get("schemaUpdateOptions") or [])
                self._merge_fields(
                    t,
                    fields,
                    allow_add=allow,
                    what=f"Provided Schema does not match Table {project}:{dataset}.{table_id}.",
                )
        except ApiError as exc:
            raise JobFailed(exc.reason, exc.message) from None
        where = ""
        if decorator:
            if not t.time_partitioning or not re.fullmatch(r"\d{8}", decorator):
                raise JobFailed("invalid", f"Invalid partition decorator {decorator} for {table_id}")
            part_day = dt.datetime.strptime(decorator, "%Y%m%d").date()
            column = t.time_partitioning["field"]
            values = incoming.column(column)
            if pa.types.is_timestamp(values.type):
                values = pc.cast(pc.cast(values, pa.timestamp("us", tz="UTC")), pa.date32())
            days = set(values.unique().to_pylist())
            if days - {part_day}:
                raise JobFailed(
                    "invalid",
                    f"Some rows belong to different partitions rather than destination partition {decorator}",
                )
            where = f"WHERE CAST(\"{column}\" AS DATE) = DATE '{part_day.isoformat()}'" if column else ""
        disposition = cfg.get("writeDisposition") or "WRITE_APPEND"
        target_rows = self.db.execute(f"SELECT count(*) FROM {t.duck} {where}").fetchall()[0][0]
        if disposition == "WRITE_EMPTY" and target_rows:
            raise JobFailed("duplicate", f"Already Exists: Table {project}:{dataset}.{dest['tableId']}")
        self.db.execute("BEGIN")
        try:
            if disposition == "WRITE_TRUNCATE":
                self.db.execute(f"DELETE FROM {t.duck} {where}")
            self.db.register("incoming_rows", incoming)
            cols = ", ".join(f'"{c}"' for c in incoming.column_names)
            self.db.execute(f"INSERT INTO {t.duck} ({cols}) SELECT {cols} FROM incoming_rows")
            self.db.unregister("incoming_rows")
            self.db.execute("COMMIT")
        except Exception:
            self.db.execute("ROLLBACK")
            raise
        return incoming.num_rows

    # -- queries -------------------------------------------------------------------------------------------

    def _translate(self, project: str, sql: str) -> str:
        """BigQuery -> DuckDB for what mdth sends: `p.d.t` / d.t names, `col` quoting, @params."""

        def table_ref(m: re.Match[str]) -> str:
            parts = m.group(1).split(".")
            if len(parts) == 3:
                parts = parts[1:]
            if len(parts) == 2:
                return f'"{parts[0]}__{parts[1]}"'
            return f'"{parts[0]}"'

        sql = re.sub(r"`([^`]+)`", table_ref, sql)
        for _, dataset in self.datasets:
            sql = re.sub(rf"(?<![\w\"]){re.escape(project)}\.{dataset}\.(\w+)", rf'"{dataset}__\1"', sql)
            sql = re.sub(rf"(?<![\w\".]){dataset}\.(\w+)", rf'"{dataset}__\1"', sql)
        return re.sub(r"@(\w+)", r"$\1", sql)

    @staticmethod
    def _param_value(param: dict[str, Any]) -> Any:
        typ = _bq_type(param["parameterType"]["type"])
        value = (param.get("parameterValue") or {}).get("value")
        if value is None:
            return None
        if typ == "INTEGER":
            return int(value)
        if typ == "FLOAT":
            return float(value)
        if typ == "BOOLEAN":
            return value.lower() == "true"
        if typ == "DATE":
            return dt.date.fromisoformat(value)
        if typ == "TIMESTAMP":
            text = value.replace(" UTC", "+00:00").replace("Z", "+00:00")
            parsed = dt.datetime.fromisoformat(text)
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
        return value

    def _query(self, project: str, body: dict[str, Any]) -> dict[str, Any]:
        sql = self._translate(project, body["query"])
        params = {p["name"]: self._param_value(p) for p in body.get("queryParameters", [])}
        job_id = f"standin_query_{next(self._ids)}"
        ref = {
            "projectId": project,
            "jobId": job_id,
            "location": body.get("location") or self.default_location,
        }
        int64_ts = bool((body.get("formatOptions") or {}).get("useInt64Timestamp"))
        try:
            if re.match(r"\s*(INSERT|UPDATE|DELETE|MERGE)\b", sql, re.I):
                affected = self.db.execute(sql, params or None).fetchall()[0][0]
                self.jobs[job_id] = {
                    "jobReference": ref,
                    "configuration": {"query": {"query": body["query"]}},
                }
                return {
                    "kind": "bigquery#queryResponse",
                    "jobReference": ref,
                    "jobComplete": True,
                    "numDmlAffectedRows": str(affected),
                    "schema": {"fields": []},
                    "totalRows": "0",
                    "rows": [],
                }
            relation = self.db.sql(sql, params=params or None)
            result = relation.to_arrow_table() if relation is not None else pa.table({})
        except duckdb.CatalogException as exc:
            raise ApiError(404, "notFound", f"Not found: {str(exc).splitlines()[0]}") from None
        except duckdb.Error as exc:
            raise ApiError(400, "invalidQuery", f"Syntax error: {str(exc).splitlines()[0]}") from None
        self.jobs[job_id] = {"jobReference": ref, "configuration": {"query": {"query": body["query"]}}}
        limit = body.get("maxResults")
        shown = result if limit is None else result.slice(0, int(limit))
        fields = [{"name": f.name, "type": _arrow_to_bq(f.type), "mode": "NULLABLE"} for f in result.schema]
        return {
            "kind": "bigquery#queryResponse",
            "jobReference": ref,
            "jobComplete": True,
            "schema": {"fields": fields},
            "totalRows": str(result.num_rows),
            "rows": [
                {"f": [{"v": self._cell(v, f, int64_ts)} for v, f in zip(row, result.schema, strict=True)]}
                for row in _rows(shown)
            ],
        }

    @staticmethod
    def _cell(value: Any, field: pa.Field, int64_ts: bool) -> Any:
        if value is None:
            return None
        if pa.types.is_timestamp(field.type):
            micros = value
            return str(micros) if int64_ts else repr(micros / 1e6)
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, float):
            return "NaN" if value != value else repr(value)
        if isinstance(value, dt.date):
            return value.isoformat()
        return str(value)


def _rows(table: pa.Table) -> list[tuple[Any, ...]]:
    """Rows with timestamps as integer microseconds (so no time zone library is needed)."""
    cols = []
    for col in table.columns:
        if pa.types.is_timestamp(col.type):
            col = pc.cast(pc.cast(col, pa.timestamp("us", tz=col.type.tz)), pa.int64())
        cols.append(col.to_pylist())
    return list(zip(*cols, strict=True)) if cols else []
