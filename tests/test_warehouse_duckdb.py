"""The upload stage into a real DuckDB file: load, reload without duplicates, a changed day replaced whole,
schema evolution (new nullable column, old rows kept), failures that leave the previous load intact."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import subprocess
import sys
import time

import pyarrow as pa
import pytest
from test_warehouse_support import (
    KEYS,
    assert_same_rows,
    candle_schema,
    candle_table,
    context,
    fill_lake,
    write_candles,
)

from mdth_engine.jobs.runner import run_units
from mdth_engine.stages.base import Outcome, Request
from mdth_engine.stages.warehouse import WarehouseStage, make_stage
from mdth_engine.storage import layout
from mdth_engine.warehouse import open_warehouse
from mdth_engine.warehouse.duck import DuckDBWarehouse, connect

D1, D2, D3 = dt.date(2024, 3, 1), dt.date(2024, 3, 2), dt.date(2024, 3, 3)


def request(start: dt.date, end: dt.date, timeframes=("1m",), force=False) -> Request:
    return Request("upload", start, end, timeframes=tuple(timeframes), options={"force": force})


async def upload(ctx, req: Request, **kw):
    stage = make_stage(ctx)
    return await run_units(stage, stage.plan(req), concurrency=kw.get("concurrency", 4))


def query(ctx, sql: str) -> pa.Table:
    table, cut = open_warehouse(ctx.settings.warehouse_url()).query(sql)
    assert not cut
    return table


def day_rows(ctx, tf: str, day: dt.date, key: str) -> pa.Table:
    return query(
        ctx,
        f"SELECT * FROM candles_{tf} WHERE day = DATE '{day}' AND instrument_key = '{key}' ORDER BY timestamp",
    )


async def test_load_puts_every_file_under_its_key_and_records_sources(local_store, tmp_path):
    written = fill_lake(local_store, [D1, D2], ["1m", "1h"])
    ctx = context(local_store, tmp_path)
    summary = await upload(ctx, request(D1, D2, ("1m", "1h")), concurrency=8)
    assert summary.exit_code == 0 and summary.outcomes == {"written": 4}, summary.to_dict()
    assert summary.rows == sum(t.num_rows for t in written.values())

    for (day, tf, key), table in written.items():
        got = day_rows(ctx, tf, day, key)
        assert_same_rows(got, table)
        assert set(got.column("day").to_pylist()) == {day}

    # Table layout: day and key first, then the feature spec's columns in spec order.
    cols = query(
        ctx,
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_name = 'candles_1m' ORDER BY ordinal_position",
    ).to_pylist()
    assert [c["column_name"] for c in cols] == ["day", "instrument_key", *candle_schema().names]
    assert cols[0]["data_type"] == "DATE" and cols[2]["data_type"] == "TIMESTAMP WITH TIME ZONE"

    # Each load records its sources: path, size, generation, rows, and a sha256 of the bytes loaded.
    loads = query(
        ctx, "SELECT * FROM _loads WHERE table_name = 'candles_1m' AND day = DATE '2024-03-01'"
    ).to_pylist()
    assert len(loads) == 1
    record = loads[0]
    sources = json.loads(record["sources"])
    assert [s["instrument_key"] for s in sources] == sorted(KEYS)
    assert record["rows"] == 3 * 1440 and record["files"] == 3 and record["timeframe"] == "1m"
    for source in sources:
        path = local_store.local_path(source["path"])
        assert source["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert source["size"] == path.stat().st_size and source["rows"] == 1440


async def test_rerun_is_skipped_and_force_reloads_without_duplicates(local_store, tmp_path):
    fill_lake(local_store, [D1, D2], ["5m"])
    ctx = context(local_store, tmp_path)
    first = await upload(ctx, request(D1, D2, ("5m",)))
    assert first.outcomes == {"written": 2}

    again = await upload(ctx, request(D1, D2, ("5m",)))
    assert again.outcomes == {"skipped": 2} and again.exit_code == 0
    assert again.rows == 0  # nothing loaded; each skipped unit says what the warehouse holds for its day
    assert sum(r.extra["rows_held"] for r in again.results) == first.rows

    forced = await upload(ctx, request(D1, D2, ("5m",), force=True))
    assert forced.outcomes == {"written": 2}
    counts = query(
        ctx,
        "SELECT day, instrument_key, count(*) AS n, count(DISTINCT timestamp) AS distinct_ts "
        "FROM candles_5m GROUP BY ALL",
    ).to_pylist()
    assert len(counts) == 6 and all(c["n"] == 288 == c["distinct_ts"] for c in counts)
    history = query(ctx, "SELECT day, count(*) AS loads FROM _loads GROUP BY day ORDER BY day").to_pylist()
    assert [h["loads"] for h in history] == [2, 2]  # every load is kept; the latest is current


async def test_a_changed_day_is_replaced_whole_and_other_days_untouched(local_store, tmp_path):
    written = fill_lake(local_store, [D1, D2], ["1m"])
    ctx = context(local_store, tmp_path)
    await upload(ctx, request(D1, D2))
    a, b, c = KEYS[0], KEYS[1], "OKX:SPOT_PAIR:ETH-USDT"
    new_a = candle_table(D1, "1m", seed=999)
    write_candles(local_store, D1, "1m", a, new_a)  # rewritten
    local_store.delete(layout.candles_path(D1, "1m", b))  # gone from the lake
    new_c = candle_table(D1, "1m", seed=555, rows=600)  # new instrument, a partial day
    write_candles(local_store, D1, "1m", c, new_c)

    summary = await upload(ctx, request(D1, D2))
    by_unit = {r.unit_id: r.outcome for r in summary.results}
    assert by_unit == {"2024-03-01/1m": Outcome.WRITTEN, "2024-03-02/1m": Outcome.SKIPPED}
    keys = query(
        ctx, "SELECT DISTINCT instrument_key FROM candles_1m WHERE day = DATE '2024-03-01' ORDER BY 1"
    )
    assert keys.column(0).to_pylist() == sorted([a, KEYS[2], c])
    assert_same_rows(day_rows(ctx, "1m", D1, a), new_a)
    assert_same_rows(day_rows(ctx, "1m", D1, c), new_c)
    assert_same_rows(day_rows(ctx, "1m", D1, KEYS[2]), written[(D1, "1m", KEYS[2])])
    for key in KEYS:
        assert_same_rows(day_rows(ctx, "1m", D2, key), written[(D2, "1m", key)])


async def test_schema_evolution_adds_nullable_columns_and_keeps_old_rows(local_store, tmp_path):
    fill_lake(local_store, [D1], ["15m"])
    ctx = context(local_store, tmp_path)
    await upload(ctx, request(D1, D1, ("15m",)))
    newer = {}
    for i, key in enumerate(KEYS):
        newer[key] = candle_table(
            D2, "15m", seed=70 + i, extra={"new_feature": pa.float64(), "new_count": pa.int64()}
        )
        write_candles(local_store, D2, "15m", key, newer[key])

    summary = await upload(ctx, request(D1, D2, ("15m",)))
    results = {r.unit_id: r for r in summary.results}
    assert results["2024-03-01/15m"].outcome is Outcome.SKIPPED
    assert results["2024-03-02/15m"].extra["added_columns"] == ["new_feature", "new_count"]
    cols = query(
        ctx,
        "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
        "WHERE table_name = 'candles_15m' ORDER BY ordinal_position",
    ).to_pylist()
    assert [(c["column_name"], c["data_type"], c["is_nullable"]) for c in cols[-2:]] == [
        ("new_feature", "DOUBLE", "YES"),
        ("new_count", "BIGINT", "YES"),
    ]
    old = query(
        ctx,
        "SELECT count(*) AS n, count(new_feature) AS f, count(new_count) AS c "
        "FROM candles_15m WHERE day = DATE '2024-03-01'",
    ).to_pylist()[0]
    assert old == {"n": 3 * 96, "f": 0, "c": 0}  # old rows kept, new columns NULL for them
    for key in KEYS:
        assert_same_rows(day_rows(ctx, "15m", D2, key), newer[key])

    # Reloading an old day after the evolution still loads it (files lack the new columns: NULL).
    forced = await upload(ctx, request(D1, D1, ("15m",), force=True))
    assert forced.outcomes == {"written": 1}
    # A column whose type changed is refused with one line, and the table is left as it was.
    write_candles(
        local_store, D3, "15m", KEYS[0], candle_table(D3, "15m", 5, retype={"trade_count": pa.float64()})
    )
    bad = await upload(ctx, request(D3, D3, ("15m",)))
    assert bad.exit_code == 1
    reason = bad.failures[0].reason
    assert "trade_count" in reason and "BIGINT" in reason and "DOUBLE" in reason and "\n" not in reason
    assert (
        query(ctx, "SELECT count(*) FROM candles_15m WHERE day = DATE '2024-03-03'").column(0)[0].as_py() == 0
    )


async def test_a_bad_day_fails_and_leaves_the_previous_load_intact(local_store, tmp_path):
    written = fill_lake(local_store, [D1], ["1h"])
    ctx = context(local_store, tmp_path)
    await upload(ctx, request(D1, D1, ("1h",)))

    # Rows that belong to the next day: refused (would be in the wrong partition).
    write_candles(local_store, D1, "1h", KEYS[0], candle_table(D1, "1h", 3, shift_us=3_600_000_000))
    summary = await upload(ctx, request(D1, D1, ("1h",)))
    assert summary.exit_code == 1 and "outside 2024-03-01" in summary.failures[0].reason
    for key in KEYS:
        assert_same_rows(day_rows(ctx, "1h", D1, key), written[(D1, "1h", key)])
    assert query(ctx, "SELECT count(*) FROM _loads").column(0)[0].as_py() == 1

    # A file that is not Parquet at all: one-line failure, nothing changed.
    local_store.put_bytes(layout.candles_path(D1, "1h", KEYS[0]), b"not parquet at all")
    summary = await upload(ctx, request(D1, D1, ("1h",)))
    assert summary.exit_code == 1 and "not a readable Parquet file" in summary.failures[0].reason
    assert query(ctx, "SELECT count(*) FROM candles_1h").column(0)[0].as_py() == 3 * 24

    # A file whose footer names another instrument than its path: refused.
    write_candles(local_store, D1, "1h", KEYS[0], written[(D1, "1h", KEYS[0])])
    local_store.put_file(
        layout.candles_path(D1, "1h", "OKX:SPOT_PAIR:ETH-USDT"),
        local_store.local_path(layout.candles_path(D1, "1h", KEYS[1])),
    )
    summary = await upload(ctx, request(D1, D1, ("1h",)))
    assert summary.exit_code == 1 and f"holds {KEYS[1]} by its footer" in summary.failures[0].reason


async def test_an_empty_file_loads_as_no_rows_and_is_recorded(local_store, tmp_path):
    written = fill_lake(local_store, [D1], ["1h"], keys=KEYS[:2])
    empty = candle_table(D1, "1h", 0, rows=0)
    write_candles(local_store, D1, "1h", KEYS[2], empty)
    ctx = context(local_store, tmp_path)
    summary = await upload(ctx, request(D1, D1, ("1h",)))
    assert summary.outcomes == {"written": 1} and summary.rows == 2 * 24, summary.failures
    for key in KEYS[:2]:
        assert_same_rows(day_rows(ctx, "1h", D1, key), written[(D1, "1h", key)])
    sources = json.loads(query(ctx, "SELECT sources FROM _loads").column(0)[0].as_py())
    assert {s["instrument_key"]: s["rows"] for s in sources} == {KEYS[0]: 24, KEYS[1]: 24, KEYS[2]: 0}


async def test_a_day_without_files_is_not_found_and_touches_nothing(local_store, tmp_path):
    ctx = context(local_store, tmp_path)
    summary = await upload(ctx, request(D1, D1, ("4h", "24h")))
    assert summary.exit_code == 0 and summary.outcomes == {"not_found": 2}
    assert "run mdth candles first" in summary.results[0].reason
    assert not (tmp_path / "wh.duckdb").exists()


async def test_plan_covers_every_day_and_timeframe(local_store, tmp_path):
    stage = make_stage(context(local_store, tmp_path))
    units = stage.plan(Request("upload", D1, D2))
    assert [u.unit_id for u in units][:3] == ["2024-03-01/15s", "2024-03-01/1m", "2024-03-01/5m"]
    assert len(units) == 14 and units[-1].output == "candles_24h$20240302"
    assert all(u.params["force"] is False for u in units)
    assert units[0].est_bytes > units[-1].est_bytes  # 15s days are the big ones


def test_connections_never_fetch_extensions_and_run_in_utc(tmp_path):
    con = connect(tmp_path / "x.duckdb")
    try:
        settings = dict(
            con.execute(
                "SELECT name, value FROM duckdb_settings() WHERE name IN "
                "('autoinstall_known_extensions', 'autoload_known_extensions', 'TimeZone')"
            ).fetchall()
        )
    finally:
        con.close()
    assert settings == {
        "autoinstall_known_extensions": "false",
        "autoload_known_extensions": "false",
        "TimeZone": "UTC",
    }


HOLD = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
print("held", flush=True)
time.sleep(float(sys.argv[2]))
con.close()
"""


