"""Candles: the seven timeframes of every instrument-day, with their features, from the ticks in the lake.

A unit is (day, instrument key): it reads trades, liquidations, derivative_ticker and book_snapshot_5 (an
OPTION_CHAIN key: its options_chain), whatever exists, plus the rows of the neighbour days' files whose
exchange ``timestamp`` belongs to this day (tick files are split by arrival time; only the row groups and
pages whose statistics say so are read), builds the dense-grid candles (``features.batch``) and writes one file per
timeframe. Each file's footer lists its inputs (path, rows, source hash or size+generation) and the feature
spec version: a unit whose outputs all list the current inputs and version is skipped.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from typing import Any

import pyarrow as pa

from mdth_engine.core.errors import UsageError
from mdth_engine.core.events import Event, Kind
from mdth_engine.core.timeframes import US_PER_DAY, day_start_us, parse_timeframes
from mdth_engine.stages.base import Outcome, Request, UnitResult, WorkUnit
from mdth_engine.stages.instruments import read_instruments
from mdth_engine.storage import layout

INSTRUMENT_INPUTS = ("trades", "liquidations", "derivative_ticker", "book_snapshot_5")
CHAIN_INPUTS = ("options_chain",)
# Columns the feature engine reads (features/batch.py); None = every column. The rest is never fetched.
INPUT_COLUMNS: dict[str, list[str] | None] = {
    "trades": ["timestamp", "local_timestamp", "side", "price", "amount"],
    "liquidations": ["timestamp", "local_timestamp", "side", "price", "amount"],
    "derivative_ticker": None,
    "book_snapshot_5": None,
    "options_chain": [
        "timestamp",
        "local_timestamp",
        "symbol",
        "type",
        "expiration",
        "strike_price",
        "delta",
        "mark_iv",
    ],
}
CANDLE_ROW_GROUP_ROWS = 1440  # 6 hours of 15s candles, a whole day of 1m: few row groups, a small footer
_WHOLE = (-(2**62), 2**62)
_SHOWN = 5


def inputs_for(instrument_type: str) -> tuple[str, ...]:
    return CHAIN_INPUTS if instrument_type == "OPTION_CHAIN" else INSTRUMENT_INPUTS


def listed_files(store: Any, day: dt.date, data_type: str) -> dict[str, int]:
    """instrument key -> bytes of the day's files of one data type, from one listing."""
    prefix = layout.raw_dir(day, data_type) + "/"
    out: dict[str, int] = {}
    for info in store.list(prefix):
        name = info.path[len(prefix) :]
        if "/" not in name and name.endswith(".parquet"):
            out[name[: -len(".parquet")]] = info.size
    return out


