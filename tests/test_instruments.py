"""The instrument master against the simulator: exact counts per venue/type/day, listings and expiries on the
right days, every key shape, values and status as they were on the day, idempotent re-runs, and a clear note of
what a keyless run could not fill in or key."""

import asyncio
import collections
import datetime as dt

import pyarrow.compute as pc
import pytest

from mdth_engine.api import Lake, run_stage, stage_context
from mdth_engine.core.errors import UsageError
from mdth_engine.core.keys import EXCHANGE_TO_VENUE
from mdth_engine.core.settings import load_settings
from mdth_engine.jobs.runner import run_units
from mdth_engine.simulator.universe import instruments_live
from mdth_engine.stages.base import Request
from mdth_engine.stages.instruments import InstrumentsStage, active_on, fetch_venue
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


# Counted once from the simulator and written down, so a mistake shared by the simulator's universe and the
# stage cannot pass: 2024-03-29 is a quarterly expiry day (BTC/ETH-240329 still listed, the next ones listed).
PINNED_COUNTS = {
    "2024-03-28": {
        ("BINANCE", "SPOT_PAIR"): 6,
        ("BINANCE-FUTURES", "FUTURE"): 4,
        ("BINANCE-FUTURES", "PERPETUAL"): 4,
        ("BYBIT", "PERPETUAL"): 3,
        ("DERIBIT", "FUTURE"): 8,
        ("DERIBIT", "OPTION"): 682,
        ("DERIBIT", "OPTION_CHAIN"): 3,
        ("DERIBIT", "PERPETUAL"): 3,
        ("OKX-SWAP", "PERPETUAL"): 3,
    },
    "2024-03-29": {
        ("BINANCE", "SPOT_PAIR"): 6,
        ("BINANCE-FUTURES", "FUTURE"): 6,
        ("BINANCE-FUTURES", "PERPETUAL"): 4,
        ("BYBIT", "PERPETUAL"): 3,
        ("DERIBIT", "FUTURE"): 10,
        ("DERIBIT", "OPTION"): 776,
        ("DERIBIT", "OPTION_CHAIN"): 3,
        ("DERIBIT", "PERPETUAL"): 3,
        ("OKX-SWAP", "PERPETUAL"): 3,
    },
}


@pytest.mark.parametrize("day", sorted(PINNED_COUNTS))
def test_pinned_counts_per_venue_and_type(week_lake, day):
    table = week_lake.instruments(day)
    got = collections.Counter(
        zip(table["venue"].to_pylist(), table["instrument_type"].to_pylist(), strict=True)
    )
    assert dict(got) == PINNED_COUNTS[day]


# One instrument of each shape: Tardis dataset symbol -> canonical key (on 2024-03-28).
GOLDEN_KEYS = {
    ("BINANCE-FUTURES", "BTCUSD_PERP"): "BINANCE-FUTURES:PERPETUAL:BTC-USD",  # coin-margined
    ("BINANCE-FUTURES", "BTCUSDT_240628"): "BINANCE-FUTURES:FUTURE:BTC-USDT-240628",  # quarterly
    ("OKX-SWAP", "BTC-USD-SWAP"): "OKX-SWAP:PERPETUAL:BTC-USD",
    ("BYBIT", "BTCUSD"): "BYBIT:PERPETUAL:BTC-USD",  # inverse
    ("BINANCE", "ETHBTC"): "BINANCE:SPOT_PAIR:ETH-BTC",
    ("BINANCE", "BTCFDUSD"): "BINANCE:SPOT_PAIR:BTC-FDUSD",
    ("DERIBIT", "BTC-PERPETUAL"): "DERIBIT:PERPETUAL:BTC-USD",
    ("DERIBIT", "ETH_USDC-PERPETUAL"): "DERIBIT:PERPETUAL:ETH-USDC",
    ("DERIBIT", "XRP_USDC-29MAR24-0D35-C"): "DERIBIT:OPTION:XRP-USDC-240329-0.35-CALL",  # fractional strike
}


def test_golden_keys_for_every_shape(week_lake):
    table = week_lake.instruments("2024-03-28")
    got = {
        (r["venue"], r["tardis_symbol"]): r["instrument_key"]
        for r in table.select(["venue", "tardis_symbol", "instrument_key"]).to_pylist()
        if (r["venue"], r["tardis_symbol"]) in GOLDEN_KEYS
    }
    assert got == GOLDEN_KEYS
    xrp = week_lake.instrument("DERIBIT:OPTION:XRP-USDC-240329-0.35-CALL", "2024-03-28")
    assert xrp["strike"] == 0.35 and xrp["option_type"] == "CALL" and xrp["settle_asset"] == "USDC"


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


