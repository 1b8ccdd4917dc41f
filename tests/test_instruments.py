"""The instrument master against the simulator: exact counts per venue/type/day, listings and expiries on the
right days, every key shape, idempotent re-runs, and a clear note of what a keyless run could not fill in."""

import asyncio
import collections
import datetime as dt

import pyarrow.compute as pc
import pytest

from mdth_engine.api import Lake, run_stage
from mdth_engine.core.errors import UsageError
from mdth_engine.core.keys import EXCHANGE_TO_VENUE
from mdth_engine.core.settings import load_settings
from mdth_engine.simulator.universe import instruments_live
from mdth_engine.stages.base import Request
from mdth_engine.storage import layout
from mdth_engine.storage.parquet import read_provenance

WEEK = (dt.date(2024, 3, 26), dt.date(2024, 4, 1))  # spans the 2024-03-29 quarterly expiry and a month start
SIM_EXCHANGES = ("binance", "binance-futures", "deribit", "bybit", "okex-swap")
SIM_TYPE = {"spot": "SPOT_PAIR", "perpetual": "PERPETUAL", "future": "FUTURE", "option": "OPTION"}


@pytest.fixture(scope="module")
def week_lake(sim_server, tmp_path_factory):
    lake = str(tmp_path_factory.mktemp("lake"))
    settings = load_settings(
        lake=lake,
        tardis_api_url=sim_server.api_url,
        tardis_datasets_url=sim_server.datasets_url,
        tardis_api_key="k",
    )
    summary = asyncio.run(run_stage(Request("instruments", *WEEK), settings))
    assert summary.exit_code == 0 and summary.outcomes == {"written": 7}
    return Lake(lake, settings)


def test_exact_counts_per_venue_and_type_each_day(week_lake):
    day = WEEK[0]
    while day <= WEEK[1]:
        table = week_lake.instruments(day)
        got = collections.Counter(
            zip(table["venue"].to_pylist(), table["instrument_type"].to_pylist(), strict=True)
        )
        expected = collections.Counter(
            (EXCHANGE_TO_VENUE[ex], SIM_TYPE[i.type])
            for ex in SIM_EXCHANGES
            for i in instruments_live(ex, day)
        )
        chains = {k: v for k, v in got.items() if k[1] == "OPTION_CHAIN"}
        assert {k: v for k, v in got.items() if k[1] != "OPTION_CHAIN"} == expected, day
        underlyings = {(i.base, i.quote) for i in instruments_live("deribit", day) if i.type == "option"}
        assert chains == {("DERIBIT", "OPTION_CHAIN"): len(underlyings)}
        assert table.num_rows == len(set(table["instrument_key"].to_pylist()))  # keys are unique
        day += dt.timedelta(days=1)


def test_quarterly_expires_on_its_day_at_0800_and_is_gone_after(week_lake):
    key = "BINANCE-FUTURES:FUTURE:BTC-USDT-240329"
    on_expiry = week_lake.instrument(key, "2024-03-29")
    assert on_expiry["expiry"] == dt.datetime(2024, 3, 29, 8, tzinfo=dt.UTC)
    assert on_expiry["tardis_symbol"] == "BTCUSDT_240329"
    with pytest.raises(UsageError, match="did you mean"):
        week_lake.instrument(key, "2024-03-30")


