"""A WebSocket feed that stays connected: reconnects with capped exponential backoff (with jitter), emits a
``Disconnect`` event on every drop (and on a first connection that fails) and ``Connected`` on every
(re)connect, and treats a silent connection (no frame for ``idle_timeout``) as dropped.

Subclasses say which URLs to hold open (one connection each, for a set of instruments) and how one text frame
becomes normalized events. Frames are parsed on arrival, stamped with the source clock (``local_timestamp``)
and ``perf_counter_ns`` (latency), and queued in a bounded queue that blocks the reader when the engine
falls behind (the socket's own buffers then push back to the server).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from mdth_engine.live.clock import Clock
from mdth_engine.live.events import Batch, Connected, Disconnect
from mdth_engine.live.sources.base import LIVE_GRACE_US, Source, SourceError

BACKOFF_INITIAL_S = 0.25
BACKOFF_MAX_S = 30.0
STABLE_AFTER_S = 10.0  # a connection that lived this long resets the backoff
IDLE_TIMEOUT_S = 30.0
QUEUE_BATCHES = 10_000


class Backoff:
    """Delays 0.25 s, 0.5 s, 1 s ... capped, each scaled by a random factor in [0.5, 1] (jitter)."""

    def __init__(self, initial: float = BACKOFF_INITIAL_S, maximum: float = BACKOFF_MAX_S) -> None:
        self.initial, self.maximum = initial, maximum
        self.attempt = 0

    def next_delay(self) -> float:
        delay = min(self.maximum, self.initial * (2**self.attempt))
        self.attempt += 1
        return delay * (0.5 + random.random() / 2)

    def reset(self) -> None:
        self.attempt = 0


class WebSocketSource(Source):
    """Base of the WebSocket sources; ``connections()`` and ``parse()`` are the subclass's part."""

    def __init__(
        self,
        keys: list[str],
        clock: Clock | None = None,
        *,
        grace_us: int = LIVE_GRACE_US,
        idle_timeout: float = IDLE_TIMEOUT_S,
        backoff_initial: float = BACKOFF_INITIAL_S,
        backoff_max: float = BACKOFF_MAX_S,
    ) -> None:
        super().__init__(keys, clock, grace_us)
        self.idle_timeout = idle_timeout
        self.backoff_initial, self.backoff_max = backoff_initial, backoff_max
        self._queue: asyncio.Queue[Batch | BaseException | None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self._stopping = False
        self.counters = {"messages": 0, "events": 0, "connects": 0, "drops": 0, "parse_errors": 0}
        self.last_error = ""

    # -- subclass part ------------------------------------------------------------------------------------

    def connections(self) -> list[tuple[str, tuple[str, ...], Any]]:
        """(URL, instrument keys it carries, context handed to ``parse``) for every connection to hold open."""
        raise NotImplementedError

    def parse(self, text: str, local_us: int, context: Any) -> list[Any]:
        """Normalized events of one text frame (raise ``SourceError`` for a refusal that retrying cannot fix)."""
        raise NotImplementedError

    def redact(self, url: str) -> str:
        """The URL as it may appear in events and logs."""
        return url.split("?", 1)[0]

    # -- running ------------------------------------------------------------------------------------------

    async def batches(self) -> AsyncIterator[Batch]:
        self._queue = asyncio.Queue(maxsize=QUEUE_BATCHES)
        self._session = aiohttp.ClientSession()
        self._tasks = [
            asyncio.create_task(self._hold(url, keys, context), name=f"mdth-live-ws-{i}")
            for i, (url, keys, context) in enumerate(self.connections())
        ]
        try:
            while not self._stopping:
                item = await self._queue.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            await self._shutdown()

    async def aclose(self) -> None:
        self._stopping = True
        if self._queue is not None:
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait(None)
        for task in self._tasks:
            task.cancel()

    async def _shutdown(self) -> None:
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _hold(self, url: str, keys: tuple[str, ...], context: Any) -> None:
        """One connection, forever: connect, read, on a drop announce it and come back after a backoff."""
        assert self._queue is not None and self._session is not None
        backoff = Backoff(self.backoff_initial, self.backoff_max)
        announced_down = False
        shown = self.redact(url)
        while not self._stopping:
            connected_at: float | None = None
            reason = ""
            try:
                async with self._session.ws_connect(url, autoping=True, heartbeat=None, max_msg_size=0) as ws:
                    connected_at = time.monotonic()
                    self.counters["connects"] += 1
                    announced_down = False
                    await self._put(Batch([Connected(keys, self.clock.now_us(), shown)]))
                    reason = await self._read(ws, context)
            except SourceError as exc:
                await self._queue.put(exc)
                return
            except asyncio.CancelledError:
                raise
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                reason = _one_line(exc) or type(exc).__name__
            if self._stopping:
                return
            self.last_error = reason
            if connected_at is not None or not announced_down:
                self.counters["drops"] += connected_at is not None
                announced_down = True
                await self._put(Batch([Disconnect(keys, self.clock.now_us(), f"{shown}: {reason}")]))
            if connected_at is not None and time.monotonic() - connected_at >= STABLE_AFTER_S:
                backoff.reset()
            await asyncio.sleep(backoff.next_delay())

    async def _read(self, ws: aiohttp.ClientWebSocketResponse, context: Any) -> str:
        """Frames until the connection ends; returns why it ended."""
        clock, parse, counters = self.clock, self.parse, self.counters
        while True:
            try:
                msg = await ws.receive(timeout=self.idle_timeout)
            except TimeoutError:
                return f"no message for {self.idle_timeout:g} s"
            if msg.type is aiohttp.WSMsgType.TEXT:
                received = time.perf_counter_ns()
                counters["messages"] += 1
                try:
                    events = parse(msg.data, clock.now_us(), context)
                except SourceError:
                    raise
                except (ValueError, KeyError, TypeError, IndexError):
                    counters["parse_errors"] += 1
                    continue
                if events:
                    counters["events"] += len(events)
                    await self._put(Batch(events, received))
                    await asyncio.sleep(
                        0
                    )  # let the engine apply it now: latency, not a burst's worth of queueing
            elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                code = ws.close_code
                return f"closed by the server (code {code})" if code else "connection closed"
            elif msg.type is aiohttp.WSMsgType.ERROR:
                return _one_line(ws.exception()) or "connection error"

    async def _put(self, batch: Batch) -> None:
        assert self._queue is not None
        await self._queue.put(batch)


def _one_line(exc: BaseException | None) -> str:
    if exc is None:
        return ""
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
