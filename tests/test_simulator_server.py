"""The simulator's HTTP and WebSocket behaviour: errors, injected faults, klines, live streams, the process form."""

from __future__ import annotations

import datetime as dt
import gzip
import io
import itertools
import json
import subprocess
import sys
import time
import urllib.request

import aiohttp
import numpy as np
import pyarrow.csv as pacsv
import pytest
import tardis_dev
from sim_fixtures import SIM_API_KEY, make_sim_server, sim_cache_dir, sim_process, sim_server  # noqa: F401

from mdth_engine.core.errors import UsageError
from mdth_engine.core.timeframes import day_start_us
from mdth_engine.simulator import Faults
from mdth_engine.simulator.config import SCALES
from mdth_engine.simulator.datasets import dataset_bytes

TRADES = "/datasets/v1/binance-futures/trades/2024/03/01/BTCUSDT.csv.gz"


async def _get(sim, path: str, key: str | None = None) -> tuple[int | str, dict, bytes]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        try:
            async with session.get(sim.base_url + path, headers=headers) as resp:
                return resp.status, dict(resp.headers), await resp.read()
        except aiohttp.ClientPayloadError as exc:
            return "payload-error", {}, str(exc).encode()


async def test_error_answers(sim_server) -> None:  # noqa: F811
    cases = {
        "/datasets/v1/binance/trades/2024/03/02/BTCUSDT.csv.gz": (401, 10),
        "/datasets/v1/binance/trades/2025/06/01/BTCUSDT.csv.gz": (400, 140),  # after exportedUntil
        "/datasets/v1/binance/trades/2019/03/01/BTCUSDT.csv.gz": (400, 100),  # before the venue's data starts
        "/datasets/v1/binance/options_chain/2024/03/01/BTCUSDT.csv.gz": (400, 100),
        "/datasets/v1/binance/trades/2024/03/01/DOGEUSDT.csv.gz": (404, 100),
        "/datasets/v1/binance/trades/2024/03/01/btcusdt.csv.gz": (404, 100),  # dataset symbols are upper case
        "/datasets/v1/kraken/trades/2024/03/01/XBTUSD.csv.gz": (404, 100),
        "/v1/exchanges/kraken": (404, 100),
        "/v1/instruments/deribit/NOPE": (404, 100),
        "/v1/instruments/deribit?filter=%7Bbad": (400, 100),
    }
    for path, (status, code) in cases.items():
        got, headers, body = await _get(sim_server, path, key=SIM_API_KEY if code == 140 else None)
        assert (got, json.loads(body)["code"]) == (status, code), path
        assert headers["Content-Type"].startswith("application/json")
    _, _, body = await _get(sim_server, "/datasets/v1/binance/trades/2024/03/01/DOGEUSDT.csv.gz")
    assert "'DOGEUSDT'" in json.loads(body)["message"]  # the symbol as asked, not lower-cased
    status, _, body = await _get(sim_server, "/datasets/v1/binance/trades/2024/03/02/BTCUSDT.csv.gz")
    err = json.loads(body)
    assert err["providedParams"]["symbol"] == "BTCUSDT" and err["datasetInfo"]["id"] == "BTCUSDT"
    status, headers, body = await _get(sim_server, TRADES)  # 1st of the month: no key needed
    assert (
        status == 200 and headers["Content-Type"] == "application/gzip" and "Content-Encoding" not in headers
    )
    assert int(headers["Content-Length"]) == len(body) and gzip.decompress(body)


async def test_each_fault_is_observable(make_sim_server) -> None:  # noqa: F811
    spec = ",".join(
        f"{kind}:first=1:path=/{sym}.csv"
        for kind, sym in [
            ("429", "BTCUSDT"),
            ("500", "ETHUSDT"),
            ("503", "SOLUSDT"),
            ("403", "BTCUSD_PERP"),
            ("401", "BTCUSDT_240329"),
            ("404", "ETHUSDT_240329"),
            ("400iso", "PERPETUALS"),
            ("cut", "FUTURES"),
        ]
    )
    sim = make_sim_server(faults=spec + ",429:first=1:retry_after=7:path=/ETHUSDT_240628.csv")
    base = "/datasets/v1/binance-futures/trades/2024/03/01/"
    expected = {
        "BTCUSDT": 429,
        "ETHUSDT": 500,
        "SOLUSDT": 503,
        "BTCUSD_PERP": 403,
        "BTCUSDT_240329": 401,
        "ETHUSDT_240329": 404,
        "PERPETUALS": 400,
        "FUTURES": "payload-error",
    }
    for symbol, status in expected.items():
        got, _, body = await _get(sim, f"{base}{symbol}.csv.gz")
        assert got == status, symbol
        if symbol == "PERPETUALS":
            assert b"ISO 8601 format" in body  # the transient CDN error both clients retry
        again, _, body = await _get(sim, f"{base}{symbol}.csv.gz")
        assert again == 200 and gzip.decompress(body), "first=1: the second attempt succeeds"
    status, headers, _ = await _get(sim, f"{base}ETHUSDT_240628.csv.gz")
    assert status == 429 and headers["Retry-After"] == "7"
    assert sim.faults.fired == {
        "429": 2,
        "500": 1,
        "503": 1,
        "403": 1,
        "401": 1,
        "404": 1,
        "400iso": 1,
        "cut": 1,
    }


