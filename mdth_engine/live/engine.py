"""The live candle engine: every timeframe of every instrument, fed event by event, bars closed by the clock.

Features come from ``features.incremental.IncrementalCandles`` (the same spec and numbers as the batch
candles); this module adds what a live stream needs around it:

- Closing by the clock, never by the next tick: ``close_due(now)`` closes every bar whose end is at or before
  ``now - grace``. Live, a timer calls it at each bucket end plus the grace; in a full-speed replay the
  engine calls it itself as event time (the max ``local_timestamp`` seen) advances, before applying the event.
- Late events: an event whose exchange time falls in an already closed bar is counted (``late``) and left out
  of the bars (they were published already); it is still journaled, so candles rebuilt from the journal
  include it. Book rows that arrive late still update the book from then on.
- Flags: a bar spans a disconnect when the source was down at any time in it; it is partial when the stream
  started (or the instrument was first seen) after the bar began.
- History: the last ``history`` bars of each (instrument, timeframe), warm-started from the lake.
- A live start inside a UTC day skips the day so far (nothing was watched): the bars under way are partial,
  and ``oi_change`` stays NaN until open interest has been seen twice (batch carries it from the day's start).
- Latency: for every event, the time from its arrival (``Batch.received_ns``) to the bar state holding it.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from array import array
from collections.abc import Iterable
from typing import Any

import numpy as np

from mdth_engine.core.timeframes import TIMEFRAMES
from mdth_engine.features.batch import check_timeframes
from mdth_engine.features.incremental import IncrementalCandles
from mdth_engine.features.spec import BASE_TIMEFRAME, LEVELS
from mdth_engine.live.clock import Clock
from mdth_engine.live.events import (
    Bar,
    Batch,
    BookSnapshot,
    Connected,
    DerivativeTicker,
    Disconnect,
    Liquidation,
    Notice,
    Trade,
)

BASE_US = TIMEFRAMES[BASE_TIMEFRAME]
DAY_US = TIMEFRAMES["24h"]
HISTORY_BARS = 100
_STATUS = frozenset({Disconnect, Connected})
_LATENCY_KEEP = 1 << 20  # samples kept (the most recent)


class Latency:
    """Arrival-to-applied latencies in nanoseconds (the last ~1M), with percentiles."""

    def __init__(self) -> None:
        self.samples = array("q")
        self.count = 0

    def add_many(self, values: Iterable[int]) -> None:
        before = len(self.samples)
        self.samples.extend(values)
        self.count += len(self.samples) - before
        if len(self.samples) > 2 * _LATENCY_KEEP:
            del self.samples[: len(self.samples) - _LATENCY_KEEP]

    def percentiles_us(self, *qs: float) -> list[float]:
        if not self.samples:
            return [float("nan")] * len(qs)
        data = np.frombuffer(self.samples, dtype=np.int64)
        return [float(v) / 1000.0 for v in np.percentile(data, qs)]

    def reset(self) -> None:
        self.samples = array("q")
        self.count = 0


@dataclasses.dataclass
class _Instrument:
    key: str
    candles: IncrementalCandles
    data_types: frozenset[str]
    watch_from: int
    gaps: list[tuple[int, int]] = dataclasses.field(default_factory=list)
    down_since: int | None = None
    events: int = 0
    late_seen: int = 0

    def spans_gap(self, start: int, end: int) -> bool:
        if self.down_since is not None and self.down_since < end:
            return True
        return any(a < end and b > start for a, b in self.gaps)


class LiveEngine:
    """Candles of many instruments from normalized events; closed bars and notices queue in ``output``.

    ``grid_start_us``: where the bucket grid starts (a replay: its first day); None = the UTC day of the
    clock's now, fast-forwarded to the current 15s bucket (bars already under way are ``partial``).
    """

    def __init__(
        self,
        timeframes: Iterable[str],
        clock: Clock,
        *,
        grace_us: int,
        grid_start_us: int | None = None,
        history: int = HISTORY_BARS,
    ) -> None:
        self.timeframes = check_timeframes(timeframes)
        self.levels = LEVELS[: LEVELS.index(self.timeframes[-1]) + 1]
        self.clock = clock
        self.grace_us = int(grace_us)
        self.grid_start_us = grid_start_us
        self.instruments: dict[str, _Instrument] = {}
        self.history: dict[tuple[str, str], collections.deque[Bar]] = {}
        self.history_size = history
        self.output: list[Any] = []
        self.latency = Latency()
        self.counters: dict[str, int] = collections.Counter()
        self._next_due = 1 << 62  # clock time at which the next base bucket closes
        self._late_reported = 0

    # -- instruments --------------------------------------------------------------------------------------

    def add_instrument(
        self, key: str, data_types: Iterable[str], watch_from: int | None = None
    ) -> _Instrument:
        """Start candles for ``key`` (``data_types``: what the source delivers for it)."""
        if key in self.instruments:
            return self.instruments[key]
        now = self.clock.now_us()
        start = self.grid_start_us if self.grid_start_us is not None else now - now % DAY_US
        kinds = frozenset(data_types)
        candles = IncrementalCandles(self.timeframes, start, sources=kinds)
        first = watch_from if watch_from is not None else (start if self.grid_start_us is not None else now)
        if first > start:
            candles.close_until(first - first % BASE_US)  # nothing was watched before: skip, emit nothing
        inst = _Instrument(key, candles, kinds, first)
        self.instruments[key] = inst
        for tf in self.timeframes:
            self.history.setdefault((key, tf), collections.deque(maxlen=self.history_size))
        self._next_due = min(self._next_due, candles.closed_until_us + BASE_US + self.grace_us)
        return inst

    def warm(self, key: str, timeframe: str, bars: list[Bar]) -> None:
        """Bars read from the lake before the stream began: into history and the output (``warm=True``)."""
        ring = self.history.setdefault((key, timeframe), collections.deque(maxlen=self.history_size))
        for bar in bars:
            ring.append(bar)
        self.output.extend(bars)

    # -- events -------------------------------------------------------------------------------------------

    def apply(self, batch: Batch) -> None:
        """Feed one batch; with a virtual clock, bars whose end + grace event time has passed close first.

        The hot loop: one type check and one bound-method call per event; the instrument is looked up again
        only when the key changes from the previous event.
        """
        virtual = self.clock.virtual
        clock = self.clock
        received = batch.received_ns
        perf = time.perf_counter_ns
        lat: list[int] = []
        append = lat.append
        key: str | None = None
        inst: _Instrument | None = None
        candles: Any = None
        run = 0
        for e in batch.events:
            if virtual:
                t = e.local_timestamp
                if t > clock.t_us:  # type: ignore[attr-defined]
                    clock.t_us = t  # type: ignore[attr-defined]
                    if t >= self._next_due:
                        self.close_due(t)
            cls = type(e)
            if cls in _STATUS:
                self._status(e)
                key = None
            else:
                if e.key != key:
                    if inst is not None:
                        inst.events += run
                    key, run = e.key, 0
                    inst = self.instruments.get(key) or self.add_instrument(key, {e.data_type})
                    candles = inst.candles
                run += 1
                if cls is BookSnapshot:
                    candles.on_book(
                        e.timestamp,
                        e.local_timestamp,
                        e.bid_prices,
                        e.bid_amounts,
                        e.ask_prices,
                        e.ask_amounts,
                    )
                elif cls is Trade:
                    candles.on_trade(e.timestamp, e.local_timestamp, e.price, e.amount, e.side)
                elif cls is DerivativeTicker:
                    candles.on_derivative_ticker(
                        e.timestamp,
                        e.local_timestamp,
                        funding_rate=e.funding_rate,
                        predicted_funding_rate=e.predicted_funding_rate,
                        index_price=e.index_price,
                        mark_price=e.mark_price,
                        open_interest=e.open_interest,
                    )
                elif cls is Liquidation:
                    candles.on_liquidation(e.timestamp, e.local_timestamp, e.price, e.amount, e.side)
                else:
                    self.counters[e.data_type] += 1  # book_ticker: journaled, not a feature input
            append(perf() - received)
        if inst is not None:
            inst.events += run
        self.counters["events_in"] += len(batch.events)
        self.latency.add_many(lat)

    def _status(self, e: Disconnect | Connected) -> None:
        if type(e) is Disconnect:
            self._on_disconnect(e)
        else:
            self._on_connected(e)

    def _on_disconnect(self, e: Disconnect) -> None:
        self.counters["disconnects"] += 1
        for key in e.keys:
            inst = self.instruments.get(key)
            if inst is not None and inst.down_since is None:
                inst.down_since = e.local_timestamp
        self.output.append(
            Notice("disconnect", e.local_timestamp, e.reason, {"instrument_keys": list(e.keys)})
        )

    def _on_connected(self, e: Connected) -> None:
        reconnect = False
        for key in e.keys:
            inst = self.instruments.get(key)
            if inst is not None and inst.down_since is not None:
                inst.gaps.append((inst.down_since, e.local_timestamp))
                inst.down_since = None
                reconnect = True
        if reconnect:
            self.counters["reconnects"] += 1
        self.output.append(
            Notice(
                "reconnected" if reconnect else "connected",
                e.local_timestamp,
                e.url,
                {"instrument_keys": list(e.keys)},
            )
        )

    # -- clock --------------------------------------------------------------------------------------------

    @property
    def next_due_us(self) -> int:
        """Clock time at which the next bar closes (bucket end + grace)."""
        return self._next_due

    def close_due(self, now_us: int) -> int:
        """Close every bar whose end is at or before ``now_us - grace``; returns how many bars closed."""
        return self.close_until(now_us - self.grace_us)

    def close_until(self, t_us: int) -> int:
        """Close every bar whose end is at or before ``t_us`` (also: the end of a replay)."""
        closed = 0
        due = 1 << 62
        for inst in self.instruments.values():
            rows = inst.candles.close_until(t_us)
            for tf, row in rows:
                start, end = row["timestamp"], row["timestamp_out"]
                bar = Bar(inst.key, tf, row, inst.spans_gap(start, end), start < inst.watch_from)
                self.history[(inst.key, tf)].append(bar)
                self.output.append(bar)
            closed += len(rows)
            if inst.gaps and rows:
                oldest = inst.candles.closed_until_us - DAY_US
                inst.gaps = [g for g in inst.gaps if g[1] > oldest]
            due = min(due, inst.candles.closed_until_us + BASE_US + self.grace_us)
        self._next_due = due
        self.counters["bars"] += closed
        late = self.late
        if closed and late > self._late_reported:
            self.output.append(
                Notice(
                    "late",
                    self.clock.now_us(),
                    f"{late - self._late_reported} event(s) arrived after their bar closed; left out of the bars",
                    {"late_total": late},
                )
            )
            self._late_reported = late
        return closed

    # -- reporting ----------------------------------------------------------------------------------------

    @property
    def late(self) -> int:
        return sum(i.candles.counters["late"] for i in self.instruments.values())

    def take_output(self) -> list[Any]:
        out, self.output = self.output, []
        return out

    def stats(self) -> dict[str, Any]:
        p50, p99, p999 = self.latency.percentiles_us(50, 99, 99.9)
        return {
            "events_in": int(self.counters["events_in"]),
            "bars": int(self.counters["bars"]),
            "late": self.late,
            "invalid": sum(i.candles.counters["invalid"] for i in self.instruments.values()),
            "disconnects": int(self.counters["disconnects"]),
            "reconnects": int(self.counters["reconnects"]),
            "latency_p50_us": p50,
            "latency_p99_us": p99,
            "latency_p999_us": p999,
            "instruments": {
                k: {"events": i.events, "down": i.down_since is not None} for k, i in self.instruments.items()
            },
        }
