"""The clocks that close bars: the wall clock (live), a scaled clock (paced replays, the simulator's feed), and
a virtual clock advanced by event times (a replay at full speed).

Bars close when the clock passes their end plus a grace period; with a virtual clock the engine closes them
as events arrive, with the others an asyncio timer wakes at each bucket end plus the grace.
"""

from __future__ import annotations

import asyncio
import time


class Clock:
    """Microseconds since the epoch, UTC; ``virtual`` clocks only move with the events fed through them."""

    virtual = False

    def now_us(self) -> int:
        raise NotImplementedError

    async def sleep_until(self, t_us: int) -> None:
        """Return once ``now_us() >= t_us``."""
        raise NotImplementedError


class WallClock(Clock):
    """The system clock (what live exchange feeds are stamped with)."""

    def now_us(self) -> int:
        return time.time_ns() // 1000

    async def sleep_until(self, t_us: int) -> None:
        while True:
            left = t_us - self.now_us()
            if left <= 0:
                return
            await asyncio.sleep(left / 1e6)


class ScaledClock(Clock):
    """``origin_us`` plus ``speed`` times the monotonic time elapsed since ``mono0`` (default: creation)."""

    def __init__(self, origin_us: int, speed: float = 1.0, mono0: float | None = None) -> None:
        if speed <= 0:
            raise ValueError("clock speed must be positive")
        self.origin_us = int(origin_us)
        self.speed = float(speed)
        self.mono0 = time.monotonic() if mono0 is None else mono0

    def now_us(self) -> int:
        return self.origin_us + int((time.monotonic() - self.mono0) * 1e6 * self.speed)

    async def sleep_until(self, t_us: int) -> None:
        while True:
            left = t_us - self.now_us()
            if left <= 0:
                return
            await asyncio.sleep(left / 1e6 / self.speed)


class VirtualClock(Clock):
    """Event time: the latest ``local_timestamp`` seen (a full-speed replay); the engine advances it."""

    virtual = True

    def __init__(self, start_us: int = 0) -> None:
        self.t_us = int(start_us)

    def now_us(self) -> int:
        return self.t_us

    def advance(self, t_us: int) -> None:
        if t_us > self.t_us:
            self.t_us = t_us

    async def sleep_until(self, t_us: int) -> None:  # pragma: no cover - the engine never sleeps on it
        raise RuntimeError("a virtual clock moves with events; nothing can sleep on it")
