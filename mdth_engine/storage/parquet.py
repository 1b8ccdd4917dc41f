"""Writing lake Parquet files with their provenance in the footer, and reading footers with one ranged GET.

A file is written to a temp file (next to its target for a local lake, a spool file for GCS) and published
atomically on a clean exit; on any error nothing is published. Rows and first/last timestamps are counted by
the writer itself from the data, so the footer (the ledger entry) cannot disagree with the rows.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from pathlib import Path
from types import TracebackType
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mdth_engine.core.errors import NotFound, StoreError
from mdth_engine.storage.store import ObjectStore, Staged, os_store_error

PREFIX = "mdth."
# Keys every lake file carries (empty string when they do not apply, e.g. no source for candles).
STANDARD_KEYS = (
    "source_url",
    "source_bytes",
    "source_sha256",
    "rows",
    "first_timestamp",
    "last_timestamp",
    "schema_version",
    "mdth_version",
    "written_at",
    "data_type",
    "instrument_key",
)
# Keys the writer computes itself; callers may not pass them.
COMPUTED_KEYS = frozenset(
    {"rows", "first_timestamp", "last_timestamp", "schema_version", "mdth_version", "written_at"}
)
TIME_COLUMNS = ("local_timestamp", "timestamp")  # first/last are taken from the first present

_KEY = re.compile(r"^[a-z][a-z0-9_]*$")
_TAIL_GUESS = 64 * 1024  # one suffix GET usually holds the whole footer
_MAGIC = b"PAR1"
_TARGET_ROW_GROUP_BYTES = 32 * 1024 * 1024  # uncompressed, so a column chunk is a few MiB: good range reads
_MIN_ROW_GROUP, _MAX_ROW_GROUP = 8192, 1024 * 1024


@dataclasses.dataclass(frozen=True, slots=True)
class WrittenFile:
    """A published file: where, how many rows, its size, and the provenance now in its footer (no prefix)."""

    path: str
    rows: int
    bytes: int
    provenance: dict[str, str]


def format_timestamp(micros: int | None) -> str:
    """ISO 8601 UTC with microseconds and ``Z``, or empty for no value."""
    if micros is None:
        return ""
    value = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=micros)
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _to_string(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} in provenance: give it a UTC tzinfo")
        return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, dt.date):
        return value.isoformat()
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _caller_provenance(provenance: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in provenance.items():
        if not isinstance(key, str) or not _KEY.match(key):
            raise ValueError(f"provenance key {key!r} must be lower_snake_case (stored as 'mdth.<key>')")
        if key in COMPUTED_KEYS:
            raise ValueError(f"provenance key {key!r} is computed by the writer; do not pass it")
        out[key] = _to_string(value)
    return out


def default_row_group_size(schema: pa.Schema) -> int:
    """Rows per row group so one group is ~32 MiB uncompressed: small enough for ranged reads of a column."""
    width = 0
    for field in schema:
        if pa.types.is_dictionary(field.type):
            width += field.type.index_type.bit_width // 8
        elif pa.types.is_boolean(field.type):
            width += 1
        else:
            try:
                width += max(1, field.type.bit_width // 8)
            except ValueError:  # variable width (strings, lists)
                width += 24
    rows = _TARGET_ROW_GROUP_BYTES // max(width, 1)
    return max(_MIN_ROW_GROUP, min(_MAX_ROW_GROUP, rows))


class ParquetPublisher:
    """Context manager that writes one lake Parquet file and publishes it atomically on a clean exit.

    zstd, statistics and page index on, dictionary encoding for dictionary columns; batches are buffered so
    row groups hold exactly ``row_group_size`` rows (the last one fewer).
    """

    def __init__(
        self,
        store: ObjectStore,
        path: str,
        schema: pa.Schema,
        provenance: dict[str, Any],
        row_group_size: int | None = None,
        spool_dir: Path | None = None,
        max_rows_per_page: int | None = None,
        column_encoding: dict[str, str] | None = None,
        use_dictionary: list[str] | None = None,
    ) -> None:
        self.store = store
        self.max_rows_per_page = max_rows_per_page
        self.column_encoding = column_encoding
        self.use_dictionary = use_dictionary
        self.path = path
        self.schema = schema
        self.row_group_size = row_group_size or default_row_group_size(schema)
        if self.row_group_size <= 0:
            raise ValueError("row_group_size must be positive")
        self.spool_dir = spool_dir
        self._extra = _caller_provenance(provenance)
        self._time_column = next((c for c in TIME_COLUMNS if c in schema.names), None)
        self._dictionary_columns = [f.name for f in schema if pa.types.is_dictionary(f.type)]
        self._staged: Staged | None = None
        self._writer: pq.ParquetWriter | None = None
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self.rows = 0
        self._first: int | None = None
        self._last: int | None = None
        self.written: WrittenFile | None = None

    def add_provenance(self, values: dict[str, Any]) -> None:
        """Provenance known only once the rows are written (e.g. the hash of the source just read)."""
        self._extra.update(_caller_provenance(values))

    # --- context ------------------------------------------------------------------------------------------

    def __enter__(self) -> ParquetPublisher:
        if self._staged is not None:
            raise RuntimeError("a ParquetPublisher writes one file; make a new one")
        self._staged = self.store.stage(self.path, self.spool_dir)
        try:
            self._writer = pq.ParquetWriter(
                str(self._staged.local_path),
                self.schema,
                compression="zstd",
                use_dictionary=self.use_dictionary or self._dictionary_columns or False,
                write_statistics=True,
                write_page_index=True,
                store_schema=True,
                max_rows_per_page=self.max_rows_per_page,
                column_encoding=self.column_encoding,
            )
        except BaseException as exc:
            self._staged.abort()
            if isinstance(exc, OSError):
                raise os_store_error(exc, "writing", self.path) from exc
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._staged is not None and self._writer is not None
        if exc_type is not None:
            self._discard()
            return  # the caller's exception propagates
        try:
            self._flush(final=True)
            provenance = self._provenance()
            self._writer.add_key_value_metadata({PREFIX + k: v for k, v in provenance.items()})
            self._writer.close()
        except BaseException as failure:
            self._discard()
            if isinstance(failure, OSError):
                raise os_store_error(failure, "writing", self.path) from failure
            raise
        info = self._staged.commit()  # aborts (removes the temp) itself if publishing fails
        self.written = WrittenFile(path=self.path, rows=self.rows, bytes=info.size, provenance=provenance)

    def _discard(self) -> None:
        assert self._staged is not None and self._writer is not None
        self._pending = []
        try:
            self._writer.close()
        except Exception:
            pass  # the file is thrown away anyway
        self._staged.abort()

    # --- writing ------------------------------------------------------------------------------------------

    def write_batch(self, batch: pa.RecordBatch) -> None:
        self.write_table(pa.Table.from_batches([batch]))

    def write_table(self, table: pa.Table) -> None:
        if self._writer is None:
            raise RuntimeError(
                "use ParquetPublisher as a context manager: `with ParquetPublisher(...) as w:`"
            )
        table = self._conform(table)
        if table.num_rows == 0:
            return
        self._observe(table)
        self._pending.append(table)
        self._pending_rows += table.num_rows
        if self._pending_rows >= self.row_group_size:
            self._flush(final=False)

    def _conform(self, table: pa.Table) -> pa.Table:
        if table.schema.equals(self.schema):
            return table
        try:
            return table.select(self.schema.names).cast(self.schema)
        except (KeyError, ValueError, pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise ValueError(
                f"data for {self.path} does not match its schema: {str(exc).splitlines()[0]}"
            ) from None

    def _observe(self, table: pa.Table) -> None:
        self.rows += table.num_rows
        if self._time_column is None:
            return
        column = table.column(self._time_column)
        if not pa.types.is_timestamp(column.type):
            return
        column = column.cast(pa.timestamp("us", tz="UTC"), safe=False)  # ns -> us for the footer only
        bounds = pc.min_max(column)
        low, high = bounds["min"], bounds["max"]
        if low.is_valid:
            low_us, high_us = low.value, high.value
            self._first = low_us if self._first is None else min(self._first, low_us)
            self._last = high_us if self._last is None else max(self._last, high_us)

    def _flush(self, final: bool) -> None:
        """Write whole row groups from the buffer (and the remainder when ``final``)."""
        assert self._writer is not None
        if not self._pending:
            return
        combined = pa.concat_tables(self._pending) if len(self._pending) > 1 else self._pending[0]
        whole = combined.num_rows if final else combined.num_rows - combined.num_rows % self.row_group_size
        if whole:
            try:
                self._writer.write_table(combined.slice(0, whole), row_group_size=self.row_group_size)
            except OSError as exc:
                raise os_store_error(exc, "writing", self.path) from exc
        rest = combined.slice(whole)
        self._pending = [rest] if rest.num_rows else []
        self._pending_rows = rest.num_rows

    def _provenance(self) -> dict[str, str]:
        import mdth_engine
        from mdth_engine.core.schemas import SCHEMA_VERSION

        computed = {
            "rows": str(self.rows),
            "first_timestamp": format_timestamp(self._first),
            "last_timestamp": format_timestamp(self._last),
            "schema_version": SCHEMA_VERSION,
            "mdth_version": mdth_engine.__version__,
            "written_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        }
        merged = {key: "" for key in STANDARD_KEYS}
        merged.update(self._extra)
        merged.update(computed)
        return merged


def write_table(
    store: ObjectStore, path: str, table: pa.Table, provenance: dict[str, Any], **kwargs: Any
) -> WrittenFile:
    """Write one table as a lake file (``kwargs`` as for ParquetPublisher, e.g. ``schema``, ``row_group_size``)."""
    schema = kwargs.pop("schema", None) or table.schema
    with ParquetPublisher(store, path, schema, provenance, **kwargs) as publisher:
        publisher.write_table(table)
    assert publisher.written is not None
    return publisher.written


# --- footers ------------------------------------------------------------------------------------------------


def read_footer_bytes(store: ObjectStore, path: str) -> bytes:
    """The footer (thrift metadata + length + magic), fetched from the end of the object only."""
    where = store.join(path)
    tail = store.get_tail(path, _TAIL_GUESS)
    if len(tail) < 12 or tail[-4:] != _MAGIC:
        raise StoreError(f"not a Parquet file: {where} (no footer magic; truncated or corrupt)")
    need = int.from_bytes(tail[-8:-4], "little") + 8
    if need > len(tail):
        if len(tail) < _TAIL_GUESS:  # we already hold the whole object
            raise StoreError(f"not a Parquet file: {where} (footer longer than the file)")
        tail = store.get_tail(path, need + len(_MAGIC))
        if len(tail) < need + len(_MAGIC) or tail[-4:] != _MAGIC:
            raise StoreError(f"not a Parquet file: {where} (footer longer than the file or file changed)")
    elif len(tail) < _TAIL_GUESS and (len(tail) < need + len(_MAGIC) or tail[:4] != _MAGIC):
        raise StoreError(f"not a Parquet file: {where} (no header magic; truncated or corrupt)")
    return tail[-need:]


def read_footer(store: ObjectStore, path: str) -> pq.FileMetaData:
    """The file's metadata from a ranged read of its footer; pass it on as ``ParquetFile(metadata=...)``."""
    footer = read_footer_bytes(store, path)
    try:
        return pq.read_metadata(pa.BufferReader(footer))
    except (OSError, pa.ArrowException) as exc:
        raise StoreError(
            f"not a Parquet file: {store.join(path)} ({str(exc).splitlines()[0][:160]})"
        ) from None


