"""Ranged reads of one lake Parquet file for a set of time windows: only the row groups, pages and columns needed.

Plan, then fetch, then decode: row groups are pruned by the footer statistics of the time column; inside a
row group the page index narrows the rows to a few pages when the file has one; every byte range of a
batch is fetched at once (coalesced, parallel on GCS); the rows are then filtered exactly. The footer is read
once per file generation (``footer.FOOTERS``); a file replaced during a read is read again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mdth_engine.core.errors import StoreError, UsageError
from mdth_engine.reader import pages as pg
from mdth_engine.reader.footer import FOOTERS, Footer, FooterCache, RowGroupInfo, stat_or_raise
from mdth_engine.reader.ranges import COALESCE_GAP, Fetched, SparseFile, fetch

BATCH_BYTES = 64 * 1024 * 1024  # compressed bytes held in memory at once while reading a large file
_ATTEMPTS = 3


@dataclasses.dataclass
class ReadStats:
    """What a read did, for tests and benchmarks."""

    row_groups: int = 0  # row groups touched
    page_reads: int = 0  # row-group pieces read page by page
    bytes_planned: int = 0  # bytes of the planned ranges (before coalescing)
    misses: int = 0  # reads pyarrow made outside the plan (each an extra GET)

    def add(self, other: ReadStats) -> None:
        for field in dataclasses.fields(self):
            setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))


@dataclasses.dataclass
class _Piece:
    """Rows ``[row_start, row_end)`` of one row group, read whole (``pages`` None) or page by page."""

    group: RowGroupInfo
    row_start: int
    row_end: int
    windows: list[int]
    paged: bool
    ranges: list[tuple[int, int]]
    table: pa.Table | None = None


def read_windows(
    store: Any,
    path: str,
    windows: Sequence[tuple[int, int]],
    *,
    columns: Sequence[str] | None = None,
    by: str = "timestamp",
    footers: FooterCache = FOOTERS,
    gap: int = COALESCE_GAP,
    stats: ReadStats | None = None,
) -> list[pa.Table]:
    """One table per ``[start_us, end_us)`` window: the file's rows whose ``by`` falls in it, in file order."""
    for _attempt in range(_ATTEMPTS):
        footer = footers.get(store, path)
        try:
            result = _read(store, footer, windows, columns, by, gap, stats)
        except (OSError, pa.ArrowException, StoreError, ValueError) as exc:
            if isinstance(exc, UsageError) or not _changed(store, path, footer):
                raise
            continue
        if not _changed(store, path, footer):
            return result
    raise StoreError(f"{store.join(path)} keeps changing while it is read")


def _changed(store: Any, path: str, footer: Footer) -> bool:
    info = stat_or_raise(store, path)
    return (info.generation, info.size) != (footer.generation, footer.size)


def check_columns(footer: Footer, columns: Sequence[str] | None, by: str) -> tuple[list[str], list[str]]:
    """(columns to return, columns to read); unknown names are a UsageError naming what exists."""
    names = list(footer.names)
    wanted = list(dict.fromkeys(columns)) if columns is not None else names
    unknown = [c for c in wanted if c not in names]
    if unknown:
        raise UsageError(f"no column {unknown[0]!r} in {footer.path}; columns: {', '.join(names)}")
    if by not in names:
        raise UsageError(f"no time column {by!r} in {footer.path}; columns: {', '.join(names)}")
    needed = [c for c in names if c in wanted or c == by]
    return wanted, needed


def _read(
    store: Any,
    footer: Footer,
    windows: Sequence[tuple[int, int]],
    columns: Sequence[str] | None,
    by: str,
    gap: int,
    stats: ReadStats | None,
) -> list[pa.Table]:
    wanted, needed = check_columns(footer, columns, by)
    local = ReadStats()
    by_col = footer.column(by)
    col_ids = [footer.column(c) for c in needed]
    if by_col not in footer.time_units and footer.row_groups:
        raise UsageError(f"{by!r} in {footer.path} is not a timestamp column")
    pieces = _plan(store, footer, windows, by_col, col_ids, gap, local)
    # Fetch and decode in batches of bounded size, in file order.
    batch: list[_Piece] = []
    size = 0
    for piece in pieces:
        cost = sum(b - a for a, b in piece.ranges)
        if batch and size + cost > BATCH_BYTES:
            _load(store, footer, batch, needed, col_ids, gap, local)
            batch, size = [], 0
        batch.append(piece)
        size += cost
    if batch:
        _load(store, footer, batch, needed, col_ids, gap, local)
    out = [_assemble(footer, pieces, w, window, by, wanted, needed) for w, window in enumerate(windows)]
    if stats is not None:
        stats.add(local)
    return out