class CandlesStage:
    name = "candles"

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    # -- planning --------------------------------------------------------------------------------------------
    def plan(self, request: Request) -> list[WorkUnit]:
        """One unit per (day, instrument with tick data in the lake), in a deterministic order."""
        from mdth_engine.stages.download import select_instruments

        timeframes = parse_timeframes(",".join(request.timeframes))
        force = bool(request.options.get("force"))
        units: list[WorkUnit] = []
        for day in request.days():
            master = read_instruments(self.ctx.store, layout.instruments_path(day))
            if master is None:
                raise UsageError(
                    f"no instrument master for {day}; build it and download ticks first: "
                    f"mdth pipeline --date {day}"
                )
            chosen = select_instruments(master, request, day)
            kinds = sorted({k for t in set(chosen["instrument_type"].to_pylist()) for k in inputs_for(t)})
            present = {kind: listed_files(self.ctx.store, day, kind) for kind in kinds}
            without: list[str] = []
            for key, instrument_type in zip(
                chosen["instrument_key"].to_pylist(), chosen["instrument_type"].to_pylist(), strict=True
            ):
                sizes = [present[k][key] for k in inputs_for(instrument_type) if key in present[k]]
                if not sizes:
                    without.append(key)
                    continue
                units.append(
                    WorkUnit(
                        self.name,
                        f"{day.isoformat()}/{key}",
                        day,
                        layout.candles_path(day, timeframes[0], key),
                        est_bytes=sum(sizes),
                        params={
                            "key": key,
                            "inputs": list(inputs_for(instrument_type)),
                            "timeframes": timeframes,
                            "force": force,
                        },
                    )
                )
            if without:
                self._warn_no_data(day, without)
        return units

    def _warn_no_data(self, day: dt.date, keys: list[str]) -> None:
        shown = ", ".join(keys[:_SHOWN]) + (f" and {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else "")
        message = (
            f"{day}: no tick data in the lake for {len(keys)} selected instrument(s) ({shown}); no candles"
        )
        self.ctx.sink(Event(Kind.WARNING, self.name, job=self.ctx.job_id, message=message))

    # -- running ---------------------------------------------------------------------------------------------
    async def run_unit(self, unit: WorkUnit) -> UnitResult:
        return await asyncio.to_thread(self._run, unit)

    def _run(self, unit: WorkUnit) -> UnitResult:
        from mdth_engine.features.spec import FEATURE_SPEC_VERSION

        p = unit.params
        key: str = p["key"]
        outputs = {tf: layout.candles_path(unit.day, tf, key) for tf in p["timeframes"]}
        inputs = self.input_files(unit.day, key, p["inputs"])
        if not any(item["role"] == "day" for item in inputs):
            return UnitResult(
                unit.unit_id,
                Outcome.NOT_FOUND,
                reason=f"no tick data for {key} on {unit.day} in the lake (download it first)",
                output=unit.output,
            )
        if not p.get("force") and self._present(outputs, inputs, FEATURE_SPEC_VERSION):
            return UnitResult(unit.unit_id, Outcome.SKIPPED, output=unit.output)
        tables, input_rows = self._read_inputs(unit.day, p["inputs"], inputs)
        return self._build_and_write(unit, key, outputs, inputs, tables, input_rows, FEATURE_SPEC_VERSION)

    def input_files(self, day: dt.date, key: str, kinds: list[str]) -> list[dict[str, Any]]:
        """The files this unit reads, as recorded in its outputs, in arrival order per data type.

        The day's file, and a neighbour day's file when its footer statistics say it may hold rows stamped
        this day: the next day's first rows (stamped before midnight, arrived after), rarely the previous
        day's last ones (an exchange clock ahead of the receiver). Neighbours count only when the day's own
        file exists: without it, a few rows around midnight would pass for a whole day of data.
        """
        from mdth_engine.reader.footer import FOOTERS

        store = self.ctx.store
        start = day_start_us(day)
        out: list[dict[str, Any]] = []
        for kind in kinds:
            if store.stat(layout.raw_path(day, kind, key)) is None:
                continue
            for role, when in (
                ("previous_day", day - dt.timedelta(days=1)),
                ("day", day),
                ("next_day", day + dt.timedelta(days=1)),
            ):
                path = layout.raw_path(when, kind, key)
                if role != "day" and store.stat(path) is None:
                    continue
                footer = FOOTERS.get(store, path)
                if role != "day" and not may_hold(footer, start, start + US_PER_DAY):
                    continue
                prov = footer.provenance()
                item: dict[str, Any] = {
                    "data_type": kind,
                    "role": role,
                    "path": path,
                    "rows": footer.num_rows,
                }
                if prov.get("source_sha256"):
                    item["source_sha256"] = prov["source_sha256"]
                else:
                    item["size"], item["generation"] = footer.size, footer.generation
                out.append(item)
        return out

    def _present(self, outputs: dict[str, str], inputs: list[dict[str, Any]], version: str) -> bool:
        """Every output exists and its footer lists exactly these inputs and this feature spec version."""
        from mdth_engine.storage.parquet import read_provenance

        for path in outputs.values():
            try:
                prov = read_provenance(self.ctx.store, path)
            except Exception:
                return False  # unreadable footer: rebuild
            if not prov or prov.get("feature_spec_version") != version:
                return False
            try:
                if json.loads(prov.get("inputs") or "null") != inputs:
                    return False
            except ValueError:
                return False
        return True

    def _read_inputs(
        self, day: dt.date, kinds: list[str], inputs: list[dict[str, Any]]
    ) -> tuple[dict[str, pa.Table | None], int]:
        """Each input type as one table in arrival order: the day's file, then next-day rows stamped this day."""
        from mdth_engine.reader.scan import read_windows

        store = self.ctx.store
        tables: dict[str, pa.Table | None] = {}
        rows = 0
        day_window = (day_start_us(day), day_start_us(day) + US_PER_DAY)
        for kind in kinds:
            parts = []
            for item in inputs:
                if item["data_type"] != kind:
                    continue
                window = _WHOLE if item["role"] == "day" else day_window
                (table,) = read_windows(store, item["path"], [window], columns=INPUT_COLUMNS[kind])
                parts.append(table)
                rows += table.num_rows
            tables[kind] = pa.concat_tables(parts) if parts else None
        return tables, rows

    def _build_and_write(
        self,
        unit: WorkUnit,
        key: str,
        outputs: dict[str, str],
        inputs: list[dict[str, Any]],
        tables: dict[str, pa.Table | None],
        input_rows: int,
        version: str,
    ) -> UnitResult:
        from mdth_engine.features.batch import build_candles
        from mdth_engine.features.spec import candle_schema
        from mdth_engine.storage.parquet import write_table

        built = build_candles(
            unit.day,
            trades=tables.get("trades"),
            liquidations=tables.get("liquidations"),
            derivative_ticker=tables.get("derivative_ticker"),
            book=tables.get("book_snapshot_5"),
            options_chain=tables.get("options_chain"),
            timeframes=list(outputs),
        )
        schema = candle_schema()
        rows = size = 0
        for timeframe, path in outputs.items():
            written = write_table(
                self.ctx.store,
                path,
                built[timeframe],
                {
                    "data_type": "candles",
                    "instrument_key": key,
                    "timeframe": timeframe,
                    "feature_spec_version": version,
                    "inputs": inputs,
                },
                schema=schema,
                row_group_size=CANDLE_ROW_GROUP_ROWS,
                spool_dir=self.ctx.spool_dir,
            )
            rows += written.rows
            size += written.bytes
        return UnitResult(
            unit.unit_id,
            Outcome.WRITTEN,
            rows=rows,
            bytes=size,
            output=unit.output,
            extra={"input_rows": input_rows, "inputs": len(inputs)},
        )


def may_hold(footer: Any, start_us: int, end_us: int) -> bool:
    """Whether a tick file's row-group statistics allow rows with exchange ``timestamp`` in [start, end)."""
    try:
        column = footer.column("timestamp")
    except KeyError:
        return False
    for group in footer.row_groups:
        chunk = group.chunks[column]
        if not group.num_rows:
            continue
        if (
            chunk.min_us is None
            or chunk.max_us is None
            or (chunk.min_us < end_us and chunk.max_us >= start_us)
        ):
            return True
    return False


def make_stage(ctx: Any) -> CandlesStage:
    return CandlesStage(ctx)
