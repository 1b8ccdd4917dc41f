"""The Binance source against a loopback WebSocket that speaks Binance's format: the simulator's live feed.

Drops are made by a small TCP proxy between the source and the simulator (the simulator has no hook to drop a
live connection): ``cut()`` closes every open connection, ``refuse`` makes new connections close at once.
Connection failures at the handshake come from the simulator's own fault injection (``503`` on ``/stream``).
The simulator runs its market on a clock at 60-120x; the source runs a ``ScaledClock`` from the same instant.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gzip
import time

import pytest
from sim_fixtures import make_sim_server, sim_cache_dir  # noqa: F401

from mdth_engine.core.errors import UsageError
from mdth_engine.live.clock import ScaledClock
from mdth_engine.live.events import Bar, BookSnapshot, Connected, DerivativeTicker, Disconnect, Notice, Trade
from mdth_engine.live.sources.base import SourceError
from mdth_engine.live.sources.binance import BinanceSource, binance_key
from mdth_engine.live.sources.spec import open_source
from mdth_engine.live.stream import LiveFeatureStream
from mdth_engine.simulator.config import SCALES
from mdth_engine.simulator.datasets import dataset_bytes

DAY = dt.date(2024, 3, 12)
SPOT, PERP = "BINANCE:SPOT_PAIR:BTC-USDT", "BINANCE-FUTURES:PERPETUAL:BTC-USDT"
FAST = {"backoff_initial": 0.05, "backoff_max": 0.2, "idle_timeout": 5.0}


class Proxy:
    """A loopback TCP proxy to ``port`` that can cut its connections and refuse new ones."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.refuse = False
        self.accepted = 0
        self._conns: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> Proxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.refuse:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        self._conns.append((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(Exception):
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def cut(self) -> int:
        """Close every open connection (both sides), as a network drop would."""
        n = len(self._conns)
        for a, b in self._conns:
            for w in (a, b):
                with contextlib.suppress(Exception):
                    w.transport.abort()
        self._conns = []
        return n

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()


def history(exchange: str, data_type: str, symbol: str) -> list[list[str]]:
    raw = gzip.decompress(dataset_bytes(exchange, data_type, DAY, symbol, SCALES["small"], "small"))
    return [line.split(",") for line in raw.decode().split("\n")[1:-1]]


async def collect(source: BinanceSource, seconds: float) -> list:
    events = []
    deadline = time.monotonic() + seconds
    gen = source.batches()
    try:
        while time.monotonic() < deadline:
            try:
                batch = await asyncio.wait_for(anext(gen), timeout=max(deadline - time.monotonic(), 0.01))
            except TimeoutError:
                break
            events.extend(batch.events)
    finally:
        await source.aclose()
        await gen.aclose()
    return events


async def test_messages_map_onto_the_lake_shapes(make_sim_server, monkeypatch):  # noqa: F811
    sim = make_sim_server(live_start=f"{DAY}T10:00:00Z", live_speed=600)
    monkeypatch.setenv("MDTH_BINANCE_WS_URL", sim.ws_spot_url)  # the settings a user points elsewhere with
    monkeypatch.setenv("MDTH_BINANCE_FUTURES_WS_URL", sim.ws_url)
    source = open_source(
        "binance:BTCUSDT", [PERP], options={"clock": ScaledClock(sim.app.clock.now_us(), 600)}
    )
    assert isinstance(source, BinanceSource) and source.keys == (SPOT, PERP)
    assert source.data_types(SPOT) == {"trades", "book_snapshot_5"}
    assert source.data_types(PERP) == {"trades", "book_snapshot_5", "derivative_ticker", "liquidations"}
    events = await collect(source, 2.0)
    assert [type(e) for e in events[:2]] == [Connected, Connected]
    for key, exchange in ((SPOT, "binance"), (PERP, "binance-futures")):
        trades = [e for e in events if type(e) is Trade and e.key == key]
        assert len(trades) > 5, key
        rows = {r[4]: r for r in history(exchange, "trades", "BTCUSDT")}
        for t in trades:  # the same trades as the day's dataset: time, side, price, amount
            row = rows[t.id]
            assert (t.timestamp, t.side, t.price, t.amount) == (
                int(row[2]),
                row[5],
                float(row[6]),
                float(row[7]),
            )
            assert t.local_timestamp >= t.timestamp
        books = [e for e in events if type(e) is BookSnapshot and e.key == key]
        assert books and all(len(b.bid_prices) == len(b.ask_amounts) == 5 for b in books)
        assert all(
            b.bid_prices[0] < b.ask_prices[0] and b.bid_prices == tuple(sorted(b.bid_prices, reverse=True))
            for b in books
        )
    tickers = [e for e in events if type(e) is DerivativeTicker]
    assert tickers and all(t.key == PERP for t in tickers)
    assert all(
        t.mark_price > 0 and t.index_price > 0 and t.funding_timestamp % (8 * 3600 * 10**6) == 0
        for t in tickers
    )
    assert source.counters["parse_errors"] == 0 and source.counters["drops"] == 0


async def test_drops_reconnect_and_the_bars_that_span_them_are_flagged(make_sim_server):  # noqa: F811
    sim = make_sim_server(live_start=f"{DAY}T10:00:00Z", live_speed=60)
    proxy = await Proxy(sim.port).start()
    base = f"ws://127.0.0.1:{proxy.port}"
    clock = ScaledClock(sim.app.clock.now_us(), 60)
    source = BinanceSource(
        [SPOT, PERP], clock=clock, spot_url=base + "/spot", futures_url=base, grace_us=6_000_000, **FAST
    )
    items: list = []
    cut_at = up_at = None
    try:
        async with LiveFeatureStream(None, ["15s"], source, events=True, warm=0) as stream:
            async for item in stream:
                items.append(item)
                bars = [i for i in items if isinstance(i, Bar)]
                if cut_at is None and len(bars) >= 4:
                    proxy.refuse = True
                    assert proxy.cut() == 2  # spot and futures connections
                    cut_at = clock.now_us()
                    asyncio.get_running_loop().call_later(0.5, setattr, proxy, "refuse", False)
                if up_at is None and any(isinstance(i, Notice) and i.event == "reconnected" for i in items):
                    up_at = clock.now_us()
                if up_at is not None and bars[-1].timestamp > up_at + 15_000_000:
                    break
            stats = stream.stats()
    finally:
        await proxy.stop()
    notices = [i for i in items if isinstance(i, Notice)]
    events = [n.event for n in notices]
    assert events.count("disconnect") == 2 and events.count("reconnected") == 2, events
    assert stats["engine"]["disconnects"] == 2 and stats["engine"]["reconnects"] == 2
    assert stats["source"]["drops"] == 2 and stats["source"]["connects"] == 4
    assert proxy.accepted > 4  # attempts while refused failed and were retried with backoff
    gaps = {}  # each connection's own gap: from its disconnect to its reconnect
    for key in (SPOT, PERP):
        down = next(n.at_us for n in notices if n.event == "disconnect" and key in n.data["instrument_keys"])
        back = next(n.at_us for n in notices if n.event == "reconnected" and key in n.data["instrument_keys"])
        assert cut_at - 1_000_000 <= down <= back
        gaps[key] = (down, back)
    bars = [i for i in items if isinstance(i, Bar)]
    for bar in bars:
        down, back = gaps[bar.instrument_key]
        overlaps = bar.timestamp < back and bar.timestamp_out > down
        assert bar.spans_disconnect == overlaps, (bar.instrument_key, bar.timestamp, down, back)
    assert any(b.spans_disconnect for b in bars) and any(not b.spans_disconnect for b in bars)
    first = next(b for b in bars if b.instrument_key == SPOT)
    assert first.partial  # the stream started inside its first bar
    assert not any(b.partial for b in bars if b.timestamp > first.timestamp)


async def test_a_refused_handshake_is_one_disconnect_then_a_connection(make_sim_server):  # noqa: F811
    sim = make_sim_server(
        live_start=f"{DAY}T10:00:00Z", live_speed=60, faults="503:path=^/spot/stream:first=3"
    )
    source = BinanceSource(
        [SPOT], clock=ScaledClock(sim.app.clock.now_us(), 60), spot_url=sim.ws_spot_url, **FAST
    )
    events = await collect(source, 1.5)
    status = [type(e) for e in events if type(e) in (Disconnect, Connected)]
    assert status == [Disconnect, Connected]  # three failed attempts, announced once
    assert "503" in events[0].reason
    assert source.counters["connects"] == 1 and any(type(e) is Trade for e in events)
    assert [r.status for r in sim.requests if r.path == "/spot/stream"][:3] == [503, 503, 503]


async def test_a_refused_subscription_ends_the_stream_with_its_reason(make_sim_server):  # noqa: F811
    sim = make_sim_server(live_start=f"{DAY}T10:00:00Z", live_speed=60)
    source = BinanceSource(
        ["ZZZUSDT"], clock=ScaledClock(sim.app.clock.now_us(), 60), spot_url=sim.ws_spot_url
    )
    with pytest.raises(SourceError, match="Unknown symbol"):
        async with LiveFeatureStream(None, ["1m"], source, warm=0) as stream:
            async for _ in stream:
                pass


def test_symbols_and_keys_are_checked_before_connecting():
    assert binance_key("btcusdt") == SPOT
    assert binance_key("BTCUSDT", futures=True) == PERP
    assert binance_key("BINANCE-FUTURES:PERP:ETH-USDT") == "BINANCE-FUTURES:PERPETUAL:ETH-USDT"
    for bad in ("DERIBIT:PERPETUAL:BTC-USD", "BTCUSD_PERP", "BINANCE-FUTURES:PERPETUAL:BTC-USD"):
        with pytest.raises(UsageError):
            binance_key(bad, futures=True)
    source = BinanceSource(["BTCUSDT", PERP], spot_url="ws://h:1", futures_url="ws://h:2")
    urls = [url for url, _, _ in source.connections()]
    assert urls == [
        "ws://h:1/stream?streams=btcusdt@trade/btcusdt@depth5@100ms",
        "ws://h:2/stream?streams=btcusdt@trade/btcusdt@depth5@100ms/btcusdt@markPrice@1s/btcusdt@forceOrder",
    ]


async def events_until(source: BinanceSource, done, seconds: float) -> list:
    """``async for event in source`` until ``done(events)`` or ``seconds``; the source is closed after."""
    seen: list = []
    stream = aiter(source)
    try:
        async with asyncio.timeout(seconds):
            async for event in stream:
                seen.append(event)
                if done(seen):
                    break
    except TimeoutError:
        pass
    finally:
        await source.aclose()
        await stream.aclose()
    return seen


@pytest.mark.parametrize("nth", [0, 3], ids=["buy", "sell"])
async def test_force_orders_are_the_days_liquidations_and_book_tickers_its_quotes(sim_cache_dir, nth):  # noqa: F811
    """The simulator's futures feed from shortly before a liquidation of the day's dataset (0: a short
    liquidated, BUY; 3: a long, SELL), with ``?book_ticker=1``; read with ``async for event in source``."""
    from mdth_engine.live.events import BookTicker, Liquidation

    liquidations = history("binance-futures", "liquidations", "BTCUSDT")
    want = liquidations[nth]
    start = dt.datetime.fromtimestamp(int(want[2]) // 1_000_000 - 60, dt.UTC)
    source = open_source(
        f"sim:BTCUSDT?market=futures&speed=120&scale=small&book_ticker=1&start={start:%Y-%m-%dT%H:%M:%SZ}",
        options={"cache_dir": str(sim_cache_dir)},
    )
    assert source.book_ticker and "btcusdt@bookTicker" in source.streams(futures=True)
    events = await events_until(source, lambda seen: type(seen[-1]) is Liquidation, 20.0)
    got = [e for e in events if type(e) is Liquidation]
    assert len(got) == 1, [type(e).__name__ for e in events[-5:]]
    liq = got[0]
    assert (liq.key, liq.timestamp, liq.side, liq.price, liq.amount) == (
        PERP,
        int(want[2]),
        want[5],
        float(want[6]),
        float(want[7]),
    )
    assert liq.side == ("buy" if nth == 0 else "sell")  # Binance's order side S: BUY closes a short
    quotes = {int(r[2]): r for r in history("binance-futures", "book_ticker", "BTCUSDT")}
    tickers = [e for e in events if type(e) is BookTicker]
    assert len(tickers) >= 3 and all(t.key == PERP for t in tickers)
    matched = [t for t in tickers if t.timestamp in quotes]
    assert matched  # the dataset keeps only changes of the top of book; the feed sends every update
    for t in matched:
        row = quotes[t.timestamp]
        assert (t.ask_amount, t.ask_price, t.bid_price, t.bid_amount) == tuple(float(v) for v in row[4:8])
    assert all(t.bid_price < t.ask_price and t.bid_amount > 0 and t.ask_amount > 0 for t in tickers)


def test_a_bare_scheme_takes_its_symbols_from_the_symbols_given():
    assert open_source("binance", ["BTCUSDT"]).keys == (
        SPOT,
    )  # LiveFeatureStream(["BTCUSDT"], source="binance")
    assert open_source("binance-futures", ["BTCUSDT"]).keys == (PERP,)
    sim = open_source("sim?book_ticker=1", ["BTCUSDT"])
    assert sim.spec == f"sim:{SPOT}" and sim.book_ticker
    assert not open_source("sim:BTCUSDT").book_ticker
    with pytest.raises(UsageError, match="name at least one Binance symbol"):
        open_source("binance")
    with pytest.raises(UsageError, match="unknown source 'replay'"):
        open_source("replay", [SPOT])
