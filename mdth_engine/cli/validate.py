"""`mdth validate` (completeness and content per day, a compact table, exit 1 when anything is wrong, ``--fix``
downloads exactly what is missing or broken) and `mdth gaps` (a coverage grid of days x instruments)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import sys
from typing import Annotated, Any

import typer

from mdth_engine.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    JsonOpt,
    LakeOpt,
    is_tty,
    json_mode,
    print_json,
    print_rows,
    settings_for,
)
from mdth_engine.cli.download import (
    BackendOpt,
    BasesOpt,
    DataTypesOpt,
    DateOpt,
    EndOpt,
    MaxOpt,
    StartOpt,
    SymbolsOpt,
    TypesOpt,
    VenuesOpt,
    build_request,
)

DaysOpt = Annotated[
    int | None, typer.Option("--concurrency", min=1, help="Days validated at once (default: 2).")
]
FixShardsOpt = Annotated[
    int,
    typer.Option(
        "--shards", min=1, help="Run the validation (and --fix's download) as a job over N workers."
    ),
]
DEFAULT_CONCURRENCY = 2  # days at once; each scans a few files at a time
SHOWN_COLUMNS = ["day", "instrument_key", "data_type", "check", "status", "class", "rows", "detail"]
_STATUS_STYLE = {"error": "bold red", "warn": "yellow", "ok": "green", "skip": "dim"}


def validate_request(
    start, end, date, venues, types, data_types, symbols, bases, max_instruments, checks, binance_url
):
    """The validate request from the command line; every option is checked before any work starts."""
    from mdth_engine.validation.report import parse_checks

    options: dict[str, Any] = {"checks": parse_checks(checks)}
    if binance_url:
        options["binance_rest_url"] = binance_url
    return build_request(
        "validate", start, end, venues, types, data_types, symbols, bases, max_instruments, options, date=date
    )


# --- running ----------------------------------------------------------------------------------------------


def run_validation(ctx: typer.Context, request, settings, json_out: bool, concurrency, units=None):
    """Validate in this process with progress; returns the run summary."""
    import asyncio

    from mdth_engine.api import run_stage
    from mdth_engine.cli.progress import progress_sink

    with progress_sink(json_out) as sink:
        return asyncio.run(
            run_stage(
                request, settings, sink=sink, concurrency=concurrency or DEFAULT_CONCURRENCY, units=units
            )
        )


def run_validation_job(
    ctx: typer.Context, request, settings, json_out: bool, concurrency, shards: int, backend: str
):
    """Validation as a recorded job over ``shards`` workers (local processes or VMs); the run summary is
    rebuilt from the recorded outcomes, and a unit that never finished counts as failed."""
    import json

    from mdth_engine.cli.jobs import follow_rendered
    from mdth_engine.jobs import records as rec
    from mdth_engine.jobs.manage import create_job, launch_job
    from mdth_engine.jobs.runner import RunSummary
    from mdth_engine.stages.base import Outcome, UnitResult
    from mdth_engine.storage.store import open_store

    store = open_store(settings.lake)
    days_at_once = concurrency or DEFAULT_CONCURRENCY  # each worker validates this many days at a time
    settings = settings.model_copy(update={"concurrency": days_at_once})
    spec = create_job(store, request, shards=shards, backend=backend, settings=settings)
    if not json_out:
        typer.echo(f"validate: job {spec.job_id}: {spec.units} day(s) over {spec.shards} shard(s)", err=True)
    launch_job(store, spec.job_id, settings)
    status = follow_rendered(store, spec.job_id, json_out=json_out, settings=settings)
    outcomes = rec.latest_outcomes(rec.read_results(store, spec.job_id))
    summary = RunSummary(stage="validate", units=spec.units)
    for unit, _ in rec.read_plan(store, spec.job_id):
        row = outcomes.get(unit.unit_id)
        if row is None:
            reason = f"did not finish (job {spec.job_id} ended {status.state})"
            result = UnitResult(unit.unit_id, Outcome.FAILED, reason=reason)
        else:
            extra = json.loads(row["extra"]) if row["extra"] else {}
            result = UnitResult(row["unit_id"], Outcome(row["outcome"]), reason=row["reason"], extra=extra)
        summary.outcomes[result.outcome] += 1
        if result.failed:
            summary.failures.append(result)
    return summary


def latest_reports(store: Any, days: list[dt.date]) -> tuple[Any, list[dict[str, Any]]]:
    """This run's rows of every day's report (one table), and each day's summary."""
    import pyarrow as pa

    from mdth_engine.validation.fix import latest_rows
    from mdth_engine.validation.report import REPORT_SCHEMA, read_report, read_summary

    tables, summaries = [], []
    for day in days:
        table = read_report(store, day)
        if table is not None:
            tables.append(latest_rows(table))
        summary = read_summary(store, day)
        if summary is not None:
            summaries.append(summary)
    return (pa.concat_tables(tables) if tables else REPORT_SCHEMA.empty_table()), summaries


