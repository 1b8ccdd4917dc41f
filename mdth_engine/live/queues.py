"""Bounded queues between the live engine and its consumers, each with a declared policy for a slow consumer.

``DROP_OLDEST`` (displays, serve clients): a full queue drops its oldest item and counts it; the engine never
waits. ``BLOCK`` (persisting, in-process consumers that want every bar): a full queue makes the publisher wait,
which pushes back through the engine to the source. Every queue counts what went in, what was dropped, its
deepest point and the age of its oldest item (lag).
"""

from __future__ import annotations

import asyncio
import collections
import time
from enum import StrEnum
from typing import Any


class Policy(StrEnum):
    DROP_OLDEST = "drop_oldest"
    BLOCK = "block"


class QueueClosed(Exception):
    """Put on a queue whose consumer has gone."""


class BoundedQueue:
    """A single-consumer asyncio queue of at most ``maxsize`` items with a slow-consumer ``policy``.

    ``close()`` ends it: the consumer drains what is left, then iteration stops. ``kinds`` filters what the
    bus delivers (``{"bar"}``, ``{"bar", "event"}``; None = everything).
    """

    def __init__(
        self,
        name: str,
        maxsize: int = 10_000,
        policy: Policy | str = Policy.BLOCK,
        kinds: frozenset[str] | None = None,
    ) -> None:
        if maxsize < 1:
            raise ValueError("queue size must be at least 1")
        self.name = name
        self.maxsize = maxsize
        self.policy = Policy(policy)
        self.kinds = kinds
        self._items: collections.deque[tuple[float, Any]] = collections.deque()
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._closed = False
        self.put_count = 0
        self.dropped = 0
        self.max_depth = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    def accepts(self, item: Any) -> bool:
        return self.kinds is None or getattr(item, "kind", None) in self.kinds

    async def put(self, item: Any) -> None:
        """Add ``item``; waits while full under BLOCK, drops the oldest under DROP_OLDEST."""
        if self._closed:
            raise QueueClosed(self.name)
        if self.policy is Policy.BLOCK:
            while len(self._items) >= self.maxsize:
                self._writable.clear()
                await self._writable.wait()
                if self._closed:
                    raise QueueClosed(self.name)
        self._append(item)

    def put_nowait(self, item: Any) -> bool:
        """Add without waiting: drops the oldest when full (any policy); False when closed."""
        if self._closed:
            return False
        self._append(item)
        return True

    def _append(self, item: Any) -> None:
        if len(self._items) >= self.maxsize:
            self._items.popleft()
            self.dropped += 1
        self._items.append((time.monotonic(), item))
        self.put_count += 1
        if len(self._items) > self.max_depth:
            self.max_depth = len(self._items)
        self._readable.set()

    async def get(self) -> Any:
        """The oldest item; ``StopAsyncIteration`` once closed and drained."""
        while not self._items:
            if self._closed:
                raise StopAsyncIteration
            self._readable.clear()
            await self._readable.wait()
        _, item = self._items.popleft()
        self._writable.set()
        return item

    def get_all(self) -> list[Any]:
        """Everything queued now, without waiting."""
        items = [item for _, item in self._items]
        self._items.clear()
        self._writable.set()
        return items

    async def wait_readable(self) -> None:
        if not self._items and not self._closed:
            self._readable.clear()
            await self._readable.wait()

    def close(self) -> None:
        self._closed = True
        self._readable.set()
        self._writable.set()

    def __aiter__(self) -> BoundedQueue:
        return self

    async def __anext__(self) -> Any:
        return await self.get()

    def stats(self) -> dict[str, Any]:
        lag = time.monotonic() - self._items[0][0] if self._items else 0.0
        return {
            "name": self.name,
            "policy": str(self.policy),
            "maxsize": self.maxsize,
            "in": self.put_count,
            "dropped": self.dropped,
            "depth": len(self._items),
            "max_depth": self.max_depth,
            "lag_ms": round(lag * 1000.0, 3),
        }


class Bus:
    """Fans every item out to the subscribed queues, honouring each queue's policy."""

    def __init__(self) -> None:
        self.queues: list[BoundedQueue] = []

    def subscribe(
        self,
        name: str,
        maxsize: int = 10_000,
        policy: Policy | str = Policy.BLOCK,
        kinds: frozenset[str] | None = None,
    ) -> BoundedQueue:
        queue = BoundedQueue(name, maxsize, policy, kinds)
        self.queues.append(queue)
        return queue

    def unsubscribe(self, queue: BoundedQueue) -> None:
        queue.close()
        if queue in self.queues:
            self.queues.remove(queue)

    async def publish(self, item: Any) -> None:
        for queue in list(self.queues):
            if queue.closed or not queue.accepts(item):
                continue
            try:
                if queue.policy is Policy.BLOCK:
                    await queue.put(item)
                else:
                    queue.put_nowait(item)
            except QueueClosed:
                continue

    def close(self) -> None:
        for queue in self.queues:
            queue.close()

    def stats(self) -> list[dict[str, Any]]:
        return [q.stats() for q in self.queues]
