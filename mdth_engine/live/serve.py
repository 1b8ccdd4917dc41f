"""The live stream on a loopback WebSocket, for other processes: ``ws://127.0.0.1:PORT/stream``.

A client must send ``Authorization: Bearer <token>`` (compared in constant time; anything else gets 401
before the upgrade). The server binds loopback addresses only. Each client gets ``hello`` (instruments,
timeframes), then the history (the last bars of each instrument and timeframe, ``"history": true``), then
every closed bar and notable event as one JSON object per message (``Bar.to_dict``/``Notice.to_dict``).
Query parameters ``instruments`` and ``timeframes`` (comma lists) narrow what a client receives. A slow
client has its own bounded queue that drops its oldest items; it is told how many with a ``dropped`` event.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
from aiohttp import web

from mdth_engine.core.errors import UsageError
from mdth_engine.live.queues import Bus, Policy

LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
CLIENT_QUEUE = 10_000
PATH = "/stream"


def make_token() -> str:
    return secrets.token_urlsafe(32)


def check_loopback(host: str) -> str:
    if host not in LOOPBACK:
        raise UsageError(f"the stream server binds loopback only (127.0.0.1, ::1), not {host!r}")
    return host


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False, default=str)


class FeatureServer:
    """Serves a ``Bus`` to WebSocket clients; ``history()`` gives what a new client is sent first."""

    def __init__(
        self,
        bus: Bus,
        history: Callable[[], list[Any]],
        describe: Callable[[], dict[str, Any]],
        *,
        token: str,
        host: str = "127.0.0.1",
        port: int = 0,
        client_queue: int = CLIENT_QUEUE,
    ) -> None:
        if not token or len(token) < 16:
            raise UsageError("the stream server needs a token of at least 16 characters")
        self.bus = bus
        self.history = history
        self.describe = describe
        self._token = token.encode()
        self.host = check_loopback(host)
        self.port = port
        self.client_queue = client_queue
        self._runner: web.AppRunner | None = None
        self.clients = 0
        self.counters = {"clients_total": 0, "refused": 0, "sent": 0, "dropped": 0}

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self.port}{PATH}"

    async def start(self) -> FeatureServer:
        app = web.Application()
        app.router.add_get(PATH, self._handle)
        app.router.add_get("/health", self._health)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self._token)

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "clients": self.clients})

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            self.counters["refused"] += 1
            return web.json_response({"error": "a valid bearer token is required"}, status=401)
        wanted_keys = _csv(request.query.get("instruments"))
        wanted_tfs = _csv(request.query.get("timeframes"))

        def wanted(item: Any) -> bool:
            if getattr(item, "kind", "") != "bar":
                return True
            return (not wanted_keys or item.instrument_key in wanted_keys) and (
                not wanted_tfs or item.timeframe in wanted_tfs
            )

        ws = web.WebSocketResponse(heartbeat=30.0)
        await ws.prepare(request)
        queue = self.bus.subscribe(
            "serve-client", self.client_queue, Policy.DROP_OLDEST, frozenset({"bar", "event"})
        )
        self.clients += 1
        self.counters["clients_total"] += 1

        async def drain_incoming() -> None:
            async for _ in ws:  # clients only listen; reading notices the close
                pass

        reader = asyncio.create_task(drain_incoming())
        reported = 0
        try:
            await ws.send_str(_dumps({"kind": "hello", **self.describe()}))
            for item in self.history():
                if wanted(item):
                    await ws.send_str(_dumps({**item.to_dict(), "history": True}))
            while not ws.closed and not reader.done():
                get = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({get, reader}, return_when=asyncio.FIRST_COMPLETED)
                if get not in done:
                    get.cancel()
                    break
                try:
                    item = get.result()
                except StopAsyncIteration:
                    await ws.send_str(_dumps({"kind": "end"}))
                    break
                if queue.dropped > reported:
                    await ws.send_str(
                        _dumps({"kind": "event", "event": "dropped", "count": queue.dropped - reported})
                    )
                    self.counters["dropped"] += queue.dropped - reported
                    reported = queue.dropped
                if wanted(item):
                    await ws.send_str(_dumps(item.to_dict()))
                    self.counters["sent"] += 1
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            pass
        finally:
            self.bus.unsubscribe(queue)
            self.clients -= 1
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            await ws.close()
        return ws


def _csv(text: str | None) -> set[str]:
    return {p.strip() for p in (text or "").split(",") if p.strip()}


async def connect(
    url: str, token: str, *, instruments: list[str] | None = None, timeframes: list[str] | None = None
) -> AsyncIterator[dict[str, Any]]:
    """Messages of a served stream as dicts (``hello``, history, bars, events) until the server ends it."""
    params = {}
    if instruments:
        params["instruments"] = ",".join(instruments)
    if timeframes:
        params["timeframes"] = ",".join(timeframes)
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as session:
        try:
            ws_ctx = session.ws_connect(url, headers=headers, params=params, max_msg_size=0)
            async with ws_ctx as ws:
                async for msg in ws:
                    if msg.type is aiohttp.WSMsgType.TEXT:
                        data = json.loads(msg.data)
                        yield data
                        if data.get("kind") == "end":
                            return
                    elif msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                        return
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status == 401:
                raise UsageError(f"the stream server at {url} refused the token") from None
            raise