async def test_a_writer_in_another_process_is_waited_for(local_store, tmp_path):
    fill_lake(local_store, [D1], ["4h"])
    ctx = context(local_store, tmp_path)
    db = tmp_path / "wh.duckdb"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(db), "1.5"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        # Impatient: a clear one-line failure naming the file.
        impatient = WarehouseStage(ctx, DuckDBWarehouse(db, lock_timeout=0.2))
        summary = await run_units(impatient, impatient.plan(request(D1, D1, ("4h",))))
        assert summary.exit_code == 1 and f"cannot open DuckDB warehouse {db}" in summary.failures[0].reason
        # Patient (the default): waits for the other process, then loads.
        t0 = time.monotonic()
        summary = await upload(ctx, request(D1, D1, ("4h",)))
        assert summary.outcomes == {"written": 1} and time.monotonic() - t0 < 10
    finally:
        holder.wait(timeout=10)


async def test_a_gcs_lake_is_spooled_loaded_and_cleaned_up(gcs_store, tmp_path):
    written = fill_lake(gcs_store, [D1], ["1h"])
    ctx = context(gcs_store, tmp_path)
    summary = await upload(ctx, request(D1, D1, ("1h",)))
    assert summary.outcomes == {"written": 1}, summary.failures
    for key in KEYS:
        assert_same_rows(day_rows(ctx, "1h", D1, key), written[(D1, "1h", key)])
    sources = json.loads(query(ctx, "SELECT sources FROM _loads").column(0)[0].as_py())
    assert all(s["generation"] and s["generation"].isdigit() for s in sources)  # GCS generations
    assert not any((tmp_path / "spool").rglob("*.parquet"))
    again = await upload(ctx, request(D1, D1, ("1h",)))
    assert again.outcomes == {"skipped": 1}


@pytest.mark.parametrize("bad", ["SELEC 1", "SELECT * FROM no_such_table"])
def test_query_errors_are_one_line_usage_errors(local_store, tmp_path, bad):
    from mdth_engine.core.errors import UsageError

    fill_lake(local_store, [D1], ["24h"], keys=KEYS[:1])
    ctx = context(local_store, tmp_path)
    import asyncio

    asyncio.run(upload(ctx, request(D1, D1, ("24h",))))
    with pytest.raises(UsageError) as err:
        open_warehouse(ctx.settings.warehouse_url()).query(bad)
    assert str(err.value).startswith("SQL error: ") and "\n" not in str(err.value)