async def test_truncate_slow_and_probability(make_sim_server) -> None:  # noqa: F811
    sim = make_sim_server(faults="truncate:first=1:path=BTCUSDT,slow:p=1:delay=1.2:path=ETHUSDT")
    status, headers, body = await _get(sim, TRADES)
    assert status == 200 and int(headers["Content-Length"]) == len(body)
    with pytest.raises((EOFError, OSError)):
        gzip.decompress(body)
    start = time.monotonic()
    status, _, body = await _get(sim, TRADES.replace("BTCUSDT", "ETHUSDT"))
    assert status == 200 and gzip.decompress(body) and time.monotonic() - start >= 1.1
    # A probability rule: reproducible draws, roughly the given share.
    sim.faults = Faults.parse("500:p=0.5:path=^/health")
    statuses = [(await _get(sim, "/health"))[0] for _ in range(60)]
    sim.faults = Faults.parse("500:p=0.5:path=^/health")
    assert statuses == [(await _get(sim, "/health"))[0] for _ in range(60)]
    assert 15 <= statuses.count(500) <= 45 and set(statuses) == {200, 500}
    with pytest.raises(UsageError):
        Faults.parse("teapot")


async def test_metadata_is_gzip_encoded_for_clients_that_accept_it(sim_server) -> None:  # noqa: F811
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        async with session.get(
            f"{sim_server.api_url}/exchanges/deribit", headers={"Accept-Encoding": "gzip"}
        ) as r:
            assert r.headers["Content-Encoding"] == "gzip"
            details = json.loads(gzip.decompress(await r.read()))
        async with session.get(f"{sim_server.api_url}/exchanges") as r:
            listed = json.loads(await r.read())
    assert details["id"] == "deribit"
    assert {e["id"] for e in listed} == {"binance", "binance-futures", "deribit", "bybit", "okex-swap"}
    assert all(e["supportsDatasets"] for e in listed)


def _trades(day: dt.date, symbol: str, exchange: str = "binance") -> dict[str, np.ndarray]:
    data = b""
    for d in (day, day + dt.timedelta(days=1)):  # a day's trades by exchange time may arrive after midnight
        part = gzip.decompress(dataset_bytes(exchange, "trades", d, symbol, SCALES["small"], "small"))
        data += part if not data else part.split(b"\n", 1)[1]
    t = pacsv.read_csv(io.BytesIO(data))
    out = {c: t.column(c).to_numpy() for c in ("timestamp", "price", "amount")}
    out["buy"] = t.column("side").to_numpy(zero_copy_only=False) == "buy"
    return out


