"""The warehouse candles are loaded into: DuckDB (embedded default) or BigQuery, behind one protocol.

``open_warehouse(url)`` is cheap: no file is opened and no client built until the first operation.
"""

from __future__ import annotations

from typing import Any

from mdth_engine.warehouse.base import (
    DayBatch,
    LoadRecord,
    LoadResult,
    SourceFile,
    Warehouse,
    WarehouseError,
    fingerprint,
)
from mdth_engine.warehouse.schema import LOADS_TABLE, table_name
from mdth_engine.warehouse.url import WarehouseURL, parse_warehouse_url

__all__ = [
    "LOADS_TABLE",
    "DayBatch",
    "LoadRecord",
    "LoadResult",
    "SourceFile",
    "Warehouse",
    "WarehouseError",
    "WarehouseURL",
    "fingerprint",
    "open_warehouse",
    "parse_warehouse_url",
    "table_name",
]


def open_warehouse(url: str, *, default_project: str | None = None, **options: Any) -> Warehouse:
    """The warehouse a URL names; ``options`` go to the implementation (tests tune retries and polling)."""
    parsed = parse_warehouse_url(url, default_project=default_project)
    if parsed.kind == "duckdb":
        from mdth_engine.warehouse.duck import DuckDBWarehouse

        assert parsed.path is not None
        return DuckDBWarehouse(parsed.path, **options)
    from mdth_engine.warehouse.bigquery import BigQueryWarehouse

    return BigQueryWarehouse(
        parsed.project, parsed.dataset, parsed.location, endpoint=parsed.endpoint, **options
    )
