"""The raw-event journal: live events into rolling Parquet files under ``streaming/``, rolled into the by_date
layout once their UTC day is over.

Events are buffered per (data type, instrument) and cut into a chunk every ``flush_seconds`` (or sooner when
the buffer is large); a writer task turns each chunk into part files, one per (data type, instrument, UTC day
of ``local_timestamp``), each written atomically (temp file, then rename): a crash loses at most the events of
the last few seconds and never leaves a half-written part; a clean stop writes everything. The hand-off queue
of chunks is bounded and blocks (the persist policy): when the store is slower than the feed, the feed waits.

Part files hold the lake's tick schema of their data type (``core.schemas``) and sit at
``streaming/raw/day-{D}/data_type-{T}/{instrument_key}/part-{first_local_us}-{session}-{seq}.parquet``.
Disconnects and reconnects go to ``streaming/raw/day-{D}/status/`` parts. ``roll_day`` merges a finished day
into ``raw_tick_data/by_date/...`` (sorted by ``local_timestamp``, the disconnect gaps of that day in the
footer as ``live_gaps``), only where no file exists yet (a Tardis download stays the authority and later
replaces a live capture), then deletes the parts it merged.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import os
import time
import uuid
from typing import Any

import numpy as np
import pyarrow as pa

from mdth_engine.core.schemas import SCHEMAS
from mdth_engine.core.timeframes import US_PER_DAY
from mdth_engine.live.events import Disconnect
from mdth_engine.storage import layout

FLUSH_SECONDS = 2.0
MAX_BUFFERED = 200_000  # events buffered before a chunk is cut early
MAX_PENDING_CHUNKS = 4
STATUS_SCHEMA = pa.schema(
    [
        pa.field("local_timestamp", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("event", pa.string()),
        pa.field("instrument_keys", pa.string()),
        pa.field("detail", pa.string()),
    ]
)
_UNIX = dt.date(1970, 1, 1)


def _day(us: int) -> dt.date:
    return _UNIX + dt.timedelta(days=us // US_PER_DAY)


# -- rows -> tables -----------------------------------------------------------------------------------------


def _column(values: list[Any], typ: pa.DataType) -> pa.Array:
    if pa.types.is_dictionary(typ):
        return pa.array(values, type=pa.string()).dictionary_encode().cast(typ)
    return pa.array(values, type=typ)


def events_table(data_type: str, events: list[Any]) -> pa.Table:
    """Events of one data type as a table of the lake's tick schema (in the order given)."""
    schema = SCHEMAS[data_type]
    cols: dict[str, list[Any]] = {
        "timestamp": [e.timestamp for e in events],
        "local_timestamp": [e.local_timestamp for e in events],
    }
    if data_type in ("trades", "liquidations"):
        cols["id"] = [e.id or None for e in events]
        cols["side"] = [e.side for e in events]
        cols["price"] = [e.price for e in events]
        cols["amount"] = [e.amount for e in events]
    elif data_type == "book_snapshot_5":
        for level in range(5):
            cols[f"ask_price_{level + 1}"] = [e.ask_prices[level] for e in events]
            cols[f"ask_amount_{level + 1}"] = [e.ask_amounts[level] for e in events]
            cols[f"bid_price_{level + 1}"] = [e.bid_prices[level] for e in events]
            cols[f"bid_amount_{level + 1}"] = [e.bid_amounts[level] for e in events]
    elif data_type == "book_ticker":
        cols["ask_amount"] = [e.ask_amount for e in events]
        cols["ask_price"] = [e.ask_price for e in events]
        cols["bid_price"] = [e.bid_price for e in events]
        cols["bid_amount"] = [e.bid_amount for e in events]
    elif data_type == "derivative_ticker":
        cols["funding_timestamp"] = [e.funding_timestamp for e in events]
        for name in (
            "funding_rate",
            "predicted_funding_rate",
            "open_interest",
            "last_price",
            "index_price",
            "mark_price",
        ):
            cols[name] = [getattr(e, name) for e in events]
    else:
        raise ValueError(f"no journal schema for {data_type!r}")
    arrays = []
    for field in schema:
        values = cols[field.name]
        if pa.types.is_floating(field.type):
            arrays.append(pa.array(np.asarray(values, dtype=np.float64)))  # NaN stays NaN, as Tardis files
        elif pa.types.is_timestamp(field.type):
            arrays.append(pa.array(values, type=pa.int64()).cast(field.type))
        else:
            arrays.append(_column(values, field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def status_table(events: list[Any]) -> pa.Table:
    return pa.Table.from_pydict(
        {
            "local_timestamp": pa.array([e.local_timestamp for e in events], pa.int64()).cast(
                STATUS_SCHEMA.field("local_timestamp").type
            ),
            "event": ["disconnect" if type(e) is Disconnect else "connected" for e in events],
            "instrument_keys": [",".join(e.keys) for e in events],
            "detail": [getattr(e, "reason", "") or getattr(e, "url", "") for e in events],
        },
        schema=STATUS_SCHEMA,
    )


# -- the journal --------------------------------------------------------------------------------------------


class Journal:
    """Buffers events and writes them as part files; ``add`` is synchronous and cheap (one append each)."""

    def __init__(
        self,
        store: Any,
        source: str,
        *,
        flush_seconds: float = FLUSH_SECONDS,
        max_buffered: int = MAX_BUFFERED,
        max_pending: int = MAX_PENDING_CHUNKS,
        spool_dir: Any = None,
    ) -> None:
        self.store = store
        self.source = source
        self.session = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:8]}"
        self.flush_seconds = flush_seconds
        self.max_buffered = max_buffered
        self.spool_dir = spool_dir
        self._buffers: dict[tuple[str, str], list[Any]] = collections.defaultdict(list)
        self._status: list[Any] = []
        self._buffered = 0
        self._last_cut = time.monotonic()
        self._chunks: asyncio.Queue[dict[Any, list[Any]] | None] = asyncio.Queue(maxsize=max_pending)
        self._seq = 0
        self.counters = {"events": 0, "parts": 0, "rows_written": 0, "chunks": 0}
        self.days_seen: set[dt.date] = set()
        self.error: BaseException | None = None
        self._writing = False
        self.cuts = 0  # chunks handed to the writer
        self.written = 0  # chunks the writer finished

    def add(self, events: list[Any]) -> None:
        buffers = self._buffers
        for e in events:
            kind = e.data_type
            if kind:
                buffers[(kind, e.key)].append(e)
            else:
                self._status.append(e)
        self._buffered += len(events)
        self.counters["events"] += len(events)

    @property
    def due(self) -> bool:
        return self._buffered >= self.max_buffered or (
            self._buffered > 0 and time.monotonic() - self._last_cut >= self.flush_seconds
        )

    async def cut(self) -> None:
        """Hand the buffered events to the writer (waits while the writer is ``max_pending`` chunks behind)."""
        if self.error is not None:
            raise self.error
        self._last_cut = time.monotonic()
        if not self._buffered:
            return
        chunk: dict[Any, list[Any]] = dict(self._buffers)
        if self._status:
            chunk["status"] = self._status
        self._buffers = collections.defaultdict(list)
        self._status = []
        self._buffered = 0
        await self._chunks.put(chunk)
        self.cuts += 1

    async def run(self) -> None:
        """The writer task: writes chunks until ``close()``; a failure is kept and re-raised by ``cut``."""
        while True:
            chunk = await self._chunks.get()
            if chunk is None:
                return
            self._writing = True
            try:
                await asyncio.to_thread(self._write_chunk, chunk)
                self.written += 1
            except BaseException as exc:  # kept: the feed must stop rather than lose data silently
                self.error = exc
                raise
            finally:
                self._writing = False

    async def close(self) -> None:
        """Write everything still buffered, then stop the writer (the caller awaits the ``run`` task)."""
        await self.cut()
        await self._chunks.put(None)

    def _write_chunk(self, chunk: dict[Any, list[Any]]) -> None:
        from mdth_engine.storage.parquet import write_table

        self.counters["chunks"] += 1
        for group, events in chunk.items():
            if group == "status":
                table, data_type, key = status_table(events), "status", ""
            else:
                data_type, key = group
                table = events_table(data_type, events)
            local = table["local_timestamp"].cast(pa.int64()).to_numpy()
            days = local // US_PER_DAY
            for day_index in np.unique(days).tolist():
                day = _UNIX + dt.timedelta(days=int(day_index))
                part = table.filter(pa.array(days == day_index)) if len(np.unique(days)) > 1 else table
                first = int(part["local_timestamp"].cast(pa.int64())[0].as_py())
                self._seq += 1
                name = layout.streaming_part_name(first, self.session, self._seq)
                if data_type == "status":
                    folder = layout.streaming_status_dir(day)
                else:
                    folder = layout.streaming_part_dir(day, data_type, key)
                provenance = {
                    "data_type": data_type,
                    "instrument_key": key,
                    "source_url": f"live:{self.source}",
                }
                write_table(self.store, f"{folder}/{name}", part, provenance, spool_dir=self.spool_dir)
                self.days_seen.add(day)
                self.counters["parts"] += 1
                self.counters["rows_written"] += part.num_rows

    def stats(self) -> dict[str, Any]:
        return {**self.counters, "buffered": self._buffered, "pending_chunks": self._chunks.qsize()}


