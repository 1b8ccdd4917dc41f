"""The official tardis-dev client against the simulator, with nothing changed but ``endpoint=``.

Downloaded files are compared column by column with real Tardis samples (tests/data/tardis_samples, copied from
../shared/reference/tardis/samples): same header, and every column parses to the same kind of value.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import urllib.error
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
import tardis_dev
from sim_fixtures import SIM_API_KEY, make_sim_server, sim_cache_dir, sim_server  # noqa: F401

from mdth_engine.core.schemas import CSV_COLUMNS

SAMPLES = Path(__file__).parent / "data/tardis_samples"  # copies of ../shared/reference/tardis/samples
FREE_DAY = "2024-03-01"  # the first day of a month downloads without a key, as on Tardis

# real sample file -> (exchange, data type, symbol) of the simulated file it is compared with
COMPARED = {
    "bitmex_trades_2020-03-01_XBTUSD.head.csv": ("bybit", "trades", "BTCUSDT"),
    "deribit_incremental_book_L2_2020-04-01_BTC-PERPETUAL.head.csv": (
        "deribit",
        "incremental_book_L2",
        "BTC-PERPETUAL",
    ),
    "binance-futures_book_snapshot_25_2020-09-01_BTCUSDT.head.csv": (
        "binance-futures",
        "book_snapshot_25",
        "BTCUSDT",
    ),
    "binance-futures_book_snapshot_5_2020-09-01_BTCUSDT.head.csv": (
        "binance-futures",
        "book_snapshot_5",
        "BTCUSDT",
    ),
    "huobi-dm-swap_quotes_2020-05-01_BTC-USD.head.csv": ("binance-futures", "quotes", "BTCUSDT"),
    "docs_preview/binance-futures_liquidations_2021-09-19_BTCUSDT.docs_preview.csv": (
        "binance-futures",
        "liquidations",
        "BTCUSDT",
    ),
    "docs_preview/bitmex_derivative_ticker_2020-04-01_ETHUSD.docs_preview.csv": (
        "bybit",
        "derivative_ticker",
        "BTCUSDT",
    ),
    "docs_preview/deribit_options_chain_2020-06-08_OPTIONS.docs_preview.csv": (
        "deribit",
        "options_chain",
        "OPTIONS",
    ),
    "issue_excerpts/deribit_options_chain_2024-01-01_OPTIONS.issue_excerpt.csv": (
        "deribit",
        "options_chain",
        "OPTIONS",
    ),
}


def _family(t: pa.DataType) -> str:
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return "number"
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_null(t):
        return "empty"
    return "string"


def _lake_types(columns: list[str]) -> dict[str, pa.DataType]:
    """The types mdth parses Tardis CSV columns with (timestamps as integer microseconds)."""
    strings = {"exchange", "symbol", "id", "side", "type", "underlying_index"}
    ints = {"timestamp", "local_timestamp", "funding_timestamp", "expiration"}
    return {
        c: pa.string()
        if c in strings
        else pa.int64()
        if c in ints
        else pa.bool_()
        if c == "is_snapshot"
        else pa.float64()
        for c in columns
    }


def _read(data: bytes, typed: bool) -> pa.Table:
    header = data.split(b"\n", 1)[0].decode().split(",")
    opts = pacsv.ConvertOptions(column_types=_lake_types(header), strings_can_be_null=True) if typed else None
    return pacsv.read_csv(io.BytesIO(data), convert_options=opts)


async def _download(
    sim, tmp: Path, exchange: str, data_type: str, symbol: str, day: str, api_key: str = "", days: int = 1
) -> Path:
    to = (dt.date.fromisoformat(day) + dt.timedelta(days=days)).isoformat()
    await tardis_dev.download_datasets_async(
        exchange,
        [data_type],
        [symbol],
        day,
        to,
        endpoint=sim.datasets_url,
        download_dir=str(tmp),
        api_key=api_key,
    )
    return tmp / f"{exchange}_{data_type}_{day}_{symbol}.csv.gz"


async def test_downloads_parse_like_real_samples(sim_server, tmp_path: Path) -> None:  # noqa: F811
    for sample_name, (exchange, data_type, symbol) in COMPARED.items():
        sample = (SAMPLES / sample_name).read_bytes()
        path = await _download(sim_server, tmp_path, exchange, data_type, symbol, FREE_DAY)  # no key: 1st day
        ours = gzip.decompress(path.read_bytes())
        assert ours.split(b"\n", 1)[0] == sample.split(b"\n", 1)[0], f"header of {data_type} vs {sample_name}"
        assert ours.split(b"\n", 1)[0].decode().split(",") == CSV_COLUMNS[data_type]
        real, sim = _read(sample, typed=False), _read(ours, typed=False)
        for name in CSV_COLUMNS[data_type]:
            a, b = _family(real.schema.field(name).type), _family(sim.schema.field(name).type)
            assert a == b or "empty" in (a, b), f"{sample_name}: column {name} is {a} in Tardis, {b} here"
        # Both parse with the same explicit types, the ones the lake uses.
        real_typed, sim_typed = _read(sample, typed=True), _read(ours, typed=True)
        assert real_typed.schema == sim_typed.schema
        assert set(sim_typed.column("exchange").to_pylist()) == {exchange}
        if "side" in CSV_COLUMNS[data_type]:
            assert set(sim_typed.column("side").to_pylist()) <= set(real_typed.column("side").to_pylist()) | {
                "buy",
                "sell",
                "bid",
                "ask",
            }


async def test_exchange_details(sim_server) -> None:  # noqa: F811
    for exchange in ("binance", "binance-futures", "deribit", "bybit", "okex-swap"):
        d = await tardis_dev.get_exchange_details_async(exchange, endpoint=sim_server.api_url)
        assert d["id"] == exchange and d["enabled"] is True
        assert d["datasets"]["exportedUntil"] == "2025-06-01T00:00:00.000Z"  # the simulator's fixed "now"
        assert d["incidentReports"] and {"from", "to", "status", "details"} <= set(d["incidentReports"][0])
        ids = {s["id"]: s for s in d["datasets"]["symbols"]}
        assert all(s["id"] == s["id"].upper() and s["dataTypes"] for s in ids.values())
        assert "PERPETUALS" in ids or "SPOT" in ids
    binance = await tardis_dev.get_exchange_details_async("binance", endpoint=sim_server.api_url)
    assert {"btcusdt", "ethbtc"} <= {s["id"] for s in binance["availableSymbols"]}, "native ids, lower case"
    sym = {s["id"]: s for s in binance["datasets"]["symbols"]}
    assert sym["SPOT"]["dataTypes"] == ["trades"]
    assert sym["BTCBUSD"]["availableTo"] == "2023-12-16T00:00:00.000Z", "delisted pairs end"
    deribit = await tardis_dev.get_exchange_details_async("deribit", endpoint=sim_server.api_url)
    dsym = {s["id"]: s for s in deribit["datasets"]["symbols"]}
    assert "options_chain" in dsym["OPTIONS"]["dataTypes"]
    assert sum(1 for s in dsym.values() if s["type"] == "option") > 10_000, "every option ever listed"


async def test_instrument_info(sim_server) -> None:  # noqa: F811
    api = sim_server.api_url
    btc = await tardis_dev.get_instrument_info_async("binance-futures", symbol="btcusdt", endpoint=api)
    assert btc["datasetId"] == "BTCUSDT" and btc["priceIncrement"] == 0.1 and btc["type"] == "perpetual"
    assert btc["changes"] == [{"until": "2021-03-01T00:00:00.000Z", "priceIncrement": 0.01}]
    options = await tardis_dev.get_instrument_info_async(
        "deribit", filter={"type": "option", "active": True}, endpoint=api
    )
    assert 300 < len(options) < 2000
    assert all(o["expiry"].endswith("T08:00:00.000Z") and o["strikePrice"] > 0 for o in options)
    assert {o["optionType"] for o in options} == {"call", "put"}
    xrp = [o for o in options if o["id"].startswith("XRP_USDC")]
    assert xrp and all(o["datasetId"] == o["id"].upper() and "." not in o["id"] for o in xrp)
    assert any("d" in o["id"].split("-")[2] for o in xrp), "fractional linear strikes are written with a 'd'"
    assert all(not o["inverse"] and o["quoteCurrency"] == "USDC" for o in xrp)
    spot = await tardis_dev.get_instrument_info_async("binance", endpoint=api)
    by_id = {s["id"]: s for s in spot}
    assert by_id["btcbusd"]["active"] is False and by_id["btcfdusd"]["active"] is True
    # Quarterlies list and expire: the set available in January differs from the one in July.
    jan = await tardis_dev.get_instrument_info_async(
        "binance-futures",
        filter={"type": "future", "availableSince": "2024-01-10", "availableTo": "2024-01-11"},
        endpoint=api,
    )
    jul = await tardis_dev.get_instrument_info_async(
        "binance-futures",
        filter={"type": "future", "availableSince": "2024-07-10", "availableTo": "2024-07-11"},
        endpoint=api,
    )
    assert {i["id"] for i in jan} == {"btcusdt_240329", "btcusdt_240628", "ethusdt_240329", "ethusdt_240628"}
    assert {i["id"] for i in jul} == {"btcusdt_240927", "btcusdt_241227", "ethusdt_240927", "ethusdt_241227"}
    with pytest.raises(urllib.error.HTTPError) as err:
        await tardis_dev.get_instrument_info_async("deribit", symbol="BTC-1JAN99-1-C", endpoint=api)
    assert err.value.code == 404


async def test_key_rules_and_availability(sim_server, tmp_path: Path) -> None:  # noqa: F811
    sim_server.clear_requests()
    with pytest.raises(urllib.error.HTTPError) as err:
        await _download(sim_server, tmp_path, "binance", "trades", "BTCUSDT", "2024-03-02")
    assert err.value.code == 401 and '"code":10' in err.value.msg
    path = await _download(
        sim_server, tmp_path, "binance", "trades", "BTCUSDT", "2024-03-02", api_key=SIM_API_KEY
    )
    assert gzip.decompress(path.read_bytes()).startswith(b"exchange,symbol,timestamp")
    with pytest.raises(urllib.error.HTTPError) as err:
        await _download(
            sim_server, tmp_path, "binance", "trades", "BTCUSDT", "2025-06-01", api_key=SIM_API_KEY
        )
    assert err.value.code == 400 and '"code":140' in err.value.msg
    with pytest.raises(urllib.error.HTTPError) as err:
        await _download(sim_server, tmp_path, "binance", "trades", "NOSUCHPAIR", FREE_DAY)
    assert err.value.code == 404
    # None of those are retried by the client: exactly one request per failed file.
    failed = [r for r in sim_server.requests if r.status != 200]
    assert [r.status for r in failed] == [401, 400, 404]
    assert all(r.with_key == (r.status == 400) for r in failed)
    assert not any(SIM_API_KEY in repr(r) for r in sim_server.requests), "the key is never recorded"


async def test_client_retries_through_faults(make_sim_server, tmp_path: Path) -> None:  # noqa: F811
    clean = await _download(
        make_sim_server(), tmp_path / "clean", "deribit", "trades", "ETH-PERPETUAL", FREE_DAY
    )
    sim = make_sim_server(faults="429:first=2:retry_after=0:path=/trades/,cut:first=1:path=/quotes/")
    got = await _download(sim, tmp_path / "faulty", "deribit", "trades", "ETH-PERPETUAL", FREE_DAY)
    assert got.read_bytes() == clean.read_bytes()
    attempts = [r for r in sim.requests if "/trades/" in r.path]
    assert [r.status for r in attempts] == [429, 429, 200]
    assert [r.query for r in attempts] == ["", "retryAttempt=1", "retryAttempt=2"]
    quotes = await _download(sim, tmp_path / "faulty", "deribit", "quotes", "ETH-PERPETUAL", FREE_DAY)
    assert [r.fault for r in sim.requests if "/quotes/" in r.path] == ["cut", ""]
    assert gzip.decompress(quotes.read_bytes()).startswith(b"exchange,symbol")
    assert not list((tmp_path / "faulty").glob("*.unconfirmed")), "the client removed its partial file"


async def test_truncated_gzip_reaches_the_client_intact_looking(make_sim_server, tmp_path: Path) -> None:  # noqa: F811
    sim = make_sim_server(faults="truncate:first=1")
    path = await _download(sim, tmp_path / "a", "deribit", "trades", "BTC-PERPETUAL", FREE_DAY)
    assert path.exists() and path.read_bytes()[:2] == b"\x1f\x8b"
    with pytest.raises((EOFError, OSError)):
        gzip.decompress(path.read_bytes())  # what a downloader must detect itself
    again = await _download(sim, tmp_path / "b", "deribit", "trades", "BTC-PERPETUAL", FREE_DAY)
    assert gzip.decompress(again.read_bytes())
