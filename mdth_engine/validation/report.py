"""The validation report: one row per (instrument, data type, check), a stable schema, written atomically.

``validation_reports/by_date/day-{date}/report.parquet`` holds the rows (with provenance in its footer) and
``summary.json`` next to it the counts a dashboard needs without reading the rows. Statuses: ``ok``,
``warn`` (worth a look, nothing to re-download), ``error`` (wrong or missing: ``mdth validate`` exits 1),
``skip`` (the check could not apply, e.g. no candles to compare). Classes say what the lake holds for the
(instrument, data type): see ``CLASSES``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections import Counter
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from mdth_engine.storage import layout

OK, WARN, ERROR, SKIP = "ok", "warn", "error", "skip"
STATUSES = (OK, WARN, ERROR, SKIP)
_SEVERITY = {SKIP: 0, OK: 1, WARN: 2, ERROR: 3}

# What the lake holds for one expected (instrument, data type) of a day.
PRESENT = "present"  # a readable file with rows
EMPTY = "empty"  # a readable file with no rows: the source day exists but is empty
MISSING = "missing"  # a job wrote it (written/skipped/empty outcome) but the file is gone
CORRUPT = "corrupt"  # a file that cannot be read as Parquet (truncated, overwritten)
NOT_FOUND = "not_found"  # the source answered 404
UNAUTHORIZED = "unauthorized"  # the source answered 401/403 (no or insufficient API key)
NOT_EXPORTED = "not_exported"  # the source has not exported that day yet
FAILED = "failed"  # the last attempt failed (reason in the detail)
NEVER_ATTEMPTED = "never_attempted"  # no file and no recorded outcome
CLASSES = (
    PRESENT,
    EMPTY,
    MISSING,
    CORRUPT,
    NOT_FOUND,
    UNAUTHORIZED,
    NOT_EXPORTED,
    FAILED,
    NEVER_ATTEMPTED,
)
# Classes where a download would fetch something (``--fix`` re-downloads these).
FIXABLE_CLASSES = frozenset({MISSING, CORRUPT, UNAUTHORIZED, NOT_EXPORTED, FAILED, NEVER_ATTEMPTED})

CHECK_GROUPS = ("completeness", "content", "candles", "cross_source")
# Every check name, in report order.
CHECKS = (
    "instrument_master",
    "completeness",
    "file",
    "local_timestamp",
    "exchange_timestamp",
    "values",
    "side",
    "duplicate_ids",
    "book",
    "silence",
    "row_history",
    "candles",
    "candle_grid",
    "candle_totals",
    "candle_aggregation",
    "cross_source",
)
_CHECK_RANK = {name: i for i, name in enumerate(CHECKS)}
CANDLES = "candles"  # the data_type of candle and cross-source rows

TS = pa.timestamp("us", tz="UTC")
REPORT_SCHEMA = pa.schema(
    [
        pa.field("day", pa.date32(), nullable=False),
        pa.field("instrument_key", pa.string(), nullable=False),  # "" for day-level rows
        pa.field("data_type", pa.string(), nullable=False),  # a tick data type, "candles", or ""
        pa.field("check", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("class", pa.string(), nullable=False),  # see CLASSES; "" where it does not apply
        pa.field("rows", pa.int64()),
        pa.field("bytes", pa.int64()),
        pa.field("issues", pa.int64(), nullable=False),  # offending rows, buckets, minutes, ...
        pa.field("value", pa.float64()),  # what was measured (seconds, ratio, ...), when one number says it
        pa.field("limit", pa.float64()),  # the threshold it was held against
        pa.field("first_local", TS),  # first/last local_timestamp of the file (completeness rows)
        pa.field("last_local", TS),
        pa.field("detail", pa.string(), nullable=False),  # one line a user can act on
        pa.field("validated_at", TS, nullable=False),
    ]
)


@dataclasses.dataclass(slots=True)
class Check:
    """One report row before it becomes Arrow; times are microseconds since the epoch."""

    instrument_key: str
    data_type: str
    check: str
    status: str
    cls: str = ""
    rows: int | None = None
    bytes: int | None = None
    issues: int = 0
    value: float | None = None
    limit: float | None = None
    first_local: int | None = None
    last_local: int | None = None
    detail: str = ""

    def __post_init__(self) -> None:
        if self.status not in _SEVERITY:
            raise ValueError(f"unknown status {self.status!r}")
        if self.check not in _CHECK_RANK:
            raise ValueError(f"unknown check {self.check!r}")


def parse_checks(items: Any) -> list[str]:
    """Check groups from a list or comma text (all when empty); completeness always runs."""
    from mdth_engine.core.errors import UsageError

    if isinstance(items, str):
        items = [p.strip() for p in items.split(",") if p.strip()]
    names = list(items or []) or list(CHECK_GROUPS)
    if names == ["all"]:
        names = list(CHECK_GROUPS)
    unknown = [n for n in names if n not in CHECK_GROUPS]
    if unknown:
        raise UsageError(f"unknown check group {unknown[0]!r}; known: {', '.join(CHECK_GROUPS)} (or 'all')")
    return [g for g in CHECK_GROUPS if g in names or g == "completeness"]


def worst(statuses: Iterable[str]) -> str:
    """The most severe status (``ok`` when there is none)."""
    return max(statuses, key=_SEVERITY.__getitem__, default=OK)


def severity(status: str) -> int:
    return _SEVERITY[status]


def to_table(day: dt.date, checks: list[Check], validated_at: dt.datetime) -> pa.Table:
    """Rows in the report schema, in report order (instrument, data type, check)."""
    ordered = sorted(checks, key=lambda c: (c.instrument_key, c.data_type, _CHECK_RANK[c.check]))
    n = len(ordered)

    def col(name: str) -> list[Any]:
        return [getattr(c, name) for c in ordered]

    def times(name: str) -> pa.Array:
        return pa.array(col(name), type=pa.int64()).cast(TS)

    return pa.Table.from_arrays(
        [
            pa.array([day] * n, pa.date32()),
            pa.array(col("instrument_key"), pa.string()),
            pa.array(col("data_type"), pa.string()),
            pa.array(col("check"), pa.string()),
            pa.array(col("status"), pa.string()),
            pa.array(col("cls"), pa.string()),
            pa.array(col("rows"), pa.int64()),
            pa.array(col("bytes"), pa.int64()),
            pa.array(col("issues"), pa.int64()),
            pa.array(col("value"), pa.float64()),
            pa.array(col("limit"), pa.float64()),
            times("first_local"),
            times("last_local"),
            pa.array(col("detail"), pa.string()),
            pa.array([validated_at] * n, TS),
        ],
        schema=REPORT_SCHEMA,
    )


def sort_rows(table: pa.Table) -> pa.Table:
    """Report order, for a table merged from two runs."""
    if not table.num_rows:
        return table
    rank = pa.array([_CHECK_RANK.get(c, len(CHECKS)) for c in table["check"].to_pylist()], pa.int32())
    keyed = table.append_column("_rank", rank)
    order = pc.sort_indices(
        keyed, [("instrument_key", "ascending"), ("data_type", "ascending"), ("_rank", "ascending")]
    )
    return table.take(order)


def summarize(day: dt.date, table: pa.Table, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """What ``summary.json`` holds: counts by status and class, totals, and the first errors in words."""
    rows = table.to_pylist()
    statuses = Counter(r["status"] for r in rows)
    completeness = [r for r in rows if r["check"] == "completeness"]
    classes = Counter(r["class"] for r in completeness)
    errors = [r for r in rows if r["status"] == ERROR]
    warnings = [r for r in rows if r["status"] == WARN]

    def line(r: dict[str, Any]) -> str:
        where = " ".join(p for p in (r["instrument_key"], r["data_type"]) if p)
        return f"{where} {r['check']}: {r['detail']}".strip()

    return {
        "day": day.isoformat(),
        "status": worst(statuses) if rows else OK,
        "counts": {s: statuses.get(s, 0) for s in STATUSES},
        "classes": {c: classes.get(c, 0) for c in CLASSES},
        "expected": len(completeness),
        "rows": sum(int(r["rows"] or 0) for r in completeness),
        "bytes": sum(int(r["bytes"] or 0) for r in completeness),
        "errors": [line(r) for r in errors[:20]],
        "warnings": [line(r) for r in warnings[:20]],
        "report": layout.report_path(day),
        **(extra or {}),
    }


def write_report(
    store: Any, day: dt.date, table: pa.Table, provenance: dict[str, Any], summary: dict[str, Any]
) -> Any:
    """The report (atomic, provenance in the footer), then ``summary.json`` (atomic) which points to it."""
    from mdth_engine.storage.parquet import write_table

    written = write_table(store, layout.report_path(day), table, provenance, schema=REPORT_SCHEMA)
    data = (json.dumps(summary, indent=1, sort_keys=True, default=str) + "\n").encode()
    store.put_bytes(layout.report_summary_path(day), data)
    return written


def read_report(store: Any, day: dt.date) -> pa.Table | None:
    """A day's report as written, or None when that day was never validated."""
    from mdth_engine.core.errors import NotFound
    from mdth_engine.storage.parquet import read_whole

    try:
        with store.open_read(layout.report_path(day)) as handle:
            return read_whole(handle, schema=REPORT_SCHEMA)
    except NotFound:
        return None


def read_summary(store: Any, day: dt.date) -> dict[str, Any] | None:
    from mdth_engine.core.errors import NotFound

    try:
        return json.loads(store.get_bytes(layout.report_summary_path(day)))
    except NotFound:
        return None
