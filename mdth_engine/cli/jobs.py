"""`mdth jobs list|show|watch|cancel|retry|cleanup|logs`, and ``launch_and_follow`` for stage commands.

Everything here reads the job records in the lake, so it works from any machine that can read the store.
`watch` draws a table updated in place (rich Live, 4 Hz) on a terminal, plain lines otherwise, and the
same information as NDJSON events with ``--json``.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Annotated, Any

import typer

from mdth_engine.cli.common import (
    JsonOpt,
    LakeOpt,
    human_bytes,
    is_tty,
    json_mode,
    print_json,
    print_rows,
    settings_for,
)
from mdth_engine.core.errors import MdthError, UsageError
from mdth_engine.core.events import Event, Kind, Sink

app = typer.Typer(help="Sharded jobs: list, show, watch, cancel, retry, clean up.", no_args_is_help=True)

JobArg = Annotated[str, typer.Argument(help="Job id (see mdth jobs list).")]


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def _rate(bytes_s: float | None) -> str:
    return f"{human_bytes(bytes_s)}/s" if bytes_s else "-"


# --- rendering -----------------------------------------------------------------------------------------------


class JobView:
    """The latest shard views of one job, fed by follow events; a rich renderable drawn at every refresh.

    Ages and ETAs are computed at draw time from when each record was written, so they tick smoothly
    between polls.
    """

    def __init__(self, job_id: str = "") -> None:
        self.job_id = job_id
        self.operation = ""
        self.shards: dict[int, dict[str, Any]] = {}
        self.job: dict[str, Any] = {}
        self.received: dict[int, float] = {}
        self._lock = threading.Lock()  # fed by the follow loop, drawn by Live's refresh thread

    def __call__(self, ev: Event) -> None:
        with self._lock:
            if ev.kind is Kind.STARTED:
                self.job_id = ev.job or self.job_id
                self.operation = ev.stage
            if ev.kind is Kind.PROGRESS and "shard" in ev.data:
                self.shards[int(ev.data["shard"])] = dict(ev.data)
                self.received[int(ev.data["shard"])] = time.time()
            elif ev.kind in (Kind.PROGRESS, Kind.FINISHED) and ev.data:
                self.job = dict(ev.data)

    def rows(self, now: float | None = None) -> list[dict[str, Any]]:
        now = now or time.time()
        with self._lock:
            shards = {k: dict(v) for k, v in self.shards.items()}
            received = dict(self.received)
        out = []
        for shard in sorted(shards):
            view = shards[shard]
            waited = now - received.get(shard, now)
            updated = view.get("updated_at") or 0
            eta = view.get("eta_s")
            if eta is not None and view.get("state") == "running":
                eta = max(0.0, eta - waited)
            out.append(
                {
                    "shard": shard,
                    "state": ("stale" if view.get("stale") else view.get("state", "")),
                    "attempt": view.get("attempt", 0),
                    "units": f"{view.get('units_done', 0)}/{view.get('units_total', 0)}",
                    "failed": view.get("units_failed", 0),
                    "rows": view.get("rows", 0),
                    "bytes": human_bytes(view.get("bytes", 0)),
                    "rate": _rate(view.get("rate_bytes_s")) if view.get("state") == "running" else "-",
                    "eta": fmt_duration(eta) if view.get("state") not in ("done",) else "0s",
                    "heartbeat": fmt_duration(now - updated) + " ago" if updated else "-",
                    "where": view.get("vm")
                    or (f"{view.get('host')}:{view.get('pid')}" if view.get("pid") else ""),
                    "last_error": view.get("last_error", ""),
                }
            )
        return out

    def __rich__(self) -> Any:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        table = Table(show_edge=False, pad_edge=False, header_style="bold", expand=False)
        columns = [
            "shard",
            "state",
            "attempt",
            "units",
            "failed",
            "rows",
            "bytes",
            "rate",
            "eta",
            "heartbeat",
        ]
        for c in columns:
            table.add_column(c, justify="right" if c not in ("state",) else "left", no_wrap=True)
        table.add_column("where", no_wrap=True, max_width=28, overflow="ellipsis")
        table.add_column("last error", no_wrap=True, max_width=60, overflow="ellipsis")
        colours = {"done": "green", "failed": "red", "dead": "red", "stale": "yellow", "cancelled": "yellow"}
        for row in self.rows():
            cells = [Text(str(row[c])) for c in columns]
            cells[1].stylize(colours.get(row["state"], ""))
            cells.append(Text(str(row["where"])))
            cells.append(Text(str(row["last_error"]), style="red" if row["last_error"] else ""))
            table.add_row(*cells)
        with self._lock:
            job = dict(self.job)
        head = Text(f"{self.job_id}  {self.operation}  ", style="bold")
        if job:
            head.append(
                f"{job.get('state', '')}  {job.get('units_done', 0)}/{job.get('units_total', 0)} units  "
                f"{job.get('units_failed', 0)} failed  {job.get('rows', 0):,} rows  "
                f"{human_bytes(job.get('bytes', 0))}  ETA {fmt_duration(job.get('eta_s'))}"
            )
        return Group(head, table)


class _PlainLines:
    """Without a terminal: one line per shard state change and failure, a job summary every 10 s."""

    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self.last = 0.0
        self.states: dict[int, str] = {}

    def __call__(self, ev: Event) -> None:
        if ev.kind is Kind.PROGRESS and "shard" in ev.data:
            shard, state = int(ev.data["shard"]), str(ev.data.get("state"))
            if self.states.get(shard) != state:
                self.states[shard] = state
                print(
                    f"[{ev.job}] shard {shard} {state} {ev.units_done}/{ev.units_total} units"
                    + (f": {ev.data.get('last_error')}" if ev.data.get("last_error") else ""),
                    flush=True,
                )
            return
        if ev.kind is Kind.PROGRESS:
            now = time.monotonic()
            if now - self.last >= self.every:
                self.last = now
                eta = fmt_duration(ev.data.get("eta_s"))
                print(
                    f"[{ev.job}] {ev.units_done}/{ev.units_total} units, {ev.rows} rows, ETA {eta}",
                    flush=True,
                )
            return
        if ev.kind is Kind.UNIT or (ev.kind is Kind.INFO and ev.data.get("state") == "done"):
            return  # a clean shard end is already a state-change line
        line = f"[{ev.job}] {ev.kind}"
        if ev.unit:
            line += f" {ev.unit} {ev.outcome}"
        if ev.message:
            line += f": {ev.message}"
        print(line, file=sys.stderr if ev.kind is Kind.ERROR else sys.stdout, flush=True)


class StoppedReporting(MdthError):
    """Every unfinished shard went silent and nobody supervises the job: watching would never end."""


class _StaleGuard:
    """Passes events on, and stops an unsupervised watch once every unfinished shard has been silent for
    ``give_up_s`` (longer than a supervisor elsewhere takes to relaunch a silent shard)."""

    def __init__(self, sink: Sink, job_id: str, give_up_s: float) -> None:
        self.sink, self.job_id, self.give_up_s = sink, job_id, give_up_s
        self.shards = 0
        self.records: dict[int, Any] = {}

    def __call__(self, ev: Event) -> None:
        from mdth_engine.jobs import records as rec

        self.sink(ev)
        if ev.kind is Kind.STARTED:
            self.shards = int(ev.data.get("shards") or 0)
        elif ev.kind is Kind.PROGRESS and "shard" in ev.data:
            self.records[int(ev.data["shard"])] = rec.ShardRecord.from_dict(ev.data)
            if self.stopped():
                raise StoppedReporting(
                    f"{self.job_id}: shards stopped reporting: mdth jobs retry {self.job_id}"
                )

    def stopped(self) -> bool:
        from mdth_engine.jobs.status import is_stopped

        if not self.shards or len(self.records) < self.shards:
            return False
        unfinished = [r for r in self.records.values() if not r.final]
        now = time.time()
        return bool(unfinished) and all(is_stopped(r, now, self.give_up_s) for r in unfinished)


def follow_rendered(
    store: Any,
    job_id: str,
    *,
    json_out: bool,
    settings: Any = None,
    supervise: bool = True,
    poll: float = 1.0,
    tty: bool | None = None,
    console: Any = None,
    timeout: float | None = None,
) -> Any:
    """follow_job with the right renderer: NDJSON, a Live table on a terminal, or plain lines.

    Unsupervised, it raises ``StoppedReporting`` once no unfinished shard reports any more."""
    from mdth_engine.jobs.follow import follow_job
    from mdth_engine.jobs.status import STALE_AFTER_S

    def run(sink: Sink) -> Any:
        if not supervise:
            sink = _StaleGuard(sink, job_id, give_up_s=2 * STALE_AFTER_S)
        return follow_job(
            store, job_id, sink, supervise=supervise, poll=poll, settings=settings, timeout=timeout
        )

    if json_out:
        return run(lambda ev: print_json(ev.to_dict()))
    if tty is None:
        tty = is_tty()
    if not tty:
        return run(_PlainLines())
    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    console = console or Console()
    view = JobView(job_id)
    with Live(view, console=console, refresh_per_second=4, transient=False, auto_refresh=True) as live:

        def sink(ev: Event) -> None:
            view(ev)
            if ev.kind in (Kind.ERROR, Kind.WARNING) or (
                ev.kind is Kind.INFO and ev.message and ev.data.get("state") != "done"
            ):
                text = Text(f"{ev.unit + ' ' if ev.unit else ''}{ev.message}")
                text.stylize({Kind.ERROR: "red", Kind.WARNING: "yellow"}.get(ev.kind, "dim"))
                live.console.print(text)

        status = run(sink)
        live.refresh()
    return status


def _store(ctx: typer.Context, lake: str | None) -> tuple[Any, Any]:
    from mdth_engine.storage.store import open_store

    settings = settings_for(ctx, lake)
    return open_store(settings.lake), settings


def launch_and_follow(
    ctx: typer.Context,
    request: Any,
    shards: int,
    backend: str,
    json: bool,
    *,
    settings: Any = None,
    lake: str | None = None,
    units: Any = None,
) -> None:
    """What a stage command does with ``--shards N [--backend ...]``: create, launch, follow, exit 0/1.

    ``units`` (already planned by the command, e.g. for --dry-run) spares planning twice."""
    from mdth_engine.jobs.manage import create_job, launch_job
    from mdth_engine.storage.store import open_store

    json_out = json_mode(ctx, json)
    settings = settings or settings_for(ctx, lake)
    if backend == "gce":  # here the operation is known: a download without a key secret stops before any VM
        from mdth_engine.jobs.backends.gce import check_settings

        check_settings(settings, request.operation)
    store = open_store(settings.lake)
    spec = create_job(store, request, shards=shards, backend=backend, settings=settings, units=units)
    _say(
        json_out,
        spec.job_id,
        spec.operation,
        f"job {spec.job_id}: {spec.units} units ({human_bytes(spec.est_bytes)} expected) "
        f"in {spec.shards} shard(s) on {spec.backend}",
    )
    launch_job(store, spec.job_id, settings)
    try:
        status = follow_rendered(store, spec.job_id, json_out=json_out, settings=settings)
    except KeyboardInterrupt:
        _say(
            json_out,
            spec.job_id,
            spec.operation,
            f"stopped following; the job goes on. Watch: mdth jobs watch {spec.job_id} --supervise; "
            f"stop: mdth jobs cancel {spec.job_id}",
        )
        raise typer.Exit(130) from None
    raise typer.Exit(status.exit_code)


def _say(json_out: bool, job_id: str, stage: str, message: str) -> None:
    if json_out:
        print_json(Event(Kind.INFO, stage, job=job_id, message=message).to_dict())
    else:
        typer.echo(message, err=True)


# --- commands ------------------------------------------------------------------------------------------------


@app.command("list")
def list_cmd(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Newest N jobs.")] = 20,
    lake: LakeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Jobs in the lake, newest first, with their state and progress."""
    from mdth_engine.jobs.status import list_jobs

    store, _ = _store(ctx, lake)
    jobs = list_jobs(store)[:limit]
    rows = [j.to_dict() for j in jobs]
    columns = [
        "job_id",
        "operation",
        "backend",
        "state",
        "shards",
        "units_done",
        "units_total",
        "units_failed",
    ]
    if json_mode(ctx, json_out):
        for row in rows:
            print_json(row)
        return
    if not rows:
        typer.echo(f"no jobs in {store.url}")
        return
    print_rows(rows, [*columns, "created_at"], title=f"jobs in {store.url}")


