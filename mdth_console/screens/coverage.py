"""Coverage: the lake's ledger as a days x instruments (or data types) grid, coloured by outcome, with the
reasons of the highlighted cell below, and "fix" to launch downloads of what is missing or broken."""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from mdth_console.format import count, first_line, plain
from mdth_console.screens.base import BaseScreen
from mdth_console.widgets.table import row_matches

# Cell kinds, worst first; a grouped cell shows its worst member. (glyph, style, legend)
KINDS: dict[str, tuple[str, str, str]] = {
    "no_master": ("M", "bold red", "no master"),
    "corrupt": ("✗", "bold red", "corrupt"),
    "missing": ("✗", "bold red", "missing"),
    "failed": ("✗", "red", "failed"),
    "bad_content": ("◆", "bold red", "bad content"),
    "unauthorized": ("!", "magenta", "refused"),
    "never_attempted": ("?", "yellow", "never tried"),
    "not_exported": ("…", "cyan", "not yet"),
    "warn": ("▓", "yellow", "warning"),
    "not_found": ("·", "bright_black", "404"),
    "empty": ("░", "bright_black", "empty"),
    "present": ("█", "green", "ok"),
}
RANK = {kind: i for i, kind in enumerate(KINDS)}
GAPS = {"no_master", "corrupt", "missing", "failed", "bad_content", "unauthorized", "never_attempted"}


def cell_kind(row: dict[str, Any]) -> str:
    cls = row["class"]
    if cls in ("present", "empty") and row.get("content") == "error":
        return "bad_content"
    if cls == "present" and row.get("content") == "warn":
        return "warn"
    return cls if cls in KINDS else "failed"


def legend() -> Text:
    text = Text()
    shown = (
        "present",
        "empty",
        "missing",
        "bad_content",
        "never_attempted",
        "unauthorized",
        "not_exported",
        "not_found",
    )
    for kind in shown:
        glyph, style, label = KINDS[kind]
        text.append(glyph, style=style)
        text.append(f" {label} ", style="dim")
    return text


