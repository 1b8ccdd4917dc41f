"""The tardis-machine source against a loopback stand-in of ``/ws-stream-normalized``.

There is no real tardis-machine here: the stand-in (an aiohttp server in this file) checks the ``options``
query as tardis-machine parses it (``StreamNormalizedRequestOptions``) and sends messages in tardis-node's
normalized shapes (``trade``, ``book_snapshot``, ``derivative_ticker``, ``liquidation``, ``disconnect``), ISO
times with milliseconds, as ``JSON.stringify`` writes them. The expected bar numbers are computed here from the
trades the stand-in sent, independently of the engine.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math

import pytest
from aiohttp import web

from mdth_engine.core.errors import UsageError
from mdth_engine.live.clock import ScaledClock
from mdth_engine.live.events import Bar, BookSnapshot, DerivativeTicker, Liquidation, Notice, Trade
from mdth_engine.live.sources.spec import open_source
from mdth_engine.live.sources.tardis_machine import TardisMachineSource, iso_us
from mdth_engine.live.stream import LiveFeatureStream

PERP = "BINANCE-FUTURES:PERPETUAL:BTC-USDT"
START_US = iso_us("2024-03-12T10:00:00Z")
SPEED = 100.0
BAR_US = 15_000_000


def iso(us: int) -> str:
    """As JavaScript's Date.toISOString: milliseconds and Z."""
    t = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=us - us % 1000)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