def test_deribit_shapes_and_chains(week_lake):
    table = week_lake.instruments("2024-03-28", venue="DERIBIT")
    rows = {r["instrument_key"]: r for r in table.to_pylist()}
    perp = rows["DERIBIT:PERPETUAL:BTC-USD"]  # the original dropped Deribit perpetuals
    assert (
        perp["tardis_symbol"] == "BTC-PERPETUAL" and perp["settle_asset"] == "BTC" and perp["inverse"] is True
    )
    assert "DERIBIT:PERPETUAL:ETH-USDC" in rows  # linear USDC perpetual kept (non-USDT quote)
    options = [r for r in rows.values() if r["instrument_type"] == "OPTION"]
    assert options and all(r["expiry"].hour == 8 for r in options)
    for r in options:  # the key's date is the expiry's UTC date, never a day early
        assert r["instrument_key"].split(":")[2].split("-")[2] == r["expiry"].strftime("%y%m%d")
        assert r["option_type"] in ("CALL", "PUT") and r["strike"] > 0
    chain = rows["DERIBIT:OPTION_CHAIN:BTC-USD"]
    assert chain["tardis_symbol"] == "OPTIONS" and "options_chain" in chain["data_types"]
    assert set(table.schema.names) == set(week_lake.instruments("2024-03-28", venue="BINANCE").schema.names)


def test_daily_options_list_and_expire_day_by_day(week_lake):
    def option_keys(day):
        t = week_lake.instruments(day, venue="DERIBIT", type="OPTION")
        return set(t["instrument_key"].to_pylist())

    d1, d2 = option_keys("2024-03-27"), option_keys("2024-03-28")
    expired = d1 - d2
    assert expired and all("-240327-" in k for k in expired)
    assert d2 - d1  # new listings appear


def test_filters_and_search(week_lake):
    t = week_lake.instruments("2024-03-27", base="ETH", quote="USDT")
    assert t.num_rows and set(t["base_asset"].to_pylist()) == {"ETH"}
    hits = week_lake.instruments("2024-03-27", search="perpetual")
    assert "DERIBIT:PERPETUAL:BTC-USD" in hits["instrument_key"].to_pylist()  # matches the Tardis symbol too
    soon = week_lake.instruments("2024-03-27", expiring_before="2024-03-29")
    assert soon.num_rows and pc.all(pc.less(soon["expiry"], dt.datetime(2024, 3, 29, tzinfo=dt.UTC))).as_py()


def test_rerun_rewrites_nothing(week_lake):
    paths = [layout.instruments_path(WEEK[0] + dt.timedelta(days=i)) for i in range(7)]
    before = [read_provenance(week_lake.store, p)["written_at"] for p in paths]
    summary = asyncio.run(run_stage(Request("instruments", *WEEK), week_lake.settings))
    assert summary.outcomes == {"skipped": 7}
    assert [read_provenance(week_lake.store, p)["written_at"] for p in paths] == before


def test_metadata_refused_says_what_it_could_not_fill_in(tmp_path, make_sim_server):
    # The source refuses /v1/instruments (as Tardis does for a key whose plan lacks it); exchange details are public.
    server = make_sim_server(faults="401:p=1:path=^/v1/instruments")
    settings = load_settings(
        lake=str(tmp_path), tardis_api_url=server.api_url, tardis_datasets_url=server.datasets_url
    )
    events = []
    request = Request("instruments", dt.date(2024, 3, 27), dt.date(2024, 3, 27), venues=("BINANCE-FUTURES",))
    summary = asyncio.run(run_stage(request, settings, sink=events.append))
    assert summary.exit_code == 0
    warnings = [e.message for e in events if e.kind == "warning"]
    assert any("metadata: unauthorized (no API key)" in w for w in warnings), warnings
    table = Lake(str(tmp_path), settings).instruments("2024-03-27")
    expected = {i.dataset_id for i in instruments_live("binance-futures", dt.date(2024, 3, 27))}
    assert set(table["tardis_symbol"].to_pylist()) == expected  # every instrument is still there
    assert set(table["missing"].to_pylist()) == {"metadata: unauthorized (no API key)"}
    assert table["tick_size"].null_count == table.num_rows  # and what could not be known is null, not guessed
    quarterly = Lake(str(tmp_path), settings).instrument(
        "BINANCE-FUTURES:FUTURE:BTC-USDT-240329", "2024-03-27"
    )
    assert quarterly["expiry"] == dt.datetime(2024, 3, 29, 8, tzinfo=dt.UTC)  # from the symbol, 08:00 UTC
