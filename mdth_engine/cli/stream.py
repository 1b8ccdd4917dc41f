"""`mdth stream`: live candles with every feature from a live feed or a lake replay, to the terminal or as NDJSON.

`mdth stream --source binance:BTCUSDT --timeframes 15s,1m` shows a live table on a TTY (plain lines otherwise);
with `--json`, one JSON object per closed bar (instrument_key, timeframe, timestamp, every feature, flags) and
per notable event. `--serve` (or `mdth stream serve`) also serves the stream on a loopback WebSocket with a
bearer token; `--persist` journals raw events into the lake and writes closed bars to the warehouse.
`mdth stream roll` merges finished days of the journal into the by_date layout.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from mdth_engine.cli.common import JsonOpt, LakeOpt, json_mode, print_json, settings_for, split_list
from mdth_engine.core.errors import UsageError

TOKEN_ENV = "MDTH_STREAM_TOKEN"
SourceOpt = Annotated[
    str | None,
    typer.Option(
        "--source",
        help="binance:BTCUSDT, binance-futures:BTCUSDT, replay:KEY@YYYY-MM-DD, sim:BTCUSDT, "
        "tardis-machine://HOST:PORT/EXCHANGE/SYMBOL",
    ),
]
SymbolsOpt = Annotated[str | None, typer.Option("--symbols", help="More symbols or keys, comma separated.")]
SpeedOpt = Annotated[str | None, typer.Option("--speed", help="Replay/simulator speed: 1x, 10x or max.")]
TimeframesOpt = Annotated[
    str | None, typer.Option("--timeframes", help="Comma list of 15s,1m,5m,15m,1h,4h,24h (default: all).")
]
ServeOpt = Annotated[bool, typer.Option("--serve", help="Also serve the stream on a loopback WebSocket.")]
HostOpt = Annotated[str, typer.Option("--host", help="Loopback address to serve on.")]
PortOpt = Annotated[int, typer.Option("--port", help="Port to serve on (0: any free port).")]
TokenFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--token-file", help="Where the bearer token is written (mode 0600); clients read it there."
    ),
]
PersistOpt = Annotated[
    bool, typer.Option("--persist", help="Journal raw events to the lake, closed bars to the warehouse.")
]
WarehouseOpt = Annotated[str | None, typer.Option("--warehouse", help="Warehouse URL for --persist.")]
WarmOpt = Annotated[
    int, typer.Option("--warm", help="Bars per instrument and timeframe from the lake first.")
]
DurationOpt = Annotated[float | None, typer.Option("--duration", help="Stop after this many seconds.")]

app = typer.Typer(
    name="stream",
    help="Live candles with every feature (Binance, tardis-machine, the simulator, or a lake replay).",
    invoke_without_command=True,
    no_args_is_help=False,
)


@app.callback()
def stream(
    ctx: typer.Context,
    source: SourceOpt = None,
    symbols: SymbolsOpt = None,
    speed: SpeedOpt = None,
    timeframes: TimeframesOpt = None,
    serve: ServeOpt = False,
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 0,
    token_file: TokenFileOpt = None,
    persist: PersistOpt = False,
    warehouse: WarehouseOpt = None,
    warm: WarmOpt = 100,
    duration: DurationOpt = None,
    lake: LakeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Stream live candles. A replay ends when its data ends; a live feed runs until Ctrl-C (or --duration)."""
    if ctx.invoked_subcommand is not None:
        return
    _run(
        ctx,
        source,
        symbols,
        speed,
        timeframes,
        serve,
        host,
        port,
        token_file,
        persist,
        warehouse,
        warm,
        duration,
        lake,
        json_out,
    )


