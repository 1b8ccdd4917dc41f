"""How each Tardis CSV column becomes a lake column, and the slow exact path that finds malformed rows.

The fast path (convert.py) parses whole chunks with typed pyarrow readers. Only a chunk where something is off
(a wrong column count, an unparsable number, a side outside its domain, another instrument's row) comes here:
its lines are split and checked column by column, vectorised, with pyarrow's own cast as the arbiter of what
is a number, so both paths accept exactly the same rows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mdth_engine.core.schemas import (
    CSV_COLUMNS,
    GROUPED_DATA_TYPES,
    OPTION_TYPE_DOMAIN,
    SIDE_DOMAIN,
    csv_to_lake_name,
    schema_for,
)
from mdth_engine.stages.convert_source import Chunk, arrow_buffer

# Column kinds: how a CSV cell is checked and typed.
EXCHANGE, SYMBOL, INT, FLOAT = "exchange", "symbol", "int", "float"
BOOL, STRING, DICT = "bool", "string", "dict"

_INT_RE = r"^-?[0-9]+$"
_FLOAT_RE = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"
_MAYBE_NUMBER_RE = r"^[0-9A-Za-z+.\-]+$"  # not a plain decimal, but pyarrow may still read it (nan, 0x10)
_TRIM = " \t"  # what the pyarrow CSV reader trims around numbers


@dataclasses.dataclass(frozen=True, slots=True)
class Column:
    name: str  # CSV header name
    kind: str
    lake: str | None  # lake column name; None when the column is checked but not stored
    required: bool = False  # an empty cell is a bad row
    domain: frozenset[str] | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Layout:
    """The CSV columns of one data type, their kinds, and the lake schema they become."""

    data_type: str
    columns: tuple[Column, ...]
    schema: pa.Schema
    grouped: bool

    @property
    def header(self) -> list[str]:
        return [c.name for c in self.columns]


def layout_for(data_type: str) -> Layout:
    """Column rules for a data type, derived from SCHEMAS and CSV_COLUMNS (the single source of truth)."""
    schema = schema_for(data_type)
    grouped = data_type in GROUPED_DATA_TYPES
    columns = []
    for name in CSV_COLUMNS[data_type]:
        if name == "exchange":
            columns.append(Column(name, EXCHANGE, None, required=True))
            continue
        if name == "symbol":
            columns.append(Column(name, SYMBOL, "symbol" if grouped else None, required=True))
            continue
        lake = csv_to_lake_name(data_type, name)
        field = schema.field(lake)
        domain = None
        if name == "side":
            domain = SIDE_DOMAIN[data_type]
        elif name == "type" and data_type == "options_chain":
            domain = OPTION_TYPE_DOMAIN
        if pa.types.is_timestamp(field.type):
            kind = INT
        elif pa.types.is_floating(field.type):
            kind = FLOAT
        elif pa.types.is_boolean(field.type):
            kind = BOOL
        elif pa.types.is_dictionary(field.type):
            kind = DICT
        elif pa.types.is_string(field.type):
            kind = STRING
        else:  # pragma: no cover - guards a schema change that this module does not know
            raise TypeError(f"no CSV conversion for {data_type}.{lake} of type {field.type}")
        required = not field.nullable or domain is not None
        columns.append(Column(name, kind, lake, required=required, domain=domain))
    return Layout(data_type, tuple(columns), schema, grouped)


@dataclasses.dataclass(frozen=True, slots=True)
class UnitRules:
    """What rows of this unit must say: its exchange, its symbol (per-instrument), known option symbols."""

    exchange: str
    symbol: str | None  # normalised dataset symbol; None for grouped files
    known_symbols: Callable[[list[str]], list[bool]] | None = None  # grouped: can each symbol be keyed?


def normalise_symbol(symbol: str) -> str:
    """Tardis' dataset-id form of a symbol: upper case, ``/`` and ``:`` as ``-`` (FORMATS.md section 3)."""
    return symbol.replace("/", "-").replace(":", "-").upper()


@dataclasses.dataclass(slots=True)
class Analysis:
    """The result of checking one chunk line by line."""

    table: pa.Table  # good rows, lake column names (plus ``symbol`` for grouped data), source order
    bad_lines: np.ndarray  # 1-based file line numbers of bad rows, ascending
    bad_text: list[bytes]  # the exact bad lines (without the line break), same order
    first_reason: str  # why the first bad row is bad ("" when none)
    lines: int  # lines in the chunk (blank ones included), to number the next chunk's lines