async def test_klines_match_the_trades(sim_server) -> None:  # noqa: F811
    day = dt.date(2024, 3, 1)
    start_ms = day_start_us(day) // 1000
    status, _, body = await _get(
        sim_server, f"/api/v3/klines?symbol=BTCUSDT&interval=1h&startTime={start_ms}&limit=24"
    )
    rows = json.loads(body)
    assert status == 200 and len(rows) == 24
    tr = _trades(day, "BTCUSDT")
    hour = (tr["timestamp"] // 1000 - start_ms) // 3_600_000
    for h, row in enumerate(rows):
        m = hour == h
        assert row[0] == start_ms + h * 3_600_000 and row[6] == row[0] + 3_600_000 - 1
        assert row[8] == m.sum() and row[11] == "0"
        assert all(isinstance(v, str) and len(v.split(".")[1]) == 8 for v in row[1:6])
        assert float(row[1]) == pytest.approx(tr["price"][m][0]) and float(row[4]) == pytest.approx(
            tr["price"][m][-1]
        )
        assert float(row[2]) == pytest.approx(tr["price"][m].max()) and float(row[3]) == pytest.approx(
            tr["price"][m].min()
        )
        assert float(row[5]) == pytest.approx(tr["amount"][m].sum(), abs=1e-8)
        assert float(row[9]) == pytest.approx(tr["amount"][m & tr["buy"]].sum(), abs=1e-8)
    # Quiet seconds: empty klines repeat the previous close with zero volume.
    status, _, body = await _get(
        sim_server, f"/api/v3/klines?symbol=ETHBTC&interval=1s&startTime={start_ms}&limit=600"
    )
    rows = json.loads(body)
    empty = [r for r in rows if r[8] == 0]
    assert empty and all(r[1] == r[2] == r[3] == r[4] and float(r[5]) == 0 for r in empty)
    for prev, row in itertools.pairwise(rows):
        if row[8] == 0:
            assert row[4] == prev[4]
    for query, code in (("symbol=NOPE&interval=1m", -1121), ("symbol=BTCUSDT&interval=7m", -1120)):
        status, _, body = await _get(sim_server, f"/api/v3/klines?{query}")
        assert status == 400 and json.loads(body)["code"] == code


async def _collect(url: str, seconds: float, send: list[dict] | None = None) -> list[dict]:
    out: list[dict] = []
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        for msg in send or []:
            await ws.send_json(msg)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                msg = await ws.receive(timeout=max(deadline - time.monotonic(), 0.01))
            except TimeoutError:
                break
            if msg.type == aiohttp.WSMsgType.TEXT:
                out.append(json.loads(msg.data))
    return out


async def test_live_combined_streams(make_sim_server) -> None:  # noqa: F811
    sim = make_sim_server(live_start="2024-03-05T14:00:00Z", live_speed=60, live_scale="medium")
    streams = "btcusdt@trade/btcusdt@aggTrade/btcusdt@bookTicker/btcusdt@depth5@100ms/btcusdt@markPrice@1s"
    msgs = await _collect(f"{sim.ws_url}/stream?streams={streams}", 1.5)
    by_stream: dict[str, list[dict]] = {}
    for m in msgs:
        assert set(m) == {"stream", "data"}
        by_stream.setdefault(m["stream"], []).append(m["data"])
    assert set(by_stream) == set(streams.split("/"))
    for d in by_stream["btcusdt@trade"]:
        assert (
            d["e"] == "trade" and d["s"] == "BTCUSDT" and isinstance(d["t"], int) and isinstance(d["m"], bool)
        )
        assert float(d["p"]) > 0 and float(d["q"]) > 0 and d["T"] >= day_start_us(dt.date(2024, 3, 5)) // 1000
    for d in by_stream["btcusdt@bookTicker"]:
        assert d["e"] == "bookTicker" and float(d["b"]) < float(d["a"]) and float(d["B"]) > 0
    for d in by_stream["btcusdt@depth5@100ms"]:
        bids, asks = [float(p) for p, _ in d["b"]], [float(p) for p, _ in d["a"]]
        assert d["e"] == "depthUpdate" and len(bids) == len(asks) == 5
        assert bids == sorted(bids, reverse=True) and asks == sorted(asks) and bids[0] < asks[0]
        assert d["E"] % 100 == 0 and d["T"] <= d["E"]
    for d in by_stream["btcusdt@markPrice@1s"]:
        assert d["e"] == "markPriceUpdate" and d["T"] % (8 * 3_600_000) == 0 and abs(float(d["r"])) < 0.01
    agg, trades = by_stream["btcusdt@aggTrade"], by_stream["btcusdt@trade"]
    assert sum(a["l"] - a["f"] + 1 for a in agg) == pytest.approx(len(trades), abs=len(trades) * 0.2 + 5)
    times = [m["data"].get("E", 0) for m in msgs if m["stream"] == "btcusdt@trade"]
    assert times == sorted(times)


async def test_live_raw_stream_subscribe_and_spot(make_sim_server) -> None:  # noqa: F811
    sim = make_sim_server(live_start="2024-03-05T14:00:00Z", live_speed=60, live_scale="medium")
    msgs = await _collect(
        f"{sim.ws_url}/ws/ethusdt@bookTicker",
        1.0,
        send=[
            {"method": "SUBSCRIBE", "params": ["btcusdt@forceOrder", "btcusdt@trade"], "id": 1},
            {"method": "LIST_SUBSCRIPTIONS", "id": 2},
            {"method": "SUBSCRIBE", "params": ["btcusdt@nonsense"], "id": 3},
        ],
    )
    replies = {m["id"]: m for m in msgs if "id" in m}
    assert replies[1] == {"result": None, "id": 1}
    assert replies[2]["result"] == ["ethusdt@bookTicker", "btcusdt@forceOrder", "btcusdt@trade"]
    assert "error" in replies[3]
    data = [m for m in msgs if "id" not in m]
    assert data and all("stream" not in m for m in data), "raw streams are not wrapped"
    assert {m["s"] for m in data if m.get("e") == "bookTicker"} == {"ETHUSDT"}
    spot = await _collect(f"{sim.ws_spot_url}/stream?streams=btcusdt@depth5/btcusdt@bookTicker", 1.2)
    depth = [m["data"] for m in spot if m["stream"] == "btcusdt@depth5"]
    ticker = [m["data"] for m in spot if m["stream"] == "btcusdt@bookTicker"]
    assert depth and set(depth[0]) == {"lastUpdateId", "bids", "asks"}
    assert (
        ticker and set(ticker[0]) == {"u", "s", "b", "B", "a", "A"} and len(ticker[0]["b"].split(".")[1]) == 8
    )
    bad = await _collect(f"{sim.ws_spot_url}/ws/btcusdt@markPrice", 0.3)
    assert bad and "error" in bad[0]


async def test_live_feed_replays_the_historical_trades(make_sim_server) -> None:  # noqa: F811
    day = dt.date(2024, 3, 5)
    sim = make_sim_server(scale="small", live_start="2024-03-05T14:00:00Z", live_speed=600)
    msgs = await _collect(f"{sim.ws_url}/ws/btcusdt@trade", 2.0)
    assert len(msgs) > 5
    hist = gzip.decompress(
        dataset_bytes("binance-futures", "trades", day, "BTCUSDT", SCALES["small"], "small")
    )
    rows = [line.split(",") for line in hist.decode().split("\n")[1:-1]]
    by_id = {int(r[4]): r for r in rows}
    for m in msgs:
        r = by_id[m["t"]]
        assert int(r[2]) // 1000 == m["T"] and float(r[6]) == float(m["p"]) and float(r[7]) == float(m["q"])
        assert (r[5] == "sell") == m["m"]
    lo, hi = msgs[0]["T"] * 1000, msgs[-1]["T"] * 1000
    expected = {int(r[4]) for r in rows if lo <= int(r[2]) <= hi}
    assert expected == {m["t"] for m in msgs}, "the live feed is the same market as the datasets"


def test_simulator_as_a_process(sim_process, tmp_path) -> None:  # noqa: F811
    text = "\n".join(sim_process.output)
    assert f"MDTH_TARDIS_API_URL={sim_process.api_url}" in text
    assert f"MDTH_TARDIS_DATASETS_URL={sim_process.datasets_url}" in text
    assert sim_process.api_url.startswith("http://127.0.0.1:") and sim_process.datasets_url.endswith(
        "/datasets/v1"
    )
    details = tardis_dev.get_exchange_details("okex-swap", endpoint=sim_process.api_url)
    assert details["id"] == "okex-swap"
    sim_process.set_faults("429:first=1:retry_after=0:path=/okex-swap/")
    tardis_dev.download_datasets(
        "okex-swap",
        ["derivative_ticker"],
        ["BTC-USD-SWAP"],
        "2024-03-01",
        "2024-03-02",
        endpoint=sim_process.datasets_url,
        download_dir=str(tmp_path),
    )
    seen = [(r["path"], r["status"]) for r in sim_process.requests()]
    assert ("/v1/exchanges/okex-swap", 200) in seen
    tries = [s for p, s in seen if p.endswith("BTC-USD-SWAP.csv.gz")]
    assert tries == [429, 200]
    with urllib.request.urlopen(f"{sim_process.base_url}/health", timeout=5) as resp:
        assert json.loads(resp.read())["ok"] is True


@pytest.mark.parametrize("bad", [["--scale", "huge"], ["--faults", "teapot"], ["--now", "yesterday"]])
def test_serve_usage_errors_exit_2_with_one_line(bad: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mdth_engine.simulator", "serve", *bad],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("mdth: error: ")


async def test_faults_never_lock_out_the_control_endpoints(make_sim_server) -> None:  # noqa: F811
    """A fault on every path still lets `PUT /_sim/faults` clear it."""
    sim = make_sim_server(faults="500:p=1:path=.")
    assert (await _get(sim, TRADES))[0] == 500
    async with aiohttp.ClientSession() as session:
        async with session.put(sim.base_url + "/_sim/faults", data="") as resp:
            assert resp.status == 200, await resp.text()
        async with session.get(sim.base_url + "/_sim/requests") as resp:
            assert resp.status == 200
    assert (await _get(sim, TRADES))[0] == 200
