"""Ranged reads of lake files: the same rows as a full read, only the row groups, pages and columns needed,
the footer once per file generation, byte ranges coalesced into few requests; and the Lake API on top (days,
warnings, keys, times, sparse reads)."""

from __future__ import annotations

import datetime as dt
import itertools
import warnings

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from lake_builders import (
    CALL,
    CHAIN,
    DAY,
    PERP,
    PUT,
    SPOT,
    arrival_trades,
    split_by_arrival,
    ts_array,
    write_master,
    write_ticks,
)

from mdth_engine.api import Lake
from mdth_engine.core.errors import UsageError
from mdth_engine.core.schemas import schema_for
from mdth_engine.core.timeframes import US_PER_DAY, US_PER_SECOND, day_start_us
from mdth_engine.features.spec import candle_schema
from mdth_engine.reader import LakeWarning, ReadStats, read_windows, thrift
from mdth_engine.reader.footer import FOOTERS, footer_bytes
from mdth_engine.reader.ranges import COALESCE_GAP, MAX_RANGE, coalesce, fetch
from mdth_engine.reader.times import duration_us, to_us
from mdth_engine.storage import layout
from mdth_engine.storage.parquet import write_table

NEXT = DAY + dt.timedelta(days=1)
T0 = day_start_us(DAY)
MIN = 60 * US_PER_SECOND


@pytest.fixture(scope="module")
def day_trades() -> pa.Table:
    return arrival_trades(DAY, 100_000, seed=11)


def expected(table: pa.Table, start: int, end: int, by: str = "timestamp", columns=None) -> pa.Table:
    """The rows a read must return, from the whole table (file order)."""
    values = table[by].cast(pa.int64())
    out = table.filter(pc.and_(pc.greater_equal(values, start), pc.less(values, end)))
    return out.select(columns) if columns else out


def random_windows(rng: np.random.Generator, n: int) -> list[tuple[int, int]]:
    starts = T0 + rng.integers(-10 * MIN, US_PER_DAY + 10 * MIN, n)
    lengths = rng.integers(0, 30 * MIN, n)
    return [(int(s), int(s + n)) for s, n in zip(starts, lengths, strict=True)]


# --- the Thrift codec -----------------------------------------------------------------------------------------


def test_thrift_round_trips_a_real_footer(local_store, day_trades):
    write_table(local_store, "f.parquet", day_trades, {}, row_group_size=8192, max_rows_per_page=1024)
    size = local_store.stat("f.parquet").size
    raw = footer_bytes(local_store, "f.parquet", size, guess=1024)  # a footer longer than the first guess
    decoded, end = thrift.decode(raw[:-8])
    assert end == len(raw) - 8
    assert thrift.encode(decoded) == raw[:-8]
    assert decoded.get_value(3) == day_trades.num_rows  # FileMetaData.num_rows


def test_thrift_rejects_truncated_data():
    with pytest.raises(thrift.ThriftError):
        thrift.decode(b"\x15\x04\x19")


# --- one file ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout_kind", ["big_pages", "paged"])
@pytest.mark.parametrize("by", ["timestamp", "local_timestamp"])
def test_windows_return_exactly_the_rows_of_a_full_read(store, day_trades, layout_kind, by):
    FOOTERS.clear()
    if (
        layout_kind == "big_pages"
    ):  # row groups of 8192 rows, one page per column chunk: row-group pruning only
        path = write_ticks(store, DAY, "trades", SPOT, day_trades, row_group_size=8192, page_rows=1 << 20)
    else:  # pages of 1024 rows and a page index
        path = write_ticks(store, DAY, "trades", SPOT, day_trades, row_group_size=16384, page_rows=1024)
    windows = [*random_windows(np.random.default_rng(5), 25), (T0 - MIN, T0 + MIN), (T0, T0), (0, 1)]
    stats = ReadStats()
    got = read_windows(store, path, windows, by=by, stats=stats)
    for (start, end), table in zip(windows, got, strict=True):
        assert table.equals(expected(day_trades, start, end, by)), (start, end)
    assert stats.misses == 0  # pyarrow read nothing outside the planned ranges
    assert (stats.page_reads > 0) == (layout_kind == "paged")