def analyse(chunk: Chunk, first_line: int, layout: Layout, rules: UnitRules) -> Analysis:
    """Split a chunk (whose first line is file line ``first_line``) into good rows and bad lines."""
    data = original = chunk.data
    starts, ends = _line_bounds(data)
    invalid_utf8 = _invalid_utf8_lines(data, starts, ends)
    if invalid_utf8.size:
        data = _blank_out(data, starts, ends, invalid_utf8)
    offsets = (
        np.concatenate([starts, ends[-1:] + 1]).astype(np.int32) if len(starts) else np.zeros(1, np.int32)
    )
    lines = pa.StringArray.from_buffers(len(starts), arrow_buffer(offsets.tobytes()), arrow_buffer(data))
    text = pc.replace_substring_regex(lines, pattern=r"\r?\n$", replacement="")
    unreadable = np.zeros(len(starts), dtype=bool)
    unreadable[invalid_utf8] = True
    blank = np.asarray(pc.equal(text, ""), dtype=bool) & ~unreadable
    width = len(layout.columns)
    counts = np.asarray(pc.count_substring(text, ","), dtype=np.int64) + 1
    wrong = ~blank & ~unreadable & (counts != width)
    candidates = np.flatnonzero(~blank & ~wrong & ~unreadable)
    cells = pc.split_pattern(text.take(pa.array(candidates)), ",")
    checked = [_check_column(col, pc.list_element(cells, j), rules) for j, col in enumerate(layout.columns)]
    bad_cell = np.zeros(len(candidates), dtype=bool)
    for _, bad in checked:
        bad_cell |= bad
    good = ~bad_cell

    bad_index = unreadable | wrong
    bad_index[candidates[bad_cell]] = True
    bad_rows = np.flatnonzero(bad_index)

    reason = ""
    if bad_rows.size:
        first = int(bad_rows[0])
        if unreadable[first]:
            reason = "not valid UTF-8 text"
        elif wrong[first]:
            reason = f"expected {width} columns, found {counts[first]}"
        else:
            row = int(np.searchsorted(candidates, first))
            for j, (col, (_, bad)) in enumerate(zip(layout.columns, checked, strict=True)):
                if bad[row]:
                    reason = _reason(col, pc.list_element(cells, j)[row].as_py(), rules)
                    break
    bad_text = [original[starts[i] : ends[i]] for i in bad_rows.tolist()]
    table = _good_table(layout, checked, good)
    return Analysis(table, bad_rows + first_line, bad_text, reason, len(starts))


