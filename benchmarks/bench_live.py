"""Live engine benchmark: replay throughput (events/s) and arrival-to-bar latency (p50/p99) on a live feed.

1. Replay throughput. A lake day is built the way users build it: ticks of BTCUSDT spot and the BTCUSDT
   perpetual downloaded from the built-in simulator (scale ``medium`` by default: ~0.5M events: trades,
   depth-5 books, derivative ticker, liquidations) and batch candles. The day is then replayed at full speed
   through ``LiveFeatureStream`` with all seven timeframes (the full live engine: lake read, event building,
   incremental features, bar closing, flags, the bus and a consumer that takes every bar). Reported: events
   per second over the whole replay (wall time, lake read included), and the engine alone (pre-built batches
   fed to ``LiveEngine``), best and median of ``--repeat`` runs.
2. Latency. A feed process sends Binance combined-stream messages (trades and depth5 books, evenly spaced)
   over a loopback WebSocket at ``--rates`` messages per second; the Binance source reads them and the
   engine applies them, on a clock running 30x (so bars of all timeframes close often during the run: their
   closing work is inside the figures). Latency = from the moment the source reads a frame off the socket to
   the moment the engine's bar state holds the event (``Batch.received_ns`` -> applied), every event.

Run: ``.venv/bin/python benchmarks/bench_live.py [--scale medium] [--repeat 3] [--rates 2000,10000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DAY = dt.date(2024, 3, 12)
KEYS = ("BINANCE:SPOT_PAIR:BTC-USDT", "BINANCE-FUTURES:PERPETUAL:BTC-USDT")
ALL_TF = ("15s", "1m", "5m", "15m", "1h", "4h", "24h")
CLOCK_SPEED = 30.0


# -- 1. replay throughput -------------------------------------------------------------------------------------


def build_lake(lake: str, scale: str, cache: str) -> None:
    from mdth_engine.api import ensure_instruments, run_stage
    from mdth_engine.core.settings import load_settings
    from mdth_engine.simulator import SimulatorServer
    from mdth_engine.stages.base import Request

    with SimulatorServer(scale=scale, cache_dir=cache) as sim:
        settings = load_settings(
            lake=lake,
            tardis_api_url=sim.api_url,
            tardis_datasets_url=sim.datasets_url,
            tardis_api_key="bench",
        )
        request = Request("download", DAY, DAY, symbols=KEYS)
        asyncio.run(ensure_instruments(request, settings))
        summary = asyncio.run(run_stage(request, settings, concurrency=4))
        assert summary.exit_code == 0, summary.failures
        assert asyncio.run(run_stage(Request("candles", DAY, DAY), settings)).exit_code == 0


async def replay_once(lake: str) -> dict[str, float]:
    from mdth_engine.live.stream import LiveFeatureStream

    started = time.perf_counter()
    cpu = time.process_time()
    bars = 0
    async with LiveFeatureStream(None, ALL_TF, f"replay:{','.join(KEYS)}@{DAY}", lake=lake, warm=0) as stream:
        async for _ in stream:
            bars += 1
        stats = stream.stats()
    wall = time.perf_counter() - started
    events = stats["engine"]["events_in"]
    assert stats["engine"]["late"] == 0 and stream.error is None
    return {
        "events": events,
        "bars": bars,
        "wall_s": wall,
        "cpu_s": time.process_time() - cpu,
        "eps": events / wall,
    }


async def engine_only(lake: str) -> dict[str, float]:
    """Pre-built batches through ``LiveEngine`` alone: the engine's share of the work."""
    from mdth_engine.live.engine import LiveEngine
    from mdth_engine.live.sources.replay import ReplaySource
    from mdth_engine.storage.store import open_store

    source = ReplaySource(open_store(lake), list(KEYS), [DAY])
    batches = [batch async for batch in source.batches()]
    events = sum(len(b.events) for b in batches)
    source = ReplaySource(open_store(lake), list(KEYS), [DAY])
    engine = LiveEngine(ALL_TF, source.clock, grace_us=source.grace_us, grid_start_us=source.start_us)
    for key in source.keys:
        engine.add_instrument(key, source.data_types(key))
    started = time.perf_counter()
    for batch in batches:
        engine.apply(batch)
        engine.take_output()
    engine.close_until(source.end_us)
    wall = time.perf_counter() - started
    return {"events": events, "wall_s": wall, "eps": events / wall}


# -- 2. latency on a live feed ------------------------------------------------------------------------------