def with_nulls(table: pa.Table, seed: int) -> pa.Table:
    """Nulls in a string, a dictionary and a float column."""
    rng = np.random.default_rng(seed)

    def blank(column: pa.ChunkedArray, share: float) -> pa.ChunkedArray:
        mask = pa.array(rng.random(len(column)) < share)
        return pc.if_else(mask, pa.scalar(None, column.type), column)

    side = blank(table["side"].combine_chunks().dictionary_decode(), 0.2).dictionary_encode()
    table = table.set_column(2, "id", blank(table["id"], 0.5))
    table = table.set_column(3, "side", side.cast(table.schema.field("side").type))
    return table.set_column(4, "price", blank(table["price"], 0.3))


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"data_page_version": "2.0"},
        {"use_dictionary": True, "compression": "snappy"},
        {"use_byte_stream_split": ["price", "amount"], "write_page_checksum": True},
    ],
)
def test_page_reads_follow_any_writer_settings(local_store, tmp_path, options):
    """Pages are decoded by pyarrow itself: encodings, page versions, codecs and nulls are its business."""
    table = with_nulls(arrival_trades(DAY, 20_000, seed=3), seed=4)
    settings = {"compression": "zstd", "use_dictionary": ["side"], "write_page_index": True, **options}
    pq.write_table(table, tmp_path / "x.parquet", row_group_size=5000, max_rows_per_page=700, **settings)
    local_store.put_file("x.parquet", tmp_path / "x.parquet")
    windows = [(T0 + h * 60 * MIN, T0 + h * 60 * MIN + 10 * MIN) for h in range(24)]
    stats = ReadStats()
    got = read_windows(local_store, "x.parquet", windows, stats=stats)
    for (start, end), part in zip(windows, got, strict=True):
        assert part.equals(expected(table, start, end))
    assert stats.page_reads > 0 and stats.misses == 0


def test_only_the_row_groups_and_columns_needed_are_fetched(store, day_trades):
    FOOTERS.clear()
    path = write_ticks(store, DAY, "trades", SPOT, day_trades, row_group_size=4096, page_rows=1 << 20)
    metadata = pq.ParquetFile(pa.BufferReader(store.get_bytes(path))).metadata
    start, end = T0 + 600 * MIN, T0 + 601 * MIN
    # Independently of the reader: the row groups whose exchange timestamps overlap the minute.
    hit = [
        g
        for g in range(metadata.num_row_groups)
        if int(metadata.row_group(g).column(0).statistics.min.timestamp() * 1e6) < end
        and int(metadata.row_group(g).column(0).statistics.max.timestamp() * 1e6) >= start
    ]
    assert 1 <= len(hit) <= 3 and metadata.num_row_groups > 20
    price = [metadata.row_group(g).column(4).total_compressed_size for g in hit]
    stamps = [metadata.row_group(g).column(0).total_compressed_size for g in hit]
    FOOTERS.get(store, path)  # footer first, so only the data reads are counted below
    before = store.bytes_read
    (table,) = read_windows(store, path, [(start, end)], columns=["price"])
    used = store.bytes_read - before
    assert table.equals(expected(day_trades, start, end, columns=["price"]))
    # The price and timestamp chunks of those row groups, and nothing else (a 4 KiB coalescing gap at most).
    assert sum(price) + sum(stamps) <= used <= sum(price) + sum(stamps) + 8 * 1024
    before = store.bytes_read
    read_windows(store, path, [(start, end)])
    all_columns = store.bytes_read - before
    assert all_columns > 2 * used


def test_page_index_reads_a_fraction_of_the_row_group(store, day_trades):
    FOOTERS.clear()
    whole = write_ticks(store, DAY, "trades", SPOT, day_trades, row_group_size=65536, page_rows=1 << 20)
    paged = write_ticks(store, NEXT, "trades", SPOT, day_trades, row_group_size=65536, page_rows=1024)
    window = [(T0 + 300 * MIN, T0 + 302 * MIN)]
    used = {}
    for path in (whole, paged):
        FOOTERS.get(store, path)
        before = store.bytes_read
        (table,) = read_windows(store, path, window)
        used[path] = store.bytes_read - before
        assert table.equals(expected(day_trades, *window[0]))
    assert used[paged] * 8 < used[whole]
    assert used[paged] < 0.05 * store.stat(paged).size


