"""Console responsiveness: key presses under load, measured headless at 80x24.

Load, all at once, for the whole run:
- a job of 100 shards and 100,000 units (spec + plan in a local lake) whose 100 shard heartbeats are rewritten
  every second, and whose result batches (500 units, 2% failed) land every 0.2 s, by a separate reporter
  process (as real workers are): the Job detail screen polls the records (1 s) and the failures (3 s);
- a live stream at 10,000 trade events/s over 3 instruments (a synthetic paced source through the real
  ``LiveFeatureStream`` and live engine, 15s and 1m bars) running in the console process, as the Stream screen
  runs it.

Measured: for each key press (Down/Up in the focused table, at random 40-120 ms intervals), the time from
posting the key until the table's cursor moved (handled) and until the next frame was composed and rendered
to terminal output (painted), on the Job detail screen and then on the Stream screen; plus how long the polls
take and the event rate the stream sustained. Only the final write to a real terminal is left out (headless).

Run: ``.venv/bin/python benchmarks/bench_console.py [--presses N] [--rate EVENTS_PER_S] [--strict]``.
Target: p95 < 100 ms on both screens.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import math
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mdth_console.app import MdthApp
from mdth_console.backend import ConsoleBackend
from mdth_engine.live.events import Batch, Trade
from mdth_engine.live.sources.base import Source

SHARDS, UNITS = 100, 100_000
JOB_ID = "download-20240301-000000-bench0"
KEYS = ("BINANCE:SPOT_PAIR:BTC-USDT", "BINANCE:SPOT_PAIR:ETH-USDT", "BINANCE-FUTURES:PERPETUAL:BTC-USDT")


# -- the job and its reporter ----------------------------------------------------------------------------------


def make_job(lake: str) -> None:
    """Spec, 100k-unit plan and pending shard records, written through the engine's record functions."""
    from mdth_engine.jobs import records as rec
    from mdth_engine.jobs.sharding import assign_shards
    from mdth_engine.jobs.spec import JobSpec
    from mdth_engine.stages.base import Request, WorkUnit
    from mdth_engine.storage.store import open_store

    store = open_store(lake)
    day = dt.date(2024, 3, 1)
    units = [
        WorkUnit(
            "download", f"{day}/binance/trades/SYM{i:06d}", day, f"raw/{i}.parquet", est_bytes=1000 + i % 977
        )
        for i in range(UNITS)
    ]
    rec.write_plan(store, JOB_ID, units, assign_shards(units, SHARDS))
    spec = JobSpec(
        JOB_ID,
        "download",
        Request("download", day, day).to_dict(),
        SHARDS,
        "local",
        "bench",
        "bench@host",
        "2024-03-01T00:00:00+00:00",
        units=UNITS,
        est_bytes=sum(u.est_bytes for u in units),
        lake=lake,
    )
    rec.save_spec(store, spec)


def reporter(lake: str, seconds: float) -> None:
    """Heartbeats of all 100 shards every second, a 500-unit result batch every 0.2 s (2% failed)."""
    from mdth_engine.jobs import records as rec
    from mdth_engine.storage.store import open_store

    store = open_store(lake)
    per_shard = UNITS // SHARDS
    started = time.time()
    done = [0] * SHARDS
    seq = [0] * SHARDS
    rng = random.Random(7)
    next_results = time.monotonic()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        tick = time.monotonic()
        for shard in range(SHARDS):
            done[shard] = min(per_shard, done[shard] + rng.randint(0, 3))
            record = rec.ShardRecord(
                JOB_ID,
                shard,
                state="running",
                attempt=1,
                units_total=per_shard,
                units_done=done[shard],
                rows=done[shard] * 1000,
                bytes=done[shard] * 40_000,
                rate_bytes_s=rng.uniform(1e5, 1e6),
                rate_units_s=1.5,
                eta_s=(per_shard - done[shard]) / 1.5,
                host="bench",
                pid=1,
                backend="local",
                started_at=started,
            )
            rec.write_shard(store, record)
            if time.monotonic() >= next_results:
                next_results += 0.2
                rows = []
                for _ in range(500):
                    failed = rng.random() < 0.02
                    rows.append(
                        {
                            "unit_id": f"2024-03-01/binance/trades/SYM{rng.randrange(UNITS):06d}",
                            "outcome": "failed" if failed else "written",
                            "rows": 1000,
                            "bytes": 40_000,
                            "reason": "HTTP 500 from the source" if failed else "",
                            "seconds": 0.5,
                            "output": "",
                            "attempt": 1,
                            "finished_at": dt.datetime.now(dt.UTC),
                            "extra": "",
                        }
                    )
                seq[shard] = rec.write_results(store, JOB_ID, shard, seq[shard], rows) + 1
        time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))