def _plan(
    store: Any,
    footer: Footer,
    windows: Sequence[tuple[int, int]],
    by_col: int,
    col_ids: list[int],
    gap: int,
    stats: ReadStats,
) -> list[_Piece]:
    """Which rows of which row groups each window needs, and the byte ranges that hold them."""
    hits: dict[int, list[int]] = {}
    for group in footer.row_groups:
        if not group.num_rows:
            continue
        chunk = group.chunks[by_col]
        for w, (start, end) in enumerate(windows):
            if start >= end:
                continue
            known = chunk.min_us is not None and chunk.max_us is not None
            if known and (chunk.min_us >= end or chunk.max_us < start):  # type: ignore[operator]
                continue
            hits.setdefault(group.index, []).append(w)
    paged = {
        g
        for g in hits
        if footer.flat
        and footer.row_groups[g].chunks[by_col].column_index is not None
        and all(footer.row_groups[g].chunks[c].offset_index is not None for c in col_ids)
    }
    _load_indexes(store, footer, sorted(paged), by_col, col_ids)
    pieces: list[_Piece] = []
    for g in sorted(hits):
        group = footer.row_groups[g]
        stats.row_groups += 1
        if g not in paged:
            pieces.append(_whole(group, hits[g], col_ids))
            continue
        bounds = footer.index_cache[("column", g, by_col)]
        locations = footer.index_cache[("offset", g, by_col)]
        spans: list[list[Any]] = []
        for w in hits[g]:
            r0, r1 = pg.rows_for_window(bounds, locations, *windows[w])
            if r1 > r0:
                spans.append([r0, r1, [w]])
        spans.sort(key=lambda s: s[0])
        merged: list[list[Any]] = []
        for span in spans:
            if merged and span[0] <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], span[1])
                merged[-1][2] += span[2]
            else:
                merged.append(span)
        if len(merged) == 1 and merged[0][0] == 0 and merged[0][1] == group.num_rows:
            pieces.append(_whole(group, merged[0][2], col_ids))
            continue
        for r0, r1, ws in merged:
            ranges: list[tuple[int, int]] = []
            for c in col_ids:
                locs = footer.index_cache[("offset", g, c)]
                k0, k1 = locs.span(r0, r1)
                ranges += pg.page_byte_ranges(group.chunks[c], locs, k0, k1)
            pieces.append(_Piece(group, r0, r1, ws, True, ranges))
            stats.page_reads += 1
    stats.bytes_planned += sum(b - a for p in pieces for a, b in p.ranges)
    return pieces


def _whole(group: RowGroupInfo, windows: list[int], col_ids: list[int]) -> _Piece:
    ranges = [(group.chunks[c].start, group.chunks[c].end) for c in col_ids]
    return _Piece(group, 0, group.num_rows, windows, False, ranges)