# -- rolling a finished day into by_date ------------------------------------------------------------------


def pending_days(store: Any) -> list[dt.date]:
    """UTC days that still have journal parts under ``streaming/raw``."""
    days = {layout.day_of(info.path) for info in store.list(layout.STREAMING_RAW_ROOT + "/")}
    return sorted(d for d in days if d is not None)


def roll_day(store: Any, day: dt.date, *, spool_dir: Any = None) -> list[dict[str, Any]]:
    """Merge the day's parts into by_date tick files (where none exists) and delete the merged parts.

    Returns one record per (data type, instrument): its path, rows, parts and outcome (written, or kept
    when a by_date file already exists: the parts are then left in place and the outcome says so).
    """
    import pyarrow.parquet as pq

    from mdth_engine.storage.parquet import read_provenance, write_table

    groups: dict[tuple[str, str], list[str]] = collections.defaultdict(list)
    status_parts: list[str] = []
    for info in store.list(layout.streaming_day_dir(day) + "/"):
        group = layout.streaming_group(day, info.path)
        if group == ("status", ""):
            status_parts.append(info.path)
        elif group is not None:
            groups[group].append(info.path)

    def read(path: str) -> pa.Table:
        local = store.local_path(path)
        if local is not None:
            return pq.read_table(local)
        from mdth_engine.storage.parquet import read_whole

        return read_whole(pa.BufferReader(store.get_bytes(path)))  # read_table's threads could abort at exit

    gaps = _gaps([read(p) for p in sorted(status_parts)])
    results = []
    for (data_type, key), parts in sorted(groups.items()):
        target = layout.raw_path(day, data_type, key)
        existing = read_provenance(store, target)
        if existing is not None and existing.get("live_parts") != _digest(parts):
            results.append(
                {
                    "path": target,
                    "outcome": "kept",
                    "parts": len(parts),
                    "reason": "a by_date file already exists",
                }
            )
            continue
        if existing is None:
            table = pa.concat_tables([read(p) for p in sorted(parts)])
            order = np.argsort(table["local_timestamp"].cast(pa.int64()).to_numpy(), kind="stable")
            table = table.take(pa.array(order))
            sources = sorted({(read_provenance(store, p) or {}).get("source_url", "") for p in parts[:1]})
            written = write_table(
                store,
                target,
                table,
                {
                    "data_type": data_type,
                    "instrument_key": key,
                    "source_url": sources[0] if sources else "live",
                    "live_parts": _digest(parts),
                    "live_gaps": gaps.get(key, []),
                },
                schema=SCHEMAS[data_type],
                spool_dir=spool_dir,
            )
            rows = written.rows
        else:
            rows = int(
                existing.get("rows", 0) or 0
            )  # written by an earlier roll that stopped before deleting
        for path in parts:
            store.delete(path)
        results.append({"path": target, "outcome": "written", "parts": len(parts), "rows": rows})
    if all(r["outcome"] == "written" for r in results):  # the gaps live on in the footers now
        for path in status_parts:
            store.delete(path)
    return results


def _digest(parts: list[str]) -> str:
    import hashlib

    return hashlib.sha256("\n".join(sorted(os.path.basename(p) for p in parts)).encode()).hexdigest()[:32]


def _gaps(tables: list[pa.Table]) -> dict[str, list[list[int]]]:
    """instrument key -> [[down_us, up_us or -1], ...] from status parts."""
    if not tables:
        return {}
    table = pa.concat_tables(tables)
    rows = sorted(
        zip(
            table["local_timestamp"].cast(pa.int64()).to_pylist(),
            table["event"].to_pylist(),
            table["instrument_keys"].to_pylist(),
            strict=True,
        )
    )
    down: dict[str, int] = {}
    out: dict[str, list[list[int]]] = collections.defaultdict(list)
    for at, event, keys in rows:
        for key in (keys or "").split(","):
            if not key:
                continue
            if event == "disconnect":
                down.setdefault(key, at)
            elif key in down:
                out[key].append([down.pop(key), at])
    for key, at in down.items():
        out[key].append([at, -1])
    return dict(out)


__all__ = ["Journal", "events_table", "pending_days", "roll_day"]
