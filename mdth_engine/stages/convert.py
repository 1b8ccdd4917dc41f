"""Tardis ``.csv.gz`` -> lake Arrow batches (the heart of the download stage), streaming in bounded memory.

Three threads form a pipeline: one hashes and inflates the source and cuts it into whole-line chunks, one
parses each chunk with pyarrow's multi-threaded CSV reader into the lake schema, and the caller's thread hands
the batches to ``sink`` (which writes Parquet). A chunk where anything is off is re-read line by line
(convert_rows.py) so a malformed row is reported with its file line, or quarantined on request.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from mdth_engine.core.errors import MdthError, UsageError
from mdth_engine.core.schemas import DATA_TYPES
from mdth_engine.stages.convert_rows import (
    BOOL,
    DICT,
    FLOAT,
    INT,
    STRING,
    SYMBOL,
    Analysis,
    Layout,
    UnitRules,
    analyse,
    layout_for,
    normalise_symbol,
)
from mdth_engine.stages.convert_source import (
    Chunk,
    SourceError,
    SourceStats,
    arrow_buffer,
    read_chunks,
    string_array,
    threaded,
)

__all__ = ["BAD_ROW_MODES", "BadRowsError", "ConvertResult", "SourceError", "convert_file"]

BAD_ROW_MODES = ("fail", "quarantine")
TS = pa.timestamp("us", tz="UTC")
_DICT_STR = pa.dictionary(pa.int32(), pa.string())
_CSV_TYPES = {INT: pa.int64(), FLOAT: pa.float64(), BOOL: pa.bool_(), STRING: pa.string(), DICT: _DICT_STR}

Sink = Callable[[str | None, pa.RecordBatch], None]


class BadRowsError(MdthError):
    """Malformed source rows: names the file, the first bad row's line and reason, and how many there are."""

    def __init__(self, path: Path, line: int, reason: str, count: int) -> None:
        more = (
            f" ({count} bad rows in all; --on-bad-rows quarantine keeps the good ones)" if count > 1 else ""
        )
        super().__init__(f"{path}: line {line}: {reason}{more}")
        self.path = path
        self.line = line
        self.reason = reason
        self.count = count


@dataclasses.dataclass(slots=True)
class ConvertResult:
    """What one source file became: good rows per lake output, bad rows, and the source's identity."""

    rows: int
    bad_rows: int
    source_bytes: int
    source_sha256: str
    first_timestamp_us: int | None  # min/max of local_timestamp over the good rows (the publisher's rule)
    last_timestamp_us: int | None
    outputs: dict[str, int]  # lake key -> rows (options_chain: one OPTION_CHAIN key per underlying)
    quarantine_path: Path | None = None  # where the bad lines are, when some were quarantined


@dataclasses.dataclass(slots=True)
class _Converted:
    """One chunk, converted: the batches for the sink and the chunk's bad lines."""

    batches: list[tuple[str | None, pa.RecordBatch]]
    rows: int
    first_us: int | None
    last_us: int | None
    bad_lines: np.ndarray
    bad_text: list[bytes]
    first_reason: str


