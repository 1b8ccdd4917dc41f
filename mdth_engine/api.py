"""The public facade: what the CLI, the console and downstream code call. Nothing below knows a terminal exists."""

from __future__ import annotations

import datetime as dt
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from mdth_engine.core.errors import UsageError
from mdth_engine.core.events import Sink, null_sink
from mdth_engine.core.settings import Settings, load_settings
from mdth_engine.core.timeframes import parse_day
from mdth_engine.stages.base import Request
from mdth_engine.storage import layout


def lake_summary(url: str, prefix: str = "") -> list[dict[str, Any]]:
    """Files and bytes per (area, day, part) from one listing; part is the data type, timeframe or job id."""
    from mdth_engine.storage.store import open_store

    store = open_store(url)
    groups: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0])
    for info in store.list(prefix):
        parts = info.path.split("/")
        day = layout.day_of(info.path)
        part = next((p.split("-", 1)[1] for p in parts if p.startswith(("data_type-", "timeframe-"))), "")
        if parts[0] == "_jobs" and len(parts) > 1:
            part = parts[1]
        group = groups[(parts[0], day.isoformat() if day else "", part)]
        group[0] += 1
        group[1] += info.size
    return [
        {"area": a, "day": d, "part": p, "files": v[0], "bytes": v[1]}
        for (a, d, p), v in sorted(groups.items())
    ]


def stage_context(
    settings: Settings, sink: Sink = null_sink, job_id: str = "", spool_dir: Path | None = None
):
    """Everything a stage runs with, for this process."""
    from mdth_engine.stages.registry import StageContext
    from mdth_engine.storage.store import open_store

    spool = spool_dir or Path(tempfile.gettempdir()) / "mdth-spool"
    return StageContext(
        settings=settings, store=open_store(settings.lake), spool_dir=spool, sink=sink, job_id=job_id
    )


def plan_stage(request: Request, settings: Settings) -> list:
    """The work units a request becomes (for --dry-run and the console's launch form)."""
    from mdth_engine.stages.registry import get_stage

    return get_stage(request.operation, stage_context(settings)).plan(request)


async def run_stage(
    request: Request,
    settings: Settings,
    *,
    sink: Sink = null_sink,
    concurrency: int | None = None,
    units=None,
):
    """Plan (unless ``units`` are given) and run a stage in this process; returns the run summary."""
    from mdth_engine.jobs.runner import run_units
    from mdth_engine.stages.registry import get_stage

    stage = get_stage(request.operation, stage_context(settings, sink))
    planned = stage.plan(request) if units is None else units
    return await run_units(stage, planned, concurrency=concurrency or settings.concurrency, sink=sink)


