"""Candle table names and schemas, and how Arrow types map onto DuckDB and BigQuery column types.

A candle table is ``day DATE, instrument_key STRING`` then the candle file columns (the feature spec's order,
then any column a newer spec added). Columns are only ever added, never dropped or retyped.
"""

from __future__ import annotations

from collections.abc import Iterable

import pyarrow as pa

from mdth_engine.core.timeframes import TIMEFRAMES
from mdth_engine.warehouse.base import WarehouseError

DAY, KEY, TS = "day", "instrument_key", "timestamp"
RESERVED = (DAY, KEY)
REQUIRED = frozenset({DAY, KEY, TS})  # NOT NULL in DuckDB, REQUIRED in BigQuery
LOADS_TABLE = "_loads"
UTC_US = pa.timestamp("us", tz="UTC")


def table_name(timeframe: str) -> str:
    """``candles_1m`` for ``1m``: one table per timeframe."""
    if timeframe not in TIMEFRAMES:
        raise WarehouseError(f"unknown timeframe {timeframe!r}; known: {', '.join(TIMEFRAMES)}")
    return f"candles_{timeframe}"


def spec_schema() -> pa.Schema | None:
    """The candle file schema of the feature spec, when the spec module is installed."""
    try:
        from mdth_engine.features.spec import candle_schema
    except ImportError:
        return None
    return candle_schema()


def normalize_type(name: str, typ: pa.DataType) -> pa.DataType:
    """The one Arrow type a column is stored as: int64, float64, bool, string, date32 or UTC microseconds."""
    if pa.types.is_dictionary(typ):
        typ = typ.value_type
    if pa.types.is_integer(typ):
        return pa.int64()
    if pa.types.is_floating(typ):
        return pa.float64()
    if pa.types.is_boolean(typ):
        return pa.bool_()
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        return pa.string()
    if pa.types.is_date(typ):
        return pa.date32()
    if pa.types.is_timestamp(typ):
        return UTC_US if typ.tz else pa.timestamp("us")
    raise WarehouseError(f"column {name!r} has type {typ}, which the warehouse cannot store")


def union_schema(schemas: Iterable[tuple[str, pa.Schema]]) -> pa.Schema:
    """All columns of the files, by name in first-seen order; a column typed two ways is an error naming both files."""
    fields: dict[str, pa.Field] = {}
    seen_in: dict[str, str] = {}
    for where, schema in schemas:
        for field in schema:
            if field.name in RESERVED:
                continue
            typ = normalize_type(field.name, field.type)
            if field.name not in fields:
                fields[field.name] = pa.field(field.name, typ, nullable=field.name not in REQUIRED)
                seen_in[field.name] = where
            elif fields[field.name].type != typ:
                raise WarehouseError(
                    f"column {field.name!r} is {fields[field.name].type} in {seen_in[field.name]} "
                    f"but {typ} in {where}"
                )
    if TS not in fields:
        raise WarehouseError("candle files have no 'timestamp' column")
    return pa.schema(list(fields.values()))


def table_schema(files_schema: pa.Schema) -> pa.Schema:
    """The table a batch needs: day, instrument_key, the spec's columns, then the files' extra columns.

    A column the files carry keeps the files' type (what is loaded is what the files hold), so a type that
    disagrees with the warehouse is caught when the table is compared, never cast silently.
    """
    spec = spec_schema()
    in_files = {f.name: f for f in files_schema}
    ordered: list[pa.Field] = [
        pa.field(DAY, pa.date32(), nullable=False),
        pa.field(KEY, pa.string(), nullable=False),
    ]
    names = set(RESERVED)
    for source in ([spec] if spec is not None else []) + [files_schema]:
        for field in source:
            if field.name in names:
                continue
            typ = normalize_type(field.name, in_files.get(field.name, field).type)
            ordered.append(pa.field(field.name, typ, nullable=field.name not in REQUIRED))
            names.add(field.name)
    return pa.schema(ordered)


_DUCK = {
    pa.int64(): "BIGINT",
    pa.float64(): "DOUBLE",
    pa.bool_(): "BOOLEAN",
    pa.string(): "VARCHAR",
    pa.date32(): "DATE",
    UTC_US: "TIMESTAMP WITH TIME ZONE",
    pa.timestamp("us"): "TIMESTAMP",
}
_BQ = {
    pa.int64(): "INTEGER",
    pa.float64(): "FLOAT",
    pa.bool_(): "BOOLEAN",
    pa.string(): "STRING",
    pa.date32(): "DATE",
    UTC_US: "TIMESTAMP",
    pa.timestamp("us"): "DATETIME",
}
_BQ_ALIASES = {"INT64": "INTEGER", "FLOAT64": "FLOAT", "BOOL": "BOOLEAN"}


def duckdb_type(field: pa.Field) -> str:
    """DuckDB's name for the column type, as ``information_schema.columns.data_type`` spells it."""
    return _DUCK[normalize_type(field.name, field.type)]


def bigquery_type(field: pa.Field) -> str:
    return _BQ[normalize_type(field.name, field.type)]


def bigquery_type_name(name: str) -> str:
    """BigQuery's legacy type name for either spelling (``FLOAT64`` -> ``FLOAT``)."""
    return _BQ_ALIASES.get(name.upper(), name.upper())


def loads_schema() -> pa.Schema:
    """The ``_loads`` table: one row per load, the latest per (table_name, day) is what the warehouse holds."""
    return pa.schema(
        [
            pa.field("table_name", pa.string(), nullable=False),
            pa.field(DAY, pa.date32(), nullable=False),
            pa.field("timeframe", pa.string()),
            pa.field("fingerprint", pa.string(), nullable=False),
            pa.field("files", pa.int64()),
            pa.field("rows", pa.int64()),
            pa.field("job_id", pa.string()),
            pa.field("loaded_at", UTC_US, nullable=False),
            pa.field(
                "sources", pa.string()
            ),  # JSON: [{path, instrument_key, size, generation, rows, sha256}]
            pa.field("mdth_version", pa.string()),
        ]
    )