def provenance_of(metadata: pq.FileMetaData) -> dict[str, str]:
    """The ``mdth.`` key-value entries of a footer, without the prefix."""
    raw = metadata.metadata or {}
    out: dict[str, str] = {}
    for key, value in raw.items():
        name = key.decode("utf-8", "replace")
        if name.startswith(PREFIX):
            out[name[len(PREFIX) :]] = value.decode("utf-8", "replace")
    return out


def read_whole(handle: Any, *, columns: list[str] | None = None, schema: pa.Schema | None = None) -> pa.Table:
    """A whole small Parquet file (or some columns) from an open file object, on the calling thread.

    Small files need none of ``pq.read_table``'s dataset machinery and read-ahead threads. With ``schema``,
    the table is projected onto it (columns the file lacks are nulls), as ``read_table`` does.
    """
    reader = pq.ParquetFile(handle)
    if schema is None:
        return reader.read(columns=columns, use_threads=False)
    present = set(reader.schema_arrow.names)
    table = reader.read(columns=[n for n in schema.names if n in present], use_threads=False)
    arrays = [
        table[f.name].cast(f.type) if f.name in present else pa.nulls(table.num_rows, f.type) for f in schema
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


def read_provenance(store: ObjectStore, path: str) -> dict[str, str] | None:
    """Provenance from the footer alone; None if the object does not exist."""
    try:
        return provenance_of(read_footer(store, path))
    except NotFound:
        return None
