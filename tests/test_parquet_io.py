"""Lake Parquet files: provenance in the footer, footer-only reads, empty files, nothing left on failure."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import mdth_engine
from mdth_engine.core.errors import StoreError
from mdth_engine.core.schemas import SCHEMA_VERSION, schema_for
from mdth_engine.storage.gcs import GCSStore
from mdth_engine.storage.local import LocalStore
from mdth_engine.storage.parquet import (
    STANDARD_KEYS,
    ParquetPublisher,
    read_footer,
    read_provenance,
    write_table,
)
from mdth_engine.storage.store import ObjectStore

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
T0_US = int(T0.timestamp() * 1_000_000)


def trades(n: int, seed: int = 0, start_us: int = T0_US) -> pa.Table:
    """A trades table in the lake schema; local_timestamp rises, exchange time a little behind."""
    rng = np.random.default_rng(seed)
    local = start_us + np.cumsum(rng.integers(1, 5_000, n))
    exchange = local - rng.integers(0, 2_000, n)
    schema = schema_for("trades")
    return pa.table(
        {
            "timestamp": pa.array(exchange, pa.timestamp("us", tz="UTC")),
            "local_timestamp": pa.array(local, pa.timestamp("us", tz="UTC")),
            "id": pa.array([str(i) for i in range(n)]),
            "side": pa.array(np.where(rng.random(n) < 0.5, "buy", "sell")).dictionary_encode(),
            "price": rng.normal(42_000, 50, n),
            "amount": rng.exponential(0.1, n),
        }
    ).cast(schema)


def iso(micros: int) -> str:
    return (
        (dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=micros))
        .isoformat()
        .replace("+00:00", "Z")
    )


PROVENANCE = {
    "source_url": "https://datasets.tardis.dev/v1/binance/trades/2024/01/01/BTCUSDT.csv.gz",
    "source_bytes": 123_456,
    "source_sha256": "ab" * 32,
    "data_type": "trades",
    "instrument_key": "BINANCE:SPOT_PAIR:BTC-USDT",
    "bad_rows": 3,
    "inputs": {"files": ["a", "b"], "rows": 2},
}


def test_provenance_round_trip_reads_only_the_footer(
    store: ObjectStore, request: pytest.FixtureRequest
) -> None:
    table = trades(300_000, seed=1)
    path = "raw_tick_data/by_date/day-2024-01-01/data_type-trades/BINANCE:SPOT_PAIR:BTC-USDT.parquet"
    before_write = dt.datetime.now(dt.UTC)
    written = write_table(store, path, table, PROVENANCE, row_group_size=100_000)
    size = store.stat(path).size  # type: ignore[union-attr]
    assert written.rows == 300_000 and written.bytes == size and size > 2_000_000

    emulator = request.getfixturevalue("gcs_emulator") if isinstance(store, GCSStore) else None
    served = emulator.bytes_served if emulator else 0
    before = store.bytes_read
    provenance = read_provenance(store, path)
    fetched = store.bytes_read - before
    assert fetched <= 64 * 1024 and fetched < size / 30, (fetched, size)
    if emulator:
        assert emulator.bytes_served - served < 80 * 1024  # the server agrees: one small suffix read

    local = table.column("local_timestamp").to_numpy().astype("datetime64[us]").astype(np.int64)
    assert provenance is not None
    assert provenance == written.provenance
    assert set(STANDARD_KEYS) <= set(provenance)
    assert provenance["rows"] == "300000"
    assert provenance["first_timestamp"] == iso(int(local.min()))
    assert provenance["last_timestamp"] == iso(int(local.max()))
    assert provenance["source_url"] == PROVENANCE["source_url"]
    assert provenance["source_bytes"] == "123456" and provenance["source_sha256"] == "ab" * 32
    assert (
        provenance["data_type"] == "trades" and provenance["instrument_key"] == "BINANCE:SPOT_PAIR:BTC-USDT"
    )
    assert provenance["bad_rows"] == "3"
    assert json.loads(provenance["inputs"]) == {"files": ["a", "b"], "rows": 2}
    assert provenance["schema_version"] == SCHEMA_VERSION
    assert provenance["mdth_version"] == mdth_engine.__version__
    written_at = dt.datetime.fromisoformat(provenance["written_at"])
    assert before_write <= written_at <= dt.datetime.now(dt.UTC)

    # The file itself: every row back, zstd, statistics and page index, dictionary only for dictionary columns.
    with store.open_read(path) as f:
        back = pq.read_table(f)
    assert back.equals(table)
    meta = read_footer(store, path)
    assert meta.num_rows == 300_000 and meta.num_row_groups == 3
    assert [meta.row_group(i).num_rows for i in range(3)] == [100_000] * 3
    columns = {meta.row_group(0).column(i).path_in_schema: meta.row_group(0).column(i) for i in range(6)}
    for name, column in columns.items():
        assert column.compression == "ZSTD"
        assert column.is_stats_set and column.statistics.has_min_max
        assert column.has_offset_index and column.has_column_index, name
    assert "RLE_DICTIONARY" in columns["side"].encodings
    assert "RLE_DICTIONARY" not in columns["price"].encodings
    assert columns["local_timestamp"].statistics.min == table.column("local_timestamp")[0].as_py()


def test_empty_table_is_a_valid_file_with_rows_zero(store: ObjectStore) -> None:
    schema = schema_for("book_snapshot_5")
    written = write_table(store, "e/empty.parquet", schema.empty_table(), {"data_type": "book_snapshot_5"})
    assert written.rows == 0
    provenance = read_provenance(store, "e/empty.parquet")
    assert provenance is not None
    assert (
        provenance["rows"] == "0"
        and provenance["first_timestamp"] == ""
        and provenance["last_timestamp"] == ""
    )
    assert provenance["source_url"] == ""
    with store.open_read("e/empty.parquet") as f:
        back = pq.read_table(f)
    assert back.num_rows == 0 and back.schema.equals(schema)


def test_failure_inside_with_publishes_nothing(store: ObjectStore, tmp_path) -> None:  # type: ignore[no-untyped-def]
    spool = tmp_path / "spool"
    with (
        pytest.raises(RuntimeError, match="source broke"),
        ParquetPublisher(store, "f/x.parquet", schema_for("trades"), {}, spool_dir=spool) as w,
    ):
        w.write_table(trades(50_000))
        raise RuntimeError("source broke")
    assert not store.exists("f/x.parquet")
    assert list(store.list()) == []
    if isinstance(store, LocalStore):
        assert list((store.root / "f").iterdir()) == []  # the temp file is gone from disk too
    else:
        assert not spool.exists() or list(spool.iterdir()) == []


def test_failed_replace_keeps_the_old_file(store: ObjectStore) -> None:
    write_table(store, "f/y.parquet", trades(1000), {"source_url": "old"})
    with (
        pytest.raises(ValueError, match="does not match its schema"),
        ParquetPublisher(store, "f/y.parquet", schema_for("trades"), {"source_url": "new"}) as w,
    ):
        w.write_table(trades(10))
        w.write_table(pa.table({"something": [1, 2]}))
    provenance = read_provenance(store, "f/y.parquet")
    assert provenance is not None and provenance["source_url"] == "old" and provenance["rows"] == "1000"
    assert [i.path for i in store.list()] == ["f/y.parquet"]


def test_missing_and_corrupt_files(store: ObjectStore) -> None:
    assert read_provenance(store, "nope.parquet") is None
    good = pa.BufferOutputStream()
    pq.write_table(trades(5000), good)
    data = good.getvalue().to_pybytes()
    bad = {
        "truncated.parquet": data[: len(data) // 2],
        "garbage.parquet": b"this is not parquet at all, just text",
        "tiny.parquet": b"PAR1",
        "empty.parquet": b"",
        "bad-footer.parquet": data[:-12] + b"\x00\x01\x02\x03" + data[-8:],
        "huge-length.parquet": data[:-8] + (10**8).to_bytes(4, "little") + b"PAR1",
    }
    for name, content in bad.items():
        store.put_bytes(name, content)
        with pytest.raises(StoreError, match="not a Parquet file") as info:
            read_provenance(store, name)
        assert "\n" not in str(info.value) and name in str(info.value)


def test_row_groups_are_exact_from_small_batches(store: ObjectStore) -> None:
    table = trades(3_700, seed=3)
    with ParquetPublisher(store, "rg.parquet", table.schema, {}, row_group_size=1000) as w:
        for batch in table.to_batches(max_chunksize=37):
            w.write_batch(batch)
    meta = read_footer(store, "rg.parquet")
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [1000, 1000, 1000, 700]
    assert w.written is not None and w.written.rows == 3_700
    with store.open_read("rg.parquet") as f:
        assert pq.read_table(f).equals(table)


def test_big_footer_needs_a_second_ranged_read(store: ObjectStore) -> None:
    """Many columns and row groups: a footer larger than the first suffix read still parses."""
    columns = {f"c{i:03d}": np.arange(2000, dtype=np.float64) + i for i in range(120)}
    table = pa.table(columns)
    write_table(store, "wide.parquet", table, {"note": "wide"}, row_group_size=100)
    meta = read_footer(store, "wide.parquet")
    assert meta.num_row_groups == 20 and meta.num_columns == 120
    assert meta.serialized_size > 64 * 1024
    assert read_provenance(store, "wide.parquet")["note"] == "wide"  # type: ignore[index]


def test_timestamps_fall_back_to_exchange_time_or_stay_empty(store: ObjectStore) -> None:
    ts = pa.array([T0_US + 5, T0_US + 1, T0_US + 9], pa.timestamp("us", tz="UTC"))
    write_table(store, "ts.parquet", pa.table({"timestamp": ts, "v": [1.0, 2.0, 3.0]}), {})
    provenance = read_provenance(store, "ts.parquet")
    assert provenance["first_timestamp"] == iso(T0_US + 1)  # type: ignore[index]
    assert provenance["last_timestamp"] == iso(T0_US + 9)  # type: ignore[index]
    write_table(store, "no-ts.parquet", pa.table({"v": [1.0]}), {})
    provenance = read_provenance(store, "no-ts.parquet")
    assert provenance["rows"] == "1" and provenance["first_timestamp"] == ""  # type: ignore[index]


def test_callers_cannot_set_computed_or_malformed_keys(store: ObjectStore) -> None:
    for bad in ({"rows": 5}, {"first_timestamp": "x"}, {"mdth.source_url": "x"}, {"Bad Key": 1}):
        with pytest.raises(ValueError):
            ParquetPublisher(store, "k.parquet", schema_for("trades"), bad)
    assert not store.exists("k.parquet")


def test_publisher_accepts_columns_in_another_order(store: ObjectStore) -> None:
    table = trades(100)
    shuffled = table.select(list(reversed(table.schema.names)))
    written = write_table(store, "o.parquet", shuffled, {}, schema=table.schema)
    assert written.rows == 100
    with store.open_read("o.parquet") as f:
        assert pq.read_table(f).equals(table)


def test_nanosecond_timestamps_are_reported_in_microseconds(store: ObjectStore) -> None:
    ns = pa.array([T0_US * 1000 + 2_999, T0_US * 1000 + 7_000_001], pa.timestamp("ns", tz="UTC"))
    write_table(store, "ns.parquet", pa.table({"local_timestamp": ns}), {})
    provenance = read_provenance(store, "ns.parquet")
    assert provenance["first_timestamp"] == iso(T0_US + 2)  # type: ignore[index]
    assert provenance["last_timestamp"] == iso(T0_US + 7000)  # type: ignore[index]