def convert_file(
    src: Path,
    data_type: str,
    *,
    exchange: str,
    symbol: str,
    sink: Sink,
    on_bad_rows: str = "fail",
    quarantine_path: Path | None = None,
    block_size: int = 8 << 20,
    instrument_key: str | None = None,
) -> ConvertResult:
    """Convert one Tardis CSV.gz into lake-schema batches, in source order, handing each to ``sink(group, batch)``.

    ``group`` is None for per-instrument data and the OPTION_CHAIN key for options_chain. Malformed rows fail
    the file (BadRowsError) unless ``on_bad_rows="quarantine"``, which keeps the good rows and writes the bad
    lines to ``quarantine_path`` (default: next to ``src``). A cut-off or corrupt gzip is a retryable
    SourceError; a wrong header is a non-retryable one. ``instrument_key`` only names the per-instrument
    output in ``ConvertResult.outputs`` (default: the dataset symbol).
    """
    if data_type not in DATA_TYPES:
        raise UsageError(f"unknown data type {data_type!r}; known: {', '.join(DATA_TYPES)}")
    if on_bad_rows not in BAD_ROW_MODES:
        raise UsageError(f"--on-bad-rows must be one of {', '.join(BAD_ROW_MODES)}, not {on_bad_rows!r}")
    if block_size < 1024:
        raise UsageError(f"block_size {block_size} is too small (at least 1024 bytes)")
    src = Path(src)
    if not src.is_file():
        raise FileNotFoundError(f"source file {src} does not exist")
    plan = _Plan(src, layout_for(data_type), exchange, symbol, block_size)
    quarantine = (
        _Quarantine(quarantine_path or src.with_name(src.name + ".bad.csv"))
        if on_bad_rows == "quarantine"
        else None
    )
    per_instrument_key = instrument_key or symbol
    stats = SourceStats()
    outputs: dict[str, int] = {}
    rows = bad_count = 0
    first_us: int | None = None
    last_us: int | None = None
    first_bad: tuple[int, str] | None = None

    converted = threaded(lambda: plan.convert(stats), name="mdth-convert-parse")
    try:
        for item in converted:
            if item.bad_lines.size:
                if first_bad is None:
                    first_bad = (int(item.bad_lines[0]), item.first_reason)
                bad_count += int(item.bad_lines.size)
                if quarantine is not None:
                    quarantine.write(item.bad_text)
            if bad_count and quarantine is None:
                continue  # the unit fails; keep reading only to count the bad rows
            for group, batch in item.batches:
                sink(group, batch)
                key = group if group is not None else per_instrument_key
                outputs[key] = outputs.get(key, 0) + batch.num_rows
            rows += item.rows
            if item.first_us is not None:
                first_us = item.first_us if first_us is None else min(first_us, item.first_us)
                last_us = item.last_us if last_us is None else max(last_us, item.last_us)  # type: ignore[type-var]
        plan.check_header(stats.header)  # a header-only file yields no chunk
    except BaseException:
        if quarantine is not None:
            quarantine.abort()
        raise
    finally:
        converted.close()
    if first_bad is not None and quarantine is None:
        raise BadRowsError(src, first_bad[0], first_bad[1], bad_count)
    written = quarantine.commit() if quarantine is not None else None
    return ConvertResult(
        rows=rows,
        bad_rows=bad_count,
        source_bytes=stats.source_bytes,
        source_sha256=stats.sha256,
        first_timestamp_us=first_us,
        last_timestamp_us=last_us,
        outputs=outputs,
        quarantine_path=written,
    )


