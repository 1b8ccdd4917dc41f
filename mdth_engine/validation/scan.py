"""One streaming pass over a tick file: every content statistic validation needs, in bounded memory.

Row groups are read one at a time (only the columns a data type's checks need) and folded into counters
with numpy: timestamp order and bounds, value domains, crossed books, inter-arrival gaps (a log-spaced
histogram plus every gap longer than ``GAP_FLOOR_US``), trade-id hashes (8 bytes a row) and the trade
totals candles must equal. Nothing here loops over rows in Python.
"""

from __future__ import annotations

import dataclasses
import functools
from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mdth_engine.core.schemas import OPTION_TYPE_DOMAIN, SIDE_DOMAIN
from mdth_engine.core.timeframes import US_PER_DAY, US_PER_SECOND

# Exchange timestamps may fall this far outside the (arrival) day: a day's first rows can carry the previous
# day's exchange time (files are split by local_timestamp), and exchange clocks run slightly ahead.
SKEW_US = 10 * US_PER_SECOND
GAP_FLOOR_US = 60 * US_PER_SECOND  # no gap shorter than this is ever a silence
BINS_PER_OCTAVE = 16  # gap histogram resolution: 2^(1/16) ~ 4.4 %
N_BINS = 40 * BINS_PER_OCTAVE  # up to 2^40 us (12 days)
BATCH_ROWS = 64 * 1024

_PRICE_LEVELS = {"book_snapshot_5": 5, "book_snapshot_25": 25}
# (column, rule): "pos" > 0 required, "pos?" > 0 when present, "nonneg?" >= 0 when present, "num?" finite.
VALUE_RULES: dict[str, tuple[tuple[str, str], ...]] = {
    "trades": (("price", "pos"), ("amount", "pos")),
    "liquidations": (("price", "pos"), ("amount", "pos")),
    "quotes": (("ask_price", "pos?"), ("ask_amount", "pos?"), ("bid_price", "pos?"), ("bid_amount", "pos?")),
    "book_ticker": (
        ("ask_price", "pos?"),
        ("ask_amount", "pos?"),
        ("bid_price", "pos?"),
        ("bid_amount", "pos?"),
    ),
    "derivative_ticker": (
        ("funding_rate", "num?"),
        ("predicted_funding_rate", "num?"),
        ("open_interest", "nonneg?"),
        ("last_price", "pos?"),
        ("index_price", "pos?"),
        ("mark_price", "pos?"),
    ),
    "options_chain": (
        ("strike_price", "pos"),
        ("open_interest", "nonneg?"),
        ("last_price", "nonneg?"),
        ("bid_price", "nonneg?"),
        ("bid_amount", "nonneg?"),
        ("bid_iv", "nonneg?"),
        ("ask_price", "nonneg?"),
        ("ask_amount", "nonneg?"),
        ("ask_iv", "nonneg?"),
        ("mark_price", "nonneg?"),
        ("mark_iv", "nonneg?"),
        ("underlying_price", "pos?"),
    ),
    "incremental_book_L2": (("price", "pos"), ("amount", "nonneg?")),
}
# Categorical columns and their domains.
DOMAINS: dict[str, tuple[str, frozenset[str]]] = {
    **{dt_: ("side", values) for dt_, values in SIDE_DOMAIN.items()},
    "options_chain": ("type", OPTION_TYPE_DOMAIN),
}
# Top-of-book columns (bid, ask) per data type whose rows can be crossed or locked.
TOP_OF_BOOK = {
    "book_snapshot_5": ("bid_price_1", "ask_price_1"),
    "book_snapshot_25": ("bid_price_1", "ask_price_1"),
    "quotes": ("bid_price", "ask_price"),
    "book_ticker": ("bid_price", "ask_price"),
    "options_chain": ("bid_price", "ask_price"),
}
ID_TYPES = frozenset({"trades", "liquidations"})


def columns_for(data_type: str) -> list[str]:
    """The columns one scan of this data type reads (the rest of the file is never fetched)."""
    cols = ["timestamp", "local_timestamp"]
    cols += [c for c, _ in VALUE_RULES.get(data_type, ())]
    depth = _PRICE_LEVELS.get(data_type, 0)
    for level in range(1, depth + 1):
        cols += [f"ask_price_{level}", f"ask_amount_{level}", f"bid_price_{level}", f"bid_amount_{level}"]
    if data_type in DOMAINS:
        cols.append(DOMAINS[data_type][0])
    if data_type in ID_TYPES:
        cols.append("id")
    return list(dict.fromkeys(cols))