# -- the stream ------------------------------------------------------------------------------------------------


class RateSource(Source):
    """Trades for a few instruments at a steady ``rate`` per second of wall time, in 10 ms batches."""

    name = "bench"
    journal = False

    def __init__(self, keys: list[str], rate: float) -> None:
        super().__init__(keys)
        self.rate = rate
        self.stopped = False
        self.counters = {"events": 0}

    def data_types(self, key: str) -> frozenset[str]:
        return frozenset({"trades"})

    async def batches(self):
        start = time.monotonic()
        sent = 0
        price = {k: 50_000.0 + 1000 * i for i, k in enumerate(self.keys)}
        rng = random.Random(3)
        while not self.stopped:
            await asyncio.sleep(0.01)
            due = int((time.monotonic() - start) * self.rate) - sent
            if due <= 0:
                continue
            now = self.clock.now_us()
            events = []
            for j in range(due):
                key = self.keys[j % len(self.keys)]
                price[key] *= math.exp(rng.gauss(0.0, 1e-5))
                events.append(
                    Trade(
                        key, now - 2000, now, price[key], rng.uniform(0.001, 0.5), "buy" if j & 1 else "sell"
                    )
                )
            sent += due
            self.counters["events"] = sent
            yield Batch(events)

    async def aclose(self) -> None:
        self.stopped = True

    def describe(self) -> dict:
        return {"source": f"bench:{self.rate:.0f}/s", "instruments": list(self.keys)}


class BenchBackend(ConsoleBackend):
    def __init__(self, lake: str, rate: float) -> None:
        super().__init__(lake)
        self.rate = rate
        self.poll_times: dict[str, list[float]] = {"job": [], "failures": []}

    def open_stream(self, source: str, symbols: list[str], timeframes: str):
        from mdth_engine.live.stream import LiveFeatureStream

        return LiveFeatureStream(
            list(KEYS),
            timeframes,
            source=RateSource(list(KEYS), self.rate),
            lake=self.lake_url,
            warm=0,
            policy="drop_oldest",
            events=True,
        )

    def job(self, job_id: str):
        t = time.perf_counter()
        try:
            return super().job(job_id)
        finally:
            self.poll_times["job"].append(time.perf_counter() - t)

    def failures(self, job_id: str):
        t = time.perf_counter()
        try:
            return super().failures(job_id)
        finally:
            self.poll_times["failures"].append(time.perf_counter() - t)


# -- measuring -------------------------------------------------------------------------------------------------


def hook_display(app: MdthApp) -> list[float]:
    """Times at which a frame was composed and turned into terminal output (headless apps skip the second
    step, so it is done here, to count its cost; only the write to a terminal is left out)."""
    frames: list[float] = []
    original = app._display

    def display(screen, renderable) -> None:
        if renderable is not None and not app._batch_count:
            if hasattr(renderable, "render_segments"):
                renderable.render_segments(app.console)
            frames.append(time.perf_counter())
        original(screen, renderable)

    app._display = display  # type: ignore[method-assign]
    return frames


async def press_and_time(app: MdthApp, table, n: int, frames: list[float]) -> tuple[list[float], list[float]]:
    """(handled, painted) latencies: until the cursor moved, and until the next frame after that."""
    from textual import events

    handled, painted = [], []
    rng = random.Random(11)
    for i in range(n):
        await asyncio.sleep(rng.uniform(0.04, 0.12))
        before = table.cursor_row
        key = "down" if before <= 0 or (i % 2 == 0 and before < table.row_count - 1) else "up"
        t0 = time.perf_counter()
        app.post_message(events.Key(key, None))
        while table.cursor_row == before and time.perf_counter() - t0 < 5:
            await asyncio.sleep(0.0005)
        t1 = time.perf_counter()
        handled.append(t1 - t0)
        while not (frames and frames[-1] > t1) and time.perf_counter() - t0 < 5:
            await asyncio.sleep(0.0005)
        painted.append(time.perf_counter() - t0)
    return handled, painted


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, math.ceil(p / 100 * len(values)) - 1)]