@app.command("show")
def show(
    ctx: typer.Context,
    job: JobArg,
    failures: Annotated[int, typer.Option("--failures", min=0, help="Show up to N failed units.")] = 20,
    lake: LakeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """A job's spec, every shard's record, and its failed units with reasons."""
    from mdth_engine.jobs import records as rec
    from mdth_engine.jobs.status import job_status
    from mdth_engine.stages.base import FAILED_OUTCOMES

    store, _ = _store(ctx, lake)
    status = job_status(store, job)
    latest = rec.latest_outcomes(rec.read_results(store, job))
    failed = [r for r in latest.values() if r["outcome"] in FAILED_OUTCOMES]
    if json_mode(ctx, json_out):
        print_json(
            {
                **status.to_dict(),
                "spec": status.spec.to_dict(),
                "shard_records": [status.shard_view(s) for s in status.shards],
                "failed_units": [
                    {k: r[k] for k in ("unit_id", "outcome", "reason", "attempt")} for r in failed[:failures]
                ],
            }
        )
        return
    info = status.to_dict()
    spec = status.spec
    typer.echo(
        f"{spec.job_id}  {spec.operation} {spec.request.get('start')}..{spec.request.get('end')}  "
        f"backend {spec.backend}  by {spec.created_by} at {spec.created_at}  mdth {spec.engine_version}"
    )
    typer.echo(
        f"{info['state']}: {info['units_done']}/{info['units_total']} units, {info['units_failed']} failed, "
        f"{info['rows']:,} rows, {human_bytes(info['bytes'])}; outcomes "
        + (", ".join(f"{k} {v}" for k, v in sorted(info["outcomes"].items())) or "-")
    )
    view = JobView(job)
    for s in status.shards:
        view(Event(Kind.PROGRESS, spec.operation, job=job, data={"shard": s.shard, **status.shard_view(s)}))
    rows = view.rows(status.at)
    print_rows(
        rows,
        [
            "shard",
            "state",
            "attempt",
            "units",
            "failed",
            "rows",
            "bytes",
            "eta",
            "heartbeat",
            "where",
            "last_error",
        ],
    )
    if status.state == "stale":
        typer.echo(f"shards stopped reporting and nobody supervises them: mdth jobs retry {job}")
    if failed:
        typer.echo(f"failed units ({len(failed)}):")
        print_rows(
            [{k: r[k] for k in ("unit_id", "outcome", "reason")} for r in failed[:failures]],
            ["unit_id", "outcome", "reason"],
        )


@app.command("watch")
def watch(
    ctx: typer.Context,
    job: Annotated[str | None, typer.Argument(help="Job id (default: the newest job).")] = None,
    supervise: Annotated[
        bool,
        typer.Option("--supervise", help="Also relaunch dead shards (this machine must reach the backend)."),
    ] = False,
    poll: Annotated[
        float, typer.Option("--poll", min=0.1, help="Seconds between reads of the records.")
    ] = 1.0,
    lake: LakeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Per-shard progress and ETA until the job ends (exit 0 when it succeeded, 1 otherwise; without
    --supervise also 1 once every unfinished shard stopped reporting)."""
    from mdth_engine.jobs.status import list_job_ids

    store, settings = _store(ctx, lake)
    if job is None:
        ids = sorted(list_job_ids(store), key=lambda i: i.split("-", 1)[-1])
        if not ids:
            raise UsageError(
                f"no jobs in {store.url}; a job is what --shards N makes of download, candles, upload "
                "or validate --fix (check --lake if you expected some)"
            )
        job = ids[-1]
    try:
        status = follow_rendered(
            store, job, json_out=json_mode(ctx, json_out), settings=settings, supervise=supervise, poll=poll
        )
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    raise typer.Exit(status.exit_code)


@app.command("cancel")
def cancel(ctx: typer.Context, job: JobArg, lake: LakeOpt = None, json_out: JsonOpt = False) -> None:
    """Stop a job: workers see the request within seconds wherever they run; VMs are deleted."""
    from mdth_engine.jobs.manage import cancel_job

    store, settings = _store(ctx, lake)
    shards = cancel_job(store, job, settings)
    if json_mode(ctx, json_out):
        print_json({"job_id": job, "cancelled_shards": shards})
    else:
        typer.echo(
            f"{job}: cancel requested; shards stopped: {', '.join(map(str, shards)) or 'none were running'}"
        )


@app.command("retry")
def retry(
    ctx: typer.Context,
    job: JobArg,
    shard: Annotated[list[int] | None, typer.Option("--shard", help="Only this shard (repeatable).")] = None,
    follow: Annotated[
        bool, typer.Option("--follow/--no-follow", help="Follow the job after relaunching.")
    ] = True,
    lake: LakeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Relaunch failed, dead or cancelled shards; only units without a settled outcome run again."""
    from mdth_engine.jobs.manage import retry_job

    store, settings = _store(ctx, lake)
    shards = retry_job(store, job, settings, shards=shard or None)
    json_out = json_mode(ctx, json_out)
    _say(
        json_out,
        job,
        "jobs",
        f"{job}: relaunched shard(s) {', '.join(map(str, shards)) or 'none (nothing to retry)'}",
    )
    if not follow or not shards:
        return
    status = follow_rendered(store, job, json_out=json_out, settings=settings)
    raise typer.Exit(status.exit_code)


@app.command("cleanup")
def cleanup(
    ctx: typer.Context,
    job: JobArg,
    purge: Annotated[
        bool, typer.Option("--purge", help="Also delete the job's records from the lake.")
    ] = False,
    lake: LakeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Delete the job's leftover VMs, stop its processes here, mark unfinished shards dead (--purge: delete)."""
    from mdth_engine.jobs.manage import cleanup_job

    store, settings = _store(ctx, lake)
    result = cleanup_job(store, job, settings, purge=purge)
    if json_mode(ctx, json_out):
        print_json(result)
        return
    typer.echo(
        f"{job}: stopped {len(result['stopped'])} ({', '.join(result['stopped']) or '-'}), "
        f"marked dead: {', '.join(map(str, result['marked_dead'])) or '-'}"
        + (f", deleted {result['deleted']} records" if purge else "")
    )


@app.command("logs")
def logs(
    ctx: typer.Context,
    job: JobArg,
    shard: Annotated[int, typer.Option("--shard", min=0, help="Shard index.")],
    tail: Annotated[int, typer.Option("--tail", min=0, help="Last N lines (0: all).")] = 200,
    lake: LakeOpt = None,
) -> None:
    """A shard worker's log (this machine's copy when it ran here, else the copy in the lake)."""
    from mdth_engine.jobs import records as rec
    from mdth_engine.jobs.backends import get_backend

    store, settings = _store(ctx, lake)
    spec = rec.load_spec(store, job)
    if not 0 <= shard < spec.shards:
        raise UsageError(f"job {job} has shards 0..{spec.shards - 1}, not {shard}")
    try:
        backend = get_backend(spec.backend, store, settings)
        text = backend.logs(spec, shard, tail or None)
    except UsageError:
        from mdth_engine.jobs.backends.local import LocalBackend

        text = LocalBackend(store, settings).logs(spec, shard, tail or None)
    sys.stdout.write(text or f"(no log for shard {shard} yet)\n")