def _load_indexes(store: Any, footer: Footer, groups: list[int], by_col: int, col_ids: list[int]) -> None:
    """Fetch and parse the page indexes the plan needs (each once per footer)."""
    wanted: list[tuple[tuple[str, int, int], tuple[int, int]]] = []
    for g in groups:
        chunks = footer.row_groups[g].chunks
        key = ("column", g, by_col)
        if key not in footer.index_cache:
            wanted.append((key, chunks[by_col].column_index))  # type: ignore[arg-type]
        for c in col_ids:
            key = ("offset", g, c)
            if key not in footer.index_cache:
                wanted.append((key, chunks[c].offset_index))  # type: ignore[arg-type]
    if not wanted:
        return
    # Gap 0: the indexes of the columns not read sit between the ones needed.
    fetched = fetch(store, footer.path, [(o, o + n) for _, (o, n) in wanted], gap=0)
    parsed = {}
    for key, (offset, length) in wanted:
        data = fetched.get(offset, length)
        if data is None:
            raise StoreError(f"page index of {store.join(footer.path)} could not be read")
        kind, g, c = key
        if kind == "column":
            parsed[key] = pg.parse_time_bounds(bytes(data), footer.time_units[c])
        else:
            parsed[key] = pg.parse_offset_index(bytes(data), footer.row_groups[g].num_rows)
    with footer.lock:
        footer.index_cache.update(parsed)


def _load(
    store: Any,
    footer: Footer,
    pieces: list[_Piece],
    needed: list[str],
    col_ids: list[int],
    gap: int,
    stats: ReadStats,
) -> None:
    """Fetch every range of ``pieces`` at once, then decode each piece into ``piece.table``."""
    fetched = fetch(store, footer.path, [r for p in pieces for r in p.ranges], gap=gap)
    sparse = SparseFile(store, footer.path, footer.size, fetched)
    reader = None
    for piece in pieces:
        if not piece.paged:
            if reader is None:
                reader = pq.ParquetFile(sparse, metadata=footer.metadata, pre_buffer=False)
            piece.table = reader.read_row_group(piece.group.index, columns=needed, use_threads=False)
            continue
        arrays = []
        for name, c in zip(needed, col_ids, strict=True):
            arrays.append(_paged_column(footer, piece, c, fetched, name))
        piece.table = pa.Table.from_arrays(arrays, schema=pa.schema([footer.schema.field(n) for n in needed]))
    stats.misses += sparse.misses


def _paged_column(footer: Footer, piece: _Piece, c: int, fetched: Fetched, name: str) -> pa.ChunkedArray:
    group = piece.group
    chunk = group.chunks[c]
    locs: pg.PageLocations = footer.index_cache[("offset", group.index, c)]
    k0, k1 = locs.span(piece.row_start, piece.row_end)
    first, last = int(locs.offsets[k0]), int(locs.offsets[k1 - 1] + locs.sizes[k1 - 1])
    data = fetched.get(first, last - first)
    dictionary = None
    if chunk.dictionary_offset is not None:
        dictionary = fetched.get(chunk.dictionary_offset, int(locs.offsets[0]) - chunk.dictionary_offset)
    if data is None or (chunk.dictionary_offset is not None and dictionary is None):
        raise StoreError(f"pages of {footer.path} were not fetched as planned")
    buffer = pg.single_column_file(footer, group, chunk, locs, k0, k1, dictionary, data)
    column = pg.decode_single_column(buffer, footer.schema.field(name))
    offset = piece.row_start - int(locs.first_rows[k0])
    return column.slice(offset, piece.row_end - piece.row_start)


def _assemble(
    footer: Footer,
    pieces: list[_Piece],
    w: int,
    window: tuple[int, int],
    by: str,
    wanted: list[str],
    needed: list[str],
) -> pa.Table:
    start, end = window
    parts = []
    for piece in pieces:
        if w not in piece.windows or piece.table is None:
            continue
        table = piece.table
        mask = time_mask(table.column(by), start, end)
        parts.append(table.filter(mask).select(wanted))
    if not parts:
        return pa.schema([footer.schema.field(n) for n in wanted]).empty_table()
    return pa.concat_tables(parts) if len(parts) > 1 else parts[0]


def time_mask(column: pa.ChunkedArray, start_us: int, end_us: int) -> pa.ChunkedArray:
    """``start_us <= column < end_us`` (false for nulls), whatever the column's time unit."""
    kind = column.type
    if pa.types.is_timestamp(kind) and kind.unit != "us":
        column = column.cast(pa.timestamp("us", tz=kind.tz), safe=False)
    ints = column.cast(pa.int64())
    mask = pc.and_(pc.greater_equal(ints, start_us), pc.less(ints, end_us))
    return pc.fill_null(mask, False)
