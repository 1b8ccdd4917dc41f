"""Stream: pick a source and instruments, watch bars close live with their features, a chart of the selected
instrument's closes, and the stream's counters (events, lag, dropped, latency)."""

from __future__ import annotations

import threading
import time
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.suggester import SuggestFromList
from textual.widgets import Button, Input, Log, Static

from mdth_console.format import count, number, plain
from mdth_console.screens.base import BaseScreen
from mdth_console.streaming import StreamModel, run_stream
from mdth_console.widgets.chart import Chart
from mdth_console.widgets.table import KeyedTable

UI_HZ = 4  # numbers and the table; the chart rebuilds at most once a second, only when its bars changed
FEATURES = ("close", "volume", "trade_count", "price_vwap", "spread_bps", "microprice")


def _time(us: int) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(us / 1e6))


class StreamScreen(BaseScreen):
    MODE = "stream"
    MAIN = "stream-bars"
    HELP = (
        "Sources: sim:BTCUSDT?speed=60 (the built-in simulator at 60x), replay:KEY@DAY?speed=10x (the lake's "
        "ticks of a day), binance:BTCUSDT (live). Enter in a field starts; x stops. Each row is the last closed "
        "bar of an instrument and timeframe (warm = loaded from the lake's candles at start); the chart follows "
        "the selected row. Counters: events in, bars, late events, dropped bars, queue lag, latency."
    )
    BINDINGS = [
        Binding("s", "start", "Start", id="stream.start"),
        Binding("x", "stop", "Stop", id="stream.stop"),
        Binding("escape", "leave_field", "Leave field", show=False, id="stream.leave"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.model: StreamModel | None = None
        self.stop_event: threading.Event | None = None
        self.seen_version = -1
        self.seen_notice = 0
        self.chart_version = -1
        self.chart_key: tuple[str, str] | None = None
        self.chart_built_at = 0.0
        self.rate = (0, 0.0, 0.0)  # (events, monotonic, rate)

    def compose_body(self) -> ComposeResult:
        with Vertical(id="stream-body"):
            with Horizontal(id="stream-controls"):
                source = Input(placeholder="source: sim:BTCUSDT?speed=60", id="stream-source", compact=True)
                symbols = Input(placeholder="+ symbols", id="stream-symbols", compact=True)
                tfs = Input(value="15s,1m", placeholder="timeframes", id="stream-tfs", compact=True)
                for box in (source, symbols, tfs):
                    box.cursor_blink = False
                yield source
                yield symbols
                yield tfs
                yield Button("Start", id="stream-go", compact=True)
            yield Static(
                Text("not streaming: type a source and press Enter", style="dim"), id="stream-counters"
            )
            yield KeyedTable(
                [
                    ("instrument", "key", None),
                    ("tf", "tf", 4),
                    ("bar UTC", "time", 8),
                    ("close", "close", 11),
                    ("volume", "volume", 9),
                    ("trades", "trades", 6),
                    ("vwap", "vwap", 11),
                    ("spread bp", "spread", 9),
                    ("flags", "flags", 6),
                ],
                id="stream-bars",
            )
            yield Chart("the chart follows the selected bar row", id="stream-chart")
            yield Log(id="stream-notices", max_lines=200)

    def on_mount(self) -> None:
        self.set_interval(1 / UI_HZ, self.refresh_view)
        self.run_worker(self._suggest_sources, thread=True, group="stream-suggest", exit_on_error=False)
        self.focus_main()

    def _suggest_sources(self) -> None:
        try:
            overview = self.backend.overview()
        except Exception:
            return
        day = overview["tick_days"][-1] if overview["tick_days"] else None
        choices = ["sim:BTCUSDT?speed=60", "sim:BTCUSDT,ETHUSDT?speed=60", "binance:BTCUSDT"]
        if day:
            choices += [f"replay:{key}@{day}?speed=60x" for key in overview["tick_keys"][:50]]
        self.app.call_from_thread(self._set_suggester, choices)

    def _set_suggester(self, choices: list[str]) -> None:
        source = self.query_one("#stream-source", Input)
        source.suggester = SuggestFromList(choices, case_sensitive=False)

    # -- start / stop --------------------------------------------------------------------------------------
    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        if event.input.id and event.input.id.startswith("stream-"):
            self.action_start()

    @on(Button.Pressed, "#stream-go")
    def _button(self) -> None:
        if self.running:
            self.action_stop()
        else:
            self.action_start()

    @property
    def running(self) -> bool:
        return self.model is not None and self.model.state in ("starting", "running")

    def open_with(self, args: list[str]) -> None:
        self.query_one("#stream-source", Input).value = args[0]
        if len(args) > 1:
            self.query_one("#stream-tfs", Input).value = args[1]
        self.action_start()

    def action_start(self) -> None:
        source = self.query_one("#stream-source", Input).value.strip()
        if not source:
            source = self.query_one("#stream-source", Input).placeholder.removeprefix("source: ").strip()
            self.query_one("#stream-source", Input).value = source
        symbols = [s.strip() for s in self.query_one("#stream-symbols", Input).value.split(",") if s.strip()]
        tfs = self.query_one("#stream-tfs", Input).value.strip() or "1m"
        self.action_stop()
        try:
            stream = self.backend.open_stream(source, symbols, tfs)
        except Exception as exc:
            self.show_error(exc, "stream")
            return
        self.model, self.stop_event = StreamModel(), threading.Event()
        self.seen_version, self.seen_notice, self.chart_version, self.chart_key = -1, 0, -1, None
        self.rate = (0, time.monotonic(), 0.0)
        self.query_one(KeyedTable).sync([])
        self.query_one(Chart).clear_chart("waiting for bars…")
        self.query_one("#stream-notices", Log).clear()
        model, stop = self.model, self.stop_event
        self.run_worker(
            lambda: run_stream(stream, model, stop),
            thread=True,
            group="stream",
            exit_on_error=False,
            description=source,
        )
        self.query_one("#stream-go", Button).label = "Stop"
        self.focus_main()

    def action_stop(self) -> None:
        if self.stop_event is not None:
            self.stop_event.set()
        self.query_one("#stream-go", Button).label = "Start"

    def action_leave_field(self) -> None:
        self.focus_main()

    def on_unmount(self) -> None:
        super().on_unmount()
        if self.stop_event is not None:
            self.stop_event.set()

    # -- view ----------------------------------------------------------------------------------------------
    def refresh_view(self) -> None:
        """4 Hz: counters and the bar table when something changed; the chart at most 1 Hz."""
        if self.model is None or not self.is_current or getattr(self.app, "paused", False):
            return
        table = self.query_one(KeyedTable)
        selected = table.current_key
        chart_key = tuple(selected.split("|", 1)) if selected else self.chart_key
        snap = self.model.snapshot(chart_key)  # type: ignore[arg-type]
        if snap["version"] == self.seen_version:
            return
        self.seen_version = snap["version"]
        self.show_counters(snap)
        running = snap["state"] in ("starting", "running")
        button = self.query_one("#stream-go", Button)
        if str(button.label) != ("Stop" if running else "Start"):
            button.label = "Stop" if running else "Start"
            self.refresh_bindings()
        if snap["state"] == "failed" and not snap["latest"]:
            self.query_one(Chart).clear_chart("no bars: the stream failed (the reason is above)")
        rows = []
        for (key, tf), values in sorted(snap["latest"].items()):
            warm, partial, gap = snap["flags"][(key, tf)]
            flags = ("W" if warm else "") + ("P" if partial else "") + ("D" if gap else "")
            rows.append(
                (
                    f"{key}|{tf}",
                    [
                        plain(key),
                        plain(tf),
                        plain(_time(values["timestamp"])),
                        plain(number(values.get("close"), 8)),
                        plain(number(values.get("volume"), 6)),
                        plain(str(values.get("trade_count", "-"))),
                        plain(number(values.get("price_vwap"), 8)),
                        plain(number(values.get("spread_bps"), 4)),
                        plain(flags or "-", "yellow" if gap else "dim"),
                    ],
                )
            )
        table.sync(rows)
        log = self.query_one("#stream-notices", Log)
        for number_, line in snap["notices"]:
            if number_ > self.seen_notice:
                log.write_line(line)
                self.seen_notice = number_
        if chart_key is None and rows:
            self.chart_key = tuple(rows[0][0].split("|", 1))  # type: ignore[assignment]
            self.seen_version = -1  # take the chart's bars at the next tick
            return
        self.update_chart(chart_key, snap)

    def update_chart(self, chart_key: Any, snap: dict[str, Any]) -> None:
        """Rebuild the chart when its bars changed, at most once a second (plotext builds are not free)."""
        now = time.monotonic()
        switched = chart_key != self.chart_key
        if not chart_key or not snap["chart"]:
            return
        if not switched and (snap["chart_version"] == self.chart_version or now - self.chart_built_at < 1.0):
            if snap["chart_version"] != self.chart_version:
                self.seen_version = -1  # not yet: look again at the next tick
            return
        points = snap["chart"]
        label = f"{chart_key[0]} {chart_key[1]} close"
        self.query_one(Chart).set_line([p[0] for p in points], [p[1] for p in points], label)
        self.chart_key, self.chart_version, self.chart_built_at = chart_key, snap["chart_version"], now

    def show_counters(self, snap: dict[str, Any]) -> None:
        stats = snap["stats"] or {}
        engine = stats.get("engine", {})
        queues = stats.get("queues", [])
        events = int(engine.get("events_in", 0))
        last_events, last_at, rate = self.rate
        now = time.monotonic()
        if now - last_at >= 1.0:
            rate = (events - last_events) / (now - last_at) if last_events or events else 0.0
            self.rate = (events, now, rate)
        dropped = sum(int(q.get("dropped", 0)) for q in queues)
        lag = max([float(q.get("lag_ms", 0.0)) for q in queues] or [0.0])
        late = engine.get("late", 0)
        late_n = sum(late.values()) if isinstance(late, dict) else int(late or 0)
        p99 = engine.get("latency_p99_us")
        state = snap["state"]
        text = Text()
        text.append(state, style={"running": "green", "failed": "bold red"}.get(state, "yellow"))
        if snap["info"].get("source"):
            text.append(f" {snap['info'].get('source')}", style="bold")
        if snap["info"].get("speed"):
            text.append(f" {snap['info']['speed']}", style="dim")
        text.append(f" · events {count(events)} ({count(rate)}/s) · bars {snap['live_bars']}")
        if snap["warm_bars"]:
            text.append(f" (+{snap['warm_bars']} warm)", style="dim")
        text.append("\n")
        text.append(f"late {late_n} · ", style="yellow" if late_n else "")
        text.append(f"dropped {dropped}", style="red" if dropped else "")
        text.append(f" · lag {lag:.0f} ms · p99 {'-' if p99 is None else f'{p99 / 1000:.1f} ms'}")
        text.append(f" · disconnects {engine.get('disconnects', 0)}")
        if snap["error"]:
            text.append(f"\n{snap['error']}", style="red")
        self.query_one("#stream-counters", Static).update(text)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "stop" and not self.running:
            return None
        return super().check_action(action, parameters)
