"""The coverage grid: for each day x instrument x data type, what the lake holds (the console's Coverage
screen and ``mdth gaps`` draw it).

Computed from the lake itself (the download plan for "expected", one listing per day and data type, file
footers, recorded job outcomes), so it is current even where no validation ran; the latest report's
content verdict for each cell is attached when the day has one.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa

from mdth_engine.core.errors import UsageError
from mdth_engine.core.timeframes import day_range, parse_day
from mdth_engine.stages.base import Request
from mdth_engine.storage import layout
from mdth_engine.validation import report as rp

COVERAGE_SCHEMA = pa.schema(
    [
        pa.field("day", pa.date32(), nullable=False),
        pa.field("instrument_key", pa.string(), nullable=False),  # "" on a day without instrument master
        pa.field("venue", pa.string()),
        pa.field("instrument_type", pa.string()),
        pa.field("data_type", pa.string(), nullable=False),
        pa.field("class", pa.string(), nullable=False),  # report.CLASSES, or "no_master"
        pa.field("status", pa.string(), nullable=False),  # the completeness status of the class
        pa.field("rows", pa.int64()),
        pa.field("bytes", pa.int64()),
        pa.field("content", pa.string(), nullable=False),  # worst other check in the latest report, or ""
        pa.field("detail", pa.string(), nullable=False),
    ]
)
NO_MASTER = "no_master"


def _day_request(request: Request, day: dt.date, master: pa.Table) -> Request | None:
    """The request narrowed to what the day's master lists (an instrument not listed that day is not
    expected that day); None when nothing selected is listed."""
    symbols = request.symbols
    if symbols:
        keys = set(master["instrument_key"].to_pylist())
        raw = {str(s).upper() for s in master["tardis_symbol"].to_pylist()}
        symbols = tuple(s for s in symbols if (s in keys if s.count(":") == 2 else s.upper() in raw))
        if not symbols:
            return None
    venues = request.venues
    if venues:
        listed = set(master["venue"].to_pylist())
        venues = tuple(v for v in venues if v.upper() in listed)
        if not venues:
            return None
    return dataclasses.replace(request, start=day, end=day, symbols=symbols, venues=venues)


def _content_verdicts(store: Any, day: dt.date) -> dict[tuple[str, str], str]:
    table = rp.read_report(store, day)
    if table is None:
        return {}
    out: dict[tuple[str, str], str] = {}
    for key, data_type, check, status in zip(
        *(table[c].to_pylist() for c in ("instrument_key", "data_type", "check", "status")), strict=True
    ):
        if check in ("completeness", "instrument_master") or status == rp.SKIP:
            continue
        held = out.get((key, data_type))
        out[(key, data_type)] = status if held is None else rp.worst((held, status))
    return out


def coverage(
    store: Any,
    start: str | dt.date,
    end: str | dt.date | None = None,
    *,
    venues: tuple[str, ...] | list[str] = (),
    types: tuple[str, ...] | list[str] = (),
    data_types: tuple[str, ...] | list[str] = (),
    symbols: tuple[str, ...] | list[str] = (),
    bases: tuple[str, ...] | list[str] = (),
    max_instruments: int | None = None,
    settings: Any = None,
) -> pa.Table:
    """One row per (day, instrument, data type) the selection expects, with its class (``COVERAGE_SCHEMA``).

    ``store`` is an ObjectStore or a lake URL. Candles are not cells; the report's candle checks are not
    folded in. A day without an instrument master is one ``no_master`` row.
    """
    from mdth_engine.core.events import null_sink
    from mdth_engine.core.settings import load_settings
    from mdth_engine.stages.download import parse_data_types
    from mdth_engine.stages.instruments import parse_types, parse_venues, read_instruments
    from mdth_engine.stages.registry import StageContext
    from mdth_engine.storage.store import open_store
    from mdth_engine.validation.expected import classify, completeness_check, expected_for_day
    from mdth_engine.validation.outcomes import DownloadOutcomes

    if isinstance(store, str):
        store = open_store(store)
    first = parse_day(start, "start")
    last = parse_day(end, "end") if end is not None else first
    request = Request(
        "download",
        first,
        last,
        venues=tuple(parse_venues(list(venues))) if venues else (),
        types=tuple(parse_types(list(types))),
        data_types=tuple(parse_data_types(list(data_types))),
        symbols=tuple(symbols),
        bases=tuple(b.upper() for b in bases),
        max_instruments=max_instruments,
    )
    settings = settings or load_settings(lake=store.url)
    ctx = StageContext(settings, store, Path(tempfile.gettempdir()) / "mdth-spool", null_sink)
    outcomes = DownloadOutcomes(store)
    rows: list[dict[str, Any]] = []
    for day in day_range(first, last):
        master = read_instruments(store, layout.instruments_path(day))
        if master is None:
            rows.append(
                {
                    "day": day,
                    "instrument_key": "",
                    "data_type": "",
                    "class": NO_MASTER,
                    "status": rp.ERROR,
                    "content": "",
                    "detail": f"no instrument master for {day}; build it: mdth instruments --start {day}",
                }
            )
            continue
        sub = _day_request(request, day, master)
        if sub is None:
            continue
        try:
            expected = expected_for_day(ctx, sub, day, master)
        except UsageError:
            continue  # e.g. a venue with no instruments that day: nothing expected
        holdings = classify(store, day, expected, outcomes.for_day(day))
        verdicts = _content_verdicts(store, day)
        meta = {
            r["instrument_key"]: r
            for r in master.select(["instrument_key", "venue", "instrument_type"]).to_pylist()
        }
        for holding in holdings:
            check = completeness_check(holding, day, None)
            e = holding.expected
            info = meta.get(e.instrument_key, {})
            rows.append(
                {
                    "day": day,
                    "instrument_key": e.instrument_key,
                    "venue": info.get("venue"),
                    "instrument_type": info.get("instrument_type"),
                    "data_type": e.data_type,
                    "class": check.cls,
                    "status": check.status,
                    "rows": holding.rows,
                    "bytes": holding.bytes,
                    "content": verdicts.get((e.instrument_key, e.data_type), ""),
                    "detail": check.detail,
                }
            )
    return pa.Table.from_pylist(rows, schema=COVERAGE_SCHEMA)
