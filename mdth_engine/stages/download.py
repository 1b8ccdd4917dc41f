"""Download: Tardis dataset files into the lake, one verified Parquet file per (day, data type, instrument).

A unit is (day, exchange, data type, dataset symbol). It is fetched with the official client into a spool
folder, converted in bounded memory, and published atomically with its provenance. A unit whose outputs carry
the footer of the same source is skipped, so any run can be repeated after a crash and only finishes what is
missing. Empty source days become empty files (rows=0); 401/404/not-exported stay outcomes, never files.
Malformed lines kept with ``--on-bad-rows quarantine`` are published to the lake's quarantine/ folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from mdth_engine.core.errors import UsageError
from mdth_engine.core.keys import parse_key
from mdth_engine.core.schemas import DATA_TYPES, SCHEMA_VERSION, schema_for
from mdth_engine.sources import tardis
from mdth_engine.stages.base import Outcome, Request, UnitResult, WorkUnit
from mdth_engine.stages.instruments import parse_types, parse_venues, read_instruments
from mdth_engine.storage import layout

# What `mdth download` fetches when --data-types is not given (the full depth feeds are opt-in: they are large).
DEFAULT_DATA_TYPES = ("trades", "book_snapshot_5", "derivative_ticker", "liquidations", "options_chain")
ROW_GROUP_ROWS = 64 * 1024
PAGE_ROWS = 1024  # with the page index, a sparse read of a few minutes of a busy trades day fetches ~4% of it
# Event data is read in time windows (sparse reads, next-day pickup); state data is read whole by the candles.
WINDOWED_DATA_TYPES = frozenset({"trades", "liquidations"})
TRUNCATED_RETRIES = 3  # a cut-off gzip is fetched again this many times


def tick_write_options(data_type: str, schema: pa.Schema) -> dict[str, Any]:
    """The Parquet layout of a tick file: self-contained small pages for windowed reads of event data,
    dictionary pages (smaller files, less zstd work) for state data such as order books."""
    encodings = {f.name: "DELTA_BINARY_PACKED" for f in schema if pa.types.is_timestamp(f.type)}
    encodings |= {f.name: "DELTA_BYTE_ARRAY" for f in schema if pa.types.is_string(f.type)}
    if data_type in WINDOWED_DATA_TYPES:
        return {
            "row_group_size": ROW_GROUP_ROWS,
            "max_rows_per_page": PAGE_ROWS,
            "column_encoding": encodings,
        }
    dictionary = [f.name for f in schema if f.name not in encodings]
    return {"row_group_size": ROW_GROUP_ROWS, "column_encoding": encodings, "use_dictionary": dictionary}


def parse_data_types(items: tuple[str, ...] | list[str]) -> list[str]:
    if not items:
        return list(DEFAULT_DATA_TYPES)
    if list(items) == ["all"]:
        return list(DATA_TYPES)
    unknown = [t for t in items if t not in DATA_TYPES]
    if unknown:
        raise UsageError(f"unknown data type {unknown[0]!r}; known: {', '.join(DATA_TYPES)} (or 'all')")
    return list(dict.fromkeys(items))


def select_instruments(table: pa.Table, request: Request, day: dt.date) -> pa.Table:
    """The day's master narrowed by the request's selectors; a selector that matches nothing is a usage error."""
    mask = pc.is_valid(table["instrument_key"])
    if request.venues:
        venues = parse_venues(request.venues)
        mask = pc.and_(mask, pc.is_in(table["venue"], pa.array(venues)))
        present = set(table.filter(mask)["venue"].to_pylist())
        for venue in venues:
            if venue not in present:
                raise UsageError(
                    f"{venue} has no instruments on {day} (before the venue's data starts, or not built)"
                )
    if request.types:
        mask = pc.and_(mask, pc.is_in(table["instrument_type"], pa.array(parse_types(request.types))))
    if request.bases:
        mask = pc.and_(mask, pc.is_in(table["base_asset"], pa.array([b.upper() for b in request.bases])))
    if request.symbols:
        wanted_keys, wanted_symbols = [], []
        for item in request.symbols:
            if item.count(":") == 2:
                wanted_keys.append(str(parse_key(item)))
            else:
                wanted_symbols.append(item.upper())
        known = set(table["instrument_key"].to_pylist())
        for key in wanted_keys:
            if key not in known:
                from mdth_engine.core.keys import closest_keys

                near = closest_keys(key, known)
                hint = f"; did you mean {', '.join(near)}?" if near else ""
                raise UsageError(f"{key} is not in the instrument master of {day}{hint}")
        symbols = {str(s).upper() for s in table["tardis_symbol"].to_pylist() if s}
        for symbol in wanted_symbols:
            if symbol not in symbols:
                import difflib

                near = difflib.get_close_matches(symbol, sorted(symbols), n=5)
                hint = f"; did you mean {', '.join(near)}?" if near else ""
                raise UsageError(
                    f"Tardis symbol {symbol} is not in the instrument master of {day}{hint} "
                    "(or give a canonical key, e.g. BINANCE:SPOT_PAIR:BTC-USDT)"
                )
        hit = pc.or_(
            pc.is_in(table["instrument_key"], pa.array(wanted_keys, pa.string())),
            pc.is_in(pc.utf8_upper(table["tardis_symbol"]), pa.array(wanted_symbols, pa.string())),
        )
        mask = pc.and_(mask, hit)
    selected = table.filter(pc.fill_null(mask, False))
    if request.max_instruments:  # per venue, so a multi-venue request keeps every venue
        first: dict[str, int] = {}
        venues = selected["venue"].to_pylist()  # the master is sorted by key, so each venue is contiguous
        keep = [i - first.setdefault(v, i) < request.max_instruments for i, v in enumerate(venues)]
        selected = selected.filter(pa.array(keep, pa.bool_()))
    return selected


class DownloadStage:
    name = "download"

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    # -- planning --------------------------------------------------------------------------------------------------
    def plan(self, request: Request) -> list[WorkUnit]:
        """One unit per (day, exchange, data type, dataset symbol), in a deterministic order."""
        data_types = parse_data_types(request.data_types)
        units: list[WorkUnit] = []
        for day in request.days():
            master = read_instruments(self.ctx.store, layout.instruments_path(day))
            if master is None:
                raise UsageError(
                    f"no instrument master for {day}; build it first: mdth instruments --start {day} "
                    "(mdth pipeline does both)"
                )
            chosen = select_instruments(master, request, day)
            units += self._units_for_day(day, chosen, data_types, request)
        return units

    def _units_for_day(
        self, day: dt.date, chosen: pa.Table, data_types: list[str], request: Request
    ) -> list[WorkUnit]:
        from mdth_engine.jobs.estimate import PRESENT_BYTES, estimate_bytes, present_keys

        force = bool(request.options.get("force"))

        by_source: dict[tuple[str, str, str], dict[str, Any]] = {}
        for row in chosen.to_pylist():
            for data_type in data_types:
                if data_type not in (row["data_types"] or []):
                    continue
                grouped = row["instrument_type"] == "OPTION_CHAIN"
                if grouped != (data_type == "options_chain"):
                    continue  # chains carry options_chain only; single instruments never do
                source = (row["tardis_exchange"], data_type, row["tardis_symbol"])
                entry = by_source.setdefault(source, {"outputs": {}, "row": row})
                entry["outputs"][row["instrument_key"]] = layout.raw_path(
                    day, data_type, row["instrument_key"]
                )
        units = []
        for (exchange, data_type, symbol), entry in sorted(by_source.items()):
            row = entry["row"]
            outputs = dict(sorted(entry["outputs"].items()))
            present = set() if force else present_keys(self.ctx.store, day, data_type)
            if present.issuperset(outputs):  # skipped when it runs (unless a file turns out damaged)
                est = PRESENT_BYTES
            else:
                est = estimate_bytes(self.ctx.store, data_type, row["instrument_type"], exchange, symbol, day)
            units.append(
                WorkUnit(
                    self.name,
                    f"{day.isoformat()}/{exchange}/{data_type}/{symbol}",
                    day,
                    next(iter(outputs.values())),
                    est_bytes=int(est),
                    params={
                        "exchange": exchange,
                        "data_type": data_type,
                        "symbol": symbol,
                        "outputs": outputs,
                        "force": force,
                        "on_bad_rows": request.options.get("on_bad_rows", "fail"),
                    },
                )
            )
        return units

    # -- running ---------------------------------------------------------------------------------------------------
    async def run_unit(self, unit: WorkUnit) -> UnitResult:
        p = unit.params
        settings = self.ctx.settings
        url = tardis.dataset_url(settings, p["exchange"], p["data_type"], unit.day, p["symbol"])
        outputs: dict[str, str] = p["outputs"]
        if not p.get("force") and await asyncio.to_thread(self._present, outputs, url):
            return UnitResult(unit.unit_id, Outcome.SKIPPED, output=unit.output)
        attempt = 0
        while True:
            attempt += 1
            try:
                src = await tardis.download_file(
                    settings,
                    p["exchange"],
                    p["data_type"],
                    unit.day,
                    p["symbol"],
                    self.ctx.spool_dir,
                    timeout_s=settings.unit_timeout_s,
                )
            except tardis.SourceUnavailable as exc:
                return UnitResult(unit.unit_id, Outcome(exc.outcome), reason=str(exc), output=unit.output)
            try:
                return await asyncio.to_thread(self._convert_and_publish, unit, src, url)
            except Exception as exc:
                from mdth_engine.stages.convert import SourceError

                if isinstance(exc, SourceError) and exc.retryable and attempt < TRUNCATED_RETRIES:
                    await asyncio.sleep(min(2**attempt, 30) * 0.5)
                    continue
                raise
            finally:
                with contextlib.suppress(FileNotFoundError):
                    src.unlink()

    def _present(self, outputs: dict[str, str], url: str) -> bool:
        """Every output exists with the footer of this source and the current schema."""
        from mdth_engine.storage.parquet import read_provenance

        for path in outputs.values():
            try:
                prov = read_provenance(self.ctx.store, path)
            except Exception:
                return False  # unreadable footer: rewrite
            if not prov or prov.get("source_url") != url or prov.get("schema_version") != SCHEMA_VERSION:
                return False
        return True

    def _convert_and_publish(self, unit: WorkUnit, src: Path, url: str) -> UnitResult:
        from mdth_engine.stages.convert import convert_file
        from mdth_engine.storage.parquet import ParquetPublisher

        p = unit.params
        data_type: str = p["data_type"]
        outputs: dict[str, str] = p["outputs"]
        schema = schema_for(data_type)
        quarantine = self.ctx.spool_dir / "quarantine" / f"{src.name}.bad.csv"
        with contextlib.ExitStack() as stack:
            publishers: dict[str, Any] = {}

            def publisher(key: str) -> Any:
                if key not in publishers:
                    publishers[key] = stack.enter_context(
                        ParquetPublisher(
                            self.ctx.store,
                            outputs[key],
                            schema,
                            {"data_type": data_type, "instrument_key": key, "source_url": url},
                            **tick_write_options(data_type, schema),
                        )
                    )
                return publishers[key]

            single = next(iter(outputs)) if data_type != "options_chain" else None

            def sink(group: str | None, batch: pa.RecordBatch) -> None:
                key = group or single
                if key in outputs:  # a grouped file holds every underlying; keep the selected ones
                    publisher(key).write_batch(batch)

            result = convert_file(
                src,
                data_type,
                exchange=p["exchange"],
                symbol=p["symbol"],
                sink=sink,
                on_bad_rows=p.get("on_bad_rows", "fail"),
                quarantine_path=quarantine,
            )
            for key in outputs:  # every expected output gets a file, empty when the source had no rows for it
                publisher(key)
            source = {
                "source_bytes": result.source_bytes,
                "source_sha256": result.source_sha256,
                "bad_rows": result.bad_rows,
            }
            for pub in publishers.values():
                pub.add_provenance(source)
            # published before the Parquet files: a run that dies in between rewrites both, never loses the lines
            kept = self._publish_quarantine(unit, result.quarantine_path, single)
        rows = sum(pub.rows for pub in publishers.values())
        outcome = Outcome.WRITTEN if rows else Outcome.EMPTY
        total = sum(pub.written.bytes for pub in publishers.values() if pub.written)
        reason = f"{result.bad_rows} bad rows quarantined in {kept}" if kept else ""
        return UnitResult(
            unit.unit_id,
            outcome,
            rows=rows,
            bytes=total,
            output=unit.output,
            reason=reason,
            extra=source,
        )

    def _publish_quarantine(self, unit: WorkUnit, local: Path | None, key: str | None) -> str:
        """Move the bad lines from the spool (removed after the run) into the lake; return where they are.

        A clean rewrite of a source that once had bad lines removes their stale file."""
        p = unit.params
        if p.get("on_bad_rows") != "quarantine":
            return ""
        name = key or f"{p['exchange']}-{p['symbol'].replace(':', '-').replace('/', '-')}"
        path = layout.quarantine_path(unit.day, p["data_type"], name)
        if local is None:
            self.ctx.store.delete(path)
            return ""
        try:
            self.ctx.store.put_file(path, local)
        finally:
            local.unlink(missing_ok=True)
        return self.ctx.store.join(path)


def make_stage(ctx: Any) -> DownloadStage:
    return DownloadStage(ctx)
