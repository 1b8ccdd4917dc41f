"""Parquet footers parsed once per object generation: row groups, column chunk byte ranges, page-index offsets.

pyarrow's ``FileMetaData`` does not say where a chunk's page index lives, so the raw Thrift footer is parsed
as well (``thrift.py``). Footers are cached per (store, path, generation, size): a replaced file is re-read.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mdth_engine.core.errors import NotFound, StoreError
from mdth_engine.reader import thrift

# Parquet physical type and repetition codes (parquet.thrift) the reader cares about.
INT64 = 2
REPEATED = 2
_FOOTER_CACHE_SIZE = 64  # a parsed footer of a day of ticks is ~1 MB of Python objects at most
TAIL_GUESS = 16 * 1024  # a day of ticks in 64k-row groups has a ~25 KiB footer: at most two small reads
MAGIC = b"PAR1"
# What a single-column file rebuilt from a chunk needs (pages.py); the rest (statistics, size statistics,
# row groups) is dropped after parsing to keep cached footers small.
_KEPT_META = frozenset({1, 2, 3, 4, 5, 6, 7, 9, 11, 13})  # ColumnMetaData
_KEPT_FILE = frozenset({1, 2, 6, 7})  # FileMetaData: version, schema, created_by, column_orders
_TIME_UNIT_TO_US = {1: (1000, 1), 2: (1, 1), 3: (1, 1000)}  # MILLIS, MICROS, NANOS -> (multiply, divide)


@dataclasses.dataclass(frozen=True, slots=True)
class ChunkInfo:
    """One column chunk of one row group: where its bytes and its page index are."""

    column: int
    start: int  # first byte (the dictionary page when there is one)
    length: int
    dictionary_offset: int | None
    data_offset: int
    column_index: tuple[int, int] | None  # (offset, length)
    offset_index: tuple[int, int] | None
    min_us: int | None  # statistics of timestamp columns, in microseconds
    max_us: int | None
    meta: thrift.Struct  # the ColumnMetaData fields in _KEPT_META

    @property
    def end(self) -> int:
        return self.start + self.length


@dataclasses.dataclass(frozen=True, slots=True)
class RowGroupInfo:
    index: int
    num_rows: int
    first_row: int  # of the file
    chunks: tuple[ChunkInfo, ...]


@dataclasses.dataclass
class Footer:
    """Everything the reader needs from one file's footer; page indexes are added lazily (``index_cache``)."""

    path: str
    generation: str | None
    size: int
    metadata: pq.FileMetaData
    raw: thrift.Struct  # the FileMetaData fields in _KEPT_FILE
    names: tuple[str, ...]  # top-level column names, in file order
    flat: bool  # every column is a top-level primitive (the page-level reader needs it)
    schema: pa.Schema
    row_groups: tuple[RowGroupInfo, ...]
    time_units: dict[int, tuple[int, int]]  # column -> (multiply, divide) to microseconds, timestamp columns
    index_cache: dict[tuple[str, int, int], Any] = dataclasses.field(default_factory=dict)
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    @property
    def num_rows(self) -> int:
        return self.metadata.num_rows

    def column(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(name) from None

    def provenance(self) -> dict[str, str]:
        from mdth_engine.storage.parquet import provenance_of

        return provenance_of(self.metadata)


def _time_unit(element: thrift.Struct) -> tuple[int, int] | None:
    """How to turn a column's INT64 values into microseconds, when it is a timestamp column."""
    logical = element.get_value(10)
    if isinstance(logical, thrift.Struct) and 8 in logical:
        unit = logical.get_value(8).get_value(2)
        if isinstance(unit, thrift.Struct) and unit:
            return _TIME_UNIT_TO_US.get(min(unit))
    converted = element.get_value(6)
    if converted == 9:  # TIMESTAMP_MILLIS
        return 1000, 1
    if converted == 10:  # TIMESTAMP_MICROS
        return 1, 1
    return None


def int64_value(raw: bytes | None) -> int | None:
    if raw is None or len(raw) != 8:
        return None
    return int.from_bytes(raw, "little", signed=True)


def to_us(value: int | None, unit: tuple[int, int], *, upper: bool) -> int | None:
    """A timestamp statistic in microseconds; rounded outwards so pruning never drops a row."""
    if value is None:
        return None
    mul, div = unit
    if div == 1:
        return value * mul
    return -((-value) // div) if upper else value // div


def parse_footer(path: str, footer: bytes, size: int, generation: str | None) -> Footer:
    """A footer (thrift metadata + length + magic, as ``read_footer_bytes`` returns it) made usable."""
    where = path
    try:
        metadata = pq.read_metadata(pa.BufferReader(footer))
        raw, _ = thrift.decode(memoryview(footer)[:-8])
    except (OSError, pa.ArrowException, thrift.ThriftError) as exc:
        raise StoreError(f"not a Parquet file: {where} ({str(exc).splitlines()[0][:160]})") from None
    elements = raw.get_value(2)[1]
    root, leaves = elements[0], elements[1:]
    flat = root.get_value(5, 0) == len(leaves) and all(
        e.get_value(5) in (None, 0) and e.get_value(3) != REPEATED for e in leaves
    )
    names = tuple(e.get_value(4, b"").decode() for e in leaves) if flat else tuple(metadata.schema.names)
    time_units: dict[int, tuple[int, int]] = {}
    if flat:
        for i, element in enumerate(leaves):
            unit = _time_unit(element)
            if unit is not None and element.get_value(1) == INT64:
                time_units[i] = unit
    groups: list[RowGroupInfo] = []
    first = 0
    for g, group in enumerate(raw.get_value(4, (0, []))[1]):
        chunks = []
        for c, chunk in enumerate(group.get_value(1)[1]):
            meta = chunk.get_value(3)
            data_offset = meta.get_value(9)
            dictionary_offset = meta.get_value(11)
            start = data_offset
            if dictionary_offset is not None and 0 < dictionary_offset < data_offset:
                start = dictionary_offset
            else:
                dictionary_offset = None
            stats = meta.get_value(12)
            low = high = None
            if c in time_units and isinstance(stats, thrift.Struct):
                # min_value/max_value (6, 5); the deprecated min/max (2, 1) are signed for INT64 too.
                low = int64_value(stats.get_value(6, stats.get_value(2)))
                high = int64_value(stats.get_value(5, stats.get_value(1)))
                low = to_us(low, time_units[c], upper=False)
                high = to_us(high, time_units[c], upper=True)
            column_index = offset_index = None
            if chunk.get_value(6) is not None and chunk.get_value(7):
                column_index = (chunk.get_value(6), chunk.get_value(7))
            if chunk.get_value(4) is not None and chunk.get_value(5):
                offset_index = (chunk.get_value(4), chunk.get_value(5))
            chunks.append(
                ChunkInfo(
                    column=c,
                    start=start,
                    length=meta.get_value(7),
                    dictionary_offset=dictionary_offset,
                    data_offset=data_offset,
                    column_index=column_index,
                    offset_index=offset_index,
                    min_us=low,
                    max_us=high,
                    meta=thrift.Struct({k: v for k, v in meta.items() if k in _KEPT_META}),
                )
            )
        rows = group.get_value(3)
        groups.append(RowGroupInfo(g, rows, first, tuple(chunks)))
        first += rows
    try:
        schema = metadata.schema.to_arrow_schema()
    except (pa.ArrowException, ValueError) as exc:
        raise StoreError(f"unreadable schema in {where}: {str(exc).splitlines()[0][:160]}") from None
    return Footer(
        path=path,
        generation=generation,
        size=size,
        metadata=metadata,
        raw=thrift.Struct({k: v for k, v in raw.items() if k in _KEPT_FILE}),
        names=names,
        flat=flat,
        schema=schema,
        row_groups=tuple(groups),
        time_units=time_units,
    )


class FooterCache:
    """Parsed footers by (store url, path, generation, size); a bounded LRU shared by every reader."""

    def __init__(self, capacity: int = _FOOTER_CACHE_SIZE) -> None:
        self.capacity = capacity
        self._items: OrderedDict[tuple[str, str, str | None, int], Footer] = OrderedDict()
        self._lock = threading.Lock()
        self.misses = 0

    def get(self, store: Any, path: str) -> Footer:
        """The footer of the object's current generation: one stat, and one ranged tail read on a miss."""
        info = stat_or_raise(store, path)
        key = (store.url, path, info.generation, info.size)
        with self._lock:
            footer = self._items.get(key)
            if footer is not None:
                self._items.move_to_end(key)
                return footer
        for _ in range(3):
            footer = parse_footer(
                store.join(path), footer_bytes(store, path, info.size), info.size, info.generation
            )
            again = stat_or_raise(store, path)
            if (again.generation, again.size) == (info.generation, info.size):
                break
            info, key = again, (store.url, path, again.generation, again.size)  # replaced meanwhile: re-read
        else:
            raise StoreError(f"{store.join(path)} keeps changing while its footer is read")
        footer.path = path
        with self._lock:
            self.misses += 1
            self._items[key] = footer
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return footer

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


def footer_bytes(store: Any, path: str, size: int, guess: int = TAIL_GUESS) -> bytes:
    """The footer (thrift + length + magic) of an object of known size: one small tail read, rarely two."""
    where = store.join(path)
    if size < 12:
        raise StoreError(f"not a Parquet file: {where} ({size} bytes)")
    first = min(size, guess)
    tail = store.get_range(path, size - first, first)
    if len(tail) != first or tail[-4:] != MAGIC:
        raise StoreError(f"not a Parquet file: {where} (no footer magic; truncated or corrupt)")
    need = int.from_bytes(tail[-8:-4], "little") + 8
    if need + len(MAGIC) > size:
        raise StoreError(f"not a Parquet file: {where} (footer longer than the file)")
    if need > len(tail):
        head = store.get_range(path, size - need, need - len(tail))
        tail = head + tail
    return tail[-need:]


def stat_or_raise(store: Any, path: str) -> Any:
    info = store.stat(path)
    if info is None:
        raise NotFound(f"no such object {store.join(path)}")
    return info


FOOTERS = FooterCache()
