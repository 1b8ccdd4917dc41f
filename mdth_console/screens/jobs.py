"""Jobs (every job with progress) and Job detail (per-shard progress, rate, ETA, heartbeat, errors; failed
units with reasons; a shard's log tail; retry, cancel, clean up)."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import DataTable, Log, Static, TabbedContent, TabPane

from mdth_console import jobactions
from mdth_console.format import (
    count,
    duration,
    human_bytes,
    job_state,
    plain,
    progress,
    state_text,
    timestamp,
)
from mdth_console.screens.base import BaseScreen
from mdth_console.widgets.table import KeyedTable


class JobsScreen(BaseScreen):
    MODE = "jobs"
    MAIN = "jobs-table"
    HELP = (
        "Every job in the lake, newest first, read from its records (so VM shards show exactly like local ones). "
        "Enter opens a job; / filters (e.g. 'running', '!done', 'download|candles')."
    )
    BINDINGS = [
        Binding("enter", "open_job", "Open", id="jobs.open"),
        Binding("c", "cancel_job", "Cancel", id="jobs.cancel"),
        Binding("r", "retry_job", "Retry", id="jobs.retry"),
        Binding("x", "cleanup_job", "Clean up", id="jobs.cleanup"),
    ]

    def compose_body(self) -> ComposeResult:
        with Vertical(id="jobs-body"):
            yield Static("reading job records…", id="jobs-summary")
            yield KeyedTable(
                [
                    ("job", "job", None),
                    ("state", "state", 9),
                    ("progress", "progress", None),
                    ("fail", "failed", 4),
                    ("ETA", "eta", 6),
                    ("shards", "shards", 6),
                    ("backend", "backend", 7),
                    ("rows", "rows", 7),
                    ("bytes", "bytes", 9),
                    ("created (UTC)", "created", 19),
                    ("by", "by", None),
                ],
                id="jobs-table",
            )

    def on_mount(self) -> None:
        self.statuses: dict[str, Any] = {}
        self.poll("jobs", lambda: self.backend.jobs(limit=100), self.show, 2.0)
        self.focus_main()

    def show(self, jobs: list[Any]) -> None:
        self.statuses = {j.job_id: j for j in jobs}
        self.app.known_jobs = list(self.statuses)  # type: ignore[attr-defined]
        rows = []
        for j in jobs:
            spec = j.spec
            rows.append(
                (
                    j.job_id,
                    [
                        plain(j.job_id),
                        state_text(job_state(j)),
                        progress(j.units_done, j.units_total),
                        plain(str(j.units_failed), "red" if j.units_failed else "dim"),
                        plain(duration(j.eta_s) if not j.finished else "-"),
                        plain(str(spec.shards)),
                        plain(spec.backend),
                        plain(count(j.rows)),
                        plain(human_bytes(j.bytes)),
                        plain(timestamp(spec.created_at)),
                        plain(spec.created_by),
                    ],
                )
            )
        self.query_one(KeyedTable).sync(rows)
        running = sum(1 for j in jobs if not j.finished)
        failed = sum(1 for j in jobs if j.state == "failed")
        self.query_one("#jobs-summary", Static).update(
            Text(f"{len(jobs)} job(s) · {running} running · {failed} failed", style="bold")
            if jobs
            else Text("no jobs yet: launch one (3, or :launch download)", style="dim")
        )

    def selected(self) -> Any:
        key = self.query_one(KeyedTable).current_key
        return self.statuses.get(key) if key else None

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.run_worker(self.action_open_job(), exit_on_error=False)

    async def action_open_job(self) -> None:
        status = self.selected()
        if status is not None:
            await self.app.open_job(status.job_id)  # type: ignore[attr-defined]

    def action_cancel_job(self) -> None:
        status = self.selected()
        if status is not None:
            jobactions.cancel(self, status)

    def action_retry_job(self) -> None:
        status = self.selected()
        if status is not None:
            jobactions.retry(self, status.job_id)

    def action_cleanup_job(self) -> None:
        status = self.selected()
        if status is not None:
            jobactions.cleanup(self, status)

    def open_with(self, args: list[str]) -> None:
        from mdth_console.widgets.chrome import FilterBar

        text = " ".join(args)
        bar_ = self.query_one(FilterBar)
        bar_.value = text
        bar_.parent.add_class("-open")
        self.apply_filter(text)
        self.focus_main()


class JobDetailScreen(BaseScreen):
    """One job: its header, every shard's record, failed units and a shard's log tail."""

    MODE = "jobs"
    MAIN = "shards-table"
    HELP = (
        "One job. Each shard's state, progress, rate, ETA and last heartbeat come from the record its worker "
        "writes every few seconds; a running shard silent for 30 s shows as stale. r relaunches failed, dead or "
        "cancelled shards (their workers redo only unsettled units); s relaunches the selected shard."
    )
    BINDINGS = [
        Binding("escape", "back", "Back", id="job.back"),
        Binding("slash", "filter", "Filter", show=False, priority=True, id="job.filter"),
        Binding(
            "r", "retry_job", "Retry", tooltip="Relaunch failed, dead or cancelled shards", id="job.retry"
        ),
        Binding("s", "retry_shard", "Retry shard", show=False, id="job.retry_shard"),
        Binding("c", "cancel_job", "Cancel", id="job.cancel"),
        Binding("x", "cleanup_job", "Clean up", id="job.cleanup"),
        Binding("l", "show_tab('log')", "Log", id="job.log"),
        Binding("e", "show_tab('failures')", "Errors", show=False, id="job.errors"),
    ]

    def __init__(self, job_id: str) -> None:
        super().__init__()
        self.job_id = job_id
        self.status: Any = None
        self.log_lines: list[str] = []
        self.log_shard: int | None = None

    def compose_body(self) -> ComposeResult:
        with Vertical(id="job-body"):
            yield Static(Text(f"{self.job_id}: reading records…"), id="job-head")
            yield KeyedTable(
                [
                    ("#", "shard", 3),
                    ("state", "state", 9),
                    ("progress", "progress", None),
                    ("fail", "failed", 4),
                    ("rate", "rate", 10),
                    ("ETA", "eta", 6),
                    ("beat", "beat", 5),
                    ("try", "attempt", 3),
                    ("where", "where", None),
                    ("last error", "error", None),
                ],
                id="shards-table",
            )
            with TabbedContent(id="job-tabs", initial="failures"):
                with TabPane("failed units", id="failures"):
                    yield DataTable(id="failures-table", cursor_type="row")
                with TabPane("log (selected shard)", id="log"):
                    yield Log(id="job-log", max_lines=1000)

    def on_mount(self) -> None:
        table = self.query_one("#failures-table", DataTable)
        for label, key in (
            ("unit", "unit"),
            ("outcome", "outcome"),
            ("try", "attempt"),
            ("reason", "reason"),
        ):
            table.add_column(label, key=key)
        self.poll("job", lambda: self.backend.job(self.job_id), self.show, 1.0)
        self.poll("failures", lambda: self.backend.failures(self.job_id), self.show_failures, 3.0)
        self.poll("log", self.fetch_log, self.show_log, 2.0, when=self.log_visible)
        self.focus_main()

    # -- header and shards ---------------------------------------------------------------------------------
    def show(self, status: Any) -> None:
        self.status = status
        spec = status.spec
        req = spec.request
        days = (
            req.get("start")
            if req.get("start") == req.get("end")
            else f"{req.get('start')}..{req.get('end')}"
        )
        head = Text()
        head.append(spec.job_id, style="bold")
        head.append(f"  {spec.operation} {days}\n")
        head.append_text(state_text(job_state(status)))
        head.append(f"  {status.units_done}/{status.units_total} units  ")
        head.append(f"{status.units_failed} failed", style="red" if status.units_failed else "")
        head.append(f"  {human_bytes(status.bytes)}")
        rate = sum(s.rate_bytes_s for s in status.shards if s.state == "running")
        if not status.finished:
            head.append(f"  {human_bytes(rate)}/s  ETA {duration(status.eta_s)}")
        if status.cancel_requested:
            head.append("  cancel requested", style="yellow")
        outcomes = status.outcomes()
        third = ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items()))
        third = (third + " · " if third else "") + f"{count(status.rows)} rows"
        where = (
            f"{spec.shards} shard(s) on {spec.backend}, by {spec.created_by} at {timestamp(spec.created_at)}"
        )
        third = (third + " · " if third else "") + where
        head.append("\n" + third, style="dim")
        self.query_one("#job-head", Static).update(head)
        rows = []
        for shard in status.shards:
            view = status.shard_view(shard)
            state = "stale" if view["stale"] else shard.state
            age = view["heartbeat_age_s"]
            where = shard.vm or (f"{shard.host}:{shard.pid}" if shard.pid else shard.host)
            rows.append(
                (
                    str(shard.shard),
                    [
                        plain(str(shard.shard)),
                        state_text(state),
                        progress(shard.units_done, shard.units_total, 6),
                        plain(
                            str(shard.units_failed) if shard.units_failed else "-",
                            "red" if shard.units_failed else "dim",
                        ),
                        plain(f"{human_bytes(shard.rate_bytes_s)}/s" if shard.state == "running" else "-"),
                        plain(duration(view["eta_s"]) if not shard.final else "-"),
                        plain(duration(age) if age is not None else "-", "yellow" if view["stale"] else ""),
                        plain(str(shard.attempt)),
                        plain(where),
                        plain(shard.last_error, "red" if shard.last_error else ""),
                    ],
                )
            )
        self.query_one(KeyedTable).sync(rows)
        self.refresh_bindings()

    def show_failures(self, failures: list[dict[str, Any]]) -> None:
        table = self.query_one("#failures-table", DataTable)
        signature = tuple((f["unit_id"], f["outcome"], f.get("attempt")) for f in failures[:500])
        if getattr(self, "_failure_sig", None) == signature:
            return
        self._failure_sig = signature
        with self.app.batch_update():
            table.clear()
            for f in failures[:500]:
                table.add_row(
                    plain(f.get("reason") or "", "red"),
                    plain(f["unit_id"]),
                    plain(f["outcome"], "red"),
                    plain(str(f.get("attempt") or "")),
                )
        pane = self.query_one(TabbedContent).get_tab("failures")
        pane.label = f"failed units ({len(failures)})"

    # -- log -----------------------------------------------------------------------------------------------
    def log_visible(self) -> bool:
        return self.query_one(TabbedContent).active == "log"

    def selected_shard(self) -> int | None:
        key = self.query_one(KeyedTable).current_key
        return int(key) if key is not None else None

    def fetch_log(self) -> tuple[int, str]:
        shard = self.selected_shard() or 0
        return shard, self.backend.log(self.job_id, shard, 300)

    def show_log(self, result: tuple[int, str]) -> None:
        shard, text = result
        lines = text.splitlines() or [self.no_log(shard)]
        log = self.query_one(Log)
        if shard != self.log_shard or not self.log_lines:
            log.clear()
            log.write_lines(lines)
        else:
            new = _new_lines(self.log_lines, lines)
            if new is None:
                log.clear()
                log.write_lines(lines)
            elif new:
                log.write_lines(new)
        self.log_shard, self.log_lines = shard, lines

    def no_log(self, shard: int) -> str:
        """What an empty log means: not written yet while the shard runs; once it has finished, none was kept
        (a shard run in-process, as `mdth download` does, writes no worker log)."""
        records = [s for s in self.status.shards if s.shard == shard] if self.status is not None else []
        if not records or not records[0].final:
            return f"(no log for shard {shard} yet)"
        if records[0].state == "done":
            return f"(no log recorded for shard {shard}: it ran in-process)"
        return f"(no log recorded for shard {shard})"

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "shards-table" and self.log_visible():
            for poll in self.polls:
                if poll.name == "log":
                    poll.now()

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        if event.pane.id == "log":
            for poll in self.polls:
                if poll.name == "log":
                    poll.now()

    def action_show_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab

    # -- actions -------------------------------------------------------------------------------------------
    def action_back(self) -> None:
        self.app.pop_screen()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        allowed = super().check_action(action, parameters)
        if not allowed or self.status is None:
            return allowed
        if action == "cancel_job" and self.status.finished:
            return None
        if action == "retry_job" and self.status.state not in ("failed", "cancelled", "stale"):
            return None
        return True

    def action_retry_job(self) -> None:
        jobactions.retry(self, self.job_id)

    def action_retry_shard(self) -> None:
        shard = self.selected_shard()
        if shard is not None:
            jobactions.retry(self, self.job_id, [shard])

    def action_cancel_job(self) -> None:
        if self.status is not None:
            jobactions.cancel(self, self.status)

    def action_cleanup_job(self) -> None:
        if self.status is not None:
            jobactions.cleanup(self, self.status)

    def open_with(self, args: list[str]) -> None:
        pass


def _new_lines(old: list[str], new: list[str]) -> list[str] | None:
    """The lines of ``new`` after the end of ``old`` (a sliding tail), [] if unchanged, None if unrelated."""
    if new == old:
        return []
    if not old:
        return new
    anchor = old[-3:] if len(old) >= 3 else old
    for i in range(len(new) - len(anchor), -1, -1):
        if new[i : i + len(anchor)] == anchor:
            return new[i + len(anchor) :]
    return None