@functools.cache
def _powers(n: int) -> np.ndarray:
    """P^0 .. P^(n-1) modulo 2^64 (the polynomial string hash's weights)."""
    with np.errstate(over="ignore"):
        return np.cumprod(np.concatenate(([1], np.full(max(n - 1, 0), 0x100000001B3))).astype(np.uint64))


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, vectorised."""
    with np.errstate(over="ignore"):
        h = h ^ (h >> np.uint64(30))
        h = h * np.uint64(0xBF58476D1CE4E5B9)
        h = h ^ (h >> np.uint64(27))
        h = h * np.uint64(0x94D049BB133111EB)
        return h ^ (h >> np.uint64(31))


def hash_strings(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A 64-bit hash of every non-null string (polynomial over its UTF-8 bytes, then mixed), vectorised."""
    if isinstance(values, pa.ChunkedArray):
        parts = [hash_strings(chunk) for chunk in values.chunks]
        return np.concatenate(parts) if parts else np.empty(0, np.uint64)
    if pa.types.is_dictionary(values.type):
        values = values.cast(pa.string())
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        values = values.cast(pa.string())
    if values.null_count:
        values = pc.drop_null(values)
    n = len(values)
    if n == 0:
        return np.empty(0, np.uint64)
    bufs = values.buffers()
    width = np.int64 if pa.types.is_large_string(values.type) else np.int32
    offsets = np.frombuffer(bufs[1], dtype=width)[values.offset : values.offset + n + 1].astype(np.int64)
    base, total = int(offsets[0]), int(offsets[-1] - offsets[0])
    lengths = np.diff(offsets)
    h = np.zeros(n, np.uint64)
    if total:
        data = np.frombuffer(bufs[2], dtype=np.uint8)[base : base + total].astype(np.uint64)
        starts = offsets[:-1] - base
        pos = np.arange(total, dtype=np.int64) - np.repeat(starts, lengths)
        with np.errstate(over="ignore"):
            contrib = (data + np.uint64(1)) * _powers(int(lengths.max()))[pos]
        nonempty = lengths > 0
        h[nonempty] = np.add.reduceat(contrib, starts[nonempty])
    with np.errstate(over="ignore"):
        h ^= lengths.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    return _mix(h)


def _ts(table: pa.Table, name: str) -> tuple[np.ndarray, int]:
    """A timestamp column as int64 microseconds (nulls as 0, i.e. 1970) and its null count."""
    column = table[name]
    if pa.types.is_timestamp(column.type) and column.type.unit != "us":
        column = column.cast(pa.timestamp("us", tz="UTC"), safe=False)
    nulls = column.null_count
    values = pc.fill_null(column.cast(pa.int64()), 0) if nulls else column.cast(pa.int64())
    return values.to_numpy(), nulls


def _f64(table: pa.Table, name: str) -> np.ndarray:
    column = table[name]
    if not pa.types.is_floating(column.type):
        column = column.cast(pa.float64())
    if column.null_count:
        column = pc.fill_null(column, float("nan"))
    return column.to_numpy()


def gap_bins(gaps_us: np.ndarray) -> np.ndarray:
    """Histogram bin of each gap (log-spaced, ``BINS_PER_OCTAVE`` per doubling)."""
    return np.minimum(
        (np.log2(gaps_us.astype(np.float64) + 1.0) * BINS_PER_OCTAVE).astype(np.int64), N_BINS - 1
    )


def bin_upper_us(index: int) -> float:
    """The upper edge of a histogram bin, in microseconds."""
    return float(2.0 ** ((index + 1) / BINS_PER_OCTAVE) - 1.0)


