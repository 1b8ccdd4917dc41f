"""`mdth download` and `mdth pipeline`: ticks into the lake, and every stage for a day."""

from __future__ import annotations

from typing import Annotated

import typer

from mdth_engine.cli.common import (
    JsonOpt,
    LakeOpt,
    date_range,
    human_bytes,
    json_mode,
    print_json,
    print_rows,
    settings_for,
    split_list,
)

StartOpt = Annotated[str | None, typer.Option("--start", help="First UTC day, YYYY-MM-DD.")]
EndOpt = Annotated[str | None, typer.Option("--end", help="Last UTC day (inclusive); default: --start.")]
DateOpt = Annotated[str | None, typer.Option("--date", help="One UTC day (instead of --start/--end).")]
VenuesOpt = Annotated[str | None, typer.Option("--venues", help="Comma list, e.g. BINANCE,DERIBIT.")]
TypesOpt = Annotated[
    str | None, typer.Option("--types", help="Instrument types: SPOT_PAIR,PERPETUAL,FUTURE,...")
]
DataTypesOpt = Annotated[
    str | None,
    typer.Option(
        "--data-types",
        help="trades,book_snapshot_5,... or 'all' (default: trades, book_snapshot_5, "
        "derivative_ticker, liquidations, options_chain).",
    ),
]
SymbolsOpt = Annotated[
    str | None, typer.Option("--symbols", help="Instrument keys or Tardis symbols, comma list.")
]
BasesOpt = Annotated[str | None, typer.Option("--bases", help="Base assets, e.g. BTC,ETH.")]
MaxOpt = Annotated[
    int | None, typer.Option("--max-instruments", min=1, help="At most N instruments per venue and day.")
]
ShardsOpt = Annotated[int, typer.Option("--shards", min=1, help="Run as a job over N workers.")]
BackendOpt = Annotated[str, typer.Option("--backend", help="Where shards run: local or gce.")]
ConcurrencyOpt = Annotated[
    int | None, typer.Option("--concurrency", min=1, help="Units in flight per worker.")
]


def build_request(
    operation, start, end, venues, types, data_types, symbols, bases, max_instruments, options, date=None
):
    """A stage request from the selector options; every option is checked before any work starts."""
    from mdth_engine.stages.base import Request
    from mdth_engine.stages.download import parse_data_types
    from mdth_engine.stages.instruments import parse_types, parse_venues

    first, last = date_range(start, end, date)
    return Request(
        operation,
        first,
        last,
        venues=tuple(parse_venues(split_list(venues))) if venues else (),
        types=tuple(parse_types(split_list(types))),
        data_types=tuple(parse_data_types(split_list(data_types))),
        symbols=tuple(split_list(symbols)),
        bases=tuple(b.upper() for b in split_list(bases)),
        max_instruments=max_instruments,
        options=options,
    )


def run_request(
    ctx: typer.Context, request, settings, json_flag: bool, concurrency, shards: int, backend: str, units=None
):
    """Run in this process, or as a sharded job when --shards > 1 or the backend is not local."""
    from mdth_engine.cli.common import execute_stage

    if shards > 1 or backend != "local":
        from mdth_engine.cli.jobs import launch_and_follow

        if concurrency:
            settings = settings.model_copy(update={"concurrency": concurrency})
        launch_and_follow(ctx, request, shards, backend, json_flag, settings=settings, units=units)
        return
    execute_stage(ctx, request, settings, json_flag, concurrency, units=units)


def prepare_master(ctx: typer.Context, request, settings, json_flag: bool) -> None:
    """Builds the instrument master for days that lack it, so a download can be planned."""
    import asyncio

    from mdth_engine.api import ensure_instruments
    from mdth_engine.cli.progress import progress_sink

    with progress_sink(json_mode(ctx, json_flag)) as sink:
        summary = asyncio.run(ensure_instruments(request, settings, sink=sink))
    if summary is not None and summary.exit_code:
        reasons = "; ".join(f.reason for f in summary.failures[:3])
        raise typer.Exit(_fail(f"instrument master could not be built: {reasons}"))


