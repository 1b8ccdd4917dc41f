"""`mdth sql`: one SQL statement against the warehouse, printed as a table (or CSV / NDJSON)."""

from __future__ import annotations

import math
import sys
from decimal import Decimal
from typing import Annotated, Any

import typer

from mdth_engine.cli.common import LakeOpt, json_mode, print_rows, settings_for
from mdth_engine.cli.upload import WarehouseOpt


def _plain(value: Any, as_json: bool) -> Any:
    """A cell for output, never rounded: floats as their shortest exact text (JSON numbers with --json, NaN as
    null since JSON has no NaN), decimals as numbers when exact, timestamps as ISO 8601."""
    if isinstance(value, Decimal):
        exact = float(value)
        value = exact if Decimal(repr(exact)) == value else str(value)
    if isinstance(value, float):
        if as_json:
            return None if math.isnan(value) else value
        return repr(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def _table_hint(wh: Any, message: str) -> str:
    """What to write instead when a statement names a table the warehouse does not have."""
    lowered = message.lower()
    if "does not exist" not in lowered and "not found" not in lowered:
        return ""
    if not hasattr(wh, "tables"):  # BigQuery: tables are named in full
        where = f"{getattr(wh, 'project', 'project')}.{getattr(wh, 'dataset', 'dataset')}"
        return f"; on BigQuery name tables in full: `{where}.candles_1m`"
    try:
        names = wh.tables()
    except Exception:
        return ""
    if not names:
        return "; the warehouse is empty: load candles with mdth upload --start YYYY-MM-DD"
    return f"; tables: {', '.join(names)}"


def register(app: typer.Typer) -> None:
    @app.command("sql")
    def sql(
        ctx: typer.Context,
        statement: Annotated[str, typer.Argument(help="The SQL statement, or - to read it from stdin.")],
        warehouse: WarehouseOpt = None,
        csv_out: Annotated[bool, typer.Option("--csv", help="CSV with a header row.")] = False,
        max_rows: Annotated[
            int | None,
            typer.Option(
                "--max-rows",
                min=0,
                help="Print at most N rows (default: 1000 on a table, all with --csv/--json).",
            ),
        ] = None,
        lake: LakeOpt = None,
        json_out: Annotated[bool, typer.Option("--json", help="One JSON object per row.")] = False,
    ) -> None:
        """Query the warehouse (DuckDB, read-only, by default; BigQuery with a bigquery:// URL).

        Tables: candles_15s ... candles_24h (day, instrument_key, timestamp, timestamp_out, features) and _loads.
        """
        from mdth_engine.core.errors import UsageError
        from mdth_engine.warehouse import open_warehouse

        text = sys.stdin.read() if statement == "-" else statement
        if not text.strip():
            raise UsageError("empty SQL statement")
        as_json = json_mode(ctx, json_out)
        if as_json and csv_out:
            raise UsageError("choose one of --json and --csv")
        fmt = "json" if as_json else "csv" if csv_out else "auto"
        limit = max_rows if max_rows is not None else (None if fmt in ("json", "csv") else 1000)
        settings = settings_for(ctx, lake, warehouse=warehouse)
        wh = open_warehouse(settings.warehouse_url(), default_project=settings.gcp_project)
        try:
            table, cut = wh.query(text, limit)
        except UsageError as exc:
            raise UsageError(f"{exc}{_table_hint(wh, str(exc))}") from None
        finally:
            wh.close()
        columns = list(table.column_names)
        rows = [{c: _plain(v, as_json) for c, v in row.items()} for row in table.to_pylist()]
        if not columns:
            if fmt == "auto":
                typer.echo("(no result)")
            return
        print_rows(rows, columns, fmt=fmt)
        if cut:
            typer.echo(f"(first {len(rows)} rows shown; add LIMIT or --max-rows to see others)", err=True)
        elif fmt == "auto":
            typer.echo(f"({len(rows)} row{'s' if len(rows) != 1 else ''})", err=True)
