"""A live feed in Binance's public WebSocket format, driven by the same market model on a simulated clock.

Futures streams on ``/ws/<stream>`` and ``/stream?streams=a/b`` (like ``fstream.binance.com``), spot on
``/spot/ws/...`` and ``/spot/stream?...``. Streams: ``<symbol>@trade``, ``@aggTrade``, ``@bookTicker``,
``@depth5|10|20[@100ms|250ms|500ms]``, ``@markPrice[@1s]`` and ``@forceOrder`` (the last two futures only).
``SUBSCRIBE`` / ``UNSUBSCRIBE`` / ``LIST_SUBSCRIPTIONS`` requests work as on Binance. The clock starts at
``live_start`` (default: the wall clock) and runs ``live_speed`` times real time.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import re
import time
from concurrent.futures import Executor
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web

from mdth_engine.core.timeframes import US_PER_DAY, day_start_us
from mdth_engine.simulator import market, paths
from mdth_engine.simulator.universe import Instrument, static_instruments

STREAM = re.compile(
    r"^(?P<sym>[a-z0-9_]+)@(?P<kind>trade|aggTrade|bookTicker|forceOrder|markPrice(?P<fast>@1s)?|"
    r"depth(?P<levels>5|10|20)(?:@(?P<ms>100|250|500)ms)?)$"
)
PUMP_SECONDS = 0.05
MAX_SAMPLES_PER_PUMP = 50
_UNIX = dt.date(1970, 1, 1)


class LiveClock:
    """Simulated microseconds: ``start`` plus ``speed`` times the wall time elapsed since creation."""

    def __init__(self, start_us: int, speed: float) -> None:
        self.start_us = start_us
        self.speed = speed
        self._mono = time.monotonic()

    def now_us(self) -> int:
        return self.start_us + int((time.monotonic() - self._mono) * 1e6 * self.speed)


@dataclasses.dataclass
class Subscription:
    name: str
    inst: Instrument
    kind: str
    levels: int = 0
    period_us: int = 0
    last_us: int = 0


def _dec(grid: market.Grid, spot: bool, minimum: int = 0) -> int:
    return 8 if spot else max(grid.dec, minimum)


class LiveFeed:
    """Turns subscriptions into Binance messages for a span of simulated time."""

    def __init__(self, exchange: str, scale: float, tag: str) -> None:
        self.exchange = exchange
        self.spot = exchange == "binance"
        self.scale = scale
        self.tag = tag
        self.symbols = {i.dataset_id.lower(): i for i in static_instruments(exchange)}

    def resolve(self, stream: str) -> Subscription | str:
        m = STREAM.match(stream)
        if not m:
            return f"Invalid stream name {stream!r}"
        inst = self.symbols.get(m["sym"])
        if inst is None:
            return f"Unknown symbol {m['sym']!r} on {'spot' if self.spot else 'futures'} streams"
        kind = m["kind"]
        if kind.startswith("depth"):
            return Subscription(
                stream, inst, "depth", int(m["levels"]), int(m["ms"] or (1000 if self.spot else 250)) * 1000
            )
        if kind.startswith("markPrice") or kind == "forceOrder":
            if self.spot:
                return f"Stream {stream!r} exists on futures only"
            if kind == "forceOrder":
                return Subscription(stream, inst, "forceOrder")
            return Subscription(stream, inst, "markPrice", period_us=1_000_000 if m["fast"] else 3_000_000)
        return Subscription(stream, inst, kind)

    # -- time windows -----------------------------------------------------------------------------------

    def _windows(self, inst: Instrument, t_from: int, t_to: int):
        """(ctx, window) pairs whose exchange-time span meets ``(t_from, t_to]``."""
        day = _UNIX + dt.timedelta(days=(t_from + 1) // US_PER_DAY)
        last = _UNIX + dt.timedelta(days=t_to // US_PER_DAY)
        while day <= last:
            if inst.live_on(day):
                ctx = market.ctx_for(inst, day, self.scale, self.tag)
                span = US_PER_DAY // ctx.n_win
                base = day_start_us(day)
                w0 = max(0, (t_from + 1 - base) // span)
                w1 = min(ctx.n_win - 1, (t_to - base) // span)
                for w in range(int(w0), int(w1) + 1):
                    yield ctx, w
            day += dt.timedelta(days=1)

    def _book_at(self, inst: Instrument, times: np.ndarray, levels: int):
        """Depth at each sample time (the latest book update at or before it)."""
        out = []
        for t in times:
            for ctx, w in self._windows(inst, int(t) - 1, int(t)):
                core = market.book_core(ctx, w)
                i = int(np.searchsorted(core.ts, t, side="right")) - 1
                if i < 0:
                    continue
                one = market.BookCore(
                    core.ts[i : i + 1],
                    core.local[i : i + 1],
                    core.bid[i : i + 1],
                    core.ask[i : i + 1],
                    core.resnap[i : i + 1],
                )
                out.append((int(t), ctx, int(core.ts[i]), market.book_depth(ctx, one, levels)))
        return out

    # -- messages ---------------------------------------------------------------------------------------

    def events(self, sub: Subscription, t_from: int, t_to: int) -> list[tuple[int, dict[str, Any]]]:
        """Messages for events with simulated time in ``(t_from, t_to]``, as (time, payload)."""
        if t_to <= t_from:
            return []
        handler = getattr(self, f"_ev_{sub.kind}")
        return handler(sub, t_from, t_to)

    def _ev_trade(self, sub: Subscription, t_from: int, t_to: int):
        out = []
        sym = sub.inst.dataset_id
        for ctx, w in self._windows(sub.inst, t_from, t_to):
            tr = market.trades(ctx, w)
            m = (tr.ts > t_from) & (tr.ts <= t_to)
            pd, qd = _dec(ctx.tick, self.spot, 2), _dec(ctx.step, self.spot)
            price, qty = ctx.tick.to_float(tr.price[m]), ctx.step.to_float(tr.amount[m])
            for ts, seq, buy, p, q in zip(tr.ts[m], tr.seq[m], tr.buy[m], price, qty, strict=True):
                ms = int(ts) // 1000
                msg = {
                    "e": "trade",
                    "E": ms,
                    "T": ms,
                    "s": sym,
                    "t": int(seq),
                    "p": f"{p:.{pd}f}",
                    "q": f"{q:.{qd}f}",
                    "m": not bool(buy),
                }
                if self.spot:
                    msg["M"] = True
                else:
                    msg["X"] = "MARKET"
                out.append((int(ts), msg))
        return out

    def _ev_aggTrade(self, sub: Subscription, t_from: int, t_to: int):
        out = []
        sym = sub.inst.dataset_id
        for ctx, w in self._windows(sub.inst, t_from, t_to):
            tr = market.trades(ctx, w)
            m = np.nonzero((tr.ts > t_from) & (tr.ts <= t_to))[0]
            if m.size == 0:
                continue
            # Fills of one taker order share time, side and arrival: one aggregate trade.
            key = np.stack([tr.ts[m], tr.local[m], tr.buy[m].astype(np.int64)], axis=1)
            starts = np.concatenate(([0], np.nonzero((key[1:] != key[:-1]).any(axis=1))[0] + 1))
            ends = np.concatenate((starts[1:], [m.size]))
            pd, qd = _dec(ctx.tick, self.spot, 2), _dec(ctx.step, self.spot)
            for a, b in zip(starts, ends, strict=True):
                rows = m[a:b]
                ms = int(tr.ts[rows[0]]) // 1000
                qty = float(ctx.step.to_float(tr.amount[rows]).sum())
                price = float(ctx.tick.to_float(tr.price[rows[:1]])[0])
                out.append(
                    (
                        int(tr.ts[rows[0]]),
                        {
                            "e": "aggTrade",
                            "E": ms,
                            "s": sym,
                            "a": int(tr.seq[rows[0]]) // 2,
                            "p": f"{price:.{pd}f}",
                            "q": f"{qty:.{qd}f}",
                            "f": int(tr.seq[rows[0]]),
                            "l": int(tr.seq[rows[-1]]),
                            "T": ms,
                            "m": not bool(tr.buy[rows[0]]),
                        },
                    )
                )
        return out

    def _ev_bookTicker(self, sub: Subscription, t_from: int, t_to: int):
        out = []
        sym = sub.inst.dataset_id
        for ctx, w in self._windows(sub.inst, t_from, t_to):
            core = market.book_core(ctx, w)
            m = np.nonzero((core.ts > t_from) & (core.ts <= t_to))[0]
            if m.size == 0:
                continue
            sel = market.BookCore(core.ts[m], core.local[m], core.bid[m], core.ask[m], core.resnap[m])
            top = market.book_depth(ctx, sel, 1)
            pd, qd = _dec(ctx.tick, self.spot, 2), _dec(ctx.step, self.spot)
            bid, ask = ctx.tick.to_float(np.maximum(sel.bid, 0)), ctx.tick.to_float(sel.ask)
            bq, aq = ctx.step.to_float(top.bid_amt[:, 0]), ctx.step.to_float(top.ask_amt[:, 0])
            for i in range(m.size):
                ms = int(sel.ts[i]) // 1000
                msg: dict[str, Any] = {
                    "u": ms * 10,
                    "s": sym,
                    "b": f"{bid[i]:.{pd}f}",
                    "B": f"{bq[i]:.{qd}f}",
                    "a": f"{ask[i]:.{pd}f}",
                    "A": f"{aq[i]:.{qd}f}",
                }
                if not self.spot:
                    msg = {"e": "bookTicker", **msg, "T": ms, "E": ms}
                out.append((int(sel.ts[i]), msg))
        return out

    def _samples(self, sub: Subscription, t_from: int, t_to: int) -> np.ndarray:
        first = (t_from // sub.period_us + 1) * sub.period_us
        times = np.arange(first, t_to + 1, sub.period_us, dtype=np.int64)
        return times[-MAX_SAMPLES_PER_PUMP:]

    def _ev_depth(self, sub: Subscription, t_from: int, t_to: int):
        out = []
        sym = sub.inst.dataset_id
        for t, ctx, event_ts, depth in self._book_at(sub.inst, self._samples(sub, t_from, t_to), sub.levels):
            pd, qd = _dec(ctx.tick, self.spot, 2), _dec(ctx.step, self.spot)

            def side(px: np.ndarray, amt: np.ndarray, ctx=ctx, pd=pd, qd=qd) -> list[list[str]]:
                ok = px[0] >= 0
                p, q = ctx.tick.to_float(np.maximum(px[0], 0)), ctx.step.to_float(amt[0])
                return [[f"{a:.{pd}f}", f"{b:.{qd}f}"] for a, b, k in zip(p, q, ok, strict=True) if k]

            bids, asks = side(depth.bid_px, depth.bid_amt), side(depth.ask_px, depth.ask_amt)
            update = event_ts // 1000 * 10
            if self.spot:
                msg: dict[str, Any] = {"lastUpdateId": update, "bids": bids, "asks": asks}
            else:
                msg = {
                    "e": "depthUpdate",
                    "E": t // 1000,
                    "T": event_ts // 1000,
                    "s": sym,
                    "U": update - 3,
                    "u": update,
                    "pu": update - 4,
                    "b": bids,
                    "a": asks,
                }
            out.append((t, msg))
        return out

    def _ev_markPrice(self, sub: Subscription, t_from: int, t_to: int):
        times = self._samples(sub, t_from, t_to)
        if times.size == 0:
            return []
        inst = sub.inst
        tick = market.Grid.of(inst.increments_on(_UNIX + dt.timedelta(days=int(times[0]) // US_PER_DAY))[0])
        mark = market.fair_price(inst, times)
        index = paths.spot(inst.underlying, times)
        funding_ts, rate, _ = market.funding_at(inst, times)
        dec = max(tick.dec + 2, 8)
        out = []
        for i, t in enumerate(times):
            out.append(
                (
                    int(t),
                    {
                        "e": "markPriceUpdate",
                        "E": int(t) // 1000,
                        "s": inst.dataset_id,
                        "p": f"{mark[i]:.{dec}f}",
                        "i": f"{index[i]:.{dec}f}",
                        "P": f"{index[i]:.{dec}f}",
                        "r": "" if np.isnan(rate[i]) else f"{rate[i]:.8f}",
                        "T": int(funding_ts[i]) // 1000 if funding_ts[i] > 0 else 0,
                    },
                )
            )
        return out

    def _ev_forceOrder(self, sub: Subscription, t_from: int, t_to: int):
        out = []
        for ctx, w in self._windows(sub.inst, t_from, t_to):
            liq = market.liquidations_day(ctx)
            t0, t1 = ctx.window(w)
            m = (liq.ts > max(t_from, t0 - 1)) & (liq.ts <= t_to) & (liq.ts < t1)
            pd, qd = _dec(ctx.tick, False, 2), _dec(ctx.step, False)
            price, qty = ctx.tick.to_float(liq.price[m]), ctx.step.to_float(liq.amount[m])
            for ts, buy, p, q in zip(liq.ts[m], liq.buy[m], price, qty, strict=True):
                ms = int(ts) // 1000
                out.append(
                    (
                        int(ts),
                        {
                            "e": "forceOrder",
                            "E": ms,
                            "o": {
                                "s": sub.inst.dataset_id,
                                "S": "BUY" if buy else "SELL",
                                "o": "LIMIT",
                                "f": "IOC",
                                "q": f"{q:.{qd}f}",
                                "p": f"{p:.{pd}f}",
                                "ap": f"{p:.{pd}f}",
                                "X": "FILLED",
                                "l": f"{q:.{qd}f}",
                                "z": f"{q:.{qd}f}",
                                "T": ms,
                            },
                        },
                    )
                )
        return out


def _streams_from(request: web.Request) -> list[str]:
    if "streams" in request.query:
        return [s for s in request.query["streams"].split("/") if s]
    tail = request.match_info.get("streams", "")
    return [s for s in tail.split("/") if s]


OPEN_SOCKETS = web.AppKey("mdth_sim_open_sockets", set)


async def close_sockets(app: web.Application) -> None:
    """``on_shutdown`` hook: close live connections so a server stops at once."""
    for ws in list(app.get(OPEN_SOCKETS, ())):
        await ws.close(code=1001, message=b"server shutdown")


async def serve_ws(
    request: web.Request, feed: LiveFeed, clock: LiveClock, executor: Executor | None
) -> web.WebSocketResponse:
    """One client connection: initial streams from the URL, then requests over the socket."""
    ws = web.WebSocketResponse(heartbeat=30.0)
    await ws.prepare(request)
    sockets = request.app.get(OPEN_SOCKETS)
    if sockets is not None:
        sockets.add(ws)
    combined = request.path.rstrip("/").endswith("/stream")
    subs: dict[str, Subscription] = {}
    loop = asyncio.get_running_loop()
    send_lock = asyncio.Lock()

    async def send(payload: dict[str, Any]) -> None:
        async with send_lock:
            await ws.send_str(json.dumps(payload, separators=(",", ":")))

    async def subscribe(names: list[str]) -> str | None:
        for name in names:
            sub = feed.resolve(name)
            if isinstance(sub, str):
                return sub
            sub.last_us = clock.now_us()
            subs[name] = sub
        return None

    error = await subscribe(_streams_from(request))
    if error:
        await send({"error": {"code": 2, "msg": error}})

    async def reader() -> None:
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            try:
                req = json.loads(msg.data)
                method, params, rid = req.get("method"), req.get("params") or [], req.get("id")
            except (ValueError, AttributeError):
                await send({"error": {"code": 3, "msg": "Invalid JSON"}})
                continue
            if method == "SUBSCRIBE":
                err = await subscribe([str(p) for p in params])
                await send(
                    {"error": {"code": 2, "msg": err}, "id": rid} if err else {"result": None, "id": rid}
                )
            elif method == "UNSUBSCRIBE":
                for p in params:
                    subs.pop(str(p), None)
                await send({"result": None, "id": rid})
            elif method == "LIST_SUBSCRIPTIONS":
                await send({"result": list(subs), "id": rid})
            else:
                await send({"error": {"code": 2, "msg": f"Unknown method {method!r}"}, "id": rid})

    read_task = asyncio.create_task(reader())
    try:
        while not ws.closed and not read_task.done():
            await asyncio.sleep(PUMP_SECONDS)
            now = clock.now_us()
            batch: list[tuple[int, int, str, dict[str, Any]]] = []
            for order, (name, sub) in enumerate(list(subs.items())):
                events = await loop.run_in_executor(executor, feed.events, sub, sub.last_us, now)
                sub.last_us = now
                batch.extend((t, order, name, payload) for t, payload in events)
            batch.sort(key=lambda e: (e[0], e[1]))
            for _, _, name, payload in batch:
                if ws.closed:
                    break
                await send({"stream": name, "data": payload} if combined else payload)
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        read_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await read_task
        await ws.close()
        if sockets is not None:
            sockets.discard(ws)
    return ws


def default_clock(start: dt.datetime | None, speed: float) -> LiveClock:
    start_dt = start or dt.datetime.now(dt.UTC)
    delta = start_dt - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return LiveClock((delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds, speed)


__all__ = ["OPEN_SOCKETS", "LiveClock", "LiveFeed", "close_sockets", "default_clock", "serve_ws"]