def reported_days(request: Any, run_summary: Any) -> list[dt.date]:
    """The request's days whose report is this run's (a day that could not be validated keeps an old one)."""
    crashed = {f.unit_id.split("/")[0] for f in crashed_units(run_summary)}
    return [d for d in request.days() if d.isoformat() not in crashed]


def crashed_units(run_summary: Any) -> list[Any]:
    """Days that could not be validated at all (a day whose report has errors carries their count)."""
    return [f for f in run_summary.failures if "errors" not in (f.extra or {})]


def exit_code_of(table: Any, run_summary: Any) -> int:
    """1 when any row is an error or any day could not be validated at all, else 0."""
    import pyarrow.compute as pc

    errors = (
        int(pc.sum(pc.equal(table["status"], "error").cast("int64")).as_py() or 0) if table.num_rows else 0
    )
    crashed = crashed_units(run_summary)
    return EXIT_FAILED if errors or crashed else EXIT_OK


def show(
    ctx: typer.Context,
    table: Any,
    summaries: list[dict[str, Any]],
    run_summary: Any,
    *,
    json_out: bool,
    show_all: bool,
) -> None:
    """The non-ok rows (all with --all), a line per day, and the unit failures that left no report."""
    rows = [r for r in table.to_pylist() if show_all or r["status"] in ("error", "warn")]
    rows.sort(
        key=lambda r: (
            {"error": 0, "warn": 1, "ok": 2, "skip": 3}[r["status"]],
            r["day"],
            r["instrument_key"],
        )
    )
    crashed = crashed_units(run_summary)
    if json_out:
        for row in rows:
            print_json({"kind": "check", **{k: _plain(v) for k, v in row.items()}})
        for summary in summaries:
            print_json({"kind": "day", **summary})
        for failure in crashed:
            print_json({"kind": "failed", "unit": failure.unit_id, "reason": failure.reason})
        return
    if rows:
        shown = [
            {**r, "day": r["day"].isoformat(), "rows": r["rows"] if r["rows"] is not None else ""}
            for r in (rows if show_all else grouped(rows))
        ]
        if is_tty():
            _rich_rows(shown)
        else:
            print_rows(shown, SHOWN_COLUMNS, fmt="plain")
    for summary in summaries:
        typer.echo(_day_line(summary))
    for failure in crashed:
        typer.echo(f"failed: {failure.unit_id}: {failure.reason}", err=True)


GROUP_ABOVE = 3  # more rows than this with one (day, status, check, class, data type) print as one line


def grouped(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows sharing day, status, check, class and data type, when there are many (a whole venue never
    downloaded), as one line that counts them and names the first; ``--all`` and ``--json`` list each."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(
            (row["day"], row["status"], row["check"], row["class"], row["data_type"]), []
        ).append(row)
    out = []
    for members in groups.values():
        if len(members) <= GROUP_ABOVE:
            out += members
            continue
        first = members[0]
        out.append(
            {
                **first,
                "instrument_key": f"{len(members):,} instruments",
                "rows": None,
                "detail": f"e.g. {first['instrument_key']}: {first['detail']} (--all lists each)",
            }
        )
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return value


def _day_line(summary: dict[str, Any]) -> str:
    from mdth_engine.validation.report import CLASSES

    held = summary.get("classes", {})
    classes = ", ".join(f"{held[c]} {c.replace('_', ' ')}" for c in CLASSES if held.get(c))
    counts = summary.get("counts", {})
    return (
        f"{summary['day']}  {summary['status']:5}  {summary.get('expected', 0)} expected"
        + (f": {classes}" if classes else "")
        + f"; {counts.get('error', 0)} errors, {counts.get('warn', 0)} warnings, {counts.get('ok', 0)} ok"
    )


