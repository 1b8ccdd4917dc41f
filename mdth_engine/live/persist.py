"""Closed live bars into the warehouse: ``live_candles_{timeframe}`` tables, one row per (instrument, bar).

Live bars are provisional (a bar can miss late events or span a disconnect, and says so); the batch candles
built from the lake stay in ``candles_{timeframe}``, so a live table never disturbs a loaded day. Rows are
``day, instrument_key``, the candle columns of the feature spec, ``spans_disconnect, partial`` and
``inserted_at``. De-duplication: DuckDB has a primary key on (instrument_key, timestamp) and inserts with
``ON CONFLICT DO NOTHING``; BigQuery gets streaming inserts (``insertAll``) whose insert id is
``{instrument_key}|{timeframe}|{timestamp_us}``, so a retried request never doubles a bar. A table made
before a feature was added gains its column (nullable, older rows keep null) before the insert, in the same
transaction, as a candle load does.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import math
import time
from typing import Any

import pyarrow as pa

from mdth_engine.core.schemas import TS
from mdth_engine.features.incremental import rows_to_tables
from mdth_engine.live.events import Bar, Notice
from mdth_engine.live.queues import BoundedQueue

TABLE_PREFIX = "live_candles_"
FLUSH_SECONDS = 1.0
MAX_BATCH = 500
RETRY_MAX_S = 30.0


def live_table_name(timeframe: str) -> str:
    from mdth_engine.warehouse.schema import table_name

    return TABLE_PREFIX + table_name(timeframe).removeprefix("candles_")


def bars_table(bars: list[Bar]) -> dict[str, pa.Table]:
    """Bars as one table per timeframe: day, instrument_key, the candle columns, flags, inserted_at."""
    by_tf: dict[str, list[Bar]] = {}
    for bar in bars:
        by_tf.setdefault(bar.timeframe, []).append(bar)
    now = time.time_ns() // 1000
    out = {}
    for tf, items in by_tf.items():
        candles = rows_to_tables((tf, b.values) for b in items)[tf]
        days = [dt.date(1970, 1, 1) + dt.timedelta(days=b.timestamp // 86_400_000_000) for b in items]
        table = candles.add_column(
            0, "instrument_key", pa.array([b.instrument_key for b in items], pa.string())
        )
        table = table.add_column(0, "day", pa.array(days, pa.date32()))
        table = table.append_column(
            "spans_disconnect", pa.array([b.spans_disconnect for b in items], pa.bool_())
        )
        table = table.append_column("partial", pa.array([b.partial for b in items], pa.bool_()))
        table = table.append_column("inserted_at", pa.array([now] * len(items), pa.int64()).cast(TS))
        out[tf] = table
    return out


class BarWriter:
    """Writes batches of bars to the warehouse a URL names (``duckdb:///path`` or ``bigquery://project/dataset``)."""

    def __init__(self, url: str, **options: Any) -> None:
        from mdth_engine.warehouse import parse_warehouse_url

        self.url = url
        self.parsed = parse_warehouse_url(url)
        self.options = options
        self._bq: Any = None
        self.counters = {"bars": 0, "writes": 0, "failures": 0}

    @property
    def display(self) -> str:
        return (
            self.url
            if self.parsed.kind == "duckdb"
            else f"bigquery://{self.parsed.project}/{self.parsed.dataset}"
        )

    def write(self, bars: list[Bar]) -> int:
        """Write (blocking); returns the number of bars sent."""
        bars = [b for b in bars if not b.warm]
        if not bars:
            return 0
        tables = bars_table(bars)
        if self.parsed.kind == "duckdb":
            self._write_duckdb(tables)
        else:
            self._write_bigquery(tables)
        self.counters["bars"] += len(bars)
        self.counters["writes"] += 1
        return len(bars)

    # -- DuckDB -------------------------------------------------------------------------------------------

    def _write_duckdb(self, tables: dict[str, pa.Table]) -> None:
        from pathlib import Path

        from mdth_engine.warehouse.duck import connect, ensure_table, quote
        from mdth_engine.warehouse.schema import duckdb_type

        path = Path(self.parsed.path or "").expanduser().absolute()
        path.parent.mkdir(parents=True, exist_ok=True)
        con = connect(path, lock_timeout=self.options.get("lock_timeout", 60.0))
        try:
            con.execute("BEGIN TRANSACTION")
            for tf, table in tables.items():
                name = quote(live_table_name(tf))
                cols = ", ".join(
                    f"{quote(f.name)} {duckdb_type(f)}"
                    + (" NOT NULL" if f.name in ("day", "instrument_key", "timestamp") else "")
                    for f in table.schema
                )
                con.execute(
                    f'CREATE TABLE IF NOT EXISTS {name} ({cols}, PRIMARY KEY (instrument_key, "timestamp"))'
                )
                # A feature added since the table was made: add its column first, as a candle load does (an
                # ON CONFLICT insert naming a column the table lacks drops that column's values silently).
                ensure_table(con, live_table_name(tf), table.schema)
                con.register("mdth_live_bars", table)
                names = ", ".join(quote(n) for n in table.column_names)
                con.execute(
                    f"INSERT INTO {name} ({names}) SELECT {names} FROM mdth_live_bars ON CONFLICT DO NOTHING"
                )
                con.unregister("mdth_live_bars")
            con.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(Exception):
                con.execute("ROLLBACK")
            raise
        finally:
            con.close()

    # -- BigQuery -----------------------------------------------------------------------------------------

    def _write_bigquery(self, tables: dict[str, pa.Table]) -> None:
        from mdth_engine.warehouse import WarehouseError, open_warehouse

        if self._bq is None:
            self._bq = open_warehouse(self.url, **self.options)
        wh = self._bq
        for tf, table in tables.items():
            name = live_table_name(tf)
            wh._ensure_table(name, table.schema)  # same partitioning/clustering as the candle tables
            rows, ids = _json_rows(table, tf)
            errors = wh.client.insert_rows_json(wh._ref(name), rows, row_ids=ids, retry=wh.retry)
            if errors:
                first = errors[0].get("errors", [{}])[0] if isinstance(errors[0], dict) else errors[0]
                raise WarehouseError(f"BigQuery refused {len(errors)} live bar row(s) of {name}: {first}")


def _json_rows(table: pa.Table, timeframe: str) -> tuple[list[dict[str, Any]], list[str]]:
    rows = []
    ids = []
    types = {f.name: f.type for f in table.schema}
    for row in table.to_pylist():
        out: dict[str, Any] = {}
        for name, value in row.items():
            typ = types[name]
            if value is None:
                out[name] = None
            elif pa.types.is_timestamp(typ):
                out[name] = value.strftime("%Y-%m-%d %H:%M:%S.%f UTC")
            elif pa.types.is_date(typ):
                out[name] = value.isoformat()
            elif isinstance(value, float) and not math.isfinite(value):
                out[name] = "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
            else:
                out[name] = value
        rows.append(out)
        stamp = row["timestamp"]
        us = (stamp - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)
        ids.append(f"{row['instrument_key']}|{timeframe}|{us}")
    return rows, ids


async def run_writer(
    writer: BarWriter,
    queue: BoundedQueue,
    notify: Any,
    *,
    flush_seconds: float = FLUSH_SECONDS,
    max_batch: int = MAX_BATCH,
) -> None:
    """Drain ``queue`` (BLOCK policy) into the warehouse every ``flush_seconds``; failures are retried with a
    capped backoff and reported through ``notify(Notice)``; the bars are kept until they are written."""
    pending: list[Bar] = []
    delay = 1.0
    last = time.monotonic()
    while True:
        done = queue.closed and len(queue) == 0
        if not done:
            try:
                await asyncio.wait_for(queue.wait_readable(), timeout=flush_seconds)
            except TimeoutError:
                pass
        pending.extend(item for item in queue.get_all() if isinstance(item, Bar) and not item.warm)
        due = pending and (len(pending) >= max_batch or time.monotonic() - last >= flush_seconds or done)
        if due:
            try:
                await asyncio.to_thread(writer.write, pending)
                pending = []
                delay = 1.0
                last = time.monotonic()
            except Exception as exc:
                writer.counters["failures"] += 1
                notify(
                    Notice(
                        "persist_error",
                        time.time_ns() // 1000,
                        f"writing {len(pending)} bar(s) to {writer.display} failed (retrying): {_first_line(exc)}",
                    )
                )
                if done and writer.counters["failures"] > 3:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
                continue
        if done and not pending:
            return


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
