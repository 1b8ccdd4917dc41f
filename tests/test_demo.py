"""`make demo`'s pipeline, run non-interactively as CI runs it: the lake and the warehouse it leaves behind."""

import os
import subprocess
import sys

import duckdb

from mdth_engine.demo import DAYS, SYMBOLS
from mdth_engine.storage.store import open_store


def test_demo_builds_a_complete_lake_and_warehouse(tmp_path, sim_cache_dir):
    lake = tmp_path / "lake"
    env = {**os.environ, "MDTH_LAKE": str(lake), "MDTH_SIM_CACHE": str(sim_cache_dir), "CI": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mdth_engine.demo"], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Next, try" in proc.stdout  # no TTY: a summary and the next commands instead of the console

    store = open_store(str(lake))
    paths = [i.path for i in store.list()]
    days = [d for d in ("2024-03-01", "2024-03-02", "2024-03-03") if DAYS[0] <= d <= DAYS[1]]
    for day in days:
        assert f"instrument_availability/by_date/day-{day}/instruments.parquet" in paths
        assert f"validation_reports/by_date/day-{day}/report.parquet" in paths
        for key in SYMBOLS:
            kind = "options_chain" if "OPTION_CHAIN" in key else "trades"
            assert f"raw_tick_data/by_date/day-{day}/data_type-{kind}/{key}.parquet" in paths, (day, key)
            for tf in ("15s", "1m", "5m", "15m", "1h", "4h", "24h"):
                assert f"processed_candles/by_date/day-{day}/timeframe-{tf}/{key}.parquet" in paths, (
                    day,
                    key,
                    tf,
                )

    with duckdb.connect(str(lake / "warehouse.duckdb"), read_only=True) as db:
        rows = db.execute(
            "SELECT instrument_key, count(*), count(DISTINCT day) FROM candles_1m GROUP BY 1 ORDER BY 1"
        ).fetchall()
        assert [r[0] for r in rows] == sorted(SYMBOLS)
        assert all(n == 1440 * len(days) and d == len(days) for _, n, d in rows)
        total = db.execute("SELECT sum(trade_count) FROM candles_1m").fetchone()[0]
        ticks = sum(
            _rows(store, i.path) for i in store.list("raw_tick_data/") if "/data_type-trades/" in i.path
        )
        assert total == ticks  # the warehouse counts every trade the lake holds
        assert db.execute("SELECT count(*) FROM candles_24h").fetchone()[0] == len(SYMBOLS) * len(days)


def _rows(store, path):
    from mdth_engine.storage.parquet import read_provenance

    return int(read_provenance(store, path)["rows"])
