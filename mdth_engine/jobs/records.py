"""Job records in the store: spec, plan, shard heartbeats, unit outcomes, the cancel request.

Every record is written whole and atomically (``put_bytes``/``put_if_absent``), so any machine that can read
the lake can watch a job while its workers write. Paths come from ``storage.layout``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import time
from collections.abc import Iterable, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mdth_engine.core.errors import NotFound, UsageError
from mdth_engine.jobs.spec import JobSpec
from mdth_engine.stages.base import Outcome, WorkUnit
from mdth_engine.storage import layout
from mdth_engine.storage.parquet import read_whole

# Shard states. A shard in a FINAL state has a worker that ended (or was given up on).
PENDING, LAUNCHED, RUNNING = "pending", "launched", "running"
DONE, FAILED, CANCELLED, DEAD = "done", "failed", "cancelled", "dead"
# The worker stopped without finishing (SIGTERM, a VM shutting down): not final, so it gets relaunched.
INTERRUPTED = "interrupted"
FINAL_STATES = frozenset({DONE, FAILED, CANCELLED, DEAD})

# Unit outcomes a resumed shard does not redo: the unit's output is settled. Failures, missing keys and
# days the source has not exported yet are tried again.
FINAL_OUTCOMES = frozenset({Outcome.WRITTEN, Outcome.SKIPPED, Outcome.EMPTY, Outcome.NOT_FOUND})

PLAN_SCHEMA = pa.schema(
    [
        pa.field("unit_id", pa.string(), nullable=False),
        pa.field("shard", pa.int32(), nullable=False),
        pa.field("est_bytes", pa.int64()),
        pa.field("day", pa.date32()),
        pa.field("output", pa.string()),
        pa.field("stage", pa.string()),
        pa.field("params", pa.string()),  # JSON
    ]
)

RESULT_SCHEMA = pa.schema(
    [
        pa.field("unit_id", pa.string(), nullable=False),
        pa.field("outcome", pa.string(), nullable=False),
        pa.field("rows", pa.int64()),
        pa.field("bytes", pa.int64()),
        pa.field("reason", pa.string()),
        pa.field("seconds", pa.float64()),
        pa.field("output", pa.string()),
        pa.field("attempt", pa.int32()),
        pa.field("finished_at", pa.timestamp("us", tz="UTC")),
        pa.field("extra", pa.string()),  # JSON
    ]
)


def cancel_path(job_id: str) -> str:
    """The cancel request; workers poll it, so a job can be stopped from any machine."""
    return layout.job_cancel_path(job_id)


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n").encode()


def _parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


# --- spec -------------------------------------------------------------------------------------------------------


def save_spec(store: Any, spec: JobSpec) -> None:
    if not store.put_if_absent(layout.job_spec_path(spec.job_id), _json_bytes(spec.to_dict())):
        raise UsageError(f"job {spec.job_id} already exists")


def load_spec(store: Any, job_id: str) -> JobSpec:
    if not job_id or "/" in job_id or job_id.startswith("."):
        raise UsageError(f"invalid job id {job_id!r}")
    try:
        data = json.loads(store.get_bytes(layout.job_spec_path(job_id)))
    except NotFound:
        raise UsageError(f"no job {job_id} in {store.url} (mdth jobs list shows the jobs there)") from None
    return JobSpec.from_dict(data)


# --- plan -------------------------------------------------------------------------------------------------------


def write_plan(store: Any, job_id: str, units: Sequence[WorkUnit], assignment: dict[str, int]) -> None:
    """One row per unit, in plan order, with its shard."""
    table = pa.Table.from_pydict(
        {
            "unit_id": [u.unit_id for u in units],
            "shard": [assignment[u.unit_id] for u in units],
            "est_bytes": [u.est_bytes for u in units],
            "day": [u.day for u in units],
            "output": [u.output for u in units],
            "stage": [u.stage for u in units],
            "params": [json.dumps(u.params, sort_keys=True, default=str) for u in units],
        },
        schema=PLAN_SCHEMA,
    )
    store.put_bytes(layout.job_plan_path(job_id), _parquet_bytes(table))


def read_plan_table(store: Any, job_id: str) -> pa.Table:
    try:
        with store.open_read(layout.job_plan_path(job_id)) as handle:
            return read_whole(handle)
    except NotFound:
        raise UsageError(f"job {job_id} has no plan in {store.url}") from None


def read_plan(store: Any, job_id: str, shard: int | None = None) -> list[tuple[WorkUnit, int]]:
    """(unit, shard) pairs of the plan, optionally one shard's only."""
    table = read_plan_table(store, job_id)
    if shard is not None:
        import pyarrow.compute as pc

        table = table.filter(pc.equal(table["shard"], shard))
    out = []
    for row in table.to_pylist():
        unit = WorkUnit(
            stage=row["stage"],
            unit_id=row["unit_id"],
            day=row["day"],
            output=row["output"],
            est_bytes=int(row["est_bytes"] or 0),
            params=json.loads(row["params"] or "{}"),
        )
        out.append((unit, int(row["shard"])))
    return out


