"""`mdth instruments` (build the master), `mdth instruments list`, and `mdth inspect KEY`."""

from __future__ import annotations

from typing import Annotated

import typer

from mdth_engine.cli.common import (
    JsonOpt,
    LakeOpt,
    date_range,
    execute_stage,
    json_mode,
    print_rows,
    settings_for,
    split_list,
)
from mdth_engine.cli.download import DateOpt, EndOpt, StartOpt

app = typer.Typer(help="Build and query the point-in-time instrument master.", invoke_without_command=True)

VenuesOpt = Annotated[
    str | None, typer.Option("--venues", help="Comma list, e.g. BINANCE,DERIBIT (default: all).")
]
TypesOpt = Annotated[
    str | None, typer.Option("--types", help="Comma list: SPOT_PAIR,PERPETUAL,FUTURE,OPTION.")
]


@app.callback()
def build(
    ctx: typer.Context,
    start: StartOpt = None,
    end: EndOpt = None,
    date: DateOpt = None,
    venues: VenuesOpt = None,
    types: TypesOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Rewrite days even when unchanged.")] = False,
    lake: LakeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Build the instrument master for a date range (idempotent: unchanged days are not rewritten)."""
    if ctx.invoked_subcommand is not None:
        return
    from mdth_engine.stages.base import Request
    from mdth_engine.stages.instruments import parse_types, parse_venues

    first, last = date_range(start, end, date)
    request = Request(
        "instruments",
        first,
        last,
        venues=tuple(parse_venues(split_list(venues))) if venues else (),
        types=tuple(parse_types(split_list(types))),
        options={"force": force},
    )
    execute_stage(ctx, request, settings_for(ctx, lake), json_out, concurrency=4)


LIST_COLUMNS = [
    "instrument_key",
    "tardis_symbol",
    "data_types",
    "expiry",
    "tick_size",
    "contract_multiplier",
    "settle_asset",
    "missing",
]


@app.command("list")
def list_(
    ctx: typer.Context,
    date: Annotated[str, typer.Option("--date", help="UTC day, YYYY-MM-DD.")],
    venue: Annotated[str | None, typer.Option("--venue")] = None,
    type_: Annotated[str | None, typer.Option("--type")] = None,
    base: Annotated[str | None, typer.Option("--base")] = None,
    quote: Annotated[str | None, typer.Option("--quote")] = None,
    search: Annotated[
        str | None, typer.Option("--search", help="Substring of the key or Tardis symbol.")
    ] = None,
    expiring_before: Annotated[str | None, typer.Option("--expiring-before", help="YYYY-MM-DD")] = None,
    fmt: Annotated[
        str, typer.Option("--format", help="auto (table on a TTY), table, plain, csv or json.")
    ] = "auto",
    all_columns: Annotated[bool, typer.Option("--all-columns", help="Every column of the master.")] = False,
    lake: LakeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """The instruments available on a day, filtered."""
    from mdth_engine.api import Lake

    settings = settings_for(ctx, lake)
    table = Lake(settings.lake, settings).instruments(
        date, venue=venue, type=type_, base=base, quote=quote, search=search, expiring_before=expiring_before
    )
    columns = table.column_names if all_columns else LIST_COLUMNS
    rows = table.select(columns).to_pylist()
    if json_mode(ctx, json_out):
        fmt = "json"
    if fmt not in {"auto", "table", "plain", "csv", "json"}:
        raise typer.BadParameter(f"--format {fmt!r}: use table, plain, csv or json")
    print_rows(rows, columns, fmt=fmt, title=f"{table.num_rows} instruments on {date}")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="instruments")

    @root.command("inspect")
    def inspect(
        ctx: typer.Context,
        key: Annotated[
            str, typer.Argument(help="Canonical key, e.g. DERIBIT:OPTION:BTC-USD-240628-60000-CALL.")
        ],
        date: Annotated[
            str | None, typer.Option("--date", help="UTC day (default: the latest built day).")
        ] = None,
        days: Annotated[int, typer.Option("--days", help="How many days the calendar shows.")] = 14,
        lake: LakeOpt = None,
        json_out: JsonOpt = False,
    ) -> None:
        """An instrument's definition, the days it is available, and what the lake holds for it per day."""
        from mdth_engine.api import Lake
        from mdth_engine.cli.inspect_view import render_inspection

        settings = settings_for(ctx, lake)
        report = Lake(settings.lake, settings).inspect(key, date, days=days)
        render_inspection(report, json_mode(ctx, json_out))
