"""Upload: candle files into the warehouse, one unit per (day, timeframe), each replacing that day's partition.

Whole-day replace per table is the unit of exactly-once: every instrument file of the day and timeframe is
loaded together and the day's rows in ``candles_{tf}`` become exactly those files (an instrument whose file
left the lake leaves the table too). A unit is skipped when the warehouse's last load record for (table, day)
lists the same files at the same generations (one listing, no file reads); ``force`` reloads anyway.
A day with no candle files is ``not_found`` and the warehouse is left untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import shutil
import threading
import uuid
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from mdth_engine.core.timeframes import TIMEFRAMES, US_PER_DAY, parse_timeframes
from mdth_engine.stages.base import Outcome, Request, UnitResult, WorkUnit
from mdth_engine.storage import layout

NAME = "upload"
_ROW_BYTES_ESTIMATE = 400  # one candle row of ~45 columns, for shard balancing only


def unit_id(day: dt.date, timeframe: str) -> str:
    return f"{day.isoformat()}/{timeframe}"


class WarehouseStage:
    """Plans (day, timeframe) units and loads each into the configured warehouse."""

    name = NAME

    def __init__(self, ctx: Any, warehouse: Any = None) -> None:
        self.ctx = ctx
        self._warehouse = warehouse
        self._lock = threading.Lock()

    @property
    def warehouse(self) -> Any:
        """Opened on first use from the settings' warehouse URL (cheap: nothing connects until a load)."""
        if self._warehouse is None:
            with self._lock:
                if self._warehouse is None:
                    from mdth_engine.warehouse import open_warehouse

                    settings = self.ctx.settings
                    self._warehouse = open_warehouse(
                        settings.warehouse_url(), default_project=settings.gcp_project
                    )
        return self._warehouse

    def plan(self, request: Request) -> list[WorkUnit]:
        """Every (day, timeframe) of the request, all timeframes when none is named; the URL is checked here."""
        from mdth_engine.warehouse import parse_warehouse_url, table_name

        parse_warehouse_url(self.ctx.settings.warehouse_url(), default_project=self.ctx.settings.gcp_project)
        timeframes = (
            parse_timeframes(",".join(request.timeframes)) if request.timeframes else list(TIMEFRAMES)
        )
        force = bool(request.options.get("force"))
        units = []
        for day in request.days():
            for tf in timeframes:
                rows_per_instrument = US_PER_DAY // TIMEFRAMES[tf]
                units.append(
                    WorkUnit(
                        stage=NAME,
                        unit_id=unit_id(day, tf),
                        day=day,
                        output=f"{table_name(tf)}${day:%Y%m%d}",
                        est_bytes=rows_per_instrument * _ROW_BYTES_ESTIMATE,
                        params={"timeframe": tf, "force": force},
                    )
                )
        return units

    async def run_unit(self, unit: WorkUnit) -> UnitResult:
        from mdth_engine.warehouse import table_name

        tf = unit.params["timeframe"]
        table = table_name(tf)
        sources = await asyncio.to_thread(self._list_sources, unit.day, tf)
        if not sources:
            return UnitResult(
                unit.unit_id,
                Outcome.NOT_FOUND,
                reason=f"no {tf} candle files for {unit.day} in the lake (run mdth candles first)",
                output=unit.output,
            )
        from mdth_engine.warehouse import fingerprint

        digest = fingerprint(sources)
        if not unit.params.get("force"):
            record = await asyncio.to_thread(self.warehouse.last_load, table, unit.day)
            if record is not None and record.fingerprint == digest:
                return UnitResult(
                    unit.unit_id,
                    Outcome.SKIPPED,
                    output=unit.output,
                    extra={"job_id": record.job_id, "table": table, "rows_held": record.rows},
                )
        spool = Path(self.ctx.spool_dir) / "upload" / f"{table}-{unit.day:%Y%m%d}-{uuid.uuid4().hex[:8]}"
        try:
            batch = await asyncio.to_thread(self._prepare, table, tf, unit.day, sources, digest, spool)
            result = await asyncio.to_thread(self.warehouse.load_day, batch)
        finally:
            await asyncio.to_thread(shutil.rmtree, spool, True)
        return UnitResult(
            unit.unit_id,
            Outcome.WRITTEN,
            rows=result.rows,
            bytes=batch.bytes,
            output=unit.output,
            extra={
                "job_id": result.job_id,
                "table": table,
                "files": len(batch.files),
                "added_columns": result.added_columns,
            },
        )

    # -- helpers (run in threads) --------------------------------------------------------------------------

    def _list_sources(self, day: dt.date, tf: str) -> list[Any]:
        from mdth_engine.warehouse import SourceFile

        prefix = layout.candles_dir(day, tf) + "/"
        out = []
        for info in self.ctx.store.list(prefix):
            rest = info.path[len(prefix) :]
            if "/" in rest or not rest.endswith(".parquet"):
                continue
            generation = info.generation or f"{info.updated.timestamp():.6f}"
            out.append(SourceFile(info.path, rest.removesuffix(".parquet"), info.size, str(generation)))
        return sorted(out, key=lambda s: s.instrument_key)

    def _prepare(
        self, table: str, tf: str, day: dt.date, sources: list[Any], digest: str, spool: Path
    ) -> Any:
        """Local copies (downloaded when the lake is remote), footer rows and schemas, content hashes."""
        from mdth_engine.storage.parquet import provenance_of
        from mdth_engine.warehouse import DayBatch, WarehouseError
        from mdth_engine.warehouse.schema import union_schema

        store = self.ctx.store
        spool.mkdir(parents=True, exist_ok=True)
        schemas = []
        for source in sources:
            local = store.local_path(source.path)
            if local is None:
                local = spool / f"{source.instrument_key}.parquet"
                with store.open_read(source.path) as reader, open(local, "wb") as out:
                    shutil.copyfileobj(reader, out, 1024 * 1024)
            source.local = Path(local).absolute()
            source.sha256 = _sha256(source.local)
            try:
                meta = pq.read_metadata(source.local)
            except (OSError, ValueError) as exc:
                raise WarehouseError(f"{source.path} is not a readable Parquet file: {exc}") from None
            key = provenance_of(meta).get("instrument_key")
            if key and key != source.instrument_key:
                raise WarehouseError(f"{source.path} holds {key} by its footer, not {source.instrument_key}")
            source.rows = meta.num_rows
            schemas.append((source.path, meta.schema.to_arrow_schema()))
        return DayBatch(
            table=table,
            timeframe=tf,
            day=day,
            files=sources,
            schema=union_schema(schemas),
            fingerprint=digest,
            spool=spool,
            store=store,
        )

    def close(self) -> None:
        if self._warehouse is not None:
            with contextlib.suppress(Exception):
                self._warehouse.close()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


def make_stage(ctx: Any) -> WarehouseStage:
    return WarehouseStage(ctx)
