"""``LiveFeatureStream``: closed bars with every candle feature, live, as an async iterator for downstream code.

    async with LiveFeatureStream(["BTCUSDT"], ["1m", "5m"], source="binance") as stream:
        async for bar in stream:
            print(bar.instrument_key, bar.timeframe, bar.values["close"], bar.values["price_vwap"])

One object wires the parts: a source (``sources.spec``), the candle engine (``engine``), a bus that fans
closed bars and notices out to bounded queues (this iterator's, the loopback server's clients, the warehouse
writer), and in persist mode the raw-event journal (``journal``). The stream starts with the lake's last
``warm`` bars of each instrument and timeframe (``warm=True``), then live bars as the clock closes them.
A replay ends when its data ends (every bar of its days closed); a live stream runs until ``aclose()``
(leaving the async ``with`` block). An error in the source ends the iteration by raising it.

Slow consumers: this iterator's queue blocks by default (no bar is ever lost; the engine waits), or drops its
oldest bars with ``policy="drop_oldest"`` (a display); server clients always drop oldest; the warehouse writer
and the journal always block. ``stats()`` has the counters: events in, late, per-queue in/dropped/lag, and the
arrival-to-bar latency percentiles (live sources only mean it: a replay's figure times how long its events
waited in a chunk being built).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from typing import Any

from mdth_engine.core.timeframes import parse_timeframes
from mdth_engine.live.engine import HISTORY_BARS, LiveEngine
from mdth_engine.live.events import Bar, Notice
from mdth_engine.live.queues import Bus, Policy
from mdth_engine.live.sources.base import Source

HOUSEKEEPING_S = 0.5
ROLL_AFTER_US = 60 * 1_000_000  # a day's journal is rolled this long after midnight (clock time)
STOP_TIMEOUT_S = 10.0


class LiveFeatureStream:
    """Live candles of ``symbols`` (keys or exchange symbols) for ``timeframes`` from ``source``.

    ``source``: a source name (``binance:BTCUSDT``, ``replay:KEY@DAY``, ``sim:BTCUSDT``,
    ``tardis-machine://...``; see ``mdth_engine.live.sources.spec``) or a ``Source``. ``lake``: where replays
    and warm start read and the journal writes (default: settings). ``persist``: journal raw events to the
    lake (not for a replay: its events are in the lake already) and closed bars to ``warehouse`` (default:
    the configured warehouse). ``serve``: also serve the stream on a loopback WebSocket (``server_url``,
    bearer ``token``). ``events``: iterate notices too. ``grace_seconds``: how long after its end a bar
    waits for late events (default: the source's: 2 s live, 5 s of replay time).
    """

    def __init__(
        self,
        symbols: Iterable[str] | None = None,
        timeframes: Iterable[str] | str = ("1m",),
        source: str | Source = "sim:BTCUSDT",
        *,
        lake: str | None = None,
        warm: int = HISTORY_BARS,
        persist: bool = False,
        warehouse: str | None = None,
        serve: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        queue_size: int = 10_000,
        policy: Policy | str = Policy.BLOCK,
        events: bool = False,
        speed: str | float | None = None,
        grace_seconds: float | None = None,
        source_options: dict[str, Any] | None = None,
        journal_flush_seconds: float | None = None,
    ) -> None:
        tf_text = timeframes if isinstance(timeframes, str) else ",".join(timeframes)
        self.timeframes = parse_timeframes(tf_text)
        self.symbols = list(symbols or [])
        self.source_spec = source
        self.lake = lake
        self.warm_bars = warm
        self.persist = persist
        self.warehouse = warehouse
        self.serve = serve
        self.host, self.port, self.token = host, port, token
        self.queue_size = queue_size
        self.policy = Policy(policy)
        self.events = events
        self.speed = speed
        self.grace_seconds = grace_seconds
        self.source_options = source_options or {}
        self.journal_flush_seconds = journal_flush_seconds
        self.source: Source | None = None
        self.engine: LiveEngine | None = None
        self.bus = Bus()
        self.journal: Any = None
        self.writer: Any = None
        self.server: Any = None
        self.store: Any = None
        self._queue: Any = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._ingest: asyncio.Task[None] | None = None
        self._publish_lock = asyncio.Lock()
        self._error: BaseException | None = None
        self._raised = False
        self._stopping = False
        self._started_at = 0.0
        self._roll_barrier: int | None = None

    # -- lifecycle ----------------------------------------------------------------------------------------

    async def __aenter__(self) -> LiveFeatureStream:
        try:
            await self.start()
        except BaseException:
            await self.aclose()  # nothing half-started stays behind
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        from mdth_engine.core.settings import load_settings
        from mdth_engine.live.sources.spec import open_source
        from mdth_engine.storage.store import open_store

        settings = load_settings(lake=self.lake)
        self.lake = settings.lake
        self.source = open_source(
            self.source_spec, self.symbols, lake=self.lake, speed=self.speed, options=self.source_options
        )
        source = self.source
        grace = source.grace_us if self.grace_seconds is None else int(self.grace_seconds * 1e6)
        self.engine = LiveEngine(self.timeframes, source.clock, grace_us=grace, grid_start_us=source.start_us)
        for key in source.keys:
            self.engine.add_instrument(key, source.data_types(key))
        kinds = frozenset({"bar", "event"}) if self.events else frozenset({"bar"})
        self._queue = self.bus.subscribe("consumer", self.queue_size, self.policy, kinds)
        self.store = open_store(self.lake)
        self._started_at = time.monotonic()
        await self._warm_start()
        if self.persist:
            await self._start_persist(settings)
        elif self.warehouse:
            self._start_writer(self.warehouse)
        if self.serve:
            await self._start_server()
        self._ingest = asyncio.create_task(self._run_ingest(), name="mdth-live-ingest")
        if not source.clock.virtual:
            self._tasks.append(asyncio.create_task(self._run_timer(), name="mdth-live-timer"))
        if self.journal is not None:
            self._tasks.append(asyncio.create_task(self._run_housekeeping(), name="mdth-live-housekeeping"))

    async def _warm_start(self) -> None:
        from mdth_engine.live.warm import last_bars

        assert self.source is not None and self.engine is not None
        if self.warm_bars <= 0:
            return
        before = self.source.start_us if self.source.start_us is not None else self.source.clock.now_us()
        loaded = 0
        for key in self.source.keys:
            for tf in self.timeframes:
                bars = await asyncio.to_thread(last_bars, self.store, key, tf, before, self.warm_bars)
                self.engine.warm(key, tf, bars)
                loaded += len(bars)
        self.engine.output.append(
            Notice(
                "warm_start",
                self.source.clock.now_us(),
                f"{loaded} bar(s) from the lake's candles",
                {"bars": loaded, "lake": self.lake},
            )
        )

    async def _start_persist(self, settings: Any) -> None:
        from mdth_engine.live.journal import Journal

        assert self.source is not None
        if self.source.journal:
            options = (
                {} if self.journal_flush_seconds is None else {"flush_seconds": self.journal_flush_seconds}
            )
            self.journal = Journal(self.store, getattr(self.source, "spec", self.source.name), **options)
            self._tasks.append(asyncio.create_task(self.journal.run(), name="mdth-live-journal"))
            await self._roll_finished_days(scan=True)
        self._start_writer(self.warehouse or settings.warehouse_url())

    def _start_writer(self, url: str) -> None:
        from mdth_engine.live.persist import BarWriter, run_writer

        self.writer = BarWriter(url)
        queue = self.bus.subscribe("warehouse", self.queue_size, Policy.BLOCK, frozenset({"bar"}))
        self._tasks.append(
            asyncio.create_task(run_writer(self.writer, queue, self._notify), name="mdth-live-warehouse")
        )

    async def _start_server(self) -> None:
        from mdth_engine.live.serve import FeatureServer, make_token

        self.token = self.token or make_token()
        self.server = FeatureServer(
            self.bus, self._history_items, self.describe, token=self.token, host=self.host, port=self.port
        )
        await self.server.start()

    async def aclose(self) -> None:
        """Stop the source, write what the journal holds, stop the tasks and the server."""
        self._stopping = True
        if self._queue is not None:
            self._queue.close()  # the consumer has left: never block the engine on it again
        if self.source is not None:
            await self.source.aclose()
        if self._ingest is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._ingest), timeout=STOP_TIMEOUT_S)
            except (TimeoutError, asyncio.CancelledError):
                self._ingest.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._ingest
            except Exception:
                pass
        await self._finish_tasks()
        if self.server is not None:
            await self.server.stop()
            self.server = None

    async def _finish_tasks(self) -> None:
        """Journal and warehouse writer finish what they hold (the bus is closed); others are cancelled."""
        waiting = []
        for task in self._tasks:
            if task.get_name() in ("mdth-live-journal", "mdth-live-warehouse"):
                waiting.append(task)
            else:
                task.cancel()
        for task in self._tasks:
            if task in waiting:
                try:
                    await asyncio.wait_for(task, timeout=60.0)
                except Exception as exc:
                    if self._error is None:
                        self._error = exc
            else:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._tasks = []

    # -- the running parts --------------------------------------------------------------------------------

    async def _run_ingest(self) -> None:
        assert self.source is not None and self.engine is not None
        source, engine, journal = self.source, self.engine, self.journal
        try:
            await self._publish()
            async for batch in source.batches():
                engine.apply(batch)
                if journal is not None:
                    journal.add(batch.events)
                    if journal.due:
                        await journal.cut()
                if engine.output:
                    await self._publish()
                if self._stopping:
                    break
            if not self._stopping and source.end_us is not None:
                engine.close_until(source.end_us)
                engine.output.append(
                    Notice("end", source.clock.now_us(), "the replay reached the end of its data")
                )
                await self._publish()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._error = exc
            engine.output.append(Notice("error", source.clock.now_us(), _first_line(exc)))
            with contextlib.suppress(Exception):
                await self._publish()
        finally:
            for task in self._tasks:
                if task.get_name() in ("mdth-live-timer", "mdth-live-housekeeping"):
                    task.cancel()
            if journal is not None:
                with contextlib.suppress(Exception):
                    await journal.close()
            self.bus.close()

    async def _run_timer(self) -> None:
        """Close bars on the clock: wake at each bucket end plus the grace, whether ticks came or not."""
        assert self.source is not None and self.engine is not None
        source, clock, engine = self.source, self.source.clock, self.engine
        while True:
            await clock.sleep_until(engine.next_due_us)
            now = clock.now_us()
            position = source.position_us()
            behind = position is not None and position < now
            closed = engine.close_due(position if behind else now)
            if engine.output:
                await self._publish()
            if behind and not closed:
                await asyncio.sleep(0.002)  # a paced replay behind its clock: wait for it, not for the clock

    async def _run_housekeeping(self) -> None:
        """Cut the journal on time when events are sparse, and roll finished days into by_date."""
        assert self.journal is not None
        while True:
            await asyncio.sleep(HOUSEKEEPING_S)
            if self.journal.due:
                await self.journal.cut()
            await self._roll_finished_days()

    async def _roll_finished_days(self, scan: bool = False) -> None:
        """Roll days that are over (clock time, plus a minute) once the journal has written all of them.

        ``scan``: also days earlier sessions left under streaming/ (at start, after a crash)."""
        from mdth_engine.live.journal import pending_days, roll_day

        assert self.source is not None and self.journal is not None
        today = _day_of(self.source.clock.now_us() - ROLL_AFTER_US)
        finished = [d for d in self.journal.days_seen if d < today]
        if not scan and not finished:
            return
        if finished:
            # Events after the clock passed the day's end (plus a minute) belong to a later day: once the
            # writer has finished the chunk cut now, every event of the finished days is in a part file.
            if self._roll_barrier is None:
                await self.journal.cut()
                self._roll_barrier = self.journal.cuts
                return
            if self.journal.written < self._roll_barrier:
                return
        self._roll_barrier = None
        days = await asyncio.to_thread(pending_days, self.store)
        for day in [d for d in days if d < today]:
            results = await asyncio.to_thread(roll_day, self.store, day)
            self.journal.days_seen.discard(day)
            written = sum(1 for r in results if r["outcome"] == "written")
            kept = [r["path"] for r in results if r["outcome"] != "written"]
            message = f"rolled {day} into by_date: {written} file(s)"
            if kept:
                message += f"; {len(kept)} kept under streaming/ (a by_date file exists: {kept[0]})"
            self._notify(Notice("rolled", self.source.clock.now_us(), message, {"day": day.isoformat()}))

    def _notify(self, notice: Notice) -> None:
        if self.engine is not None:
            self.engine.output.append(notice)

    async def _publish(self) -> None:
        assert self.engine is not None
        async with self._publish_lock:
            items = self.engine.take_output()
            for item in items:
                await self.bus.publish(item)

    # -- consuming ----------------------------------------------------------------------------------------

    def __aiter__(self) -> LiveFeatureStream:
        return self

    async def __anext__(self) -> Bar | Notice:
        if self._queue is None:
            raise RuntimeError("start the stream first: `async with LiveFeatureStream(...) as stream:`")
        try:
            return await self._queue.get()
        except StopAsyncIteration:
            if self._error is not None and not self._raised:
                self._raised = True
                raise self._error from None
            raise

    def history(self, key: str, timeframe: str) -> list[Bar]:
        """The last bars (warm start included) of one instrument and timeframe, oldest first."""
        if self.engine is None:
            return []
        return list(self.engine.history.get((key, timeframe), ()))

    def _history_items(self) -> list[Bar]:
        if self.engine is None:
            return []
        items = [bar for ring in self.engine.history.values() for bar in ring]
        items.sort(key=lambda b: (b.timestamp_out, b.instrument_key, b.timeframe))
        return items

    @property
    def server_url(self) -> str | None:
        return self.server.url if self.server is not None else None

    @property
    def error(self) -> BaseException | None:
        return self._error

    @property
    def done(self) -> bool:
        return self._ingest is not None and self._ingest.done()

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"timeframes": list(self.timeframes)}
        if self.source is not None:
            info.update(self.source.describe())
            info["instruments"] = list(self.source.keys)
        return info

    def stats(self) -> dict[str, Any]:
        """Counters of every part: source, engine (events in, late, latency), queues, journal, writer, server."""
        out: dict[str, Any] = {"uptime_s": round(time.monotonic() - self._started_at, 3)}
        if self.source is not None:
            out["source"] = dict(self.source.counters)
        if self.engine is not None:
            out["engine"] = self.engine.stats()
        out["queues"] = self.bus.stats()
        if self.journal is not None:
            out["journal"] = self.journal.stats()
        if self.writer is not None:
            out["warehouse"] = dict(self.writer.counters)
        if self.server is not None:
            out["server"] = {**self.server.counters, "clients": self.server.clients, "url": self.server.url}
        return out


def _day_of(us: int) -> Any:
    import datetime as dt

    return dt.date(1970, 1, 1) + dt.timedelta(days=us // 86_400_000_000)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