@pytest.fixture(scope="module")
def early_lake(sim_server, tmp_path_factory):
    """BINANCE-FUTURES around 2021-03-01, when the BTC-USDT perpetual's tick size changed and the March
    quarterly still traded (the source, asked today, calls it inactive)."""
    lake = str(tmp_path_factory.mktemp("early"))
    settings = load_settings(
        lake=lake,
        tardis_api_url=sim_server.api_url,
        tardis_datasets_url=sim_server.datasets_url,
        tardis_api_key="k",
    )
    request = Request("instruments", dt.date(2021, 2, 28), dt.date(2021, 3, 1), venues=("BINANCE-FUTURES",))
    assert asyncio.run(run_stage(request, settings)).outcomes == {"written": 2}
    return Lake(lake, settings)


def test_tick_size_is_the_value_in_force_that_day(early_lake):
    key = "BINANCE-FUTURES:PERPETUAL:BTC-USDT"
    assert early_lake.instrument(key, "2021-02-28")["tick_size"] == 0.01  # `changes`: 0.01 until 2021-03-01
    assert early_lake.instrument(key, "2021-03-01")["tick_size"] == 0.1


def test_active_is_the_status_on_that_day_not_today(early_lake):
    march = early_lake.instrument("BINANCE-FUTURES:FUTURE:BTC-USDT-210326", "2021-03-01")
    assert march["active"] is True  # it traded until 2021-03-26 08:00; the source says inactive today
    assert march["expiry"] == dt.datetime(2021, 3, 26, 8, tzinfo=dt.UTC)
    assert set(early_lake.instruments("2021-03-01")["active"].to_pylist()) == {True}


def test_active_on_bounds():
    day = dt.datetime(2024, 3, 29, tzinfo=dt.UTC)
    at_eight = day.replace(hour=8)
    assert active_on(at_eight, None, day)  # listed during the day
    assert not active_on(at_eight, None, day - dt.timedelta(days=1))  # not before its listing day
    assert active_on(None, at_eight, day)  # expires during the day
    assert not active_on(None, at_eight, day + dt.timedelta(days=1))  # gone the day after
    assert not active_on(None, day, day)  # data ended at the day's start


def test_symbols_it_cannot_key_are_named_in_a_warning(tmp_path, make_sim_server):
    # Keyless, so Bybit's month-code future and an EUR spot pair cannot be keyed from their symbols. The simulator
    # lists neither, so they are added to the venue's real snapshot; a combo is not an instrument and not reported.
    server = make_sim_server(faults="401:p=1:path=^/v1/instruments")
    settings = load_settings(
        lake=str(tmp_path), tardis_api_url=server.api_url, tardis_datasets_url=server.datasets_url
    )
    events = []
    day = dt.date(2024, 3, 27)
    extra = [
        {"id": "BTCUSDM25", "type": "future", "availableSince": "2024-03-01T00:00:00.000Z"},
        {"id": "ADAEUR", "type": "spot", "availableSince": "2024-03-01T00:00:00.000Z"},
        {"id": "BTC-COMBO", "type": "combo", "availableSince": "2024-03-01T00:00:00.000Z"},
    ]

    async def run():
        stage = InstrumentsStage(stage_context(settings, events.append))
        snap = await fetch_venue(settings, "BYBIT")
        snap.symbols += extra

        async def cached():
            return snap

        stage._snapshots["BYBIT"] = asyncio.ensure_future(cached())  # the run's per-venue snapshot cache
        units = stage.plan(Request("instruments", day, day + dt.timedelta(days=1), venues=("BYBIT",)))
        return await run_units(stage, units, sink=events.append)

    summary = asyncio.run(run())
    assert summary.exit_code == 0
    warnings = [e.message for e in events if e.kind == "warning" and "could not be keyed" in e.message]
    assert warnings == [  # one per venue, not one per day
        "BYBIT: 2 symbols could not be keyed without metadata (not in the master): BTCUSDM25, ADAEUR"
    ]
    assert {r.unit_id: r.extra for r in summary.results} == {
        f"{d}/instruments": {"unkeyed": {"BYBIT": {"count": 2, "first": ["BTCUSDM25", "ADAEUR"]}}}
        for d in ("2024-03-27", "2024-03-28")
    }
    symbols = Lake(str(tmp_path), settings).instruments(day)["tardis_symbol"].to_pylist()
    assert sorted(symbols) == sorted(i.dataset_id for i in instruments_live("bybit", day))
