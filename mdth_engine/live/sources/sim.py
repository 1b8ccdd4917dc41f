"""The simulator's live feed as a source: an in-process simulator serving its Binance-format WebSocket, read
by the Binance source, with the engine's clock running at the simulator's speed from the same start.

``sim:BTCUSDT`` streams from now at real time; ``?speed=60&start=2024-03-12T10:00Z`` runs a day's market at 60x
from that instant (bars of simulated time close on the simulated clock); ``?scale=medium`` sets its volume.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

from mdth_engine.core.timeframes import us_to_datetime
from mdth_engine.live.clock import ScaledClock
from mdth_engine.live.events import Batch
from mdth_engine.live.sources.base import LIVE_GRACE_US
from mdth_engine.live.sources.binance import BinanceSource


class SimSource(BinanceSource):
    """Binance instruments of the built-in simulator; the simulator lives as long as ``batches()`` runs."""

    name = "sim"

    def __init__(
        self,
        keys: list[str],
        *,
        speed: float = 1.0,
        start: dt.datetime | None = None,
        scale: str | float | None = None,
        cache_dir: str | None = None,
        **options: Any,
    ) -> None:
        origin = start or dt.datetime.now(dt.UTC)
        delta = origin - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
        origin_us = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
        clock = ScaledClock(origin_us, speed)
        # The feed is pumped every 50 ms of wall time: late by up to 50 ms x speed of simulated time.
        options.setdefault("grace_us", max(LIVE_GRACE_US, int(0.2 * 1e6 * speed)))
        options.setdefault("idle_timeout", 10.0)
        super().__init__(keys, clock=clock, spot_url="ws://unset", futures_url="ws://unset", **options)
        self.speed = speed
        self.scale = scale
        self.cache_dir = cache_dir
        self.simulator: Any = None

    @property
    def spec(self) -> str:
        return f"sim:{','.join(self.keys)}"

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "source": self.spec, "speed": f"{self.speed:g}x"}

    async def batches(self) -> AsyncIterator[Batch]:
        from mdth_engine.simulator.server import AsyncSimulator

        config: dict[str, Any] = {"live_speed": self.speed, "live_start": us_to_datetime(self.clock.now_us())}
        if self.scale is not None:
            config["live_scale"] = self.scale
        if self.cache_dir is not None:
            config["cache_dir"] = self.cache_dir
        self.simulator = await AsyncSimulator(**config).start()
        self.spot_url, self.futures_url = self.simulator.ws_spot_url, self.simulator.ws_url
        try:
            async for batch in super().batches():
                yield batch
        finally:
            await self.simulator.stop()