class _Plan:
    """The conversion of one file: reader options, unit rules, the fast path, and grouping."""

    def __init__(self, src: Path, layout: Layout, exchange: str, symbol: str, block_size: int) -> None:
        self.src = src
        self.layout = layout
        self.exchange = exchange
        self.symbol = symbol
        self.block_size = block_size
        self.header_checked = False
        self.resolver = _OptionResolver(exchange) if layout.grouped else None
        self.rules = UnitRules(
            exchange=exchange,
            symbol=None if layout.grouped else normalise_symbol(symbol),
            known_symbols=self.resolver.known if self.resolver else None,
        )
        self.prefix: bytes | None = None
        stored = [c for c in layout.columns if c.lake is not None]
        self.read_options = pcsv.ReadOptions(
            column_names=layout.header,
            block_size=max(1 << 20, block_size // max(2, os.cpu_count() or 2)),
            use_threads=True,
        )
        # Tardis never quotes; blank lines are kept as rows so that rows and lines stay one to one
        self.parse_options = pcsv.ParseOptions(quote_char=False, ignore_empty_lines=False)
        self.convert_options = pcsv.ConvertOptions(
            column_types={c.name: _CSV_TYPES[DICT if c.kind == SYMBOL else c.kind] for c in stored},
            include_columns=[c.name for c in stored],
            null_values=[""],
            strings_can_be_null=True,
            true_values=["true"],
            false_values=["false"],
        )
        self.lake_names = [c.lake for c in stored]
        self.int_columns = [c.lake for c in stored if c.kind == INT]
        self.required = [c.lake for c in stored if c.required]
        self.domains = {c.lake: c.domain for c in stored if c.domain is not None}
        # one fixed dictionary per domain column, so every batch (and row group) shares it
        self.domain_dictionaries = {
            name: string_array(sorted(domain)) for name, domain in self.domains.items()
        }

    # --- the parse thread ------------------------------------------------------------------------------------

    def convert(self, stats: SourceStats) -> Iterator[_Converted]:
        chunks = threaded(lambda: read_chunks(self.src, stats, self.block_size), name="mdth-convert-read")
        line = 2  # the file line of the next chunk's first line (the header is line 1)
        try:
            for chunk in chunks:
                self.check_header(stats.header)
                if self.prefix is None:
                    self.prefix = self._prefix(chunk)
                table = self._fast(chunk)
                if table is not None:
                    line += table.num_rows  # clean: one row per line (see _fast)
                    yield self._emit(table, _NO_LINES, [], "")
                else:
                    found: Analysis = analyse(chunk, line, self.layout, self.rules)
                    line += found.lines
                    yield self._emit(found.table, found.bad_lines, found.bad_text, found.first_reason)
        finally:
            chunks.close()

    def check_header(self, header: bytes | None) -> None:
        if self.header_checked or header is None:
            return
        text = header.decode("utf-8", "replace").rstrip("\r")
        got = text.split(",")
        want = self.layout.header
        if got != want:
            raise SourceError(
                f"{self.src}: line 1: not a {self.layout.data_type} header: {_header_difference(got, want)}",
                retryable=False,
            )
        self.header_checked = True

    def _prefix(self, chunk: Chunk) -> bytes:
        """What every line must start with: ``exchange,symbol,`` as the file spells the symbol."""
        if self.layout.grouped:
            return f"{self.exchange},".encode()
        start = chunk.head + chunk.body[:4096]
        first = start[: start.find(b"\n")].decode("utf-8", "replace").split(",")
        spelled = first[1] if len(first) > 1 else self.symbol
        if normalise_symbol(spelled) != normalise_symbol(self.symbol):
            spelled = self.symbol
        return f"{self.exchange},{spelled},".encode()

    def _fast(self, chunk: Chunk) -> pa.Table | None:
        """The chunk parsed by pyarrow, or None when any row needs a closer look.

        Clean means: pyarrow read it (no wrong column count, no unparsable cell) and every row is a line that
        starts with ``exchange,symbol,`` right after a line break. Blank lines are rows here (with empty,
        hence missing, timestamps) and a lone carriage return would start a row not preceded by a line
        break, so in a clean chunk rows and lines are one to one and the row count numbers the lines.
        """
        try:  # a wrong column count or an unparsable cell raises: the chunk goes line by line
            table = pcsv.read_csv(chunk.arrow(), self.read_options, self.parse_options, self.convert_options)
        except pa.ArrowInvalid:
            return None
        assert self.prefix is not None
        if chunk.lines_starting_with(self.prefix) != table.num_rows:
            return None
        for name in self.required:
            if table.column(name).null_count:
                return None
        for name, domain in self.domains.items():
            for part in table.column(name).chunks:
                if not domain.issuperset(part.dictionary.to_pylist()):
                    return None
        table = table.rename_columns(self.lake_names)
        for name in self.int_columns:
            index = table.schema.get_field_index(name)
            column = table.column(index)
            table = table.set_column(index, name, pa.chunked_array([c.view(TS) for c in column.chunks], TS))
        if self.resolver is not None:
            for part in table.column("symbol").chunks:
                if not all(self.resolver.known(part.dictionary.to_pylist())):
                    return None
        return table

    def _emit(self, table: pa.Table, bad_lines: np.ndarray, bad_text: list[bytes], reason: str) -> _Converted:
        first_us = last_us = None
        if table.num_rows:
            bounds = pc.min_max(table.column("local_timestamp"))
            first_us, last_us = bounds["min"].value, bounds["max"].value
        schema = self.layout.schema
        batches: list[tuple[str | None, pa.RecordBatch]] = []
        for batch in table.to_batches():
            if not batch.num_rows:
                continue
            for name, values in self.domain_dictionaries.items():
                index = batch.schema.get_field_index(name)
                batch = batch.set_column(
                    index, batch.schema.field(index), _recode(batch.column(index), values)
                )
            if self.resolver is None:
                batches.append(
                    (None, pa.RecordBatch.from_arrays([batch.column(n) for n in schema.names], schema=schema))
                )
            else:
                batches.extend(self.resolver.split(batch, schema))
        return _Converted(batches, table.num_rows, first_us, last_us, bad_lines, bad_text, reason)


_NO_LINES = np.zeros(0, dtype=np.int64)


def _mask(selected: np.ndarray) -> pa.BooleanArray:
    """A numpy bool mask as an Arrow one (``pa.array`` would import pandas on its first call)."""
    bits = np.packbits(selected, bitorder="little").tobytes()
    return pa.Array.from_buffers(pa.bool_(), len(selected), [None, arrow_buffer(bits)])


def _recode(array: pa.DictionaryArray, dictionary: pa.Array) -> pa.DictionaryArray:
    """The same values over a fixed dictionary (every value is in it: the domain check came first)."""
    if array.dictionary.equals(dictionary):
        return array
    mapping = pc.index_in(array.dictionary, value_set=dictionary).cast(pa.int32())
    return pa.DictionaryArray.from_arrays(pc.take(mapping, array.indices), dictionary)


class _OptionResolver:
    """Maps the few hundred option symbols of a chain file to keys once, then splits batches by underlying."""

    def __init__(self, exchange: str) -> None:
        from mdth_engine.core.keys import venue_for_exchange

        venue_for_exchange(exchange)  # an unsupported exchange is a UsageError before any work
        self.exchange = exchange
        self._keys: dict[str, tuple[str, str] | None] = {}

    def resolve(self, symbol: str) -> tuple[str, str] | None:
        """(instrument key, OPTION_CHAIN key) of an option symbol, or None when it is not a mappable option."""
        if symbol not in self._keys:
            from mdth_engine.core.keys import key_from_tardis

            found = key_from_tardis(self.exchange, symbol, symbol_type="option")
            self._keys[symbol] = (str(found.key), str(found.key.chain_key())) if found is not None else None
        return self._keys[symbol]

    def known(self, symbols: list[str]) -> list[bool]:
        return [s is not None and self.resolve(s) is not None for s in symbols]

    def split(self, batch: pa.RecordBatch, schema: pa.Schema) -> list[tuple[str | None, pa.RecordBatch]]:
        """The batch as one batch per underlying (source order kept), with the ``instrument_key`` column."""
        symbols = batch.column("symbol")
        resolved = [self.resolve(s) for s in symbols.dictionary.to_pylist()]
        # entries that cannot be keyed only occur unused (their rows were bad): any text will do for them
        keys = string_array([r[0] if r else "" for r in resolved])
        chains = [r[1] if r else "" for r in resolved]
        instrument_key = pa.DictionaryArray.from_arrays(symbols.indices, keys)
        columns = {name: batch.column(name) for name in batch.schema.names}
        columns["instrument_key"] = instrument_key
        full = pa.RecordBatch.from_arrays([columns[n] for n in schema.names], schema=schema)
        names = sorted(set(chains))
        if len(names) == 1:
            return [(names[0], full)]
        group_of_entry = np.asarray([names.index(c) for c in chains], dtype=np.int32)
        indices = symbols.indices  # never null: a row without a symbol is a bad row
        codes = np.frombuffer(
            indices.buffers()[1], dtype=np.int32, count=len(indices), offset=indices.offset * 4
        )
        group_of_row = group_of_entry[codes]
        out: list[tuple[str | None, pa.RecordBatch]] = []
        for g in np.unique(group_of_row).tolist():
            out.append((names[g], full.filter(_mask(group_of_row == g))))
        return out


def _header_difference(got: list[str], want: list[str]) -> str:
    missing = [c for c in want if c not in got]
    extra = [c for c in got if c not in want]
    parts = []
    if missing:
        parts.append(
            "missing " + ", ".join(repr(c) for c in missing[:5]) + (" ..." if len(missing) > 5 else "")
        )
    if extra:
        parts.append(
            "unexpected " + ", ".join(repr(c) for c in extra[:5]) + (" ..." if len(extra) > 5 else "")
        )
    if not parts:
        for i, (g, w) in enumerate(zip(got, want, strict=False)):
            if g != w:
                parts.append(f"column {i + 1} is {g!r}, expected {w!r}")
                break
        else:
            parts.append(f"{len(got)} columns, expected {len(want)}")
    return "; ".join(parts)


class _Quarantine:
    """Bad lines, written to a temp file as they are found and published next to the spool at the end."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self._file = None
        self.count = 0

    def write(self, lines: list[bytes]) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self._tmp, "wb")  # noqa: SIM115 - closed in commit/abort
        self._file.write(b"".join(line + b"\n" for line in lines))
        self.count += len(lines)

    def commit(self) -> Path | None:
        if self._file is None:  # no bad rows: a file left by an earlier run of this source is stale
            self.path.unlink(missing_ok=True)
            return None
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            with contextlib.suppress(FileNotFoundError):
                self._tmp.unlink()
