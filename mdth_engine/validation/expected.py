"""Completeness: what a day should hold (the download stage's own plan), what the lake holds, and why not.

Expected = the download plan of the same selection for that day (the instrument master x data types,
including instruments listed or expiring that day). Each expected (instrument, data type) is classed from
one listing per data type, its file's footer, and the last recorded download outcome (``outcomes.py``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow.parquet as pq

from mdth_engine.core.schemas import GROUPED_DATA_TYPES
from mdth_engine.core.timeframes import US_PER_DAY, datetime_to_us, day_start_us
from mdth_engine.stages.base import Outcome, Request
from mdth_engine.validation import report as rp
from mdth_engine.validation.incidents import SourceFacts
from mdth_engine.validation.outcomes import RecordedOutcome

FOOTER_THREADS = 8


@dataclasses.dataclass(frozen=True, slots=True)
class Expected:
    """One lake file the day should have: which download unit writes it, and when the instrument traded."""

    instrument_key: str
    data_type: str
    path: str
    unit_id: str
    exchange: str
    symbol: str
    instrument_type: str
    live_start_us: int  # the part of the day the instrument existed (listing/expiry clip the day)
    live_end_us: int

    @property
    def partial_day(self) -> bool:
        return self.live_end_us - self.live_start_us < US_PER_DAY


@dataclasses.dataclass
class Holding:
    """What the lake holds for one expected file."""

    expected: Expected
    cls: str
    bytes: int | None = None
    rows: int | None = None
    metadata: pq.FileMetaData | None = None
    provenance: dict[str, str] = dataclasses.field(default_factory=dict)
    outcome: RecordedOutcome | None = None
    error: str = ""


def _us(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return datetime_to_us(value)
    return None


def live_window(row: dict[str, Any], day: dt.date) -> tuple[int, int]:
    """[start, end) of ``day`` in which the instrument existed: listing (or availability) to expiry."""
    d0 = day_start_us(day)
    start = _us(row.get("listing")) or _us(row.get("available_from")) or d0
    end = _us(row.get("expiry")) or _us(row.get("available_to")) or d0 + US_PER_DAY
    lo, hi = max(d0, start), min(d0 + US_PER_DAY, end)
    return (lo, hi) if hi > lo else (d0, d0 + US_PER_DAY)


def expected_for_day(ctx: Any, request: Request, day: dt.date, master: Any) -> list[Expected]:
    """Every file the download of this selection would write for ``day``, from the download stage's plan."""
    from mdth_engine.stages.download import DownloadStage

    sub = dataclasses.replace(request, operation="download", start=day, end=day, options={})
    units = DownloadStage(ctx).plan(sub)
    columns = ["instrument_key", "instrument_type", "listing", "available_from", "expiry", "available_to"]
    rows = {r["instrument_key"]: r for r in master.select(columns).to_pylist()}
    out = []
    for unit in units:
        p = unit.params
        for key, path in p["outputs"].items():
            row = rows.get(key, {})
            start, end = live_window(row, day)
            out.append(
                Expected(
                    key,
                    p["data_type"],
                    path,
                    unit.unit_id,
                    p["exchange"],
                    p["symbol"],
                    row.get("instrument_type") or "",
                    start,
                    end,
                )
            )
    return sorted(out, key=lambda e: (e.instrument_key, e.data_type))


def classify(
    store: Any, day: dt.date, expected: list[Expected], outcomes: dict[str, RecordedOutcome]
) -> list[Holding]:
    """Each expected file classed from one listing per data type, its footer, and the last outcome."""
    from mdth_engine.stages.candles import listed_files
    from mdth_engine.storage.parquet import provenance_of, read_footer

    listings = {t: listed_files(store, day, t) for t in sorted({e.data_type for e in expected})}
    holdings = []
    for entry in expected:
        size = listings[entry.data_type].get(entry.instrument_key)
        outcome = outcomes.get(entry.unit_id)
        kept_others = outcome is not None and outcome.output != entry.path and outcome.outcome in _SETTLED
        if kept_others and entry.data_type in GROUPED_DATA_TYPES:
            outcome = None  # that run of the grouped file kept other underlyings, not this one
        if size is None:
            holdings.append(Holding(entry, _absent_class(outcome), outcome=outcome))
        else:
            holdings.append(Holding(entry, rp.PRESENT, bytes=size, outcome=outcome))

    def footer(holding: Holding) -> None:
        try:
            meta = read_footer(store, holding.expected.path)
        except Exception as exc:
            holding.cls = rp.CORRUPT
            holding.error = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return
        holding.metadata = meta
        holding.rows = meta.num_rows
        holding.provenance = provenance_of(meta)
        holding.cls = rp.PRESENT if meta.num_rows else rp.EMPTY

    present = [h for h in holdings if h.cls == rp.PRESENT]
    if present:
        with ThreadPoolExecutor(
            min(FOOTER_THREADS, len(present)), thread_name_prefix="mdth-validate"
        ) as pool:
            list(pool.map(footer, present))
    return holdings


