"""One Parquet file per (table, day) for BigQuery: the day's candle files with ``day`` and ``instrument_key``.

Candle files carry the instrument only in their path and footer, and a BigQuery load job cannot add a constant
column, so the day is restaged: file by file (bounded memory), columns aligned to the table schema (absent ones
as nulls), rows checked to lie inside the day, sorted by (instrument_key, timestamp).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mdth_engine.core.timeframes import US_PER_DAY, day_start_us
from mdth_engine.warehouse.base import DayBatch, WarehouseError
from mdth_engine.warehouse.schema import DAY, KEY, TS

_FLUSH_ROWS = 1_000_000  # buffer small files into row groups of about this many rows


def align(table: pa.Table, schema: pa.Schema, *, day: dt.date, key: str, where: str) -> pa.Table:
    """``table`` with exactly ``schema``'s columns and types; day and instrument_key filled in."""
    n = table.num_rows
    columns = []
    for field in schema:
        if field.name == DAY:
            columns.append(pa.repeat(pa.scalar(day, pa.date32()), n))
        elif field.name == KEY:
            columns.append(pa.repeat(pa.scalar(key, pa.string()), n))
        elif field.name in table.column_names:
            col = table.column(field.name)
            if pa.types.is_dictionary(col.type):
                col = col.cast(col.type.value_type)
            try:
                columns.append(col.cast(field.type))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise WarehouseError(
                    f"{where}: column {field.name!r} cannot be stored as {field.type}: {exc}"
                ) from None
        else:
            columns.append(pa.nulls(n, field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def check_day(table: pa.Table, day: dt.date, where: str) -> None:
    """Timestamps non-null, strictly increasing and inside the UTC day (what BigQuery's partition check needs)."""
    ts = table.column(TS)
    if ts.null_count:
        raise WarehouseError(f"{where}: {ts.null_count} rows have no timestamp")
    if table.num_rows == 0:
        return
    values = ts.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy()
    start = day_start_us(day)
    outside = int(np.count_nonzero((values < start) | (values >= start + US_PER_DAY)))
    if outside:
        raise WarehouseError(f"{where}: {outside} candle rows lie outside {day} (UTC)")
    if values.size > 1 and not bool(np.all(np.diff(values) > 0)):
        raise WarehouseError(
            f"{where}: timestamps are not strictly increasing (repeated or unsorted candles)"
        )


def write_staging_file(batch: DayBatch, schema: pa.Schema, out: Path) -> int:
    """Write the batch's rows to ``out`` with ``schema`` (table order); returns the rows written."""
    out.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    pending: list[pa.Table] = []
    pending_rows = 0
    with pq.ParquetWriter(out, schema, compression="snappy") as writer:
        for source in sorted(batch.files, key=lambda f: f.instrument_key):
            assert source.local is not None
            table = pq.read_table(source.local)
            if table.num_rows != source.rows:
                raise WarehouseError(
                    f"{source.path}: {table.num_rows} rows but its footer said {source.rows}"
                )
            check_day(table, batch.day, source.path)
            pending.append(align(table, schema, day=batch.day, key=source.instrument_key, where=source.path))
            pending_rows += table.num_rows
            if pending_rows >= _FLUSH_ROWS:
                writer.write_table(pa.concat_tables(pending))
                written += pending_rows
                pending, pending_rows = [], 0
        if pending:
            writer.write_table(pa.concat_tables(pending))
            written += pending_rows
    return written