def test_footer_read_once_per_generation_and_replaced_file_read_again(store, day_trades):
    FOOTERS.clear()
    path = write_ticks(store, DAY, "trades", SPOT, day_trades, row_group_size=8192, page_rows=1024)
    window = [(T0 + 100 * MIN, T0 + 101 * MIN)]
    read_windows(store, path, window)
    misses = FOOTERS.misses
    before = store.bytes_read
    read_windows(store, path, window)
    second = store.bytes_read - before
    assert FOOTERS.misses == misses  # cached
    assert second < store.stat(path).size * 0.02
    replacement = arrival_trades(DAY, 5_000, seed=99)
    write_ticks(store, DAY, "trades", SPOT, replacement)
    (table,) = read_windows(store, path, window)
    assert FOOTERS.misses == misses + 1
    assert table.equals(expected(replacement, *window[0]))


def test_unknown_columns_and_non_time_by_are_usage_errors(local_store, day_trades):
    path = write_ticks(local_store, DAY, "trades", SPOT, day_trades)
    with pytest.raises(UsageError, match="no column 'prize'"):
        read_windows(local_store, path, [(T0, T0 + MIN)], columns=["prize"])
    with pytest.raises(UsageError, match="not a timestamp column"):
        read_windows(local_store, path, [(T0, T0 + MIN)], by="price")


def test_a_file_that_is_not_parquet_is_a_store_error(local_store):
    from mdth_engine.core.errors import StoreError

    local_store.put_bytes("x.parquet", b"not parquet at all")
    with pytest.raises(StoreError, match="not a Parquet file"):
        read_windows(local_store, "x.parquet", [(0, 1)])


# --- the Lake API ---------------------------------------------------------------------------------------------


@pytest.fixture
def two_day_lake(store):
    """Trades of SPOT arriving on DAY and NEXT (split at midnight by arrival), masters for both days."""
    FOOTERS.clear()
    trades = pa.concat_tables([arrival_trades(DAY, 30_000, seed=1), arrival_trades(NEXT, 30_000, seed=2)])
    first, second = split_by_arrival(trades, DAY)
    for day, part in ((DAY, first), (NEXT, second)):
        write_master(store, day, [SPOT, PERP, CHAIN, CALL, PUT])
        write_ticks(store, day, "trades", SPOT, part, row_group_size=4096, page_rows=1024)
    lake = Lake(store.url if store.url.startswith("gs://") else str(store.root))
    return lake, trades


def test_ticks_across_midnight_by_exchange_time_include_the_next_days_file(two_day_lake):
    lake, trades = two_day_lake
    start, end = T0 + US_PER_DAY - MIN, T0 + US_PER_DAY + MIN
    got = lake.ticks(SPOT, "trades", "2024-01-01T23:59:00Z", "2024-01-02T00:01")
    want = expected(trades, start, end)
    assert got.equals(want)
    stamped_today = pc.less(want["timestamp"].cast(pa.int64()), T0 + US_PER_DAY)
    arrived_tomorrow = pc.greater_equal(want["local_timestamp"].cast(pa.int64()), T0 + US_PER_DAY)
    assert pc.any(pc.and_(stamped_today, arrived_tomorrow)).as_py()  # rows found only in NEXT's file
    by_arrival = lake.ticks(SPOT, "trades", "2024-01-01T23:59Z", "2024-01-02T00:01Z", by="local_timestamp")
    assert by_arrival.equals(expected(trades, start, end, "local_timestamp"))


def test_whole_days_columns_and_conversions(two_day_lake):
    lake, trades = two_day_lake
    got = lake.ticks(SPOT, "trades", DAY, NEXT + dt.timedelta(days=1), columns=["price", "timestamp"])
    assert got.column_names == ["price", "timestamp"]
    assert got.equals(expected(trades, T0, T0 + 2 * US_PER_DAY, columns=["price", "timestamp"]))
    assert isinstance(got.to_pandas(), pd.DataFrame) and pl.from_arrow(got).height == got.num_rows