class CoverageScreen(BaseScreen):
    MODE = "coverage"
    MAIN = "cov-grid"
    HELP = (
        "Each cell is one day of one instrument (g: of one data type), coloured by the worst of what the lake "
        "holds there: files present or empty at the source, or gaps (missing, corrupt, failed, refused, never "
        "tried) and content errors from the latest validation. The table below gives the reasons of the cell "
        "under the cursor. f downloads what the cell lacks, F every gap in view (asks first). a switches "
        "between the instruments and data types the lake holds and the whole instrument master; "
        ":coverage START END TYPES picks days and data types; [ ] move the days."
    )
    BINDINGS = [
        Binding("g", "toggle_group", "Group", id="coverage.group"),
        Binding("a", "toggle_scope", "Scope", id="coverage.scope"),
        Binding("f", "fix_cell", "Fix cell", id="coverage.fix"),
        Binding("F", "fix_all", "Fix all", id="coverage.fix_all"),
        Binding("left_square_bracket", "shift(-1)", "Earlier", show=False, id="coverage.earlier"),
        Binding("right_square_bracket", "shift(1)", "Later", show=False, id="coverage.later"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.start: dt.date | None = None
        self.end: dt.date | None = None
        self.scope = "ticks"  # or "master"
        self.group = "instrument"  # or "data_type"
        self.rows: list[dict[str, Any]] = []
        self.cells: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.row_keys: list[str] = []
        self.days: list[str] = []
        self.filter_text = ""
        self.symbols: list[str] = []
        self.data_types: list[str] = []  # chosen with :coverage START END TYPES; default: what the lake holds
        self.shown_types: list[str] = []

    def compose_body(self) -> ComposeResult:
        with Vertical(id="cov-body"):
            yield Static(Text("computing coverage…", style="dim"), id="cov-head")
            yield DataTable(id="cov-grid", cursor_type="cell", zebra_stripes=False)
            yield Static(legend(), id="cov-legend")
            yield DataTable(id="cov-detail", cursor_type="row", show_cursor=False)

    def on_mount(self) -> None:
        detail = self.query_one("#cov-detail", DataTable)
        for label, key in (
            ("data type", "dt"),
            ("class", "cls"),
            ("detail", "detail"),
            ("rows", "rows"),
            ("content", "content"),
            ("instrument", "key"),
        ):
            detail.add_column(label, key=key)
        self.cov_poll = self.poll("coverage", self.fetch, self.show, 20.0)
        self.focus_main()

    # -- data ----------------------------------------------------------------------------------------------
    def fetch(self) -> dict[str, Any]:
        days = self.backend.built_days()
        start, end = self.start, self.end
        if start is None or end is None:
            if not days:
                return {"rows": [], "start": None, "end": None, "symbols": []}
            end = days[-1]
            start = max(days[0], end - dt.timedelta(days=13))
        symbols: list[str] = []
        data_types = list(self.data_types)
        if self.scope == "ticks":
            overview = self.backend.overview()
            symbols = overview["tick_keys"]
            data_types = data_types or overview.get("tick_data_types", [])
            if not symbols:
                return {"rows": [], "start": start, "end": end, "symbols": [], "data_types": data_types}
        rows = self.backend.coverage(start, end, symbols=symbols, data_types=data_types)
        return {"rows": rows, "start": start, "end": end, "symbols": symbols, "data_types": data_types}

    def show(self, data: dict[str, Any]) -> None:
        self.rows, self.start, self.end, self.symbols = (
            data["rows"],
            data["start"],
            data["end"],
            data["symbols"],
        )
        self.shown_types = data.get("data_types") or []
        self.cells = defaultdict(list)
        for row in self.rows:
            label = (
                (row["instrument_key"] or "(whole day)")
                if self.group == "instrument"
                else (row["data_type"] or "(whole day)")
            )
            self.cells[(label, str(row["day"]))].append(row)
        self.days = sorted({str(r["day"]) for r in self.rows}) or (
            [str(self.start + dt.timedelta(days=i)) for i in range((self.end - self.start).days + 1)]
            if self.start and self.end
            else []
        )
        self.render_grid()
        self.render_head()

    def render_head(self) -> None:
        head = self.query_one("#cov-head", Static)
        if self.start is None:
            head.update(
                Text(
                    "no instrument master in this lake yet: launch instruments or a pipeline (3)",
                    style="yellow",
                )
            )
            return
        kinds = Counter(cell_kind(r) for r in self.rows)
        gaps = sum(v for k, v in kinds.items() if k in GAPS)
        text = Text(f"{self.start}..{self.end}", style="bold")
        scope = f"{len(self.symbols)} instrument(s) with ticks" if self.scope == "ticks" else "whole master"
        types = ",".join(self.shown_types) if self.shown_types else "default data types"
        if len(types) > 24:
            types = f"{len(self.shown_types)} data types"
        text.append(
            f" · {scope} · {types} · rows: {'instruments' if self.group == 'instrument' else 'data types'}"
        )
        text.append(f" · {count(len(self.rows))} file(s) expected · ")
        text.append(f"{gaps} gap(s)", style="bold red" if gaps else "green")
        if kinds.get("empty"):
            text.append(f" · {kinds['empty']} empty", style="dim")
        if not self.rows:
            text.append(
                "\nnothing expected here: a for the whole master, or download some ticks first",
                style="yellow",
            )
        head.update(text)

    def render_grid(self) -> None:
        table = self.query_one("#cov-grid", DataTable)
        labels = sorted({label for label, _ in self.cells})
        if self.filter_text:
            labels = [label for label in labels if row_matches(label, self.filter_text)]
        cursor = table.cursor_coordinate
        with self.app.batch_update():
            table.clear(columns=True)
            width = max([len(label) for label in labels] + [10])
            table.add_column(
                "instrument" if self.group == "instrument" else "data type", key="label", width=min(width, 36)
            )
            for day in self.days:
                table.add_column(day[5:], key=day, width=5)
            for label in labels:
                cells: list[Any] = [plain(label)]
                for day in self.days:
                    members = self.cells.get((label, day))
                    if not members:
                        cells.append(plain("  ", "dim"))
                        continue
                    worst = min((cell_kind(r) for r in members), key=RANK.__getitem__)
                    glyph, style, _ = KINDS[worst]
                    cells.append(Text(f"  {glyph}", style=style))
                table.add_row(*cells, key=label)
        self.row_keys = labels
        if labels:
            table.move_cursor(
                row=min(cursor.row, len(labels) - 1),
                column=max(1, min(cursor.column, len(self.days))),
                animate=False,
            )
        self.show_detail()

    def current_cell(self) -> tuple[str, str] | None:
        table = self.query_one("#cov-grid", DataTable)
        row, column = table.cursor_coordinate
        if not self.row_keys or row >= len(self.row_keys) or column < 1 or column > len(self.days):
            return None
        return self.row_keys[row], self.days[column - 1]

    def show_detail(self) -> None:
        detail = self.query_one("#cov-detail", DataTable)
        cell = self.current_cell()
        members = self.cells.get(cell, []) if cell else []
        members = sorted(members, key=lambda r: (RANK[cell_kind(r)], r["instrument_key"], r["data_type"]))
        with self.app.batch_update():
            detail.clear()
            for r in members:
                kind = cell_kind(r)
                glyph, style, _ = KINDS[kind]
                detail.add_row(
                    plain(r["data_type"]),
                    Text(f"{glyph} {r['class']}", style=style),
                    plain(r.get("detail") or ""),
                    plain("-" if r.get("rows") is None else f"{r['rows']:,}"),
                    plain(r.get("content") or "-"),
                    plain(r["instrument_key"]),
                )

    def on_data_table_cell_highlighted(self, event: DataTable.CellHighlighted) -> None:
        if event.data_table.id == "cov-grid":
            self.show_detail()

    def apply_filter(self, text: str) -> None:
        self.filter_text = text
        self.render_grid()

    # -- controls ------------------------------------------------------------------------------------------
    def action_toggle_group(self) -> None:
        self.group = "data_type" if self.group == "instrument" else "instrument"
        self.show(
            {
                "rows": self.rows,
                "start": self.start,
                "end": self.end,
                "symbols": self.symbols,
                "data_types": self.shown_types,
            }
        )

    def action_toggle_scope(self) -> None:
        self.scope = "master" if self.scope == "ticks" else "ticks"
        self.query_one("#cov-head", Static).update(Text("computing coverage…", style="dim"))
        self.cov_poll.now()

    def action_shift(self, days: int) -> None:
        if self.start is None or self.end is None:
            return
        delta = dt.timedelta(days=days)
        self.start, self.end = self.start + delta, self.end + delta
        self.cov_poll.now()

    def open_with(self, args: list[str]) -> None:
        """``:coverage START [END] [DATA_TYPES]``."""
        dates = [a for a in args if a[:1].isdigit()]
        others = [a for a in args if not a[:1].isdigit()]
        try:
            start = dt.date.fromisoformat(dates[0]) if dates else self.start
            end = dt.date.fromisoformat(dates[1]) if len(dates) > 1 else start
        except ValueError:
            self.show_error(f"dates look like 2024-03-01, not {' '.join(dates)!r}")
            return
        if others:
            self.data_types = [t.strip() for t in ",".join(others).split(",") if t.strip()]
        if start is None or end is None:
            self.cov_poll.now()
            return
        if end < start:
            start, end = end, start
        self.start, self.end = start, end
        self.cov_poll.now()

    # -- fix -----------------------------------------------------------------------------------------------
    def action_fix_cell(self) -> None:
        cell = self.current_cell()
        self._fix(self.cells.get(cell, []) if cell else [], f"{cell[0]} on {cell[1]}" if cell else "")

    def action_fix_all(self) -> None:
        labels = set(self.row_keys)
        rows = [r for (label, _), members in self.cells.items() if label in labels for r in members]
        self._fix(rows, "every gap in view")

    def _fix(self, rows: list[dict[str, Any]], what: str) -> None:
        if self.read_only or not rows:
            return
        gaps = [r for r in rows if cell_kind(r) in GAPS]
        if not gaps:
            self.notify(
                f"nothing to fix in {what}: every file is present, empty or not at the source", markup=False
            )
            return

        def work() -> tuple[list[Any], list[str]]:
            base = self.backend.request(
                "download",
                {
                    "start": self.start,
                    "end": self.end,
                    "symbols": self.symbols,
                    "data_types": self.shown_types,
                },
            )
            requests = self.backend.fix_requests(gaps, base)
            return requests, [self.backend.command_line(r, 1, "local") for r in requests]

        def confirm(result: tuple[list[Any], list[str]]) -> None:
            from mdth_console.screens.modals import ConfirmScreen

            requests, lines = result
            if not requests:
                self.notify("nothing a download would fix there", markup=False)
                return
            days = sum(1 for r in gaps if r["class"] == "no_master")
            files = len(gaps) - days
            parts = ([f"{files} file(s)"] if files else []) + (
                [f"{days} day(s) without a master"] if days else []
            )
            body = f"{' and '.join(parts)} in {what}: {len(requests)} download job(s)\n" + "\n".join(
                "$ " + line for line in lines[:6]
            )
            if len(lines) > 6:
                body += f"\n… and {len(lines) - 6} more"
            self.app.push_screen(
                ConfirmScreen("Download what is missing?", body, yes="Download"),
                lambda yes: self._launch_fixes(requests) if yes else None,
            )

        self._in_thread("fix plan", work, confirm)

    def _launch_fixes(self, requests: list[Any]) -> None:
        def work() -> list[str]:
            return [self.backend.launch(r, 1, "local")["job_id"] for r in requests]

        def done(job_ids: list[str]) -> None:
            self.notify(f"launched {len(job_ids)} download job(s): {', '.join(job_ids[:3])}", markup=False)
            if len(job_ids) == 1:
                self.run_worker(self.app.open_job(job_ids[0]), exit_on_error=False)  # type: ignore[attr-defined]

        self._in_thread("fix", work, done)

    def _in_thread(self, name: str, fn: Any, done: Any) -> None:
        def work() -> None:
            try:
                result, ok = fn(), True
            except Exception as exc:
                result, ok = exc, False
            self.app.call_from_thread(
                lambda: done(result) if ok else self.show_error(first_line(result), name)
            )

        self.run_worker(work, thread=True, group=name, exit_on_error=False)
