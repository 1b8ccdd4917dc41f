"""`mdth instruments --types` (builds only those types, keeps the others on disk), `mdth instruments list`
(table, CSV, JSON) and `mdth inspect` (definition, calendar, closest matches)."""

import csv
import datetime as dt
import io
import json
import os
import subprocess
import sys

import pytest
from sim_fixtures import SIM_API_KEY

from mdth_engine.api import Lake


@pytest.fixture(scope="module")
def lake(sim_server, tmp_path_factory):
    lake = tmp_path_factory.mktemp("lake")
    env = {**os.environ, **sim_server.env(), "MDTH_TARDIS_API_KEY": SIM_API_KEY, "MDTH_LAKE": str(lake)}
    args = [
        "download",
        "--start",
        "2024-03-04",
        "--end",
        "2024-03-05",
        "--symbols",
        "DERIBIT:PERPETUAL:BTC-USD",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "mdth_engine.cli", *args], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    return env


def mdth(env, *args):
    return subprocess.run(
        [sys.executable, "-m", "mdth_engine.cli", *args], env=env, capture_output=True, text=True
    )


def test_list_as_csv_and_json(lake):
    proc = mdth(
        lake,
        "instruments",
        "list",
        "--date",
        "2024-03-04",
        "--venue",
        "DERIBIT",
        "--type",
        "PERP",
        "--format",
        "csv",
    )
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert {r["instrument_key"] for r in rows} >= {"DERIBIT:PERPETUAL:BTC-USD", "DERIBIT:PERPETUAL:ETH-USD"}
    btc = next(r for r in rows if r["instrument_key"] == "DERIBIT:PERPETUAL:BTC-USD")
    assert btc["tardis_symbol"] == "BTC-PERPETUAL" and "trades" in btc["data_types"].split(",")
    proc = mdth(lake, "--json", "instruments", "list", "--date", "2024-03-04", "--search", "BTC-PERPETUAL")
    keys = [json.loads(line)["instrument_key"] for line in proc.stdout.splitlines()]
    assert keys == ["DERIBIT:PERPETUAL:BTC-USD"]


def test_inspect_shows_definition_and_calendar(lake):
    proc = mdth(lake, "--json", "inspect", "deribit:perp:btc-usd", "--date", "2024-03-05")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["key"] == "DERIBIT:PERPETUAL:BTC-USD" and report["definition"]["settle_asset"] == "BTC"
    days = {d["day"]: d for d in report["calendar"]}
    assert set(days) == {"2024-03-04", "2024-03-05"} and all(d["listed"] for d in days.values())
    for day in days.values():
        assert set(day["data"]) >= {"trades", "book_snapshot_5", "derivative_ticker"}
        assert day["data"]["trades"]["rows"] > 0 and day["data"]["trades"]["bytes"] > 0
    text = mdth(lake, "inspect", "DERIBIT:PERPETUAL:BTC-USD", "--date", "2024-03-05")
    assert text.returncode == 0 and "book_snapshot_5" in text.stdout and "2024-03-04" in text.stdout


def test_inspect_unknown_key_suggests_the_closest(lake):
    proc = mdth(lake, "inspect", "DERIBIT:PERPETUAL:BTC-USDT", "--date", "2024-03-05")
    assert proc.returncode == 2
    assert "did you mean" in proc.stderr and "DERIBIT:PERPETUAL:BTC-USD" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_build_with_types_adds_only_those_and_keeps_the_rest(sim_server, tmp_path):
    env = {**os.environ, **sim_server.env(), "MDTH_TARDIS_API_KEY": SIM_API_KEY, "MDTH_LAKE": str(tmp_path)}
    build = ["instruments", "--start", "2021-03-01", "--venues", "BINANCE-FUTURES,DERIBIT"]

    def rows():
        table = Lake(str(tmp_path)).instruments("2021-03-01")
        return {r["instrument_key"]: r for r in table.to_pylist()}

    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from mdth_engine.storage import layout
    from mdth_engine.storage.store import open_store

    proc = mdth(env, *build, "--types", "FUTURE")
    assert proc.returncode == 0, proc.stderr
    whole = rows()  # no master yet: the venues enter it whole, so later requests for other types find them
    assert {"FUTURE", "PERPETUAL", "OPTION"} <= {r["instrument_type"] for r in whole.values()}

    # An older build that missed the perpetuals: --types PERP adds exactly those and keeps the rest as it was.
    path = open_store(str(tmp_path)).local_path(layout.instruments_path(dt.date(2021, 3, 1)))
    table = pq.read_table(path)
    pq.write_table(table.filter(pc.not_equal(table["instrument_type"], "PERPETUAL")), path)
    proc = mdth(env, *build, "--types", "PERP")
    assert proc.returncode == 0, proc.stderr
    after = rows()
    assert set(after) == set(whole)
    assert {k: r for k, r in after.items() if r["instrument_type"] != "PERPETUAL"} == {
        k: r for k, r in whole.items() if r["instrument_type"] != "PERPETUAL"
    }


def test_a_typed_download_builds_whole_venues_in_the_master(sim_server, tmp_path):
    """`mdth download --types PERPETUAL` on a day without a master builds every type of its venues, so a later
    `--types FUTURE` request finds the futures there."""
    import asyncio
    import datetime as dt

    from mdth_engine.api import ensure_instruments
    from mdth_engine.core.settings import load_settings
    from mdth_engine.stages.base import Request

    day = dt.date(2024, 3, 12)
    settings = load_settings(
        lake=str(tmp_path),
        tardis_api_url=sim_server.api_url,
        tardis_datasets_url=sim_server.datasets_url,
        tardis_api_key=SIM_API_KEY,
    )
    request = Request("download", day, day, venues=("BINANCE-FUTURES",), types=("PERPETUAL",))
    asyncio.run(ensure_instruments(request, settings))
    types = {row["instrument_type"] for row in Lake(str(tmp_path)).instruments(day).to_pylist()}
    assert {"PERPETUAL", "FUTURE"} <= types


def test_build_for_one_date(sim_server, tmp_path):
    """`mdth instruments --date D` builds the master of that day only; --date with --end is a usage error."""
    import datetime as dt

    from mdth_engine.storage import layout
    from mdth_engine.storage.store import open_store

    env = {**os.environ, **sim_server.env(), "MDTH_TARDIS_API_KEY": SIM_API_KEY, "MDTH_LAKE": str(tmp_path)}
    proc = mdth(env, "instruments", "--date", "2021-03-01", "--venues", "DERIBIT", "--types", "PERP")
    assert proc.returncode == 0, proc.stderr
    keys = {r["instrument_key"] for r in Lake(str(tmp_path)).instruments("2021-03-01").to_pylist()}
    assert "DERIBIT:PERPETUAL:BTC-USD" in keys
    built = [i.path for i in open_store(str(tmp_path)).list("instrument_availability/")]
    assert built == [layout.instruments_path(dt.date(2021, 3, 1))]
    proc = mdth(env, "instruments", "--date", "2021-03-01", "--end", "2021-03-02", "--venues", "DERIBIT")
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and errors == ["mdth: error: give --date or --start/--end, not both"]
