"""Dashboard: what the lake holds, running and recent jobs with progress, recent failures, throughput."""

from __future__ import annotations

from collections import deque
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Label, Sparkline, Static

from mdth_console.format import (
    count,
    duration,
    human_bytes,
    job_state,
    plain,
    progress,
    short_job,
    state_text,
    timestamp,
)
from mdth_console.screens.base import BaseScreen
from mdth_console.widgets.table import KeyedTable

AREA_NAMES = {
    "raw_tick_data": "ticks",
    "processed_candles": "candles",
    "instrument_availability": "masters",
    "validation_reports": "reports",
    "_jobs": "jobs",
    "streaming": "live",
    "warehouse.duckdb": "warehouse",
}
FAILING_JOBS = 4  # failures are read from this many of the newest jobs that have any


def lake_text(o: dict[str, Any]) -> Text:
    """Three lines: where, what (days, venues, instruments, bytes), and bytes per area."""
    days = o["tick_days"]
    text = Text()
    text.append("lake ", style="bold")
    text.append(o["url"])
    text.append("\n")
    span = f" ({days[0]}..{days[-1]})" if days else ""
    text.append(f"{len(days)} day(s) of ticks{span} · {len(o['venues'])} venue(s) · ")
    text.append(f"{o['instruments_with_ticks']} instrument(s) with ticks")
    if o["instruments_listed"]:
        text.append(f" ({o['instruments_listed']:,} in the latest master)")
    text.append(f" · {human_bytes(o['bytes'])} in {o['files']:,} files\n", style="")
    parts = [f"{AREA_NAMES.get(a, a)} {human_bytes(v['bytes'])}" for a, v in o["areas"].items()]
    text.append(" · ".join(parts) if parts else "empty: launch a download (3) or run make demo", style="dim")
    if not o["tick_days"] and o["master_days"]:
        text.append(f"\nmaster built for {len(o['master_days'])} day(s), no ticks yet", style="yellow")
    return text


def job_cells(status: Any) -> list[Any]:
    return [
        plain(status.job_id),
        state_text(job_state(status)),
        progress(status.units_done, status.units_total),
        plain(str(status.units_failed), "red" if status.units_failed else "dim"),
        plain(duration(status.eta_s) if not status.finished else "-"),
    ]


class DashboardScreen(BaseScreen):
    MODE = "dashboard"
    MAIN = "dash-jobs"
    HELP = (
        "What the lake holds, the jobs running now and lately (Enter opens one), the failures they recorded, "
        "and how many bytes per second running shards write. Refreshes every 2 s (the lake every 15 s)."
    )
    BINDINGS = [Binding("enter", "open_job", "Open job", show=True, id="dashboard.open")]

    def __init__(self) -> None:
        super().__init__()
        self.rates: deque[float] = deque([0.0] * 60, maxlen=60)

    def compose_body(self) -> ComposeResult:
        with Vertical(id="dash"):
            yield Static("reading the lake…", id="dash-lake")
            with Horizontal(id="dash-rate-row"):
                yield Label("throughput ", id="dash-rate-label")
                yield Sparkline(list(self.rates), id="dash-rate")
                yield Static("idle", id="dash-rate-now")
            yield Label("jobs: running and recent (Enter opens)", classes="section")
            yield KeyedTable(
                [
                    ("job", "job", None),
                    ("state", "state", 9),
                    ("progress", "progress", None),
                    ("fail", "failed", 4),
                    ("ETA", "eta", 6),
                ],
                id="dash-jobs",
            )
            yield Label("recent failures", classes="section")
            failures = DataTable(id="dash-failures", cursor_type="row", show_cursor=False)
            yield failures

    def on_mount(self) -> None:
        table = self.query_one("#dash-failures", DataTable)
        table.add_column("when (UTC)", key="when", width=11)
        table.add_column("reason", key="reason", width=max(34, self.app.size.width - 50))
        table.add_column("job / unit", key="what")
        self.poll("lake", self.backend.overview, self.show_lake, 15.0)
        self.poll("jobs", self.fetch_jobs, self.show_jobs, 2.0)
        self.focus_main()

    # -- lake ----------------------------------------------------------------------------------------------
    def show_lake(self, overview: dict[str, Any]) -> None:
        self.query_one("#dash-lake", Static).update(lake_text(overview))
        self.app.known_keys = overview["tick_keys"]  # type: ignore[attr-defined]

    # -- jobs ----------------------------------------------------------------------------------------------
    def fetch_jobs(self) -> dict[str, Any]:
        """Newest jobs, and failures (units and dead shards) of the newest jobs that have any."""
        jobs = self.backend.jobs(limit=12)
        failures: list[tuple[str, str, str, str]] = []
        failing = [j for j in jobs if j.units_failed or any(s.state in ("failed", "dead") for s in j.shards)]
        for status in failing[:FAILING_JOBS]:
            for row in self.backend.failures(status.job_id)[:10]:
                failures.append(
                    (
                        timestamp(row.get("finished_at")),
                        status.job_id,
                        row["unit_id"],
                        row.get("reason") or row["outcome"],
                    )
                )
            for shard in status.shards:
                if shard.state in ("failed", "dead") and shard.last_error:
                    when = timestamp(shard.finished_at or shard.updated_at)
                    failures.append((when, status.job_id, f"shard {shard.shard}", shard.last_error))
        failures.sort(reverse=True)
        return {"jobs": jobs, "failures": failures[:20]}

    def show_jobs(self, data: dict[str, Any]) -> None:
        jobs = data["jobs"]
        self.app.known_jobs = [j.job_id for j in jobs]  # type: ignore[attr-defined]
        running = [j for j in jobs if not j.finished]
        shown = running + [j for j in jobs if j.finished][: max(0, 8 - len(running))]
        self.query_one(KeyedTable).sync([(j.job_id, job_cells(j)) for j in shown])
        rate = sum(s.rate_bytes_s for j in running for s in j.shards if s.state == "running")
        self.rates.append(rate)
        self.query_one("#dash-rate", Sparkline).data = list(self.rates)
        now = self.query_one("#dash-rate-now", Static)
        units = sum(s.rate_units_s for j in running for s in j.shards if s.state == "running")
        now.update(
            Text(f"{human_bytes(rate)}/s · {count(units)} units/s · {len(running)} running")
            if running
            else Text("idle: no job running", style="dim")
        )
        table = self.query_one("#dash-failures", DataTable)
        rows = data["failures"]
        signature = tuple(rows)
        if getattr(table, "_signature", None) != signature:
            table._signature = signature  # type: ignore[attr-defined]
            with self.app.batch_update():
                table.clear()
                if not rows:
                    table.add_row(plain("-", "dim"), plain("none recorded", "dim"), plain(""))
                for when, job, what, reason in rows:
                    table.add_row(plain(when[5:16]), plain(reason, "red"), plain(f"{short_job(job)} {what}"))

    async def action_open_job(self) -> None:
        key = self.query_one(KeyedTable).current_key
        if key:
            await self.app.open_job(key)  # type: ignore[attr-defined]

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "dash-jobs":
            event.stop()
            self.run_worker(self.action_open_job(), exit_on_error=False)

    def open_with(self, args: list[str]) -> None:
        pass