def _line_bounds(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Start offsets of lines and offsets of their ``\\n`` (the chunk ends with one)."""
    newlines = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10)
    starts = np.empty(len(newlines), dtype=np.int64)
    if len(newlines):
        starts[0] = 0
        starts[1:] = newlines[:-1] + 1
    return starts, newlines


def _invalid_utf8_lines(data: bytes, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    try:
        data.decode("utf-8")
        return np.zeros(0, dtype=np.int64)
    except UnicodeDecodeError:
        pass
    bad = []
    for i, (s, e) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
        try:
            data[s:e].decode("utf-8")
        except UnicodeDecodeError:
            bad.append(i)
    return np.asarray(bad, dtype=np.int64)


def _blank_out(data: bytes, starts: np.ndarray, ends: np.ndarray, rows: np.ndarray) -> bytes:
    """The chunk with the given lines' bytes replaced by spaces (keeps offsets; spaces are valid UTF-8)."""
    buf = bytearray(data)
    for i in rows.tolist():
        buf[starts[i] : ends[i]] = b" " * (ends[i] - starts[i])
    return bytes(buf)


# --- per-column checks -----------------------------------------------------------------------------------


def _check_column(col: Column, cells: pa.Array, rules: UnitRules) -> tuple[pa.Array | None, np.ndarray]:
    """(typed values with nulls where bad or empty, bad mask) for one column's cells."""
    n = len(cells)
    empty = np.asarray(pc.equal(cells, ""), dtype=bool) if n else np.zeros(0, dtype=bool)
    if col.kind == EXCHANGE:
        bad = ~np.asarray(pc.equal(cells, rules.exchange), dtype=bool) if n else np.zeros(0, dtype=bool)
        return None, bad
    if col.kind == SYMBOL:
        if rules.symbol is not None:
            normal = pc.utf8_upper(pc.replace_substring_regex(cells, pattern="[/:]", replacement="-"))
            bad = ~np.asarray(pc.equal(normal, rules.symbol), dtype=bool) if n else np.zeros(0, dtype=bool)
            return None, bad
        bad = empty.copy()
        values = cells.dictionary_encode()
        assert rules.known_symbols is not None
        known = np.asarray(rules.known_symbols(values.dictionary.to_pylist()), dtype=bool)
        indices = values.indices.to_numpy(zero_copy_only=False)
        bad |= ~known[indices] if n else bad
        return pc.if_else(pa.array(~bad), cells, pa.scalar(None, pa.string())), bad
    if col.kind in (INT, FLOAT):
        text = pc.utf8_trim(cells, _TRIM)
        empty = np.asarray(pc.equal(text, ""), dtype=bool) if n else empty
        target = pa.int64() if col.kind == INT else pa.float64()
        values, bad = _parse_numbers(text, empty, target, _INT_RE if col.kind == INT else _FLOAT_RE)
        if col.required:
            bad |= empty
        return values, bad
    if col.kind == BOOL:
        true = np.asarray(pc.equal(cells, "true"), dtype=bool) if n else empty
        false = np.asarray(pc.equal(cells, "false"), dtype=bool) if n else empty
        bad = ~(true | false | empty)
        if col.required:
            bad |= empty
        values = pa.array(np.where(true, True, False), mask=~(true | false))
        return values, bad
    # STRING / DICT: any text; empty is null; a domain limits the values
    bad = empty.copy() if col.required else np.zeros(n, dtype=bool)
    if col.domain is not None and n:
        bad |= ~np.asarray(pc.is_in(cells, pa.array(sorted(col.domain))), dtype=bool)
    values = pc.if_else(pa.array(~(bad | empty)), cells, pa.scalar(None, pa.string())) if n else cells
    return values, bad


def _parse_numbers(
    text: pa.Array, empty: np.ndarray, target: pa.DataType, regex: str
) -> tuple[pa.Array, np.ndarray]:
    """Cast text to numbers with pyarrow (the same parser the CSV reader uses); the mask marks unparsable cells."""
    n = len(text)
    bad = np.zeros(n, dtype=bool)
    if not n:
        return pa.array([], type=target), bad
    plain = np.asarray(pc.match_substring_regex(text, regex), dtype=bool)
    maybe = np.asarray(pc.match_substring_regex(text, _MAYBE_NUMBER_RE), dtype=bool)
    bad |= ~plain & ~empty & ~maybe  # spaces inside, quotes, symbols: never a number
    unsure = np.flatnonzero(~plain & ~empty & maybe)  # nan, inf, 0x10, abc: let pyarrow decide, one by one
    for i in unsure.tolist():
        if not _castable(text.slice(i, 1), target):
            bad[i] = True
    while True:
        keep = pa.array(~bad & ~empty)
        masked = pc.if_else(keep, text, pa.scalar(None, pa.string()))
        try:
            return pc.cast(masked, target), bad
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # e.g. an integer beyond int64
            for i in _uncastable(masked, target, 0):
                bad[i] = True


def _castable(values: pa.Array, target: pa.DataType) -> bool:
    try:
        pc.cast(values, target)
        return True
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False


def _uncastable(values: pa.Array, target: pa.DataType, offset: int) -> list[int]:
    """Positions of the values pyarrow cannot cast, by bisection (only reached for rare overflow cases)."""
    if _castable(values, target):
        return []
    if len(values) == 1:
        return [offset]
    half = len(values) // 2
    return _uncastable(values.slice(0, half), target, offset) + _uncastable(
        values.slice(half), target, offset + half
    )


def _reason(col: Column, value: str, rules: UnitRules) -> str:
    """One line saying why a cell is bad (the checks above, in words)."""
    shown = repr(value if len(value) <= 60 else value[:57] + "...")
    if col.kind == EXCHANGE:
        return f"exchange {shown} is not {rules.exchange!r}"
    if col.kind == SYMBOL:
        if rules.symbol is not None:
            return f"symbol {shown} is not {rules.symbol!r}"
        if value == "":
            return "symbol is empty"
        return f"symbol {shown} is not an option symbol of {rules.exchange}"
    if value.strip(_TRIM) == "" and col.required:
        return f"{col.name} is empty"
    if col.domain is not None:
        return f"{col.name} {shown} is not one of {', '.join(sorted(col.domain))}"
    if col.kind == INT:
        return f"{col.name} {shown} is not an integer"
    if col.kind == FLOAT:
        return f"{col.name} {shown} is not a number"
    if col.kind == BOOL:
        return f"{col.name} {shown} is not true or false"
    return f"{col.name} {shown} is not valid"  # pragma: no cover - every bad kind is named above


def _good_table(
    layout: Layout, checked: list[tuple[pa.Array | None, np.ndarray]], good: np.ndarray
) -> pa.Table:
    """The good rows as a table with lake names and types (``symbol`` kept as text for grouped data)."""
    mask = pa.array(good)
    arrays: dict[str, pa.Array] = {}
    for col, (values, _) in zip(layout.columns, checked, strict=True):
        if col.lake is None or values is None:
            continue
        values = values.filter(mask)
        if col.kind in (DICT, SYMBOL):
            values = values.dictionary_encode()
        elif col.kind == INT:
            values = values.view(pa.timestamp("us", tz="UTC"))
        arrays[col.lake] = values
    if not arrays:  # pragma: no cover - every data type stores columns
        return pa.table({})
    return pa.table(arrays)
