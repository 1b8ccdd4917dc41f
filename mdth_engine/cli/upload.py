"""`mdth upload`: candle files into the warehouse (DuckDB by default, BigQuery with a bigquery:// URL)."""

from __future__ import annotations

from typing import Annotated

import typer

from mdth_engine.cli.common import JsonOpt, LakeOpt, date_range, json_mode, print_json, settings_for
from mdth_engine.cli.download import DateOpt, EndOpt, StartOpt

WarehouseOpt = Annotated[
    str | None,
    typer.Option(
        "--warehouse",
        help="duckdb:///file.duckdb (relative) or duckdb:////abs/file.duckdb, or bigquery://project/dataset"
        "[?location=EU] (default: MDTH_WAREHOUSE, else warehouse.duckdb in the lake folder).",
    ),
]


def register(app: typer.Typer) -> None:
    @app.command("upload")
    def upload(
        ctx: typer.Context,
        start: StartOpt = None,
        end: EndOpt = None,
        date: DateOpt = None,
        timeframes: Annotated[
            str | None, typer.Option("--timeframes", help="Comma list, e.g. 1m,1h (default: all seven).")
        ] = None,
        force: Annotated[
            bool, typer.Option("--force", help="Reload days whose load record already matches the lake.")
        ] = False,
        warehouse: WarehouseOpt = None,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the units and stop.")] = False,
        concurrency: Annotated[
            int | None, typer.Option("--concurrency", min=1, help="Units in flight per worker.")
        ] = None,
        shards: Annotated[int, typer.Option("--shards", min=1, help="Run as a job over N workers.")] = 1,
        backend: Annotated[str, typer.Option("--backend", help="Where shards run: local or gce.")] = "local",
        lake: LakeOpt = None,
        json_out: JsonOpt = False,
    ) -> None:
        """Load candles into the warehouse: each (day, timeframe) replaces that day's partition atomically.

        Re-running is idempotent: a day whose files have not changed since its last load is skipped.
        """
        from mdth_engine.cli.download import run_request
        from mdth_engine.core.timeframes import parse_timeframes
        from mdth_engine.stages.base import Request
        from mdth_engine.warehouse import parse_warehouse_url

        if backend not in ("local", "gce"):
            raise typer.BadParameter("use local or gce", param_hint="--backend")
        first, last = date_range(start, end, date)
        request = Request(
            "upload",
            first,
            last,
            timeframes=tuple(parse_timeframes(timeframes)) if timeframes else (),
            options={"force": force},
        )
        settings = settings_for(ctx, lake, warehouse=warehouse)
        target = parse_warehouse_url(settings.warehouse_url(), default_project=settings.gcp_project)
        from mdth_engine.jobs.manage import check_shared_warehouse

        check_shared_warehouse(backend, settings)
        if dry_run:
            from mdth_engine.api import plan_stage

            units = plan_stage(request, settings)
            if json_mode(ctx, json_out):
                for unit in units:
                    print_json({"kind": "unit", **unit.to_dict()})
            else:
                for unit in units:
                    typer.echo(f"{unit.unit_id}  ->  {unit.output}")
                typer.echo(f"{len(units)} units into {target.display}")
            return
        if not json_mode(ctx, json_out):
            typer.echo(f"upload: {settings.lake} -> {target.display}")
        run_request(ctx, request, settings, json_out, concurrency, shards, backend)