def line(name: str, values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return (
        f"{name:<28} n={len(ms):<4} p50 {pct(ms, 50):6.1f} ms  p95 {pct(ms, 95):6.1f} ms  "
        f"p99 {pct(ms, 99):6.1f} ms  max {max(ms):6.1f} ms"
    )


async def run(args: argparse.Namespace, lake: str) -> bool:
    from mdth_console.screens.jobs import JobDetailScreen

    backend = BenchBackend(lake, args.rate)
    app = MdthApp(lake, backend=backend)
    async with app.run_test(size=(80, 24)) as pilot:
        frames = hook_display(app)
        await pilot.pause(0.5)
        app.run_command_line("stream bench 15s,1m")
        await pilot.pause(1.0)
        stream_screen = app.screen
        await app.open_job(JOB_ID)
        await pilot.pause(args.warmup)
        assert isinstance(app.screen, JobDetailScreen)
        shards = app.screen.query_one("#shards-table")
        shards.focus()
        job_lat, job_paint = await press_and_time(app, shards, args.presses, frames)
        job_rows = shards.row_count
        await app.goto("stream")
        await pilot.pause(2.0)
        bars = stream_screen.query_one("#stream-bars")
        bars.focus()
        stream_lat, stream_paint = await press_and_time(app, bars, args.presses, frames)
        stats = stream_screen.model.snapshot(None)["stats"]
        live_bars = stream_screen.model.live_bars
        uptime = stats.get("uptime_s", 0) or 1
        events_in = stats.get("engine", {}).get("events_in", 0)
        dropped = sum(q.get("dropped", 0) for q in stats.get("queues", []))
        stream_screen.action_stop()
        await pilot.pause(0.5)
    print(f"job: {SHARDS} shards, {UNITS:,} units; shard table rows shown: {job_rows}")
    print(
        f"stream: {events_in:,} events in {uptime:.1f} s = {events_in / uptime:,.0f}/s (target {args.rate:,.0f}/s), "
        f"{live_bars} bars closed, {dropped} dropped"
    )
    print(line("job status poll (thread)", backend.poll_times["job"]))
    print(line("failures poll (thread)", backend.poll_times["failures"]))
    print(line("key handled, Job detail", job_lat))
    print(line("key painted, Job detail", job_paint))
    print(line("key handled, Stream", stream_lat))
    print(line("key painted, Stream", stream_paint))
    ok = max(pct(v, 95) for v in (job_lat, job_paint, stream_lat, stream_paint)) < 0.100
    print(f"target p95 < 100 ms on both screens (handled and painted): {'PASS' if ok else 'FAIL'}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presses", type=int, default=150)
    parser.add_argument("--rate", type=float, default=10_000.0)
    parser.add_argument("--warmup", type=float, default=4.0)
    parser.add_argument("--strict", action="store_true", help="exit 1 when the target is missed")
    parser.add_argument("--reporter", nargs=2, metavar=("LAKE", "SECONDS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reporter:
        reporter(args.reporter[0], float(args.reporter[1]))
        return 0
    print(f"python {platform.python_version()} on {platform.machine()}, {platform.system()}")
    folder = tempfile.mkdtemp(prefix="mdth-bench-console-")
    lake = str(Path(folder) / "lake")
    try:
        t = time.perf_counter()
        make_job(lake)
        print(f"job records written in {time.perf_counter() - t:.1f} s")
        proc = subprocess.Popen([sys.executable, __file__, "--reporter", lake, "600"])
        try:
            time.sleep(1.5)
            ok = asyncio.run(run(args, lake))
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0 if ok or not args.strict else 1


if __name__ == "__main__":
    sys.exit(main())