def _fail(message: str) -> int:
    typer.echo(f"mdth: error: {message}", err=True)
    return 1


def print_plan(ctx: typer.Context, units, json_flag: bool) -> None:
    total = sum(u.est_bytes for u in units)
    if json_mode(ctx, json_flag):
        for unit in units:
            print_json({"kind": "plan_unit", **unit.to_dict()})
        print_json({"kind": "plan", "units": len(units), "est_bytes": total})
        return
    rows = [
        {"unit": u.unit_id, "outputs": len(u.params.get("outputs", {})), "est": human_bytes(u.est_bytes)}
        for u in units
    ]
    print_rows(rows, ["unit", "outputs", "est"])
    typer.echo(f"{len(units)} units, about {human_bytes(total)} to fetch")


def register(app: typer.Typer) -> None:
    @app.command("download")
    def download(
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
        dry_run: Annotated[
            bool, typer.Option("--dry-run", help="Print the plan (units, bytes) and stop.")
        ] = False,
        force: Annotated[
            bool, typer.Option("--force", help="Rewrite files that are already present.")
        ] = False,
        on_bad_rows: Annotated[
            str,
            typer.Option(
                "--on-bad-rows", help="fail (default) or quarantine: keep good rows, set bad lines aside."
            ),
        ] = "fail",
        concurrency: ConcurrencyOpt = None,
        shards: ShardsOpt = 1,
        backend: BackendOpt = "local",
        lake: LakeOpt = None,
        json_out: JsonOpt = False,
    ) -> None:
        """Download Tardis datasets into the lake: verified, resumable, idempotent."""
        if on_bad_rows not in ("fail", "quarantine"):
            raise typer.BadParameter("use fail or quarantine", param_hint="--on-bad-rows")
        if backend not in ("local", "gce"):
            raise typer.BadParameter("use local or gce", param_hint="--backend")
        request = build_request(
            "download",
            start,
            end,
            venues,
            types,
            data_types,
            symbols,
            bases,
            max_instruments,
            {"force": force, "on_bad_rows": on_bad_rows},
            date=date,
        )
        settings = settings_for(ctx, lake)
        prepare_master(ctx, request, settings, json_out)
        from mdth_engine.api import plan_stage

        units = plan_stage(request, settings)
        if dry_run:
            print_plan(ctx, units, json_out)
            return
        run_request(ctx, request, settings, json_out, concurrency, shards, backend, units=units)

    @app.command("pipeline")
    def pipeline(
        ctx: typer.Context,
        date: DateOpt = None,
        start: StartOpt = None,
        end: EndOpt = None,
        venues: VenuesOpt = None,
        types: TypesOpt = None,
        data_types: DataTypesOpt = None,
        symbols: SymbolsOpt = None,
        bases: BasesOpt = None,
        max_instruments: MaxOpt = None,
        concurrency: ConcurrencyOpt = None,
        lake: LakeOpt = None,
        json_out: JsonOpt = False,
    ) -> None:
        """Every stage for a day (or range): instruments, download, then each later stage that is installed."""
        import dataclasses
        import importlib.util

        from mdth_engine.cli.common import run_reported
        from mdth_engine.stages.registry import STAGES

        request = build_request(
            "download", start, end, venues, types, data_types, symbols, bases, max_instruments, {}, date=date
        )
        settings = settings_for(ctx, lake)
        prepare_master(ctx, request, settings, json_out)
        worst = 0
        for operation in ("download", "candles", "validate", "upload"):
            if importlib.util.find_spec(STAGES[operation].split(":")[0]) is None:
                continue  # a stage not built yet
            step = dataclasses.replace(request, operation=operation)
            worst = max(worst, run_reported(ctx, step, settings, json_out, concurrency))
        if worst:
            raise typer.Exit(worst)