class TardisMachineStandin:
    """Sends trades every 1 s of market time for 40 s, a disconnect, 20 s of silence, then 40 s more trades."""

    def __init__(self, clock: ScaledClock) -> None:
        self.clock = clock
        self.options: list = []
        self.sent_trades: list[tuple[int, float, float, str]] = []  # (ts, price, amount, side)
        self.disconnect_at = 0
        self.resumed_at = 0
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> TardisMachineStandin:
        app = web.Application()
        app.router.add_get("/ws-stream-normalized", self.handle)
        self._runner = web.AppRunner(app, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        options = json.loads(request.query["options"])  # tardis-machine: JSON.parse(query.options)
        self.options.append(options)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        for i in range(100):
            if i == 40:
                self.disconnect_at = self.clock.now_us()
                await ws.send_str(
                    json.dumps(
                        {
                            "type": "disconnect",
                            "exchange": "binance-futures",
                            "localTimestamp": iso(self.disconnect_at),
                        }
                    )
                )
                await asyncio.sleep(20 / SPEED)
                continue
            if 40 < i < 60:
                continue
            await self.tick(ws, i)
            await asyncio.sleep(1 / SPEED)
        await asyncio.sleep(3600)
        return ws

    async def tick(self, ws: web.WebSocketResponse, i: int) -> None:
        local = self.clock.now_us()
        ts = local - 7000
        if not self.resumed_at and self.disconnect_at:
            self.resumed_at = local
        price, amount, side = 68000.0 + (i % 7) * 0.5, 0.001 * (1 + i % 3), "buy" if i % 2 else "sell"
        self.sent_trades.append((ts - ts % 1000, price, amount, side))
        common = {
            "symbol": "BTCUSDT",
            "exchange": "binance-futures",
            "timestamp": iso(ts),
            "localTimestamp": iso(local),
        }
        await ws.send_str(
            json.dumps(
                {"type": "trade", **common, "id": str(i), "price": price, "amount": amount, "side": side}
            )
        )
        bids = [{"price": price - 0.1 * (k + 1), "amount": 1.0 + k} for k in range(5)]
        asks = [{"price": price + 0.1 * (k + 1), "amount": 2.0 + k} for k in range(5)]
        await ws.send_str(
            json.dumps(
                {
                    "type": "book_snapshot",
                    **common,
                    "name": "book_snapshot_5_100ms",
                    "depth": 5,
                    "interval": 100,
                    "bids": bids,
                    "asks": asks,
                }
            )
        )
        if i % 5 == 0:
            await ws.send_str(
                json.dumps(
                    {
                        "type": "derivative_ticker",
                        **common,
                        "lastPrice": price,
                        "openInterest": 1000.0 + i,
                        "fundingRate": 0.0001,
                        "fundingTimestamp": "2024-03-12T16:00:00.000Z",
                        "indexPrice": price - 1,
                        "markPrice": price + 1,
                    }
                )
            )
        if i == 3:
            await ws.send_str(
                json.dumps(
                    {
                        "type": "liquidation",
                        **common,
                        "id": "liq",
                        "price": price,
                        "amount": 0.5,
                        "side": "buy",
                    }
                )
            )
        # Another symbol on the same exchange, not asked for: ignored.
        await ws.send_str(
            json.dumps(
                {
                    "type": "trade",
                    **common,
                    "symbol": "ETHUSDT",
                    "id": "x",
                    "price": 1.0,
                    "amount": 1.0,
                    "side": "buy",
                }
            )
        )


async def test_normalized_messages_become_events_and_bars():
    clock = ScaledClock(START_US, SPEED)
    standin = await TardisMachineStandin(clock).start()
    spec = f"tardis-machine://127.0.0.1:{standin.port}/binance-futures/BTCUSDT"
    source = open_source(spec, options={"clock": clock, "grace_us": 3_000_000})
    assert isinstance(source, TardisMachineSource) and source.keys == (PERP,)
    items: list = []
    events: list = []
    original = source.parse

    def spy(text, local_us, context):
        out = original(text, local_us, context)
        events.extend(out)
        return out

    source.parse = spy  # type: ignore[method-assign]
    try:
        async with LiveFeatureStream(None, ["15s"], source, events=True, warm=0) as stream:
            async for item in stream:
                items.append(item)
                bars = [i for i in items if isinstance(i, Bar)]
                if standin.resumed_at and bars and bars[-1].timestamp > standin.resumed_at + 2 * BAR_US:
                    break
            stats = stream.stats()
    finally:
        await standin.stop()
    assert standin.options == [
        {
            "exchange": "binance-futures",
            "symbols": ["BTCUSDT"],
            "dataTypes": ["trade", "book_snapshot_5_100ms", "derivative_ticker", "liquidation"],
            "withDisconnectMessages": True,
        }
    ]
    trades = [e for e in events if type(e) is Trade]
    assert all(t.key == PERP for t in trades) and trades[0].id == "0"
    assert [(t.timestamp, t.price, t.amount, t.side) for t in trades] == standin.sent_trades[: len(trades)]
    book = next(e for e in events if type(e) is BookSnapshot)
    assert book.bid_prices[0] == trades[0].price - 0.1 and book.ask_amounts == (2.0, 3.0, 4.0, 5.0, 6.0)
    ticker = next(e for e in events if type(e) is DerivativeTicker)
    assert ticker.open_interest == 1000.0 and ticker.funding_timestamp == iso_us("2024-03-12T16:00:00Z")
    assert math.isnan(ticker.predicted_funding_rate)
    (liq,) = [e for e in events if type(e) is Liquidation]
    assert (liq.amount, liq.side) == (0.5, "buy")
    notices = [i.event for i in items if isinstance(i, Notice)]
    assert notices[:2] == ["connected", "disconnect"] and "reconnected" in notices
    assert stats["engine"]["late"] == 0

    bars = [i for i in items if isinstance(i, Bar) and not i.partial]
    assert len(bars) >= 5
    for bar in bars:  # every full bar: the trades sent in it, summed here
        inside = [t for t in standin.sent_trades if bar.timestamp <= t[0] < bar.timestamp_out]
        v = bar.values
        assert v["trade_count"] == len(inside)
        assert v["volume"] == pytest.approx(sum(t[2] for t in inside), rel=1e-12)
        assert v["buy_volume_sum"] == pytest.approx(
            sum(t[2] for t in inside if t[3] == "buy"), rel=1e-12, abs=0
        )
        if inside:
            assert (v["open"], v["close"]) == (inside[0][1], inside[-1][1])
            assert v["high"] == max(t[1] for t in inside) and v["low"] == min(t[1] for t in inside)
            vwap = sum(t[1] * t[2] for t in inside) / sum(t[2] for t in inside)
            assert v["price_vwap"] == pytest.approx(vwap, rel=1e-12)
        down, up = standin.disconnect_at, standin.resumed_at
        assert bar.spans_disconnect == (bar.timestamp < up and bar.timestamp_out > down)
    assert any(b.spans_disconnect for b in bars) and sum(b.values["liquidation_count"] for b in bars) <= 1


def test_source_names_are_checked():
    with pytest.raises(UsageError, match="tardis-machine://HOST:PORT/EXCHANGE"):
        open_source("tardis-machine://127.0.0.1/binance")
    with pytest.raises(UsageError, match="not a binance-futures instrument"):
        open_source("tardis-machine://127.0.0.1:8001/binance-futures/BTCUSD_240628x")
    with pytest.raises(UsageError, match="depth of at least 5"):
        open_source("tardis-machine://127.0.0.1:8001/binance/BTCUSDT?data_types=trade,book_snapshot_1_0ms")
    spot = open_source("tardis-machine://127.0.0.1:8001/binance/btcusdt,ETHUSDT")
    assert spot.keys == ("BINANCE:SPOT_PAIR:BTC-USDT", "BINANCE:SPOT_PAIR:ETH-USDT")
    assert spot.data_types(spot.keys[0]) == {"trades", "book_snapshot_5"}  # no ticker or liquidations on spot
