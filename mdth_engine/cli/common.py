"""What every `mdth` command shares: global options, settings, output modes and the exit-code contract.

Output: rich on a TTY, plain lines otherwise, one JSON object per line with ``--json``. Exit codes: 0 success,
1 when some work failed (the rest is kept), 2 for a usage error (one line, before any work starts).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import sys
import warnings
from collections.abc import Iterable, Sequence
from typing import Annotated, Any

import typer

from mdth_engine.core.errors import UsageError
from mdth_engine.core.settings import Settings, SettingsWarning, load_settings

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

LakeOpt = Annotated[
    str | None, typer.Option("--lake", help="Lake URL: a folder or gs://bucket/prefix (default: MDTH_LAKE).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON object per line on stdout.")]


@dataclasses.dataclass
class CliState:
    """Global options given before the command; command-level options override them."""

    lake: str | None = None
    json: bool = False
    verbose: int = 0


def state(ctx: typer.Context) -> CliState:
    root = ctx.find_root()
    if not isinstance(root.obj, CliState):
        root.obj = CliState()
    return root.obj


def settings_for(ctx: typer.Context, lake: str | None = None, **overrides: Any) -> Settings:
    """Settings with the command line on top: the command's ``--lake`` wins over the global one.

    A bad setting is a ``SettingsError`` (exit 2, one line naming it); warnings about mdth.toml (an unknown
    key) become ``mdth: warning:`` lines on stderr.
    """
    with warnings.catch_warnings(record=True) as caught:
        settings = load_settings(lake=lake or state(ctx).lake, **overrides)
    for warning in caught:
        if issubclass(warning.category, SettingsWarning):
            typer.echo(f"mdth: warning: {warning.message}", err=True)
        else:
            warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
    return settings


def json_mode(ctx: typer.Context, json_flag: bool = False) -> bool:
    return json_flag or state(ctx).json


def is_tty() -> bool:
    return sys.stdout.isatty()


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, default=str, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def print_rows(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str],
    *,
    fmt: str = "auto",
    title: str | None = None,
) -> None:
    """Rows as a rich table on a TTY (``auto``), or ``csv`` / ``json`` (NDJSON) / ``plain`` text."""
    if fmt == "auto":
        fmt = "table" if is_tty() else "plain"
    if fmt == "json":
        for row in rows:
            print_json({c: row.get(c) for c in columns})
        return
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([[_cell(row.get(c), exact=True) for c in columns] for row in rows])
        sys.stdout.write(buf.getvalue())
        return
    if fmt == "table":
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        table = Table(title=title, header_style="bold", show_edge=False, pad_edge=False)
        for c in columns:
            table.add_column(c, overflow="fold")
        for row in rows:
            table.add_row(
                *[Text(_cell(row.get(c))) for c in columns]
            )  # Text: engine strings are never markup
        Console().print(table)
        return
    widths = [max([len(c), *(len(_cell(r.get(c))) for r in rows)]) for c in columns]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += [
        "  ".join(_cell(r.get(c)).ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()
        for r in rows
    ]
    sys.stdout.write("\n".join(lines) + "\n")


def _cell(value: Any, exact: bool = False) -> str:
    """Text of a value: floats shortened for people, exact (repr) for CSV that programs read."""
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value) if exact else f"{value:.6g}"
    if isinstance(value, list | tuple | set):
        return ",".join(str(v) for v in value)
    return str(value)


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def split_list(text: str | None) -> list[str]:
    """A comma list from the command line (``None`` or empty -> no filter)."""
    return [p.strip() for p in (text or "").split(",") if p.strip()]


def fail_usage(message: str) -> None:
    raise UsageError(message)


def iter_nonempty(lines: Iterable[str]) -> Iterable[str]:
    return (line for line in lines if line.strip())


def execute_stage(
    ctx: typer.Context,
    request: Any,
    settings: Settings,
    json_flag: bool,
    concurrency: int | None,
    units: Any = None,
) -> None:
    """Run a stage in this process with progress and a summary; exit 1 when any unit failed."""
    code = run_reported(ctx, request, settings, json_flag, concurrency, units)
    if code:
        raise typer.Exit(code)


def run_reported(
    ctx: typer.Context,
    request: Any,
    settings: Settings,
    json_flag: bool,
    concurrency: int | None,
    units: Any = None,
) -> int:
    """Run a stage with progress, print its failures and a one-line summary, return its exit code."""
    import asyncio

    from mdth_engine.api import run_recorded, run_stage
    from mdth_engine.cli.progress import progress_sink

    as_json = json_mode(ctx, json_flag)
    with progress_sink(as_json) as sink:
        if request.operation == "download":  # recorded as a one-shard job: validation reads its outcomes
            summary = asyncio.run(
                run_recorded(request, settings, sink=sink, concurrency=concurrency, units=units)
            )
        else:
            summary = asyncio.run(
                run_stage(request, settings, sink=sink, concurrency=concurrency, units=units)
            )
    if as_json:
        print_json({"kind": "summary", **summary.to_dict()})
    else:
        for failure in summary.failures:
            typer.echo(f"{failure.outcome}: {failure.unit_id}: {failure.reason}", err=True)
        for line in _notes(summary.results):
            typer.echo(line, err=True)
        outcomes = ", ".join(f"{v} {k}" for k, v in sorted(summary.outcomes.items())) or "nothing to do"
        typer.echo(
            f"{request.operation}: {summary.units} units ({outcomes}), {summary.rows:,} rows in {summary.seconds:.1f} s"
        )
    return summary.exit_code


# Outcomes that are not failures but leave nothing behind: say why (and what to do), a few lines at most.
_NOTED_OUTCOMES = ("not_found", "not_exported")
_NOTES_PER_OUTCOME = 3


def _notes(results: Iterable[Any]) -> list[str]:
    """``note:`` lines for units that produced nothing without failing, with their reasons."""
    by_outcome: dict[str, list[Any]] = {}
    for result in results:
        if str(result.outcome) in _NOTED_OUTCOMES and result.reason:
            by_outcome.setdefault(str(result.outcome), []).append(result)
    lines = []
    for outcome, items in sorted(by_outcome.items()):
        for result in items[:_NOTES_PER_OUTCOME]:
            lines.append(f"note: {outcome}: {result.unit_id}: {result.reason}")
        if len(items) > _NOTES_PER_OUTCOME:
            lines.append(f"note: {outcome}: {len(items) - _NOTES_PER_OUTCOME} more unit(s) like these")
    return lines


def date_range(start: str | None, end: str | None, date: str | None = None) -> tuple[Any, Any]:
    """``--start/--end`` (inclusive) or ``--date``; checked before any work starts. ``--date D`` is
    ``--start D --end D``, so giving both is a usage error rather than one silently winning."""
    from mdth_engine.core.timeframes import day_range, parse_day

    if date and (start or end):
        raise UsageError("give --date or --start/--end, not both")
    if date:
        day = parse_day(date, "--date")
        return day, day
    if not start:
        raise UsageError("give --start (and --end), or --date")
    first = parse_day(start, "--start")
    last = parse_day(end, "--end") if end else first
    day_range(first, last)
    return first, last