def test_missing_day_warns_and_returns_the_other_days(two_day_lake):
    lake, trades = two_day_lake
    with pytest.warns(LakeWarning, match=r"2024-01-03.*not downloaded"):
        got = lake.ticks(SPOT, "trades", "2024-01-02T12:00Z", "2024-01-03T12:00Z")
    assert got.equals(expected(trades, T0 + US_PER_DAY + 720 * MIN, T0 + 2 * US_PER_DAY + 720 * MIN))


def test_empty_file_is_silent_and_empty(two_day_lake):
    lake, _ = two_day_lake
    empty = schema_for("trades").empty_table()
    write_table(lake.store, layout.raw_path(DAY, "trades", PERP), empty, {}, schema=schema_for("trades"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = lake.ticks(PERP, "trades", "2024-01-01T00:00Z", "2024-01-01T12:00Z")
    assert got.num_rows == 0 and got.schema == schema_for("trades")


def test_key_errors_name_the_closest_keys(two_day_lake):
    lake, _ = two_day_lake
    with pytest.raises(UsageError, match="did you mean BINANCE:SPOT_PAIR:BTC-USDT"):
        lake.ticks("BINANCE:SPOT_PAIR:BTC-USDC", "trades", "2024-01-01", "2024-01-02")
    with pytest.raises(UsageError, match="unknown data type"):
        lake.ticks(SPOT, "trade", "2024-01-01", "2024-01-02")
    with pytest.raises(UsageError, match="unknown column"):
        lake.ticks(SPOT, "trades", "2024-01-01", "2024-01-02", columns=["nope"])
    with pytest.raises(UsageError, match="by="):
        lake.ticks(SPOT, "trades", "2024-01-01", "2024-01-02", by="price")
    with pytest.raises(UsageError, match="before start"):
        lake.ticks(SPOT, "trades", "2024-01-02", "2024-01-01")


def test_sparse_ticks_equal_one_read_per_instant_and_keep_query_order(two_day_lake):
    lake, trades = two_day_lake
    times = ["2024-01-01T18:00:00Z", "2024-01-01T06:00:00Z", "2024-01-01T06:00:30Z", "2024-01-02T00:00:10Z"]
    got = lake.sparse_ticks(SPOT, "trades", times, buffer="1m", columns=["price", "amount"])
    assert got.column_names == ["query_time", "price", "amount"]
    parts = []
    for t in times:
        at = to_us(t)
        part = expected(trades, at - MIN, at + MIN, columns=["price", "amount"])
        parts.append(part.add_column(0, "query_time", ts_array(np.full(part.num_rows, at))))
    assert got.equals(pa.concat_tables(parts).cast(got.schema))
    assert lake.sparse_ticks(SPOT, "trades", [], buffer="1m").num_rows == 0


def test_option_rows_come_from_their_chain_file(two_day_lake):
    lake, _ = two_day_lake
    n = 6
    chain = {
        "timestamp": ts_array(T0 + np.arange(n) * MIN),
        "local_timestamp": ts_array(T0 + np.arange(n) * MIN + 1000),
        "symbol": pa.array(["BTC-28JUN24-60000-C", "BTC-28JUN24-60000-P"] * 3),
        "instrument_key": pa.array([CALL, PUT] * 3),
        "type": pa.array(["call", "put"] * 3),
        "mark_iv": pa.array([50.0, 60.0, 51.0, 61.0, 52.0, 62.0]),
    }
    schema = schema_for("options_chain")
    table = pa.table({f.name: chain.get(f.name, pa.nulls(n, f.type)) for f in schema}).cast(schema)
    write_table(lake.store, layout.raw_path(DAY, "options_chain", CHAIN), table, {}, schema=schema)
    got = lake.ticks(PUT, "options_chain", "2024-01-01", "2024-01-02", columns=["mark_iv"])
    assert got.column("mark_iv").to_pylist() == [60.0, 61.0, 62.0]
    assert lake.ticks(CHAIN, "options_chain", "2024-01-01", "2024-01-02").num_rows == n


def candle_day(day: dt.date, timeframe_us: int) -> pa.Table:
    start = day_start_us(day)
    n = US_PER_DAY // timeframe_us
    starts = start + np.arange(n, dtype=np.int64) * timeframe_us
    schema = candle_schema()
    columns = {"timestamp": ts_array(starts), "timestamp_out": ts_array(starts + timeframe_us)}
    columns["close"] = pa.array(np.arange(n, dtype=np.float64) + (day - DAY).days * 10_000)
    return pa.table({f.name: columns.get(f.name, pa.nulls(n, f.type)) for f in schema}).cast(schema)


def test_candles_over_days_and_sparse_candles_inclusive(two_day_lake):
    lake, _ = two_day_lake
    for day in (DAY, NEXT):
        write_table(
            lake.store, layout.candles_path(day, "1m", SPOT), candle_day(day, MIN), {}, schema=candle_schema()
        )
    got = lake.candles(SPOT, "1m", "2024-01-01T23:58Z", "2024-01-02T00:02Z", columns=["timestamp", "close"])
    assert got.column("close").to_pylist() == [1438.0, 1439.0, 10_000.0, 10_001.0]
    sparse = lake.sparse_candles(SPOT, ["2024-01-02T00:00Z", "2024-01-01T12:00:30Z"], "1m", buffer="2m")
    assert sparse.column_names[:3] == ["query_time", "timestamp", "timestamp_out"]
    # [t - 2m, t + 2m] inclusive: 5 candles around midnight; 12:00:30 -> 11:58:30..12:02:30 -> 4 candles
    assert sparse.column("close").to_pylist() == [
        1438.0,
        1439.0,
        10_000.0,
        10_001.0,
        10_002.0,
        719.0,
        720.0,
        721.0,
        722.0,
    ]
    with pytest.raises(UsageError, match="unknown timeframe"):
        lake.candles(SPOT, "2m", "2024-01-01", "2024-01-02")
    with pytest.warns(LakeWarning, match="1h candles"):
        assert lake.candles(SPOT, "1h", "2024-01-01", "2024-01-02").num_rows == 0


# --- coalesced byte ranges --------------------------------------------------------------------------------------


def test_coalesce_merges_ranges_within_the_gap_only():
    assert coalesce([(0, 10), (14, 20)], gap=4) == [(0, 20)]  # exactly the gap apart: one request
    assert coalesce([(0, 10), (15, 20)], gap=4) == [(0, 10), (15, 20)]  # one byte more: two
    assert coalesce([(0, 10), (10, 20)], gap=0) == [(0, 20)]  # adjacent ranges merge even with no gap
    assert coalesce([(0, 10), (11, 20)], gap=0) == [(0, 10), (11, 20)]
    far = 100 + COALESCE_GAP  # the default gap
    assert coalesce([(0, 100), (far, far + 50)]) == [(0, far + 50)]
    assert coalesce([(0, 100), (far + 1, far + 50)]) == [(0, 100), (far + 1, far + 50)]


def test_coalesce_merges_overlaps_and_drops_empty_ranges():
    assert coalesce([(0, 100), (50, 150)], gap=0) == [(0, 150)]
    assert coalesce([(0, 100), (10, 20), (0, 100)], gap=0) == [(0, 100)]  # contained and repeated
    assert coalesce([(5, 5), (9, 3)], gap=10) == []
    assert coalesce([(5, 5), (0, 4), (9, 3)], gap=10) == [(0, 4)]


def test_coalesce_sorts_its_input():
    assert coalesce([(300, 310), (0, 10), (100, 110), (12, 20)], gap=4) == [(0, 20), (100, 110), (300, 310)]


def test_coalesce_never_merges_past_the_longest_request():
    assert coalesce([(0, 60), (62, 120)], gap=4, max_length=100) == [(0, 60), (62, 120)]
    assert coalesce([(0, 60), (62, 100)], gap=4, max_length=100) == [(0, 100)]  # exactly the limit
    # Overlapping but too long together: the second request fetches only what the first does not.
    assert coalesce([(0, 80), (50, 150), (60, 70)], gap=4, max_length=100) == [(0, 80), (80, 150)]
    # A range longer than the limit on its own is still one request (it is never cut).
    assert coalesce([(0, 250), (251, 260)], gap=4, max_length=100) == [(0, 250), (251, 260)]
    half = MAX_RANGE // 2 + 1  # the default limit: two adjacent halves are one byte or two too many
    assert coalesce([(0, half), (half, 2 * half)]) == [(0, half), (half, 2 * half)]
    assert coalesce([(0, half - 1), (half - 1, 2 * half - 2)]) == [(0, 2 * half - 2)]


@pytest.mark.parametrize("seed", range(20))
def test_coalesce_covers_every_byte_in_few_requests(seed):
    rng = np.random.default_rng(seed)
    size, gap, longest = 5_000, int(rng.integers(0, 50)), int(rng.integers(50, 400))
    starts = rng.integers(0, size, 150)  # dense: runs of merged ranges often reach ``longest``
    ranges = [(int(a), int(a + n)) for a, n in zip(starts, rng.integers(0, 50, 150), strict=True)]
    out = coalesce(ranges, gap=gap, max_length=longest)
    assert all(b - a <= longest for a, b in out)  # no input range is longer, so no request is
    wanted = np.zeros(size + 200, bool)
    for a, b in ranges:
        wanted[a:b] = True
    fetched = np.zeros_like(wanted)
    for a, b in out:
        assert a < b and not fetched[a:b].any()  # sorted below: disjoint, every request fetches something
        fetched[a:b] = True
    assert out == sorted(out)
    assert not (wanted & ~fetched).any()  # every wanted byte is fetched
    for a, b in out:  # what is fetched but not wanted is a hole of at most ``gap`` bytes between wanted ones
        holes = np.flatnonzero(np.diff(np.r_[0, (~wanted[a:b]).astype(np.int8), 0]))
        assert all(end - begin <= gap for begin, end in zip(holes[::2], holes[1::2], strict=True))
        assert wanted[a] and wanted[b - 1]
    for (a0, b0), (a1, b1) in itertools.pairwise(out):  # merged whenever allowed
        assert a1 > b0 + gap or max(b1, b0) - a0 > longest


def test_fetch_serves_each_range_exactly_from_the_coalesced_reads(local_store, day_trades):
    path = write_ticks(local_store, DAY, "trades", SPOT, day_trades, row_group_size=8192, page_rows=1024)
    data = local_store.get_bytes(path)
    rng = np.random.default_rng(3)
    ranges = [
        (int(a), int(a + n))
        for a, n in zip(rng.integers(0, len(data) - 9000, 40), rng.integers(1, 9000, 40), strict=True)
    ]
    before = local_store.bytes_read
    fetched = fetch(local_store, path, ranges)
    assert local_store.bytes_read - before == sum(b - a for a, b in coalesce(ranges)) == fetched.nbytes
    for a, b in ranges:
        assert bytes(fetched.get(a, b - a)) == data[a:b]
    before = local_store.bytes_read
    fetch(local_store, path, ranges[:10], into=fetched)  # held already: nothing fetched again
    assert local_store.bytes_read == before


# --- times ------------------------------------------------------------------------------------------------------


def test_times_are_utc_whatever_their_form():
    noon = to_us("2024-01-01T12:00:00Z")
    assert noon == T0 + 720 * MIN
    assert to_us("2024-01-01T12:00:00") == noon  # no offset: UTC
    assert to_us("2024-01-01T14:00:00+02:00") == noon
    assert to_us(dt.datetime(2024, 1, 1, 12)) == noon
    assert to_us(dt.datetime(2024, 1, 1, 13, tzinfo=dt.timezone(dt.timedelta(hours=1)))) == noon
    assert to_us(pd.Timestamp("2024-01-01 12:00", tz="UTC")) == noon
    assert to_us(pd.Timestamp("2024-01-01 07:00", tz="America/New_York")) == noon
    assert to_us(np.datetime64("2024-01-01T12:00:00")) == noon
    assert to_us(dt.date(2024, 1, 1)) == T0
    for bad in (1_704_110_400, 1.5, "yesterday", None, np.datetime64("NaT")):
        with pytest.raises(UsageError):
            to_us(bad)
    assert duration_us("90s") == 90 * US_PER_SECOND and duration_us("5m") == 5 * MIN
    assert duration_us(pd.Timedelta(minutes=2)) == 2 * MIN
    for bad in (5, "5 parsecs", dt.timedelta(minutes=-1)):
        with pytest.raises(UsageError):
            duration_us(bad)