def feed_process(port_out, rate: float, seconds: float, origin_us: int, mono0: float) -> None:
    """A Binance-format feed: trades and depth5 books for btcusdt, evenly spaced at ``rate`` messages/s."""
    from aiohttp import web

    from mdth_engine.live.clock import ScaledClock

    clock = ScaledClock(origin_us, CLOCK_SPEED, mono0)

    async def handle(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        start = time.perf_counter()
        k = 0
        while time.perf_counter() - start < seconds:
            due = start + k / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            ms = clock.now_us() // 1000
            price = 68000.0 + (k % 200) * 0.1
            if k % 2:
                data = {
                    "e": "trade",
                    "E": ms,
                    "T": ms,
                    "s": "BTCUSDT",
                    "t": k,
                    "p": f"{price:.2f}",
                    "q": "0.01200",
                    "m": bool(k % 3),
                }
                msg = {"stream": "btcusdt@trade", "data": data}
            else:
                bids = [[f"{price - 0.1 * i:.2f}", "1.500"] for i in range(1, 6)]
                asks = [[f"{price + 0.1 * i:.2f}", "2.500"] for i in range(1, 6)]
                msg = {
                    "stream": "btcusdt@depth5@100ms",
                    "data": {"lastUpdateId": k, "bids": bids, "asks": asks},
                }
            await ws.send_str(json.dumps(msg, separators=(",", ":")))
            k += 1
        await ws.close()
        return ws

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/stream", handle)
        runner = web.AppRunner(app, handler_cancellation=True)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port_out.put(site._server.sockets[0].getsockname()[1])
        await asyncio.sleep(seconds + 30)

    asyncio.run(main())


async def latency_run(rate: float, seconds: float) -> dict[str, float]:
    from mdth_engine.live.clock import ScaledClock
    from mdth_engine.live.sources.binance import BinanceSource
    from mdth_engine.live.stream import LiveFeatureStream

    origin_us, mono0 = time.time_ns() // 1000, time.monotonic()
    ctx = multiprocessing.get_context("spawn")
    port_q = ctx.Queue()
    proc = ctx.Process(target=feed_process, args=(port_q, rate, seconds, origin_us, mono0), daemon=True)
    proc.start()
    try:
        port = port_q.get(timeout=60)
        clock = ScaledClock(origin_us, CLOCK_SPEED, mono0)
        source = BinanceSource(["BTCUSDT"], clock=clock, spot_url=f"ws://127.0.0.1:{port}", idle_timeout=5.0)
        bars = 0
        async with LiveFeatureStream(None, ALL_TF, source, warm=0, events=True) as stream:
            async for item in stream:
                bars += item.kind == "bar"
                if item.kind == "event" and item.event == "disconnect":
                    break  # the feed ended
            stats = stream.stats()
            p50, p99, p999 = stream.engine.latency.percentiles_us(50, 99, 99.9)
    finally:
        proc.terminate()
        proc.join(10)
    return {
        "rate": rate,
        "events": stats["engine"]["events_in"],
        "bars": bars,
        "p50_us": p50,
        "p99_us": p99,
        "p999_us": p999,
        "late": stats["engine"]["late"],
    }


# -- main ---------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="medium", help="simulator volume scale of the replayed day")
    parser.add_argument("--lake", help="reuse this lake (built there if empty)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rates", default="2000,10000", help="latency runs: messages per second")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each latency run")
    parser.add_argument("--skip", choices=("replay", "latency"), action="append", default=[])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    report: dict[str, object] = {
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpu",
    }
    if "replay" not in args.skip:
        lake = args.lake or tempfile.mkdtemp(prefix="mdth-bench-live-")
        cache = os.path.join(tempfile.gettempdir(), "mdth-bench-sim-cache")
        if not Path(lake, "processed_candles").exists():
            t = time.perf_counter()
            build_lake(lake, args.scale, cache)
            print(f"built the lake in {time.perf_counter() - t:.1f} s: {lake}", file=sys.stderr)
        runs = [asyncio.run(replay_once(lake)) for _ in range(args.repeat)]
        engine = [asyncio.run(engine_only(lake)) for _ in range(args.repeat)]
        eps = [r["eps"] for r in runs]
        report["replay"] = {
            "events": runs[0]["events"],
            "bars": runs[0]["bars"],
            "events_per_s_best": max(eps),
            "events_per_s_median": statistics.median(eps),
            "cpu_events_per_s_best": max(r["events"] / r["cpu_s"] for r in runs),
            "engine_only_events_per_s_best": max(e["eps"] for e in engine),
        }
    if "latency" not in args.skip:
        report["latency"] = [
            asyncio.run(latency_run(float(rate), args.seconds))
            for rate in args.rates.split(",")
            if rate.strip()
        ]
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"python {report['python']} on {report['machine']}")
    if "replay" in report:
        r = report["replay"]
        print(
            f"replay (full live engine, 7 timeframes): {r['events']:,} events, {r['bars']:,} bars; "
            f"{r['events_per_s_best']:,.0f} events/s best, {r['events_per_s_median']:,.0f} median "
            f"(CPU time: {r['cpu_events_per_s_best']:,.0f}/s); engine alone {r['engine_only_events_per_s_best']:,.0f}/s"
        )
    for row in report.get("latency", []):
        print(
            f"latency at {row['rate']:,.0f} msg/s: {row['events']:,} events, {row['bars']} bars closed; "
            f"p50 {row['p50_us']:.1f} us, p99 {row['p99_us']:.1f} us, p99.9 {row['p999_us']:.1f} us "
            f"(late: {row['late']})"
        )


if __name__ == "__main__":
    main()
