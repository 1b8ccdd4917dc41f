"""Instrument inspector: fuzzy search of the master, then the definition, the availability calendar per data
type, the last ticks, and a candle chart of the day (built once per change into a Static)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Input, OptionList, Static, TabbedContent, TabPane
from textual.widgets.option_list import Option

from mdth_console.format import first_line, number, plain, timestamp
from mdth_console.fuzzy import search
from mdth_console.screens.base import BaseScreen
from mdth_console.widgets.chart import Chart

CHART_TIMEFRAMES = ("1h", "15m", "5m", "4h")
TICK_PREFERENCE = ("trades", "book_snapshot_5", "derivative_ticker", "options_chain", "liquidations")
TICK_COLUMNS = (
    "local_timestamp",
    "timestamp",
    "side",
    "price",
    "amount",
    "bid_price_1",
    "ask_price_1",
    "mark_price",
    "funding_rate",
    "open_interest",
    "symbol",
)


def _cell(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.strftime("%H:%M:%S.%f")[:-3] if value.tzinfo else str(value)
    if isinstance(value, float):
        return number(value, 8)
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return "-" if value is None else str(value)


class InspectorScreen(BaseScreen):
    MODE = "inspect"
    MAIN = "insp-results"
    HELP = (
        "Type to search the instrument master of the day (fuzzy: 'btc perp deribit', 'ethusdt'); Enter shows "
        "an instrument: its definition, which data types the lake holds per day, the day's last ticks (d picks "
        "the data type) and a candle chart of the day (t cycles the timeframe). n moves between these tabs; [ and ] "
        "move the day."
    )
    BINDINGS = [
        Binding("slash", "filter", "Search", priority=True, id="inspect.search"),
        Binding("n", "next_tab", "Next tab", id="inspect.tab"),
        Binding("t", "cycle_timeframe", "Timeframe", id="inspect.timeframe"),
        Binding("d", "cycle_data_type", "Data type", show=False, id="inspect.data_type"),
        Binding("left_square_bracket", "shift(-1)", "Prev day", show=False, id="inspect.prev"),
        Binding("right_square_bracket", "shift(1)", "Next day", show=False, id="inspect.next"),
        Binding("escape", "leave_search", "List", show=False, id="inspect.leave"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.days: list[dt.date] = []
        self.day: dt.date | None = None
        self.master: list[dict[str, Any]] = []
        self.key: str | None = None
        self.timeframe = CHART_TIMEFRAMES[0]
        self.data_type: str | None = None
        self.report: dict[str, Any] | None = None
        self.generation = 0
        self._search_timer: Any = None

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="insp-body"):
            with Vertical(id="insp-left"):
                search_box = Input(placeholder="search: btc perp deribit", id="insp-search", compact=True)
                search_box.cursor_blink = False
                yield search_box
                yield OptionList(id="insp-results")
                yield Static("", id="insp-count")
            with Vertical(id="insp-right"):
                yield Static(
                    Text("pick an instrument on the left (/ searches)", style="dim"), id="insp-title"
                )
                yield Static("", id="insp-error")
                with TabbedContent(id="insp-tabs", initial="tab-def"):
                    with TabPane("definition", id="tab-def"):
                        yield DataTable(id="insp-def", show_header=False, cursor_type="row")
                    with TabPane("calendar", id="tab-cal"):
                        yield DataTable(id="insp-cal", cursor_type="row")
                    with TabPane("ticks", id="tab-ticks"):
                        yield DataTable(id="insp-ticks", cursor_type="row")
                    with TabPane("chart", id="tab-chart"):
                        yield Static("", id="insp-chart-caption")
                        yield Chart("no candles for this day", id="insp-chart")

    def on_mount(self) -> None:
        self.load_master(None)
        self.focus_main()

    # -- the master and search -----------------------------------------------------------------------------
    def load_master(self, day: dt.date | None, then_key: str | None = None) -> None:
        def work() -> None:
            try:
                days = self.backend.built_days()
                chosen = day or (days[-1] if days else None)
                master = self.backend.instrument_keys(chosen) if chosen else []
                result, ok = (days, chosen, master), True
            except Exception as exc:
                result, ok = exc, False
            self.app.call_from_thread(self._master_loaded, result, ok, then_key)

        self.query_one("#insp-count", Static).update(Text("reading the master…", style="dim"))
        self.run_worker(work, thread=True, group="inspect-master", exit_on_error=False)

    def _master_loaded(self, result: Any, ok: bool, then_key: str | None) -> None:
        if not ok:
            self.query_one("#insp-count", Static).update(Text(first_line(result), style="red"))
            return
        self.days, self.day, self.master = result
        if self.day is None:
            self.query_one("#insp-count", Static).update(
                Text("no instrument master yet: launch instruments (3)", style="yellow")
            )
            return
        self.run_search()
        if then_key:
            self.select_key(then_key)
        elif self.key:
            self.load_key(self.key)

    @on(Input.Changed, "#insp-search")
    def _search_changed(self) -> None:
        if self._search_timer is not None:
            self._search_timer.stop()
        self._search_timer = self.set_timer(0.15, self.run_search)

    @on(Input.Submitted, "#insp-search")
    def _search_submitted(self) -> None:
        if self._search_timer is not None:
            self._search_timer.stop()
        self.run_search()  # what was typed, even if the debounced search has not run yet
        results = self.query_one(OptionList)
        if results.option_count:
            results.highlighted = 0
            results.focus()
            self.select_key(results.get_option_at_index(0).id or "")

    def run_search(self) -> None:
        query = self.query_one("#insp-search", Input).value
        hits = search(query, self.master, limit=200, held=set(getattr(self.app, "known_keys", [])))
        results = self.query_one(OptionList)
        options = []
        for row in hits:
            prompt = Text(row["instrument_key"], no_wrap=True, overflow="ellipsis")
            prompt.append(f" {row.get('tardis_symbol') or ''}", style="dim")
            options.append(Option(prompt, id=row["instrument_key"]))
        with self.app.batch_update():
            results.clear_options()
            results.add_options(options)
            if options:
                results.highlighted = 0
        self.query_one("#insp-count", Static).update(
            Text(
                f"{len(hits)}{'+' if len(hits) == 200 else ''} of {len(self.master):,} on {self.day}",
                style="dim",
            )
        )

    def action_filter(self) -> None:
        self.set_focus(self.query_one("#insp-search", Input))

    def action_leave_search(self) -> None:
        self.query_one(OptionList).focus()

    @on(OptionList.OptionSelected, "#insp-results")
    def _picked(self, event: OptionList.OptionSelected) -> None:
        if event.option.id:
            self.select_key(event.option.id)

    # -- one instrument ------------------------------------------------------------------------------------
    def select_key(self, key: str) -> None:
        self.key = key
        self.data_type = None
        self.load_key(key)

    def open_with(self, args: list[str]) -> None:
        key = args[0].upper()
        day = None
        if len(args) > 1:
            try:
                day = dt.date.fromisoformat(args[1])
            except ValueError:
                self.show_error(f"dates look like 2024-03-01, not {args[1]!r}")
                return
        self.query_one("#insp-search", Input).value = key
        if day and day != self.day:
            self.load_master(day, then_key=key)
        else:
            self.select_key(key)

    def load_key(self, key: str) -> None:
        self.generation += 1
        generation, day, tf, data_type = self.generation, self.day, self.timeframe, self.data_type
        self.query_one("#insp-title", Static).update(Text(f"{key}: reading…", style="dim"))

        def work() -> None:
            out: dict[str, Any] = {}
            try:
                out["report"] = self.backend.inspect(key, day)
            except Exception as exc:
                out["error"] = str(exc).strip() or type(exc).__name__  # all of it: shown wrapped
            else:
                today = out["report"]["calendar"][-1]["data"] if out["report"]["calendar"] else {}
                chosen = (
                    data_type
                    if data_type in today
                    else next((t for t in TICK_PREFERENCE if t in today), None)
                )
                chosen = chosen or next(iter(today), None)
                out["data_type"] = chosen
                if chosen:
                    try:
                        out["ticks"] = self.backend.last_ticks(key, chosen, out["report"]["date"])
                    except Exception as exc:
                        out["ticks_error"] = first_line(exc)
                try:
                    out["candles"] = self.backend.day_candles(key, tf, out["report"]["date"])
                except Exception as exc:
                    out["candles_error"] = first_line(exc)
            self.app.call_from_thread(self._key_loaded, generation, key, out)

        self.run_worker(work, thread=True, group="inspect-key", exit_on_error=False)

    def _key_loaded(self, generation: int, key: str, out: dict[str, Any]) -> None:
        if generation != self.generation:
            return
        title = self.query_one("#insp-title", Static)
        error = self.query_one("#insp-error", Static)
        failed = "error" in out
        error.display, self.query_one("#insp-tabs").display = failed, not failed
        if failed:  # the title is one line: the reason goes below it, wrapped, where the tabs were
            title.update(Text(f"✗ {key}", style="bold red"))
            error.update(Text(out["error"], style="red"))
            return
        report = self.report = out["report"]
        self.data_type = out.get("data_type")
        head = Text(f"{report['date']} ", style="bold cyan")
        head.append(report["key"], style="bold")
        title.update(head)
        self.show_definition(report["definition"])
        self.show_calendar(report)
        self.show_ticks(out)
        self.show_candles(out)

    def show_definition(self, definition: dict[str, Any]) -> None:
        table = self.query_one("#insp-def", DataTable)
        rows = [
            (
                plain(name, "dim"),
                plain(_cell(value) if not isinstance(value, dt.datetime) else timestamp(value)),
            )
            for name, value in definition.items()
            if value not in (None, "", [])
        ]
        with self.app.batch_update():
            # Widths from the content now, not on the table's next idle: a busy app could show "instr" for a while.
            table.clear(columns=True)
            for key, column in (("field", 0), ("value", 1)):
                table.add_column(
                    key, key=key, width=max((r[column].cell_len for r in rows), default=len(key))
                )
            table.add_rows(rows)

    def show_calendar(self, report: dict[str, Any]) -> None:
        table = self.query_one("#insp-cal", DataTable)
        types = sorted(
            {t for day in report["calendar"] for t in day["data"]}
            | set(report["definition"].get("data_types") or [])
        )
        with self.app.batch_update():
            table.clear(columns=True)
            table.add_column("day", key="day")
            table.add_column("listed", key="listed")
            for t in types:
                table.add_column(t, key=t)
            for day in reversed(report["calendar"]):
                cells: list[Any] = [
                    plain(day["day"]),
                    plain("yes" if day["listed"] else "no", "" if day["listed"] else "dim"),
                ]
                for t in types:
                    item = day["data"].get(t)
                    if item is None:
                        cells.append(plain("·", "dim"))
                    elif item["rows"] == 0:
                        cells.append(plain("empty", "bright_black"))
                    else:
                        cells.append(plain(f"{item['rows']:,}", "green"))
                table.add_row(*cells)

    def show_ticks(self, out: dict[str, Any]) -> None:
        table = self.query_one("#insp-ticks", DataTable)
        rows = out.get("ticks") or []
        with self.app.batch_update():
            table.clear(columns=True)
            if not rows:
                table.add_column("ticks", key="none")
                table.add_row(
                    plain(
                        out.get("ticks_error") or f"no ticks of this instrument on {self.report['date']}",
                        "dim",
                    )
                )
                return
            columns = [c for c in TICK_COLUMNS if c in rows[0]] or list(rows[0])[:8]
            for c in columns:
                table.add_column(c, key=c)
            for row in reversed(rows):
                table.add_row(*[plain(_cell(row.get(c))) for c in columns])
        pane = self.query_one(TabbedContent).get_tab("tab-ticks")
        pane.label = f"ticks ({out['data_type']})"

    def show_candles(self, out: dict[str, Any]) -> None:
        chart = self.query_one(Chart)
        caption = self.query_one("#insp-chart-caption", Static)
        candles = out.get("candles")
        caption.update(
            Text(f"{self.timeframe} candles of {self.report['date']} (UTC) · t: timeframe", style="dim")
        )
        if not candles or not candles["timestamp"]:
            chart.clear_chart(out.get("candles_error") or "no candles for this day (run candles)")
            return
        times = [
            int(t.timestamp() * 1e6) if isinstance(t, dt.datetime) else int(t) for t in candles["timestamp"]
        ]
        chart.set_candles(times, candles["open"], candles["high"], candles["low"], candles["close"])

    # -- controls ------------------------------------------------------------------------------------------
    def action_next_tab(self) -> None:
        tabs = self.query_one(TabbedContent)
        order = ["tab-def", "tab-cal", "tab-ticks", "tab-chart"]
        tabs.active = order[(order.index(tabs.active) + 1) % len(order)] if tabs.active in order else order[0]

    def action_cycle_timeframe(self) -> None:
        self.timeframe = CHART_TIMEFRAMES[
            (CHART_TIMEFRAMES.index(self.timeframe) + 1) % len(CHART_TIMEFRAMES)
        ]
        self.query_one(TabbedContent).active = "tab-chart"
        if self.key:
            self.load_key(self.key)

    def action_cycle_data_type(self) -> None:
        if not self.report or not self.report["calendar"]:
            return
        present = list(self.report["calendar"][-1]["data"])
        if not present:
            return
        at = present.index(self.data_type) if self.data_type in present else -1
        self.data_type = present[(at + 1) % len(present)]
        self.query_one(TabbedContent).active = "tab-ticks"
        if self.key:
            self.load_key(self.key)

    def action_shift(self, step: int) -> None:
        if not self.days or self.day is None:
            return
        later = [d for d in self.days if (d > self.day if step > 0 else d < self.day)]
        if not later:
            self.notify("no other day with an instrument master that way", timeout=3)
            return
        self.load_master(later[0] if step > 0 else later[-1], then_key=self.key)
