"""Page-level reads through the Parquet page index: fetch only the pages a time window needs.

pyarrow decodes whole column chunks only, so the selected pages of one column chunk (plus its dictionary
page) are wrapped in a small single-column Parquet file with a rewritten footer, and pyarrow decodes that.
Encodings, compression and nulls stay pyarrow's business; only flat (top-level, non-repeated) columns qualify.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mdth_engine.reader import thrift
from mdth_engine.reader.footer import ChunkInfo, Footer, RowGroupInfo, int64_value, to_us

_MAGIC = b"PAR1"
# ColumnMetaData fields that describe the original chunk as a whole and would be wrong for a page subset.
_CHUNK_WIDE_FIELDS = (10, 12, 14, 15, 16, 17)


@dataclasses.dataclass(frozen=True, slots=True)
class PageLocations:
    """A column chunk's offset index: byte offset, compressed size and first row of every data page."""

    offsets: np.ndarray
    sizes: np.ndarray
    first_rows: np.ndarray
    num_rows: int  # rows of the row group

    def row_ends(self) -> np.ndarray:
        return np.append(self.first_rows[1:], self.num_rows)

    def span(self, row_start: int, row_end: int) -> tuple[int, int]:
        """Pages ``[k0, k1)`` holding rows ``[row_start, row_end)`` of the row group."""
        k0 = int(np.searchsorted(self.first_rows, row_start, side="right")) - 1
        k1 = int(np.searchsorted(self.first_rows, row_end, side="left"))
        return max(k0, 0), max(k1, k0 + 1)


@dataclasses.dataclass(frozen=True, slots=True)
class PageBounds:
    """A timestamp column's column index: per page min/max in microseconds, whether they are known, and
    whether the page holds only nulls (no time: never in a window)."""

    low: np.ndarray
    high: np.ndarray
    known: np.ndarray
    null: np.ndarray


def parse_offset_index(data: bytes, num_rows: int) -> PageLocations:
    index, _ = thrift.decode(data)
    locations = index.get_value(1, (0, []))[1]
    return PageLocations(
        offsets=np.array([p.get_value(1) for p in locations], dtype=np.int64),
        sizes=np.array([p.get_value(2) for p in locations], dtype=np.int64),
        first_rows=np.array([p.get_value(3) for p in locations], dtype=np.int64),
        num_rows=num_rows,
    )


def parse_time_bounds(data: bytes, unit: tuple[int, int]) -> PageBounds:
    index, _ = thrift.decode(data)
    nulls = index.get_value(1, (0, []))[1]
    mins = index.get_value(2, (0, []))[1]
    maxs = index.get_value(3, (0, []))[1]
    n = len(nulls)
    low = np.zeros(n, dtype=np.int64)
    high = np.zeros(n, dtype=np.int64)
    known = np.zeros(n, dtype=bool)
    for k in range(n):
        lo = to_us(int64_value(mins[k]) if k < len(mins) else None, unit, upper=False)
        hi = to_us(int64_value(maxs[k]) if k < len(maxs) else None, unit, upper=True)
        if lo is not None and hi is not None:
            low[k], high[k], known[k] = lo, hi, True
    return PageBounds(low, high, known, np.array(nulls, dtype=bool))


def rows_for_window(bounds: PageBounds, pages: PageLocations, start_us: int, end_us: int) -> tuple[int, int]:
    """Rows ``[r0, r1)`` of the row group that may hold values in ``[start_us, end_us)``; (0, 0) for none.

    A page without known bounds counts as a hit: pruning may only ever skip what cannot match.
    """
    overlap = (bounds.low < end_us) & (bounds.high >= start_us)
    hit = ~bounds.null & (~bounds.known | overlap)
    if not hit.any():
        return 0, 0
    which = np.flatnonzero(hit)
    ends = pages.row_ends()
    return int(pages.first_rows[which[0]]), int(ends[which[-1]])


def page_byte_ranges(chunk: ChunkInfo, pages: PageLocations, k0: int, k1: int) -> list[tuple[int, int]]:
    """The byte ranges pages ``[k0, k1)`` need: the pages themselves and the chunk's dictionary page."""
    out = [(int(pages.offsets[k0]), int(pages.offsets[k1 - 1] + pages.sizes[k1 - 1]))]
    if chunk.dictionary_offset is not None:
        out.append((chunk.dictionary_offset, int(pages.offsets[0])))
    return out


def single_column_file(
    footer: Footer,
    group: RowGroupInfo,
    chunk: ChunkInfo,
    pages: PageLocations,
    k0: int,
    k1: int,
    dictionary: bytes | memoryview | None,
    data: bytes | memoryview,
) -> bytes:
    """A valid Parquet file holding one column of rows ``[first_rows[k0], row end of k1-1)``."""
    rows = int(pages.row_ends()[k1 - 1] - pages.first_rows[k0])
    dict_len = len(dictionary) if dictionary is not None else 0
    meta = thrift.Struct({k: v for k, v in chunk.meta.items() if k not in _CHUNK_WIDE_FIELDS})
    meta.set_value(5, thrift.I64, rows)  # flat columns: one value (or null) per row
    meta.set_value(6, thrift.I64, dict_len + len(data))
    meta.set_value(7, thrift.I64, dict_len + len(data))
    meta.set_value(9, thrift.I64, len(_MAGIC) + dict_len)
    if dictionary is not None:
        meta.set_value(11, thrift.I64, len(_MAGIC))
    else:
        meta.pop(11, None)
    column = thrift.Struct()
    column.set_value(2, thrift.I64, len(_MAGIC))
    column.set_value(3, thrift.STRUCT, meta)
    row_group = thrift.Struct()
    row_group.set_value(1, thrift.LIST, (thrift.STRUCT, [column]))
    row_group.set_value(2, thrift.I64, dict_len + len(data))
    row_group.set_value(3, thrift.I64, rows)
    schema = footer.raw.get_value(2)[1]
    root = thrift.Struct(schema[0])
    root.set_value(5, thrift.I32, 1)
    file_meta = thrift.Struct()
    file_meta.set_value(1, thrift.I32, footer.raw.get_value(1, 1))
    file_meta.set_value(2, thrift.LIST, (thrift.STRUCT, [root, schema[1 + chunk.column]]))
    file_meta.set_value(3, thrift.I64, rows)
    file_meta.set_value(4, thrift.LIST, (thrift.STRUCT, [row_group]))
    if 6 in footer.raw:  # created_by: readers apply known-writer workarounds from it
        file_meta[6] = footer.raw[6]
    orders = footer.raw.get_value(7)
    if orders and len(orders[1]) > chunk.column:
        file_meta.set_value(7, thrift.LIST, (thrift.STRUCT, [orders[1][chunk.column]]))
    encoded = thrift.encode(file_meta)
    parts = [
        _MAGIC,
        bytes(dictionary or b""),
        bytes(data),
        encoded,
        len(encoded).to_bytes(4, "little"),
        _MAGIC,
    ]
    return b"".join(parts)


def decode_single_column(buffer: bytes, field: pa.Field) -> pa.ChunkedArray:
    """The one column of a ``single_column_file``, as the original file's Arrow type."""
    dictionary = [field.name] if pa.types.is_dictionary(field.type) else None
    table = pq.read_table(pa.BufferReader(buffer), read_dictionary=dictionary, use_threads=False)
    column = table.column(0)
    if not column.type.equals(field.type):
        column = column.cast(field.type)
    return column