@dataclasses.dataclass
class ScanStats:
    """Everything one pass over a file found; ``*_us`` values are microseconds since the epoch."""

    data_type: str
    rows: int = 0
    null_times: int = 0
    local_decreases: int = 0
    first_decrease_us: int | None = None  # local_timestamp of the first row that went back in time
    local_outside: int = 0
    first_local_outside_us: int | None = None
    ts_early: int = 0  # exchange timestamp before day start - SKEW
    ts_late: int = 0  # exchange timestamp at or after day end + SKEW
    first_ts_outside_us: int | None = None
    first_local_us: int | None = None  # first and last rows' local_timestamp (file order)
    last_local_us: int | None = None
    min_local_us: int | None = None
    max_local_us: int | None = None
    value_issues: Counter = dataclasses.field(default_factory=Counter)  # column -> rows
    bad_value_rows: int = 0
    domain_column: str = ""
    domain_bad: int = 0
    domain_examples: set[str] = dataclasses.field(default_factory=set)
    ids_seen: int = 0
    duplicate_ids: int = 0
    crossed: int = 0
    locked: int = 0
    disordered: int = 0  # book snapshots whose levels are not sorted (or have holes)
    book_rows: int = 0  # rows with both sides present
    gap_histogram: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(N_BINS, np.int64))
    long_gaps: list[tuple[int, int]] = dataclasses.field(default_factory=list)  # (from, to) > GAP_FLOOR_US
    trade_count: int = 0  # trades stamped inside the day with a price and an amount (what candles count)
    trade_volume: float = 0.0