# --- shard heartbeats --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class ShardRecord:
    """``_jobs/{job_id}/shards/{i}.json``: a shard's heartbeat; ``updated_at`` moves every few seconds."""

    job_id: str
    shard: int
    state: str = PENDING
    attempt: int = 0  # launches so far (1 = the first)
    relaunches: int = 0  # automatic relaunches since the last launch or retry
    units_total: int = 0
    units_done: int = 0
    units_failed: int = 0
    outcomes: dict[str, int] = dataclasses.field(default_factory=dict)
    rows: int = 0
    bytes: int = 0
    est_bytes_total: int = 0
    est_bytes_done: int = 0
    rate_bytes_s: float = 0.0  # lake bytes written per second, recent
    rate_units_s: float = 0.0
    eta_s: float | None = None
    last_error: str = ""
    host: str = ""
    pid: int | None = None
    vm: str = ""
    backend: str = ""
    started_at: float | None = None  # epoch seconds
    updated_at: float = 0.0
    finished_at: float | None = None
    engine_version: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ShardRecord:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    def age(self, now: float | None = None) -> float:
        """Seconds since the last heartbeat."""
        return max(0.0, (now or time.time()) - self.updated_at) if self.updated_at else float("inf")


def write_shard(store: Any, record: ShardRecord) -> None:
    record.updated_at = time.time()
    store.put_bytes(layout.job_shard_path(record.job_id, record.shard), _json_bytes(record.to_dict()))


def read_shard(store: Any, job_id: str, shard: int) -> ShardRecord | None:
    try:
        return ShardRecord.from_dict(json.loads(store.get_bytes(layout.job_shard_path(job_id, shard))))
    except NotFound:
        return None
    except ValueError:  # a record from an incompatible writer: treat as unknown
        return None


def read_shards(store: Any, spec: JobSpec) -> list[ShardRecord]:
    """Every shard's record; a shard never launched reads as PENDING."""
    return [
        read_shard(store, spec.job_id, i) or ShardRecord(spec.job_id, i, backend=spec.backend)
        for i in range(spec.shards)
    ]


# --- unit outcomes -----------------------------------------------------------------------------------------------


def result_files(store: Any, job_id: str, shard: int | None = None) -> list[str]:
    """Result batch paths in write order (by shard, then sequence)."""
    prefix = layout.job_results_prefix(job_id) + (f"{shard}-" if shard is not None else "")
    paths = [i.path for i in store.list(prefix) if i.path.endswith(".parquet")]

    def order(path: str) -> tuple[int, int]:
        shard_s, _, seq_s = path.rsplit("/", 1)[-1][: -len(".parquet")].partition("-")
        return int(shard_s), int(seq_s)

    return sorted(paths, key=order)


def next_result_seq(store: Any, job_id: str, shard: int) -> int:
    files = result_files(store, job_id, shard)
    if not files:
        return 0
    return int(files[-1].rsplit("-", 1)[-1][: -len(".parquet")]) + 1


def write_results(store: Any, job_id: str, shard: int, seq: int, rows: list[dict[str, Any]]) -> int:
    """Write one batch at the first free sequence number >= ``seq`` (never over another's); returns it."""
    table = pa.Table.from_pylist(rows, schema=RESULT_SCHEMA)
    data = _parquet_bytes(table)
    while not store.put_if_absent(layout.job_result_path(job_id, shard, seq), data):
        seq += 1
    return seq


def read_result_file(store: Any, path: str) -> list[dict[str, Any]]:
    try:
        with store.open_read(path) as handle:
            return read_whole(handle).to_pylist()
    except NotFound:
        return []


def read_results(store: Any, job_id: str, shard: int | None = None) -> list[dict[str, Any]]:
    """Every recorded unit outcome in write order (a unit run twice appears twice; the last one counts)."""
    rows: list[dict[str, Any]] = []
    for path in result_files(store, job_id, shard):
        rows.extend(read_result_file(store, path))
    return rows


def latest_outcomes(rows: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """unit id -> its last recorded outcome row."""
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        out[row["unit_id"]] = row
    return out


def result_row(unit: WorkUnit, result: Any, attempt: int) -> dict[str, Any]:
    return {
        "unit_id": result.unit_id,
        "outcome": str(result.outcome),
        "rows": int(result.rows),
        "bytes": int(result.bytes),
        "reason": result.reason or "",
        "seconds": float(result.seconds),
        "output": result.output or unit.output,
        "attempt": attempt,
        "finished_at": dt.datetime.now(dt.UTC),
        "extra": json.dumps(result.extra, sort_keys=True, default=str) if result.extra else "",
    }


# --- cancel ------------------------------------------------------------------------------------------------------


def request_cancel(store: Any, job_id: str, by: str) -> None:
    store.put_bytes(cancel_path(job_id), _json_bytes({"by": by, "at": time.time()}))


def cancel_requested(store: Any, job_id: str) -> bool:
    return bool(store.exists(cancel_path(job_id)))


def clear_cancel(store: Any, job_id: str) -> None:
    store.delete(cancel_path(job_id))
