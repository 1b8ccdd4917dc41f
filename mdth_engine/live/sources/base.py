"""What every live source is: an async iterator of normalized events (in ``Batch``es for the engine), with the
instruments it covers, the data types each delivers, and the clock its bars close on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from mdth_engine.core.errors import MdthError
from mdth_engine.core.timeframes import US_PER_SECOND
from mdth_engine.live.clock import Clock, WallClock
from mdth_engine.live.events import Batch

# Live feeds: a bar closes this long after its end on the wall clock; an event stamped inside it that
# arrives later is late (counted, left out of the bar, still journaled).
LIVE_GRACE_US = 2 * US_PER_SECOND


class SourceError(MdthError):
    """A source that cannot go on (the server refused the subscription, the lake file is unreadable)."""


class Source:
    """Base of every source. Subclasses implement ``batches()``; ``async for event in source`` also works.

    ``start_us``/``end_us``: the grid a replay covers (None for live feeds, which start now and never end).
    ``clock``: what closes bars (wall clock live; a virtual clock in a full-speed replay).
    """

    name = "source"
    journal = True  # raw events are worth journaling (a replay's already are in the lake)

    def __init__(self, keys: list[str], clock: Clock | None = None, grace_us: int = LIVE_GRACE_US) -> None:
        self.keys: tuple[str, ...] = tuple(dict.fromkeys(keys))
        self.clock: Clock = clock or WallClock()
        self.grace_us = grace_us
        self.start_us: int | None = None
        self.end_us: int | None = None
        self.counters: dict[str, int] = {}

    def data_types(self, key: str) -> frozenset[str]:
        """Lake data types this source delivers for ``key`` (decides null vs 0 for missing feeds, as in batch)."""
        raise NotImplementedError

    def batches(self) -> AsyncIterator[Batch]:
        raise NotImplementedError

    def position_us(self) -> int | None:
        """Clock time up to which every event has been handed over; None: up to the clock's now (live feeds).

        A paced replay can fall behind its clock (a busy machine); bars then close on its position, not on the
        clock, so no event is ever late in a replay."""
        return None

    async def aclose(self) -> None:
        """Stop: close connections, end ``batches()``."""

    def describe(self) -> dict[str, Any]:
        return {"source": self.name, "instruments": list(self.keys)}

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._events()

    async def _events(self) -> AsyncIterator[Any]:
        async for batch in self.batches():
            for event in batch.events:
                yield event
