"""A replay of the lake's tick files through the live path: at 1x or 10x real time, or as fast as it goes.

Per day, every tick file of each instrument (trades, liquidations, derivative_ticker, book_snapshot_5, those
that exist) is read and merged by ``local_timestamp`` (each file keeps its own order; ties: the order above),
the order a live feed would have delivered them. Paced replays run a scaled clock from the day's start and
release each event once that clock reaches its ``local_timestamp``; a full-speed replay runs a virtual clock
(event time). Events are built a chunk at a time from Arrow columns, so memory stays bounded by the day's
columns. The replay ends when its data ends; ``end_us`` is the end of its last day, so every bar closes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pyarrow as pa

from mdth_engine.core.errors import UsageError
from mdth_engine.core.keys import parse_key
from mdth_engine.core.timeframes import US_PER_DAY, US_PER_SECOND, day_start_us
from mdth_engine.features import _arrow as ax
from mdth_engine.live.clock import Clock, ScaledClock, VirtualClock
from mdth_engine.live.events import Batch, BookSnapshot, DerivativeTicker, Liquidation, Trade
from mdth_engine.live.sources.base import Source
from mdth_engine.storage import layout

# Feeds in tie-break order (same local_timestamp): as ``features.incremental.replay_table`` merges them.
REPLAY_TYPES = ("trades", "liquidations", "derivative_ticker", "book_snapshot_5")
# A full-speed replay closes a bar once event time is this far past its end: longer than any arrival delay
# in the lake, so no event is late and the bars equal the batch candles.
REPLAY_GRACE_US = 5 * US_PER_SECOND
CHUNK = 128  # events per batch handed to the engine (a batch's last event waits for the rest: latency)
_WHOLE = (-(2**62), 2**62)
_BOOK_LEVELS = range(1, 6)
_SIDES = ("unknown", "buy", "sell")


def parse_speed(text: str | float | None) -> float | None:
    """``1x``/``10x``/a number -> that multiple of real time; ``max``/None -> None (as fast as possible)."""
    if text is None:
        return None
    if isinstance(text, int | float):
        value = float(text)
    else:
        raw = text.strip().lower()
        if raw in ("max", "full", "fast", ""):
            return None
        try:
            value = float(raw.removesuffix("x"))
        except ValueError:
            raise UsageError(f"speed {text!r} is not 1x, 10x, a number or max") from None
    if not value > 0:
        raise UsageError(f"speed {text!r} must be positive")
    return value


class ReplaySource(Source):
    """Ticks of ``keys`` from the lake for ``days``, in arrival order, at ``speed`` (None = full speed)."""

    name = "replay"
    journal = False

    def __init__(
        self,
        store: Any,
        keys: list[str],
        days: list[dt.date],
        *,
        speed: float | None = None,
        grace_us: int | None = None,
        chunk: int = CHUNK,
    ) -> None:
        if not keys:
            raise UsageError("a replay needs at least one instrument key")
        if not days:
            raise UsageError("a replay needs at least one day")
        canonical = []
        for key in keys:
            parsed = parse_key(key)
            if parsed.type in ("OPTION", "OPTION_CHAIN"):
                raise UsageError(f"{parsed}: option chains are not replayed through the live engine")
            canonical.append(str(parsed))
        self.store = store
        self.days = sorted(set(days))
        self.speed = speed
        self.chunk = chunk
        start = day_start_us(self.days[0])
        clock: Clock = VirtualClock(start) if speed is None else ScaledClock(start, speed)
        super().__init__(canonical, clock, REPLAY_GRACE_US if grace_us is None else grace_us)
        self.start_us = start
        self.end_us = day_start_us(self.days[-1]) + US_PER_DAY
        self._present = {key: self._types_present(key) for key in self.keys}
        missing = [key for key, kinds in self._present.items() if not kinds]
        if missing:
            raise UsageError(
                f"no tick data for {missing[0]} on {', '.join(d.isoformat() for d in self.days)} in the lake "
                f"{store.url} (download it first: mdth download --symbols {missing[0]} --start {self.days[0]})"
            )
        self._stop = False
        self._position = start - 1
        self.counters = {"events": 0, "days": 0}

    @property
    def spec(self) -> str:
        days = self.days[0].isoformat()
        if len(self.days) > 1:
            days += f"..{self.days[-1].isoformat()}"
        return f"replay:{','.join(self.keys)}@{days}"

    def _types_present(self, key: str) -> frozenset[str]:
        return frozenset(
            kind
            for kind in REPLAY_TYPES
            if any(self.store.stat(layout.raw_path(day, kind, key)) is not None for day in self.days)
        )

    def data_types(self, key: str) -> frozenset[str]:
        return self._present.get(key, frozenset())

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "source": self.spec,
            "speed": "max" if self.speed is None else f"{self.speed:g}x",
            "days": [d.isoformat() for d in self.days],
        }

    async def aclose(self) -> None:
        self._stop = True

    def position_us(self) -> int | None:
        return self._position

    # -- events -----------------------------------------------------------------------------------------

    async def batches(self) -> AsyncIterator[Batch]:
        for day in self.days:
            feeds = await asyncio.to_thread(self._load_day, day)
            async for batch in self._emit(feeds, day_start_us(day) + US_PER_DAY):
                yield batch
                if self._stop:
                    return
            self.counters["days"] += 1

    def _load_day(self, day: dt.date) -> list[_Feed]:
        from mdth_engine.reader.scan import read_windows

        feeds = []
        for key in self.keys:
            for kind in REPLAY_TYPES:
                path = layout.raw_path(day, kind, key)
                if self.store.stat(path) is None:
                    continue
                (table,) = read_windows(self.store, path, [_WHOLE])
                if table.num_rows:
                    feeds.append(_Feed(key, kind, table))
        return feeds

    async def _emit(self, feeds: list[_Feed], day_end: int) -> AsyncIterator[Batch]:
        if not feeds:
            self._position = day_end - 1
            return
        locals_, kinds, rows = [], [], []
        for index, feed in enumerate(feeds):
            locals_.append(np.maximum.accumulate(feed.local))
            kinds.append(np.full(len(feed.local), index, dtype=np.int64))
            rows.append(np.arange(len(feed.local), dtype=np.int64))
        local, kind, row = np.concatenate(locals_), np.concatenate(kinds), np.concatenate(rows)
        order = np.lexsort((row, kind, local))
        local, kind, row = local[order], kind[order], row[order]
        n = len(order)
        i = 0
        paced = not self.clock.virtual
        while i < n:
            j = min(i + self.chunk, n)
            if paced:
                now = self.clock.now_us()
                if local[i] > now:
                    await self.clock.sleep_until(int(local[i]))
                    now = self.clock.now_us()
                j = min(j, int(np.searchsorted(local, now, side="right")))
                j = max(j, i + 1)
            events = _build(feeds, kind[i:j], row[i:j])
            self.counters["events"] += len(events)
            # Set before the yield: the engine applies the batch before any other task runs.
            self._position = int(local[j]) - 1 if j < n else day_end - 1
            yield Batch(events, time.perf_counter_ns())
            i = j
            if self._stop:
                return
            if not paced:
                await asyncio.sleep(0)  # let the timer, consumers and servers run


class _Feed:
    """One tick file's columns as numpy, and a builder of events for a set of its rows."""

    def __init__(self, key: str, kind: str, table: pa.Table) -> None:
        self.key, self.kind = key, kind
        self.local = ax.ts_us(table, "local_timestamp", kind)
        self.ts = ax.ts_us(table, "timestamp", kind)
        self.build: Callable[[np.ndarray], list[Any]] = getattr(self, f"_setup_{kind}")(table)

    def _setup_trades(self, table: pa.Table) -> Callable[[np.ndarray], list[Any]]:
        return self._trade_like(table, Trade)

    def _setup_liquidations(self, table: pa.Table) -> Callable[[np.ndarray], list[Any]]:
        return self._trade_like(table, Liquidation)

    def _trade_like(self, table: pa.Table, cls: type) -> Callable[[np.ndarray], list[Any]]:
        price = ax.f64(table, "price", self.kind)
        amount = ax.f64(table, "amount", self.kind)
        side = ax.codes(table, "side", self.kind, ("buy", "sell"))
        ids = table.column("id").to_numpy(zero_copy_only=False) if "id" in table.column_names else None
        key, ts, local = self.key, self.ts, self.local

        def build(rows: np.ndarray) -> list[Any]:
            id_list = [("" if v is None else str(v)) for v in ids[rows]] if ids is not None else None
            return list(
                map(
                    cls,
                    itertools.repeat(key),
                    ts[rows].tolist(),
                    local[rows].tolist(),
                    price[rows].tolist(),
                    amount[rows].tolist(),
                    [_SIDES[c] for c in side[rows].tolist()],
                    id_list if id_list is not None else itertools.repeat(""),
                )
            )

        return build

    def _setup_derivative_ticker(self, table: pa.Table) -> Callable[[np.ndarray], list[Any]]:
        names = (
            "funding_rate",
            "predicted_funding_rate",
            "index_price",
            "mark_price",
            "open_interest",
            "last_price",
        )
        cols = [ax.f64(table, name, self.kind) for name in names]
        missing = np.iinfo(np.int64).min
        funding_ts = ax.optional_ts_us(table, "funding_timestamp", self.kind, missing)
        key, ts, local = self.key, self.ts, self.local

        def build(rows: np.ndarray) -> list[Any]:
            fts = [None if v == missing else v for v in funding_ts[rows].tolist()]
            return list(
                map(
                    DerivativeTicker,
                    itertools.repeat(key),
                    ts[rows].tolist(),
                    local[rows].tolist(),
                    *(c[rows].tolist() for c in cols),
                    fts,
                )
            )

        return build

    def _setup_book_snapshot_5(self, table: pa.Table) -> Callable[[np.ndarray], list[Any]]:
        what = self.kind
        bp = [ax.f64(table, f"bid_price_{i}", what) for i in _BOOK_LEVELS]
        ba = [ax.f64(table, f"bid_amount_{i}", what) for i in _BOOK_LEVELS]
        ap = [ax.f64(table, f"ask_price_{i}", what) for i in _BOOK_LEVELS]
        aa = [ax.f64(table, f"ask_amount_{i}", what) for i in _BOOK_LEVELS]
        key, ts, local = self.key, self.ts, self.local

        def levels(cols: list[np.ndarray], rows: np.ndarray) -> list[tuple[float, ...]]:
            return list(zip(*(c[rows].tolist() for c in cols), strict=True))

        def build(rows: np.ndarray) -> list[Any]:
            return list(
                map(
                    BookSnapshot,
                    itertools.repeat(key),
                    ts[rows].tolist(),
                    local[rows].tolist(),
                    levels(bp, rows),
                    levels(ba, rows),
                    levels(ap, rows),
                    levels(aa, rows),
                )
            )

        return build


def _build(feeds: list[_Feed], kind: np.ndarray, row: np.ndarray) -> list[Any]:
    """Events for merged positions: each feed builds its rows, then they are put back in merged order."""
    if len(feeds) == 1 or bool((kind == kind[0]).all()):
        return feeds[int(kind[0])].build(row)
    out: list[Any] = [None] * len(kind)
    for index in np.unique(kind).tolist():
        pos = np.nonzero(kind == index)[0]
        for p, event in zip(pos.tolist(), feeds[index].build(row[pos]), strict=True):
            out[p] = event
    return out


def replay_days(text: str) -> list[dt.date]:
    """``2024-01-01`` or ``2024-01-01..2024-01-03`` (inclusive) as days."""
    from mdth_engine.core.timeframes import day_range, parse_day

    first, sep, last = text.partition("..")
    start = parse_day(first, "replay day")
    end = parse_day(last, "replay end day") if sep else start
    return day_range(start, end)


__all__ = ["REPLAY_GRACE_US", "ReplaySource", "parse_speed", "replay_days"]