@app.command("serve")
def serve_command(
    ctx: typer.Context,
    source: SourceOpt = None,
    symbols: SymbolsOpt = None,
    speed: SpeedOpt = None,
    timeframes: TimeframesOpt = None,
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 0,
    token_file: TokenFileOpt = None,
    persist: PersistOpt = False,
    warehouse: WarehouseOpt = None,
    warm: WarmOpt = 100,
    duration: DurationOpt = None,
    lake: LakeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Serve the stream on a loopback WebSocket (bearer token required) for other processes."""
    _run(
        ctx,
        source,
        symbols,
        speed,
        timeframes,
        True,
        host,
        port,
        token_file,
        persist,
        warehouse,
        warm,
        duration,
        lake,
        json_out,
    )


@app.command("roll")
def roll_command(
    ctx: typer.Context,
    date: Annotated[
        str | None, typer.Option("--date", help="Roll this UTC day (default: every day before today).")
    ] = None,
    lake: LakeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Merge finished days of the live journal (streaming/) into raw_tick_data/by_date."""
    import datetime as dt

    from mdth_engine.core.timeframes import parse_day
    from mdth_engine.live.journal import pending_days, roll_day
    from mdth_engine.storage.store import open_store

    settings = settings_for(ctx, lake)
    store = open_store(settings.lake)
    today = dt.datetime.now(dt.UTC).date()
    days = [parse_day(date, "--date")] if date else [d for d in pending_days(store) if d < today]
    as_json = json_mode(ctx, json_out)
    for day in days:
        for result in roll_day(store, day):
            if as_json:
                print_json({"kind": "rolled", "day": day.isoformat(), **result})
            else:
                extra = f", {result['rows']} rows" if "rows" in result else f" ({result.get('reason', '')})"
                typer.echo(f"{result['outcome']}: {result['path']} from {result['parts']} part(s){extra}")
    if not days and not as_json:
        typer.echo("nothing to roll")


# -- running ------------------------------------------------------------------------------------------------


def _run(
    ctx,
    source,
    symbols,
    speed,
    timeframes,
    serve,
    host,
    port,
    token_file,
    persist,
    warehouse,
    warm,
    duration,
    lake,
    json_out,
) -> None:
    from mdth_engine.core.timeframes import parse_timeframes
    from mdth_engine.live.serve import check_loopback
    from mdth_engine.live.sources.replay import parse_speed

    if not source:
        raise UsageError(
            "give --source, e.g. binance:BTCUSDT, replay:BINANCE:SPOT_PAIR:BTC-USDT@2024-01-01 or sim:BTCUSDT"
        )
    chosen = parse_timeframes(timeframes)
    parse_speed(speed)
    if serve:
        check_loopback(host)
    if duration is not None and duration <= 0:
        raise UsageError("--duration must be positive")
    if warm < 0:
        raise UsageError("--warm must be 0 or more")
    settings = settings_for(ctx, lake)
    as_json = json_mode(ctx, json_out)
    tty = sys.stdout.isatty() and not as_json
    options = {
        "lake": settings.lake,
        "warm": warm,
        "persist": persist,
        "warehouse": warehouse or (settings.warehouse_url() if persist else None),
        "serve": serve,
        "host": host,
        "port": port,
        "token": os.environ.get(TOKEN_ENV) or None,
        "speed": speed,
        "events": True,
        "policy": "drop_oldest" if tty else "block",
    }
    code = asyncio.run(
        _stream(source, split_list(symbols), chosen, options, token_file, duration, as_json, tty)
    )
    if code:
        raise typer.Exit(code)


async def _stream(source, symbols, timeframes, options, token_file, duration, as_json, tty) -> int:
    from mdth_engine.live.stream import LiveFeatureStream

    stream = LiveFeatureStream(symbols, timeframes, source, **options)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    written_token: Path | None = None
    try:
        await stream.start()
    except OSError as exc:
        await stream.aclose()
        if options["serve"] and exc.errno in (errno.EADDRINUSE, errno.EACCES):
            raise UsageError(
                f"cannot serve on {options['host']}:{options['port']}: {exc.strerror or exc}; "
                "pick another --port (0: any free port)"
            ) from None
        raise
    try:
        if stream.server is not None:
            written_token = _write_token(token_file, stream.token or "", stream.server.port)
            _announce(stream, written_token, as_json)
        view = _TtyView(stream) if tty else None
        consume = asyncio.create_task(_consume(stream, as_json, view))
        waits = {consume, asyncio.create_task(stop.wait())}
        if duration is not None:
            waits.add(asyncio.create_task(asyncio.sleep(duration)))
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in waits:
            if task is not consume:
                task.cancel()
        await stream.aclose()
        with contextlib.suppress(asyncio.CancelledError):
            await consume
        if view is not None:
            view.stop()
    finally:
        with contextlib.suppress(Exception):
            await stream.aclose()
        if written_token is not None:
            with contextlib.suppress(OSError):
                written_token.unlink()
    s = _summary(stream)
    if as_json:
        print_json({"kind": "summary", **s})
    else:
        typer.echo(
            f"stream: {s['events_in']:,} events, {s['bars']:,} bars, {s['late']} late, "
            f"{s['dropped']} dropped, {_latency_text(s)}",
            err=True,
        )
    error = stream.error
    if error is not None:
        typer.echo(
            f"mdth: error: {str(error).splitlines()[0] if str(error) else type(error).__name__}", err=True
        )
        return getattr(error, "exit_code", 1)
    return 0


async def _consume(stream: Any, as_json: bool, view: _TtyView | None) -> None:
    try:
        async for item in stream:
            if as_json:
                print_json(item.to_dict())
            elif view is not None:
                view.update(item)
            else:
                typer.echo(_plain(item))
    except Exception:
        return  # the stream keeps the error; _stream reports it


def _plain(item: Any) -> str:
    d = item.to_dict()
    if d["kind"] != "bar":
        return f"{d.get('at', '')}  event {d['event']}: {d.get('message', '')}"
    flags = [name for name in ("warm", "partial", "spans_disconnect") if d.get(name)]
    return (
        f"{d['timestamp']}  {d['instrument_key']}  {d['timeframe']:>3}  "
        f"o={_num(d['open'])} h={_num(d['high'])} l={_num(d['low'])} c={_num(d['close'])} "
        f"v={_num(d['volume'])} n={d['trade_count']} vwap={_num(d['price_vwap'])} "
        f"spread_bps={_num(d['spread_bps'])}" + (f"  [{','.join(flags)}]" if flags else "")
    )


def _num(value: Any) -> str:
    return "nan" if value is None else f"{value:.6g}" if isinstance(value, float) else str(value)


def _summary(stream: Any) -> dict[str, Any]:
    """The stream's counters; arrival-to-bar latency only for a live source (a replay's events do not arrive:
    its figure would time how long a chunk of events waited to be built, not the engine)."""
    from mdth_engine.live.sources.replay import ReplaySource

    stats = stream.stats()
    engine = stats.get("engine", {})
    out = {
        "events_in": engine.get("events_in", 0),
        "bars": engine.get("bars", 0),
        "late": engine.get("late", 0),
        "disconnects": engine.get("disconnects", 0),
        "dropped": sum(q["dropped"] for q in stats.get("queues", [])),
        "uptime_s": stats.get("uptime_s"),
        "source": stats.get("source", {}),
        "journal": stats.get("journal"),
        "warehouse": stats.get("warehouse"),
    }
    if not isinstance(stream.source, ReplaySource):
        out["latency_p50_us"] = _finite(engine.get("latency_p50_us"))
        out["latency_p99_us"] = _finite(engine.get("latency_p99_us"))
    return out


def _latency_text(summary: dict[str, Any]) -> str:
    if "latency_p50_us" not in summary:
        return "replay: latency not measured"
    return f"latency p50 {summary['latency_p50_us']:.0f} us / p99 {summary['latency_p99_us']:.0f} us"


def _finite(value: Any) -> float:
    return 0.0 if value is None or value != value else float(value)


def _token_path(token_file: Path | None) -> Path:
    if token_file is not None:
        return token_file.expanduser()
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = Path(runtime) / "mdth" if runtime else Path.home() / ".cache" / "mdth"
    return base / "stream.token"


def _write_token(token_file: Path | None, token: str, port: int) -> Path:
    """The token in a file only this user can read (never on stdout or in a log)."""
    path = _token_path(token_file)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    os.chmod(path, 0o600)
    return path


def _announce(stream: Any, token_path: Path, as_json: bool) -> None:
    if as_json:
        print_json({"kind": "serving", "url": stream.server_url, "token_file": str(token_path)})
    else:
        typer.echo(
            f"serving on {stream.server_url} (send 'Authorization: Bearer <token>'; token in {token_path})",
            err=True,
        )


class _TtyView:
    """A rich live table: the last closed bar of every instrument and timeframe, and the stream's counters."""

    def __init__(self, stream: Any) -> None:
        from rich.console import Console
        from rich.live import Live

        self.stream = stream
        self.last: dict[tuple[str, str], dict[str, Any]] = {}
        self.notes: list[str] = []
        self.started = time.monotonic()
        self.console = Console()
        self.live = Live(self._render(), console=self.console, refresh_per_second=4, transient=False)
        self.live.start()

    def update(self, item: Any) -> None:
        d = item.to_dict()
        if d["kind"] == "bar":
            self.last[(d["instrument_key"], d["timeframe"])] = d
        else:
            self.notes = [*self.notes[-3:], f"{d.get('at', '')[11:19]} {d['event']}: {d.get('message', '')}"]
        self.live.update(self._render())

    def stop(self) -> None:
        self.live.update(self._render())
        self.live.stop()

    def _render(self) -> Any:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        wide = self.console.width >= 130  # open/high/low only where they fit
        columns = [
            ("instrument", "instrument_key"),
            ("tf", "timeframe"),
            ("bar", "timestamp"),
            *([("open", "open"), ("high", "high"), ("low", "low")] if wide else []),
            ("close", "close"),
            ("volume", "volume"),
            ("trades", "trade_count"),
            ("vwap", "price_vwap"),
            ("spread bps", "spread_bps"),
            ("flags", ""),
        ]
        table = Table(header_style="bold", show_edge=False, pad_edge=False)
        for title, name in columns:
            left = name in ("instrument_key", "timeframe", "timestamp", "")
            width = {"timeframe": 3, "timestamp": 8, "instrument_key": 12}.get(name, 7)
            table.add_column(title, justify="left" if left else "right", no_wrap=True, min_width=width)
        for _, d in sorted(self.last.items()):
            flags = ",".join(n for n in ("warm", "partial", "spans_disconnect") if d.get(n))
            cells: list[Any] = []
            for _, name in columns:
                if name == "timestamp":
                    cells.append(d["timestamp"][11:19])
                elif name == "":
                    cells.append(Text(flags, style="yellow" if flags else ""))
                elif name in ("instrument_key", "timeframe"):
                    cells.append(Text(d[name]))
                elif name == "trade_count":
                    cells.append(str(d[name]))
                else:
                    cells.append(_num(d[name]))
            table.add_row(*cells)
        s = _summary(self.stream)
        elapsed = max(time.monotonic() - self.started, 1e-9)
        status = Text(
            f"{s['events_in']:,} events ({s['events_in'] / elapsed:,.0f}/s)  {s['bars']:,} bars  late {s['late']}  "
            f"dropped {s['dropped']}  disconnects {s['disconnects']}  {_latency_text(s)}",
            style="dim",
        )
        return Group(table, status, *(Text(n, style="dim") for n in self.notes))
