"""Validate: per UTC day and selection, is the lake complete, and can what it holds be trusted?

A unit is one day (every selected instrument). It classes each expected (instrument, data type) from the
download stage's own plan, the lake listing and the jobs' recorded outcomes (``validation.expected``),
scans every present tick file once in bounded memory (``validation.scan``/``content``), checks candles
against their ticks and across timeframes (``validation.candle_checks``), compares 1m candles with Binance
klines (``validation.cross_source``), and writes ``validation_reports/by_date/day-{date}/report.parquet``
(atomic, provenance in the footer) and ``summary.json``. A day with errors ends ``failed`` with its first
error as the reason, so ``mdth pipeline`` and jobs exit 1 on bad data; the report is written either way.
A run narrowed by selectors replaces only the rows it re-checked in an existing report.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from mdth_engine.core.timeframes import TIMEFRAMES, day_start_us
from mdth_engine.stages.base import Outcome, Request, UnitResult, WorkUnit
from mdth_engine.stages.download import parse_data_types, select_instruments
from mdth_engine.stages.instruments import read_instruments
from mdth_engine.storage import layout
from mdth_engine.validation import report as rp

SCAN_THREADS = 4  # files scanned at once within a day (each holds one batch of rows)
KLINE_CONCURRENCY = 4


def _line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _instrument_selective(request: Request) -> bool:
    return bool(
        request.venues or request.types or request.symbols or request.bases or request.max_instruments
    )


class ValidateStage:
    name = "validate"

    def __init__(self, ctx: Any) -> None:
        from mdth_engine.validation.outcomes import DownloadOutcomes

        self.ctx = ctx
        self._outcomes = DownloadOutcomes(ctx.store)
        self._facts: Any = None
        self._klines: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._listings: dict[tuple[str, dt.date, str], dict[str, int]] = {}
        self._footer_rows: dict[tuple[str, int], int] = {}

    # -- planning --------------------------------------------------------------------------------------------
    def plan(self, request: Request) -> list[WorkUnit]:
        """One unit per day; selectors and check names are checked against each day's master up front."""
        rp.parse_checks(request.options.get("checks"))
        parse_data_types(request.data_types)
        units = []
        for day in request.days():
            master = read_instruments(self.ctx.store, layout.instruments_path(day))
            if master is not None:
                select_instruments(master, request, day)
            units.append(
                WorkUnit(
                    self.name,
                    f"{day.isoformat()}/validate",
                    day,
                    layout.report_path(day),
                    est_bytes=1,
                    params={"request": request.to_dict()},
                )
            )
        return units

    # -- shared lookups ----------------------------------------------------------------------------------------
    def listing(self, day: dt.date, data_type: str, candles: bool = False) -> dict[str, int]:
        """instrument key -> bytes of a day's tick (or candle timeframe) folder; one listing per run."""
        from mdth_engine.stages.candles import listed_files

        key = ("candles" if candles else "raw", day, data_type)
        with self._lock:
            hit = self._listings.get(key)
        if hit is not None:
            return hit
        if candles:
            prefix = layout.candles_dir(day, data_type) + "/"
            found = {}
            for info in self.ctx.store.list(prefix):
                name = info.path[len(prefix) :]
                if "/" not in name and name.endswith(".parquet"):
                    found[name[: -len(".parquet")]] = info.size
        else:
            found = listed_files(self.ctx.store, day, data_type)
        with self._lock:
            self._listings[key] = found
        return found

    def footer_rows(self, path: str, size: int) -> int:
        from mdth_engine.storage.parquet import read_footer

        with self._lock:
            hit = self._footer_rows.get((path, size))
        if hit is not None:
            return hit
        try:
            rows = read_footer(self.ctx.store, path).num_rows
        except Exception:
            rows = 0  # an unreadable earlier day does not count in the baseline
        with self._lock:
            self._footer_rows[(path, size)] = rows
        return rows

    # -- running ---------------------------------------------------------------------------------------------
    async def run_unit(self, unit: WorkUnit) -> UnitResult:
        from mdth_engine.validation.cross_source import KlineSource
        from mdth_engine.validation.incidents import SourceFactsCache

        day = unit.day
        request = dataclasses.replace(Request.from_dict(unit.params["request"]), start=day, end=day)
        groups = rp.parse_checks(request.options.get("checks"))
        if self._facts is None:
            self._facts = SourceFactsCache(self.ctx.settings)
        store = self.ctx.store
        master = await asyncio.to_thread(read_instruments, store, layout.instruments_path(day))
        if master is None:
            detail = f"no instrument master for {day}; build it: mdth instruments --start {day} (or mdth validate --fix)"
            checks = [rp.Check("", "", "instrument_master", rp.ERROR, rp.NEVER_ATTEMPTED, detail=detail)]
            return await asyncio.to_thread(self._finish, unit, request, groups, checks, None, set(), set())
        from mdth_engine.validation.expected import classify, expected_for_day

        expected = await asyncio.to_thread(expected_for_day, self.ctx, request, day, master)
        exchanges = sorted({e.exchange for e in expected})
        facts_list = await asyncio.gather(*(self._facts.get(ex) for ex in exchanges))
        facts = dict(zip(exchanges, facts_list, strict=True))
        outcomes = await asyncio.to_thread(self._outcomes.for_day, day)
        holdings = await asyncio.to_thread(classify, store, day, expected, outcomes)
        checks, scans = await asyncio.to_thread(self._files, day, holdings, groups, facts)
        one_minute: dict[str, tuple[pa.Table, list[dict[str, Any]]]] = {}
        candle_keys: set[str] = set()
        if "candles" in groups or "cross_source" in groups:
            candle_rows, one_minute, candle_keys = await asyncio.to_thread(
                self._candles, day, master, holdings, scans, request
            )
            if "candles" in groups:
                checks += candle_rows
        if "cross_source" in groups and one_minute:
            options = request.options
            source_key = repr(sorted((k, v) for k, v in options.items() if "rest_url" in k))
            klines = self._klines.setdefault(source_key, KlineSource(options))
            checks += await self._cross_source(day, master, one_minute, klines, facts)
        covered = {(e.instrument_key, e.data_type) for e in expected}
        return await asyncio.to_thread(
            self._finish, unit, request, groups, checks, master, covered, candle_keys
        )

    def _files(
        self, day: dt.date, holdings: list[Any], groups: list[str], facts: dict[str, Any]
    ) -> tuple[list[rp.Check], dict[tuple[str, str], Any]]:
        """Completeness rows for every expected file; file, content and history rows for present ones."""
        from mdth_engine.validation.content import (
            content_checks,
            earlier_rows,
            file_check,
            history_check,
            schema_problem,
        )
        from mdth_engine.validation.expected import completeness_check
        from mdth_engine.validation.scan import scan_file

        readable = [h for h in holdings if h.metadata is not None]
        scannable = [h for h in readable if h.rows and not schema_problem(h)]
        if "content" not in groups:  # candle totals need only the trades
            scannable = [h for h in scannable if h.expected.data_type == "trades"]
        scans: dict[tuple[str, str], Any] = {}
        if "content" in groups or "candles" in groups:
            d0 = day_start_us(day)

            def scan(h: Any) -> Any:
                try:
                    return scan_file(self.ctx.store, h.expected.path, h.expected.data_type, d0)
                except Exception as exc:  # a file whose footer reads but whose pages do not
                    return exc

            threads = max(1, min(SCAN_THREADS, len(scannable)))
            with ThreadPoolExecutor(threads, thread_name_prefix="mdth-scan") as pool:
                for h, stats in zip(scannable, pool.map(scan, scannable), strict=True):
                    if isinstance(stats, Exception):
                        h.cls, h.error = rp.CORRUPT, _line(stats)
                        continue
                    scans[(h.expected.instrument_key, h.expected.data_type)] = stats
        checks = [completeness_check(h, day, facts.get(h.expected.exchange)) for h in holdings]
        readable = [h for h in readable if h.cls != rp.CORRUPT]
        if "content" in groups:
            for h in readable:
                stats = scans.get((h.expected.instrument_key, h.expected.data_type))
                checks.append(file_check(h, stats))
                if stats is not None:
                    checks += content_checks(h, stats, facts.get(h.expected.exchange))
                if h.rows:
                    earlier = earlier_rows(
                        self.ctx.store,
                        day,
                        h.expected.data_type,
                        h.expected.instrument_key,
                        self.listing,
                        self.footer_rows,
                    )
                    checks.append(history_check(h, earlier))
        return checks, scans

    def _candles(
        self,
        day: dt.date,
        master: pa.Table,
        holdings: list[Any],
        scans: dict[tuple[str, str], Any],
        request: Request,
    ) -> tuple[list[rp.Check], dict[str, tuple[pa.Table, list[dict[str, Any]]]], set[str]]:
        """Candle rows of every selected instrument with tick data or candles; their 1m candles and inputs."""
        from mdth_engine.stages.candles import inputs_for
        from mdth_engine.validation.candle_checks import candle_checks

        validated = set(parse_data_types(request.data_types))
        types = dict(
            zip(master["instrument_key"].to_pylist(), master["instrument_type"].to_pylist(), strict=True)
        )
        listings = {tf: self.listing(day, tf, candles=True) for tf in TIMEFRAMES}
        by_key: dict[str, list[Any]] = {}
        for h in holdings:
            by_key.setdefault(h.expected.instrument_key, []).append(h)
        rows: list[rp.Check] = []
        one_minute: dict[str, tuple[pa.Table, list[dict[str, Any]]]] = {}
        keys: set[str] = set()
        for key, held in sorted(by_key.items()):
            itype = types.get(key, "")
            kinds = set(inputs_for(itype))
            if not kinds & validated:
                continue  # none of this instrument's candle inputs is being validated
            keys.add(key)
            has_ticks = any(h.expected.data_type in kinds and h.rows for h in held)
            trades_scan = scans.get((key, "trades"))
            try:
                found, table, inputs = candle_checks(
                    self.ctx, day, key, itype, listings, trades_scan, has_ticks
                )
            except Exception as exc:  # e.g. a neighbour day's file that cannot be read
                detail = f"candles not checked: {_line(exc)}"
                rows.append(rp.Check(key, rp.CANDLES, "candles", rp.ERROR, rp.PRESENT, detail=detail))
                continue
            rows += found
            if table is not None:
                one_minute[key] = (table, inputs)
        return rows, one_minute, keys

    async def _cross_source(
        self,
        day: dt.date,
        master: pa.Table,
        one_minute: dict[str, tuple[pa.Table, list[dict[str, Any]]]],
        klines: Any,
        facts: dict[str, Any],
    ) -> list[rp.Check]:
        from mdth_engine.validation.cross_source import KlinesUnavailable, compare, market_of

        columns = [
            "instrument_key",
            "venue",
            "instrument_type",
            "tardis_symbol",
            "tardis_exchange",
            "inverse",
        ]
        rows = {r["instrument_key"]: r for r in master.select(columns).to_pylist()}
        d0 = day_start_us(day)
        gate = asyncio.Semaphore(KLINE_CONCURRENCY)

        async def one(key: str, table: pa.Table, inputs: list[dict[str, Any]]) -> rp.Check | None:
            row = rows.get(key, {})
            market = market_of(row)
            if market is None:
                return None
            kind, symbol = market
            where = f"Binance {'spot' if kind == 'spot' else 'USD-M futures'} {symbol}"
            async with gate:
                try:
                    reference = await klines.day(kind, symbol, d0)
                except KlinesUnavailable as exc:
                    return rp.Check(
                        key, rp.CANDLES, "cross_source", rp.WARN, rp.PRESENT, detail=f"not compared: {exc}"
                    )
            try:
                edges = await asyncio.to_thread(self._open_edges, day, key, inputs)
                facts_of = facts.get(row.get("tardis_exchange", ""))

                def ties(minutes: Any) -> Any:
                    return self._tie_prices(inputs, minutes)

                return await asyncio.to_thread(
                    compare, key, table, reference, d0, facts_of, edges, where, ties
                )
            except Exception as exc:
                detail = f"not compared: {_line(exc)}"
                return rp.Check(key, rp.CANDLES, "cross_source", rp.ERROR, rp.PRESENT, detail=detail)

        results = await asyncio.gather(*(one(k, t, i) for k, (t, i) in sorted(one_minute.items())))
        return [r for r in results if r is not None]

    def _tie_prices(self, inputs: list[dict[str, Any]], minutes: Any) -> dict[int, tuple[Any, Any]]:
        """Per minute start: prices of the trades at its first and at its last exchange timestamp (ranged reads
        of those minutes only, from the trades files the candles were built from)."""
        import numpy as np

        from mdth_engine.reader.scan import read_windows

        windows = [(int(m), int(m) + 60_000_000) for m in minutes]
        parts: list[list[Any]] = [[] for _ in windows]
        for item in inputs:
            if item.get("data_type") != "trades":
                continue
            tables = read_windows(self.ctx.store, item["path"], windows, columns=["timestamp", "price"])
            for i, table in enumerate(tables):
                parts[i].append(table)
        out = {}
        for (start, _), pieces in zip(windows, parts, strict=True):
            if not pieces:
                continue
            table = pa.concat_tables(pieces)
            ts = table["timestamp"].cast(pa.int64()).to_numpy()
            price = table["price"].cast(pa.float64()).fill_null(float("nan")).to_numpy()
            keep = ~np.isnan(price)
            ts, price = ts[keep], price[keep]
            if ts.size:
                out[start] = (price[ts == ts.min()], price[ts == ts.max()])
        return out

    def _open_edges(self, day: dt.date, key: str, inputs: list[dict[str, Any]]) -> tuple[bool, bool]:
        """Whether the day's first/last minute may lack trades because the neighbour day is not in the lake."""
        roles = {i.get("role") for i in inputs if i.get("data_type") == "trades"}
        edges = []
        for role, when in (
            ("previous_day", day - dt.timedelta(days=1)),
            ("next_day", day + dt.timedelta(days=1)),
        ):
            absent = self.ctx.store.stat(layout.raw_path(when, "trades", key)) is None
            edges.append(role not in roles and absent)
        return edges[0], edges[1]

    # -- the report ------------------------------------------------------------------------------------------
    def _finish(
        self,
        unit: WorkUnit,
        request: Request,
        groups: list[str],
        checks: list[rp.Check],
        master: pa.Table | None,
        covered: set[tuple[str, str]],
        candle_keys: set[str],
    ) -> UnitResult:
        import mdth_engine

        day = unit.day
        now = dt.datetime.now(dt.UTC)
        table = rp.to_table(day, checks, now)
        mine = rp.summarize(day, table)  # this run's checks: its outcome, whatever earlier runs left
        old = rp.read_report(self.ctx.store, day) if master is not None else None
        if old is not None and old.num_rows:
            keep = self._kept(old, covered, candle_keys, master, _instrument_selective(request))
            if keep is not None and keep.num_rows:
                table = rp.sort_rows(pa.concat_tables([table, keep]))
        selection = {
            k: v
            for k, v in request.to_dict().items()
            if k in ("venues", "types", "data_types", "symbols", "bases", "max_instruments") and v
        }
        extra = {
            "validated_at": now.isoformat(timespec="seconds"),
            "checks": groups,
            "selection": selection,
            "mdth_version": mdth_engine.__version__,
        }
        summary = rp.summarize(day, table, extra)
        provenance = {
            "data_type": "validation_report",
            "status": summary["status"],
            "errors": summary["counts"][rp.ERROR],
            "warnings": summary["counts"][rp.WARN],
            "checks": ",".join(groups),
            "selection": selection,
        }
        written = rp.write_report(self.ctx.store, day, table, provenance, summary)
        errors, warnings = mine["counts"][rp.ERROR], mine["counts"][rp.WARN]
        result_extra = {
            "status": mine["status"],
            "errors": errors,
            "warnings": warnings,
            "classes": mine["classes"],
            "day_status": summary["status"],  # with the rows of earlier, wider runs this one did not re-check
        }
        if errors:
            reason = f"{errors} error(s), {warnings} warning(s); first: {mine['errors'][0]} (report: {unit.output})"
            return UnitResult(
                unit.unit_id,
                Outcome.FAILED,
                rows=table.num_rows,
                bytes=written.bytes,
                reason=reason,
                output=unit.output,
                extra=result_extra,
            )
        return UnitResult(
            unit.unit_id,
            Outcome.WRITTEN,
            rows=table.num_rows,
            bytes=written.bytes,
            output=unit.output,
            extra=result_extra,
        )

    @staticmethod
    def _kept(
        old: pa.Table,
        covered: set[tuple[str, str]],
        candle_keys: set[str],
        master: pa.Table | None,
        selective: bool,
    ) -> pa.Table | None:
        """Rows of an earlier report this run did not re-check (other instruments or data types)."""
        keys, types = old["instrument_key"].to_pylist(), old["data_type"].to_pylist()
        listed = set(master["instrument_key"].to_pylist()) if master is not None else set()
        mask = [
            bool(k)
            and (k, t) not in covered
            and not (t == rp.CANDLES and k in candle_keys)
            and (selective or k in listed)
            for k, t in zip(keys, types, strict=True)
        ]
        if not any(mask):
            return None
        return old.filter(pc.fill_null(pa.array(mask, pa.bool_()), False))


def make_stage(ctx: Any) -> ValidateStage:
    return ValidateStage(ctx)