_SETTLED = (Outcome.WRITTEN, Outcome.SKIPPED, Outcome.EMPTY)


def _absent_class(outcome: RecordedOutcome | None) -> str:
    if outcome is None:
        return rp.NEVER_ATTEMPTED
    return {
        Outcome.WRITTEN: rp.MISSING,
        Outcome.SKIPPED: rp.MISSING,
        Outcome.EMPTY: rp.MISSING,
        Outcome.NOT_FOUND: rp.NOT_FOUND,
        Outcome.UNAUTHORIZED: rp.UNAUTHORIZED,
        Outcome.NOT_EXPORTED: rp.NOT_EXPORTED,
    }.get(outcome.outcome, rp.FAILED)


def _when(outcome: RecordedOutcome) -> str:
    at = f" at {outcome.finished_at:%Y-%m-%d %H:%M} UTC" if outcome.finished_at else ""
    return f"job {outcome.job_id}{at}"


def completeness_check(holding: Holding, day: dt.date, facts: SourceFacts | None) -> rp.Check:
    """The completeness row of one expected file: its class, size, first/last arrival, and what to do."""
    e, cls, outcome = holding.expected, holding.cls, holding.outcome
    first = last = None
    if holding.provenance:
        first, last = (
            parse_iso_us(holding.provenance.get("first_timestamp")),
            parse_iso_us(holding.provenance.get("last_timestamp")),
        )
    incidents = facts.during(e.live_start_us, e.live_end_us) if facts else []
    fix = "re-download: mdth validate --fix"
    status, detail = rp.ERROR, ""
    if cls == rp.PRESENT:
        status, detail = rp.OK, f"{holding.rows:,} rows"
    elif cls == rp.EMPTY:
        status = rp.OK if e.data_type == "liquidations" else rp.WARN
        detail = "empty at source: the source file of this day has no rows"
        if incidents:
            detail += f"; {incidents[0].describe()}"
    elif cls == rp.CORRUPT:
        detail = f"unreadable file: {holding.error}; {fix}"
    elif cls == rp.MISSING:
        assert outcome is not None
        detail = (
            f"file is gone: {_when(outcome)} recorded it {outcome.outcome} ({outcome.rows:,} rows); {fix}"
        )
    elif cls == rp.NOT_FOUND:
        status = rp.WARN
        detail = f"the source has no such file (HTTP 404, {_when(outcome)})" if outcome else "not found"
    elif cls == rp.UNAUTHORIZED:
        detail = f"the source refused it ({_when(outcome)}): {outcome.reason}" if outcome else "unauthorized"
    elif cls == rp.NOT_EXPORTED:
        status = rp.WARN
        detail = (
            f"not exported by the source yet ({_when(outcome)}); try again after D+1 06:00 UTC"
            if outcome
            else ""
        )
    elif cls == rp.FAILED:
        detail = f"last attempt failed ({_when(outcome)}): {outcome.reason}" if outcome else "failed"
    else:  # never attempted
        horizon = facts.exported_until if facts else None
        if horizon is not None and day_start_us(day) + US_PER_DAY > datetime_to_us(horizon):
            cls, status = rp.NOT_EXPORTED, rp.WARN
            detail = f"not exported by the source yet (exported until {horizon:%Y-%m-%d %H:%M} UTC)"
        else:
            detail = (
                f"no file and no recorded attempt; download it: mdth download --start {day} "
                f"--symbols {e.instrument_key} --data-types {e.data_type} (or mdth validate --fix)"
            )
    return rp.Check(
        e.instrument_key,
        e.data_type,
        "completeness",
        status,
        cls,
        rows=holding.rows,
        bytes=holding.bytes,
        first_local=first,
        last_local=last,
        detail=detail,
    )


def parse_iso_us(text: str | None) -> int | None:
    """Microseconds of an ISO 8601 UTC instant as footers write them (``...Z``), None when empty or bad."""
    if not text:
        return None
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return datetime_to_us(value if value.tzinfo else value.replace(tzinfo=dt.UTC))
