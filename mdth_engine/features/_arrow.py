"""Arrow columns of lake tables as numpy arrays (zero-copy where Arrow allows), with clear errors."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mdth_engine.core.errors import UsageError

SIDE_UNKNOWN, SIDE_BUY, SIDE_SELL = 0, 1, 2


def column(table: pa.Table, name: str, what: str) -> pa.ChunkedArray:
    try:
        return table.column(name)
    except KeyError:
        raise UsageError(
            f"{what} table has no column {name!r}; columns: {', '.join(table.column_names)}"
        ) from None


def ts_us(table: pa.Table, name: str, what: str) -> np.ndarray:
    """A timestamp (any unit, any zone) or integer µs column as int64 µs; nulls are an error."""
    col = column(table, name, what)
    if col.null_count:
        raise UsageError(f"{what}.{name} has {col.null_count} null timestamps")
    if pa.types.is_timestamp(col.type):
        if col.type.unit != "us":
            col = col.cast(pa.timestamp("us", tz=col.type.tz))
        col = col.cast(pa.int64())
    elif not pa.types.is_integer(col.type):
        raise UsageError(f"{what}.{name} must be a timestamp, got {col.type}")
    return _numpy(col.cast(pa.int64()), np.int64)


def f64(table: pa.Table, name: str, what: str) -> np.ndarray:
    """A numeric column as float64 with NaN for nulls."""
    return chunked_f64(column(table, name, what))


def chunked_f64(col: pa.ChunkedArray) -> np.ndarray:
    """A numeric (chunked) array as float64 with NaN for nulls."""
    if col.type != pa.float64():
        col = col.cast(pa.float64())
    return _numpy(col, np.float64)


def optional_ts_us(table: pa.Table, name: str, what: str, missing: int) -> np.ndarray:
    """A nullable timestamp column as int64 µs, ``missing`` for nulls."""
    col = column(table, name, what)
    if pa.types.is_timestamp(col.type) and col.type.unit != "us":
        col = col.cast(pa.timestamp("us", tz=col.type.tz))
    col = pc.fill_null(col.cast(pa.int64()), missing)
    return _numpy(col, np.int64)


def codes(table: pa.Table, name: str, what: str, values: tuple[str, ...]) -> np.ndarray:
    """Small int codes of a string/dictionary column: i+1 for ``values[i]``, 0 for anything else or null."""
    col = column(table, name, what)
    out = np.zeros(len(col), dtype=np.int8)
    pos = 0
    for chunk in col.chunks:
        n = len(chunk)
        if pa.types.is_dictionary(chunk.type):
            dictionary = chunk.dictionary.to_pylist()
            lut = np.array(
                [values.index(v) + 1 if v in values else 0 for v in dictionary] + [0], dtype=np.int8
            )
            idx = pc.fill_null(chunk.indices, len(dictionary)).to_numpy(zero_copy_only=False)
            out[pos : pos + n] = lut[idx]
        else:
            for i, value in enumerate(values):
                hit = pc.fill_null(pc.equal(chunk, value), False).to_numpy(zero_copy_only=False)
                out[pos : pos + n][hit] = i + 1
        pos += n
    return out


def strings_to_slots(table: pa.Table, name: str, what: str) -> tuple[np.ndarray, list[str]]:
    """Integer slot per row and the distinct strings (in first-seen order) of a string/dictionary column."""
    col = column(table, name, what)
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    encoded = pc.dictionary_encode(col.combine_chunks())
    if encoded.null_count:
        raise UsageError(f"{what}.{name} has null values")
    return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64), encoded.dictionary.to_pylist()


def _numpy(col: pa.ChunkedArray, dtype: type) -> np.ndarray:
    if col.num_chunks == 1:
        arr = col.chunk(0).to_numpy(zero_copy_only=False)
    elif col.num_chunks == 0:
        arr = np.empty(0, dtype=dtype)
    else:
        arr = col.to_numpy()
    return np.asarray(arr, dtype=dtype)
