"""`mdth lake ls`: what the lake holds, counted per area and day."""

from __future__ import annotations

from typing import Annotated

import typer

from mdth_engine.cli.common import JsonOpt, LakeOpt, human_bytes, json_mode, print_rows, settings_for

app = typer.Typer(help="Look at the lake itself.", no_args_is_help=True)


@app.command("ls")
def ls(
    ctx: typer.Context,
    prefix: Annotated[str, typer.Argument(help="Only paths under this prefix, e.g. raw_tick_data/.")] = "",
    lake: LakeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Files and bytes per area and day (and data type or timeframe), from one listing of the store."""
    from mdth_engine.api import lake_summary

    settings = settings_for(ctx, lake)
    rows = lake_summary(settings.lake, prefix)
    columns = ["area", "day", "part", "files", "bytes"]
    if json_mode(ctx, json_out):
        print_rows(rows, columns, fmt="json")
        return
    if not rows:
        typer.echo(f"{settings.lake}: empty (nothing under {prefix or '/'})")
        return
    shown = [{**r, "bytes": human_bytes(r["bytes"])} for r in rows]
    print_rows(shown, columns, title=settings.lake)
    total = sum(r["bytes"] for r in rows)
    typer.echo(f"{sum(r['files'] for r in rows)} files, {human_bytes(total)}")
