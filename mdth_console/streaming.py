"""A live stream for display: ``LiveFeatureStream`` runs in a thread with its own event loop and writes into a
``StreamModel``; the Stream screen reads a snapshot a few times a second (never one UI message per event)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from typing import Any

from mdth_console.format import first_line

CLOSES_KEPT = 240  # bars per (instrument, timeframe) kept for the chart
NOTICES_KEPT = 200


class StreamModel:
    """What the stream thread saw, behind one lock: latest bar per (key, timeframe), recent closes, notices,
    the stream's counters, and its state. ``version`` moves whenever anything changed."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.version = 0
        self.state = "starting"
        self.error = ""
        self.info: dict[str, Any] = {}
        self.latest: dict[tuple[str, str], dict[str, Any]] = {}
        self.flags: dict[tuple[str, str], tuple[bool, bool, bool]] = {}
        self.closes: dict[tuple[str, str], deque[tuple[int, float]]] = {}
        self.bar_versions: dict[tuple[str, str], int] = {}
        self.live_bars = 0
        self.warm_bars = 0
        self.notices: deque[tuple[int, str]] = deque(maxlen=NOTICES_KEPT)
        self.notice_count = 0
        self.stats: dict[str, Any] = {}
        self.stats_at = 0.0

    def add(self, item: Any) -> None:
        with self.lock:
            self.version += 1
            if getattr(item, "kind", "") == "bar":
                key = (item.instrument_key, item.timeframe)
                self.latest[key] = item.values
                self.flags[key] = (item.warm, item.partial, item.spans_disconnect)
                ring = self.closes.get(key)
                if ring is None:
                    ring = self.closes[key] = deque(maxlen=CLOSES_KEPT)
                ring.append((item.values["timestamp"], item.values.get("close")))
                self.bar_versions[key] = self.bar_versions.get(key, 0) + 1
                if item.warm:
                    self.warm_bars += 1
                else:
                    self.live_bars += 1
            else:
                self.notice_count += 1
                self.notices.append((self.notice_count, f"{item.event}: {item.message}"))

    def set_state(self, state: str, error: str = "") -> None:
        with self.lock:
            self.version += 1
            self.state, self.error = state, error or self.error

    def set_stats(self, stats: dict[str, Any], info: dict[str, Any] | None = None) -> None:
        with self.lock:
            self.version += 1
            self.stats, self.stats_at = stats, time.monotonic()
            if info is not None:
                self.info = info

    def snapshot(self, chart_key: tuple[str, str] | None) -> dict[str, Any]:
        """A copy for the UI thread: small (latest bars, counters), plus the closes of one chart key."""
        with self.lock:
            return {
                "version": self.version,
                "state": self.state,
                "error": self.error,
                "info": dict(self.info),
                "latest": dict(self.latest),
                "flags": dict(self.flags),
                "live_bars": self.live_bars,
                "warm_bars": self.warm_bars,
                "notices": list(self.notices),
                "stats": self.stats,
                "stats_at": self.stats_at,
                "chart": list(self.closes.get(chart_key, ())) if chart_key else [],
                "chart_version": self.bar_versions.get(chart_key, 0) if chart_key else 0,
            }


def run_stream(stream: Any, model: StreamModel, stop: threading.Event, stats_every: float = 0.25) -> None:
    """Run ``stream`` (a LiveFeatureStream, not started) until it ends or ``stop`` is set; blocking (a thread)."""

    async def main() -> None:
        try:
            await stream.start()
        except Exception as exc:
            model.set_state("failed", first_line(exc))
            return
        model.set_state("running")
        model.set_stats(stream.stats(), stream.describe())

        async def consume() -> None:
            async for item in stream:
                model.add(item)

        task = asyncio.create_task(consume())
        try:
            while not stop.is_set() and not task.done():
                await asyncio.sleep(stats_every)
                model.set_stats(stream.stats())
        finally:
            await stream.aclose()
            error = ""
            try:
                await asyncio.wait_for(task, timeout=5)
            except TimeoutError:
                task.cancel()
            except Exception as exc:
                error = first_line(exc)
            model.set_stats(stream.stats())
            if error:
                model.set_state("failed", error)
            else:
                model.set_state("stopped" if stop.is_set() else "ended")

    asyncio.run(main())