def _rich_rows(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(header_style="bold", show_edge=False, pad_edge=False)
    for column in SHOWN_COLUMNS:
        table.add_column(column, overflow="fold", no_wrap=column != "detail")
    for row in rows:
        cells = [Text("" if row.get(c) is None else str(row.get(c))) for c in SHOWN_COLUMNS]
        cells[SHOWN_COLUMNS.index("status")].stylize(_STATUS_STYLE.get(row["status"], ""))
        table.add_row(*cells)
    Console().print(table)


def neighbours(days: set[dt.date], request: Any) -> set[dt.date]:
    """The fixed days and the days next to them (their candles read the fixed files), within the request."""
    one = dt.timedelta(days=1)
    around = {d + k * one for d in days for k in (-1, 0, 1)}
    return {d for d in around if request.start <= d <= request.end}


def run_fix(
    ctx: typer.Context, request, settings, targets, *, json_out: bool, shards: int, backend: str
) -> int:
    """Download exactly ``targets`` as recorded jobs (in this process, or on ``shards`` workers)."""
    from mdth_engine.cli.jobs import follow_rendered
    from mdth_engine.cli.progress import progress_sink
    from mdth_engine.jobs.manage import create_job, launch_job
    from mdth_engine.jobs.worker import run_shard
    from mdth_engine.storage.store import open_store
    from mdth_engine.validation.fix import describe, fix_requests

    store = open_store(settings.lake)
    requests = fix_requests(targets, request)
    if any(not t.instrument_key for t in targets):
        import asyncio

        from mdth_engine.api import ensure_instruments

        days = sorted({t.day for t in targets if not t.instrument_key})
        sub = dataclasses.replace(request, operation="download", start=days[0], end=days[-1])
        with progress_sink(json_out) as sink:
            asyncio.run(ensure_instruments(sub, settings, sink=sink))
    if json_out:
        print_json({"kind": "fix", "targets": describe(targets), "requests": [r.to_dict() for r in requests]})
    else:
        typer.echo(f"fix: {len(targets)} file(s) to download in {len(requests)} job(s)")
    worst = EXIT_OK
    for sub in requests:
        spec = create_job(store, sub, shards=shards, backend=backend, settings=settings)
        if not json_out:
            typer.echo(f"fix: job {spec.job_id}: {spec.units} unit(s)", err=True)
        if shards > 1 or backend != "local":
            launch_job(store, spec.job_id, settings)
            code = follow_rendered(store, spec.job_id, json_out=json_out, settings=settings).exit_code
        else:
            with progress_sink(json_out) as sink:
                code = run_shard(store, spec.job_id, 0, settings, sink).exit_code
        worst = max(worst, code)
    return worst


def register(app: typer.Typer) -> None:
    @app.command("validate")
    def validate(
        ctx: typer.Context,
        start: StartOpt = None,
        end: EndOpt = None,
        date: DateOpt = None,
        venues: VenuesOpt = None,
        types: TypesOpt = None,
        data_types: DataTypesOpt = None,
        symbols: SymbolsOpt = None,
        bases: BasesOpt = None,
        max_instruments: MaxOpt = None,
        checks: Annotated[
            str | None,
            typer.Option("--checks", help="completeness,content,candles,cross_source (default: all)."),
        ] = None,
        binance_url: Annotated[
            str | None,
            typer.Option(
                "--binance-url",
                help="Binance REST base URL for the cross-source check (default: MDTH_BINANCE_REST_URL, "
                "else https://api.binance.com).",
            ),
        ] = None,
        fix: Annotated[
            bool,
            typer.Option("--fix", help="Download exactly what is missing, failed or broken, then re-check."),
        ] = False,
        show_all: Annotated[
            bool, typer.Option("--all", help="Show ok and skipped rows too, and each row of a counted group.")
        ] = False,
        concurrency: DaysOpt = None,
        shards: FixShardsOpt = 1,
        backend: BackendOpt = "local",
        lake: LakeOpt = None,
        json_out: JsonOpt = False,
    ) -> None:
        """Check completeness and content per day; exit 1 when anything is wrong.

        Writes validation_reports/by_date/day-{date}/report.parquet and summary.json next to it.

        --fix downloads exactly the missing, failed or broken files (a recorded job), then re-validates.
        """
        from mdth_engine.api import plan_stage
        from mdth_engine.storage.store import open_store

        if backend not in ("local", "gce"):
            raise typer.BadParameter("use local or gce", param_hint="--backend")
        request = validate_request(
            start, end, date, venues, types, data_types, symbols, bases, max_instruments, checks, binance_url
        )
        settings = settings_for(ctx, lake)
        as_json = json_mode(ctx, json_out)
        units = plan_stage(request, settings)  # selectors checked before any work
        store = open_store(settings.lake)
        if shards > 1 or backend != "local":
            summary = run_validation_job(ctx, request, settings, as_json, concurrency, shards, backend)
        else:
            summary = run_validation(ctx, request, settings, as_json, concurrency, units)
        table, summaries = latest_reports(store, reported_days(request, summary))
        code = exit_code_of(table, summary)
        if fix:
            from mdth_engine.validation.fix import fix_targets

            targets = fix_targets(table)
            if not targets:
                show(ctx, table, summaries, summary, json_out=as_json, show_all=show_all)
                if not as_json:
                    typer.echo("fix: nothing to download")
                raise typer.Exit(code)
            if not as_json:
                show(ctx, table, summaries, summary, json_out=False, show_all=show_all)
            fixed = run_fix(ctx, request, settings, targets, json_out=as_json, shards=shards, backend=backend)
            days = sorted(neighbours({t.day for t in targets}, request))
            again = [u for u in plan_stage(request, settings) if u.day in set(days)]
            if not as_json:
                typer.echo(f"fix: validating {len(days)} day(s) again")
            before = [
                f for f in summary.failures if f.unit_id.split("/")[0] not in {d.isoformat() for d in days}
            ]
            summary = run_validation(ctx, request, settings, as_json, concurrency, again)
            summary.failures[:0] = before
            table, summaries = latest_reports(store, reported_days(request, summary))
            code = exit_code_of(table, summary)
            if fixed and not as_json:
                typer.echo("fix: some downloads did not succeed (see the rows above)", err=True)
        show(ctx, table, summaries, summary, json_out=as_json, show_all=show_all)
        _final_line(table, summaries, code, as_json)
        raise typer.Exit(code)

    @app.command("gaps")
    def gaps(
        ctx: typer.Context,
        start: StartOpt = None,
        end: EndOpt = None,
        date: DateOpt = None,
        venues: VenuesOpt = None,
        types: TypesOpt = None,
        data_types: DataTypesOpt = None,
        symbols: SymbolsOpt = None,
        bases: BasesOpt = None,
        max_instruments: MaxOpt = None,
        by: Annotated[
            str, typer.Option("--by", help="Rows: instrument (default) or data_type.")
        ] = "instrument",
        lake: LakeOpt = None,
        json_out: JsonOpt = False,
    ) -> None:
        """A coverage grid: days x instruments (or data types), one character a cell; the legend says which."""
        from mdth_engine.validation.coverage import coverage

        if by not in ("instrument", "data_type"):
            raise typer.BadParameter("use instrument or data_type", param_hint="--by")
        request = validate_request(
            start, end, date, venues, types, data_types, symbols, bases, max_instruments, None, None
        )
        settings = settings_for(ctx, lake)
        from mdth_engine.storage.store import open_store

        table = coverage(
            open_store(settings.lake),
            request.start,
            request.end,
            venues=request.venues,
            types=request.types,
            data_types=request.data_types,
            symbols=request.symbols,
            bases=request.bases,
            max_instruments=request.max_instruments,
            settings=settings,
        )
        if json_mode(ctx, json_out):
            for row in table.to_pylist():
                print_json({"kind": "cell", **{k: _plain(v) for k, v in row.items()}})
            return
        render_grid(table, request.days(), by=by, tty=is_tty(), out=sys.stdout)


def _final_line(table: Any, summaries: list[dict[str, Any]], code: int, as_json: bool) -> None:
    """This run's counts (the exit code's rows); a day's summary also holds rows of earlier, wider runs."""
    statuses = table["status"].to_pylist() if table.num_rows else []
    errors, warnings = statuses.count("error"), statuses.count("warn")
    if as_json:
        print_json(
            {
                "kind": "summary",
                "days": len(summaries),
                "errors": errors,
                "warnings": warnings,
                "exit_code": code,
            }
        )
        return
    verdict = "all good" if not errors and not warnings else ("problems found" if errors else "warnings only")
    typer.echo(f"validate: {len(summaries)} day(s), {errors} errors, {warnings} warnings: {verdict}")


# --- the coverage grid --------------------------------------------------------------------------------------

# class -> (plain character, rich character, style), most severe first: a cell shows its worst class.
CELLS: dict[str, tuple[str, str, str]] = {
    "no_master": ("?", "?", "bold red"),
    "corrupt": ("C", "C", "bold red"),
    "missing": ("M", "M", "bold red"),
    "failed": ("F", "F", "bold red"),
    "unauthorized": ("U", "U", "red"),
    "never_attempted": ("-", "-", "red"),
    "content_error": ("!", "!", "bold red"),
    "not_exported": ("~", "~", "yellow"),
    "not_found": ("N", "N", "yellow"),
    "content_warn": ("w", "\u2588", "yellow"),
    "present": ("#", "\u2588", "green"),
    "empty": (".", "\u00b7", "dim"),
}
_RANK = {name: i for i, name in enumerate(CELLS)}
LEGEND = (
    "# present  w present, content warnings  ! content errors  . empty at source  - never attempted  "
    "M missing (deleted)  C corrupt  F failed  U unauthorized  N not found at source  ~ not exported yet  "
    "? no instrument master  (blank: not listed that day)"
)


def cell_class(row: dict[str, Any]) -> str:
    """A coverage row's cell: its class, or its content verdict when the file is present.

    A cell aggregates several rows by the most severe; an empty file counts as less severe than a present
    one, so a row shows "." only when everything it holds is empty at the source.
    """
    if row["class"] == "present" and row["content"] == "error":
        return "content_error"
    if row["class"] == "present" and row["content"] == "warn":
        return "content_warn"
    return row["class"]


def grid(table: Any, days: list[dt.date], by: str) -> tuple[list[str], dict[str, dict[dt.date, str]]]:
    """Row labels and, per label and day, the worst cell class (days without a master: every row)."""
    field = "instrument_key" if by == "instrument" else "data_type"
    cells: dict[str, dict[dt.date, str]] = {}
    no_master: set[dt.date] = set()
    for row in table.to_pylist():
        if row["class"] == "no_master":
            no_master.add(row["day"])
            continue
        label = row[field]
        held = cells.setdefault(label, {}).get(row["day"])
        cls = cell_class(row)
        if held is None or _RANK[cls] < _RANK[held]:
            cells[label][row["day"]] = cls
    labels = sorted(cells)
    if no_master and not labels:
        labels = ["(no instruments)"]
        cells[labels[0]] = {}
    for label in labels:
        for day in no_master:
            cells[label][day] = "no_master"
    return labels, cells


def render_grid(table: Any, days: list[dt.date], *, by: str, tty: bool, out: Any) -> None:
    """Days across, rows down, one character a cell; a per-row count of good days at the right."""
    labels, cells = grid(table, days, by)
    if not labels:
        out.write("nothing expected for this selection and range\n")
        return
    width = max(len(label) for label in labels) + 2
    title = f"{days[0]} .. {days[-1]} (UTC), {'instruments' if by == 'instrument' else 'data types'} x days"
    header = [
        title,
        "day of month".ljust(width) + "".join(str(day.day // 10) for day in days),
        " " * width + "".join(str(day.day % 10) for day in days),
    ]
    lines: list[list[tuple[str, str]]] = []
    for label in labels:
        row = cells[label]
        parts: list[tuple[str, str]] = [(label.ljust(width), "")]
        good = 0
        for day in days:
            cls = row.get(day)
            if cls is None:
                parts.append((" ", ""))
                continue
            plain, fancy, style = CELLS[cls]
            parts.append((fancy if tty else plain, style))
            good += cls in ("present", "content_warn", "empty")
        listed = sum(1 for day in days if day in row)
        parts.append((f"  {good}/{listed}", "dim"))
        lines.append(parts)
    if tty:
        from rich.console import Console
        from rich.text import Text

        console = Console(file=out, highlight=False)
        for head in header:
            console.print(Text(head, style="bold"), no_wrap=True, overflow="ignore", crop=False)
        for parts in lines:
            text = Text()
            for chunk, style in parts:
                text.append(chunk, style=style or None)
            console.print(text, no_wrap=True, overflow="ignore", crop=False)
        console.print(Text(LEGEND, style="dim"))
        return
    for head in header:
        out.write(head + "\n")
    for parts in lines:
        out.write("".join(chunk for chunk, _ in parts) + "\n")
    out.write(LEGEND + "\n")
