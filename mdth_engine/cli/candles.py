"""`mdth candles`: candles with their features for every selected instrument-day whose ticks are in the lake."""

from __future__ import annotations

from typing import Annotated

import typer

from mdth_engine.cli.common import JsonOpt, LakeOpt, human_bytes, json_mode, print_json, settings_for
from mdth_engine.cli.download import (
    BackendOpt,
    BasesOpt,
    ConcurrencyOpt,
    DateOpt,
    EndOpt,
    MaxOpt,
    ShardsOpt,
    StartOpt,
    SymbolsOpt,
    TypesOpt,
    VenuesOpt,
    build_request,
    run_request,
)


def candles_request(start, end, date, venues, types, symbols, bases, max_instruments, timeframes, force):
    """The candles request from the command line; every option is checked before any work starts."""
    import dataclasses

    from mdth_engine.core.timeframes import parse_timeframes

    request = build_request(
        "candles",
        start,
        end,
        venues,
        types,
        None,
        symbols,
        bases,
        max_instruments,
        {"force": force},
        date=date,
    )
    chosen = tuple(parse_timeframes(timeframes)) if timeframes else ()
    return dataclasses.replace(request, data_types=(), timeframes=chosen)


def register(app: typer.Typer) -> None:
    @app.command("candles")
    def candles(
        ctx: typer.Context,
        start: StartOpt = None,
        end: EndOpt = None,
        date: DateOpt = None,
        venues: VenuesOpt = None,
        types: TypesOpt = None,
        symbols: SymbolsOpt = None,
        bases: BasesOpt = None,
        max_instruments: MaxOpt = None,
        timeframes: Annotated[
            str | None, typer.Option("--timeframes", help="Comma list, e.g. 1m,1h (default: all seven).")
        ] = None,
        force: Annotated[
            bool, typer.Option("--force", help="Rebuild candles whose inputs have not changed.")
        ] = False,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the units and stop.")] = False,
        concurrency: ConcurrencyOpt = None,
        shards: ShardsOpt = 1,
        backend: BackendOpt = "local",
        lake: LakeOpt = None,
        json_out: JsonOpt = False,
    ) -> None:
        """Build candles (15s to 24h) with microstructure features from the ticks in the lake.

        Idempotent: candles whose files list the same inputs and feature spec are skipped (--force rebuilds).
        """
        if backend not in ("local", "gce"):
            raise typer.BadParameter("use local or gce", param_hint="--backend")
        request = candles_request(
            start, end, date, venues, types, symbols, bases, max_instruments, timeframes, force
        )
        settings = settings_for(ctx, lake)
        if dry_run:
            from mdth_engine.api import plan_stage

            units = plan_stage(request, settings)
            if json_mode(ctx, json_out):
                for unit in units:
                    print_json({"kind": "unit", **unit.to_dict()})
                print_json(
                    {"kind": "plan", "units": len(units), "est_bytes": sum(u.est_bytes for u in units)}
                )
            else:
                for unit in units:
                    typer.echo(f"{unit.unit_id}  ({human_bytes(unit.est_bytes)} of ticks)")
                typer.echo(
                    f"{len(units)} units, about {human_bytes(sum(u.est_bytes for u in units))} to read"
                )
            return
        run_request(ctx, request, settings, json_out, concurrency, shards, backend)