class Lake:
    """Read access to a lake for downstream code: instruments, ticks and candles as Arrow tables."""

    def __init__(self, url: str, settings: Settings | None = None) -> None:
        from mdth_engine.storage.store import open_store

        self.url = url
        self.settings = settings or load_settings(lake=url)
        self.store = open_store(url)

    @classmethod
    def open(cls, url: str | None = None) -> Lake:
        settings = load_settings(lake=url)
        return cls(settings.lake, settings)

    # -- instruments --------------------------------------------------------------------------------------------
    def instruments(
        self,
        date: str | dt.date,
        *,
        venue: str | None = None,
        type: str | None = None,
        base: str | None = None,
        quote: str | None = None,
        search: str | None = None,
        expiring_before: str | dt.date | None = None,
    ) -> pa.Table:
        """The instrument master of a UTC day, filtered; a UsageError when that day was never built."""
        from mdth_engine.stages.instruments import parse_types, parse_venues, read_instruments

        day = parse_day(date)
        table = read_instruments(self.store, layout.instruments_path(day))
        if table is None:
            raise UsageError(
                f"no instrument master for {day}; build it with: mdth instruments --start {day} --end {day}"
            )
        mask = pc.is_valid(table["instrument_key"])
        if venue:
            mask = pc.and_(mask, pc.is_in(table["venue"], pa.array(parse_venues(venue.split(",")))))
        if type:
            mask = pc.and_(mask, pc.is_in(table["instrument_type"], pa.array(parse_types(type.split(",")))))
        if base:
            mask = pc.and_(mask, pc.equal(table["base_asset"], base.upper()))
        if quote:
            mask = pc.and_(mask, pc.equal(table["quote_asset"], quote.upper()))
        if search:
            text = search.upper()
            hit = pc.or_(
                pc.match_substring(table["instrument_key"], text),
                pc.match_substring(pc.utf8_upper(table["tardis_symbol"]), text),
            )
            mask = pc.and_(mask, hit)
        if expiring_before:
            limit = dt.datetime.combine(parse_day(expiring_before, "--expiring-before"), dt.time(), dt.UTC)
            mask = pc.and_(
                mask, pc.less(table["expiry"], pa.scalar(limit, table.schema.field("expiry").type))
            )
        return table.filter(pc.fill_null(mask, False))

    def instrument(self, key: str, date: str | dt.date) -> dict[str, Any]:
        """One instrument's definition on a day; an unknown key gets the closest matches in the error."""
        from mdth_engine.core.keys import closest_keys, parse_key

        canonical = str(parse_key(key))
        table = self.instruments(date)
        hit = table.filter(pc.equal(table["instrument_key"], canonical))
        if hit.num_rows:
            return hit.to_pylist()[0]
        near = closest_keys(canonical, table["instrument_key"].to_pylist())
        hint = f"; did you mean {', '.join(near)}?" if near else ""
        raise UsageError(f"{canonical} is not in the instrument master of {parse_day(date)}{hint}")

    def built_days(self) -> list[dt.date]:
        """Days whose instrument master exists, oldest first."""
        days = {layout.day_of(info.path) for info in self.store.list(layout.INSTRUMENTS_ROOT + "/")}
        return sorted(d for d in days if d is not None)

    def inspect(self, key: str, date: str | dt.date | None = None, *, days: int = 14) -> dict[str, Any]:
        """Definition, availability and a per-day calendar of what the lake holds for one instrument."""
        from mdth_engine.core.keys import parse_key
        from mdth_engine.storage.parquet import read_provenance

        canonical = parse_key(key)
        built = self.built_days()
        if not built:
            raise UsageError(
                "the lake has no instrument master yet; build one with: mdth instruments --start D"
            )
        day = parse_day(date) if date else built[-1]
        definition = self.instrument(str(canonical), day)
        window = [d for d in built if d <= day][-days:]
        chain = str(canonical.chain_key()) if canonical.type == "OPTION" else None
        calendar = []
        for d in window:
            master = self.instruments(d)
            listed = bool(pc.any(pc.equal(master["instrument_key"], str(canonical))).as_py())
            present: dict[str, dict[str, Any]] = {}
            for info in self.store.list(f"{layout.RAW_ROOT}/{layout.day_dir(d)}/"):
                name = info.path.rsplit("/", 1)[-1].removesuffix(".parquet")
                if name in (str(canonical), chain):
                    data_type = info.path.split("/")[-2].removeprefix("data_type-")
                    prov = read_provenance(self.store, info.path) or {}
                    present[data_type] = {
                        "rows": int(prov.get("rows", 0) or 0),
                        "bytes": info.size,
                        "file": info.path,
                    }
            calendar.append({"day": d.isoformat(), "listed": listed, "data": present})
        return {
            "key": str(canonical),
            "date": day.isoformat(),
            "definition": definition,
            "calendar": calendar,
        }

    # -- ticks and candles (ranged reads: mdth_engine.reader) -------------------------------------------------
    def ticks(
        self,
        key: str,
        data_type: str,
        start: Any,
        end: Any,
        *,
        columns: list[str] | None = None,
        by: str = "timestamp",
    ) -> pa.Table:
        """Tick rows with ``by`` (exchange ``timestamp``, or ``local_timestamp``) in [start, end), UTC."""
        from mdth_engine.reader import ticks

        return ticks(self, key, data_type, start, end, columns=columns, by=by)

    def sparse_ticks(
        self,
        key: str,
        data_type: str,
        times: Any,
        *,
        buffer: Any = "1m",
        columns: list[str] | None = None,
        by: str = "timestamp",
    ) -> pa.Table:
        """Tick rows in [t - buffer, t + buffer) for every t, each file read once, with a query_time column."""
        from mdth_engine.reader import sparse_ticks

        return sparse_ticks(self, key, data_type, times, buffer=buffer, columns=columns, by=by)

    def candles(
        self, key: str, timeframe: str, start: Any, end: Any, *, columns: list[str] | None = None
    ) -> pa.Table:
        """Candles whose bucket starts in [start, end), UTC."""
        from mdth_engine.reader import candles

        return candles(self, key, timeframe, start, end, columns=columns)

    def sparse_candles(
        self,
        key: str,
        times: Any,
        timeframe: str = "1m",
        *,
        buffer: Any = "5m",
        columns: list[str] | None = None,
    ) -> pa.Table:
        """Candles starting in [t - buffer, t + buffer] for every t, with a query_time column."""
        from mdth_engine.reader import sparse_candles

        return sparse_candles(self, key, times, timeframe, buffer=buffer, columns=columns)


def missing_master_days(request: Request, settings: Settings) -> list[dt.date]:
    """Days of a request whose instrument master is missing or lacks a requested venue."""
    from mdth_engine.stages.instruments import parse_venues, read_instruments
    from mdth_engine.storage.store import open_store

    store = open_store(settings.lake)
    wanted = set(parse_venues(request.venues)) if request.venues else set()
    missing = []
    for day in request.days():
        table = read_instruments(store, layout.instruments_path(day))
        if table is None or not wanted <= set(table["venue"].unique().to_pylist()):
            missing.append(day)
    return missing


async def ensure_instruments(request: Request, settings: Settings, *, sink: Sink = null_sink):
    """Build the instrument master for the days of ``request`` that lack it (one run: each venue fetched once)."""
    import dataclasses

    from mdth_engine.stages.registry import get_stage

    days = set(missing_master_days(request, settings))
    if not days:
        return None
    sub = dataclasses.replace(request, operation="instruments", start=min(days), end=max(days), options={})
    units = [u for u in get_stage("instruments", stage_context(settings)).plan(sub) if u.day in days]
    return await run_stage(sub, settings, sink=sink, concurrency=4, units=units)