class FileScan:
    """Folds a file's row groups into ``ScanStats``; ``update`` per batch (file order), then ``finish``."""

    def __init__(self, data_type: str, day_start_us: int) -> None:
        self.stats = ScanStats(data_type)
        self.data_type = data_type
        self.d0 = day_start_us
        self.d1 = day_start_us + US_PER_DAY
        self._last_local: int | None = None
        self._hashes: list[np.ndarray] = []

    def update(self, table: pa.Table) -> None:
        n = table.num_rows
        if n == 0:
            return
        s = self.stats
        s.rows += n
        local, nulls_local = _ts(table, "local_timestamp")
        ts, nulls_ts = _ts(table, "timestamp")
        s.null_times += nulls_local + nulls_ts
        self._times(local, ts)
        self._values(table)
        self._domain(table)
        self._book(table)
        if self.data_type in ID_TYPES and "id" in table.column_names:
            hashes = hash_strings(table["id"])
            s.ids_seen += hashes.size
            if hashes.size:
                self._hashes.append(hashes)
        if self.data_type == "trades":
            price, amount = _f64(table, "price"), _f64(table, "amount")
            keep = (ts >= self.d0) & (ts < self.d1) & ~np.isnan(price) & ~np.isnan(amount)
            s.trade_count += int(keep.sum())
            s.trade_volume += float(amount[keep].sum())

    def _times(self, local: np.ndarray, ts: np.ndarray) -> None:
        s = self.stats
        if s.first_local_us is None:
            s.first_local_us = int(local[0])
        s.last_local_us = int(local[-1])
        lo, hi = int(local.min()), int(local.max())
        s.min_local_us = lo if s.min_local_us is None else min(s.min_local_us, lo)
        s.max_local_us = hi if s.max_local_us is None else max(s.max_local_us, hi)
        full = local if self._last_local is None else np.concatenate(([self._last_local], local))
        self._last_local = int(local[-1])
        diffs = np.diff(full)
        back = diffs < 0
        if back.any():
            s.local_decreases += int(back.sum())
            if s.first_decrease_us is None:
                s.first_decrease_us = int(full[1:][back][0])
        gaps = diffs[~back]
        if gaps.size:
            s.gap_histogram += np.bincount(gap_bins(gaps), minlength=N_BINS)
            long = np.nonzero(diffs > GAP_FLOOR_US)[0]
            s.long_gaps += [(int(full[i]), int(full[i + 1])) for i in long]
        outside = (local < self.d0) | (local >= self.d1)
        if outside.any():
            s.local_outside += int(outside.sum())
            if s.first_local_outside_us is None:
                s.first_local_outside_us = int(local[outside][0])
        early = ts < self.d0 - SKEW_US
        late = ts >= self.d1 + SKEW_US
        if early.any() or late.any():
            s.ts_early += int(early.sum())
            s.ts_late += int(late.sum())
            if s.first_ts_outside_us is None:
                s.first_ts_outside_us = int(ts[early | late][0])

    def _values(self, table: pa.Table) -> None:
        s = self.stats
        bad_any = np.zeros(table.num_rows, dtype=bool)
        for column, rule in VALUE_RULES.get(self.data_type, ()):
            if column not in table.column_names:
                continue
            x = _f64(table, column)
            if rule == "pos":
                bad = ~(x > 0) | np.isinf(x)
            elif rule == "pos?":
                bad = ~np.isnan(x) & (~(x > 0) | np.isinf(x))
            elif rule == "nonneg?":
                bad = ~np.isnan(x) & (~(x >= 0) | np.isinf(x))
            else:  # "num?"
                bad = np.isinf(x)
            count = int(bad.sum())
            if count:
                s.value_issues[column] += count
                bad_any |= bad
        depth = _PRICE_LEVELS.get(self.data_type, 0)
        for level in range(1, depth + 1):
            for side in ("ask", "bid"):
                price = _f64(table, f"{side}_price_{level}")
                amount = _f64(table, f"{side}_amount_{level}")
                has_p, has_a = ~np.isnan(price), ~np.isnan(amount)
                bad_p = has_p & (~(price > 0) | np.isinf(price))
                bad_a = (has_a & (~(amount > 0) | np.isinf(amount))) | (has_p != has_a)
                for name, bad in ((f"{side}_price_{level}", bad_p), (f"{side}_amount_{level}", bad_a)):
                    count = int(bad.sum())
                    if count:
                        s.value_issues[name] += count
                        bad_any |= bad
        s.bad_value_rows += int(bad_any.sum())

    def _domain(self, table: pa.Table) -> None:
        if self.data_type not in DOMAINS:
            return
        column, allowed = DOMAINS[self.data_type]
        s = self.stats
        s.domain_column = column
        if column not in table.column_names:
            return
        values = table[column]
        if pa.types.is_dictionary(values.type):
            values = values.cast(pa.string())
        ok = pc.fill_null(pc.is_in(values, value_set=pa.array(sorted(allowed), pa.string())), False)
        bad = int(pc.sum(pc.invert(ok).cast(pa.int64())).as_py() or 0)
        if bad:
            s.domain_bad += bad
            if len(s.domain_examples) < 3:
                wrong = pc.unique(pc.filter(values, pc.invert(ok)))
                for item in wrong.to_pylist()[:3]:
                    s.domain_examples.add("null" if item is None else repr(item))

    def _book(self, table: pa.Table) -> None:
        if self.data_type not in TOP_OF_BOOK:
            return
        s = self.stats
        bid_col, ask_col = TOP_OF_BOOK[self.data_type]
        bid, ask = _f64(table, bid_col), _f64(table, ask_col)
        both = (bid > 0) & (ask > 0)
        s.book_rows += int(both.sum())
        s.crossed += int((both & (bid > ask)).sum())
        s.locked += int((both & (bid == ask)).sum())
        depth = _PRICE_LEVELS.get(self.data_type, 0)
        if depth > 1:
            bad = np.zeros(table.num_rows, dtype=bool)
            for side, sign in (("ask", 1.0), ("bid", -1.0)):
                prev = _f64(table, f"{side}_price_1")
                for level in range(2, depth + 1):
                    cur = _f64(table, f"{side}_price_{level}")
                    has_prev, has_cur = ~np.isnan(prev), ~np.isnan(cur)
                    bad |= has_cur & ~has_prev  # a level after an empty one
                    bad |= has_cur & has_prev & ~((cur - prev) * sign > 0)  # not strictly worse than the last
                    prev = cur
            s.disordered += int(bad.sum())

    def finish(self) -> ScanStats:
        """The totals; duplicate ids are counted here, from the collected hashes (sorted once)."""
        s = self.stats
        if self._hashes:
            hashes = np.sort(np.concatenate(self._hashes))
            self._hashes = []
            s.duplicate_ids = int((hashes[1:] == hashes[:-1]).sum())
        return s


def scan_file(
    store: Any, path: str, data_type: str, day_start_us: int, batch_rows: int = BATCH_ROWS
) -> ScanStats:
    """Stream one lake file through a ``FileScan``: one row group at a time (``iter_batches`` reads ahead
    and held ~300 MB for a full-scale book day; a row group of a tick file is 64k rows), folded in slices of
    ``batch_rows``."""
    import pyarrow.parquet as pq

    scan = FileScan(data_type, day_start_us)
    with store.open_read(path) as handle:
        parquet = pq.ParquetFile(handle)
        present = set(parquet.schema_arrow.names)
        wanted = [c for c in columns_for(data_type) if c in present]
        for group in range(parquet.num_row_groups):
            table = parquet.read_row_group(group, columns=wanted, use_threads=False)
            for start in range(0, table.num_rows, batch_rows):
                scan.update(table.slice(start, batch_rows))
            del table
    return scan.finish()
