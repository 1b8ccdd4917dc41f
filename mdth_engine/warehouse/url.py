"""Warehouse URLs: ``duckdb:///path`` or ``bigquery://project/dataset[?location=EU]`` (DESIGN.md section 9).

DuckDB paths follow the SQLAlchemy convention the settings default uses: ``duckdb:///rel/file.duckdb`` is
relative to the working directory, ``duckdb:////abs/file.duckdb`` (four slashes) is absolute.
BigQuery takes an optional ``endpoint=`` (or ``MDTH_BIGQUERY_API_ENDPOINT``) for a loopback stand-in.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from mdth_engine.core.errors import UsageError

ENDPOINT_ENV = "MDTH_BIGQUERY_API_ENDPOINT"
_BQ_NAME = re.compile(r"^[A-Za-z0-9_]{1,1024}$")
_BQ_PROJECT = re.compile(r"^[a-z0-9][a-z0-9\-.:]{0,99}$")


@dataclasses.dataclass(frozen=True)
class WarehouseURL:
    """A parsed warehouse URL; ``display`` is safe to print (the URL has no secrets by construction)."""

    kind: str  # "duckdb" | "bigquery"
    display: str
    path: Path | None = None  # duckdb
    project: str = ""  # bigquery
    dataset: str = ""
    location: str | None = None
    endpoint: str | None = None


def parse_warehouse_url(url: str, *, default_project: str | None = None) -> WarehouseURL:
    """Parse and check a warehouse URL; a malformed one is a ``UsageError`` that quotes it."""
    text = (url or "").strip()
    if text.startswith("duckdb://"):
        rest = text[len("duckdb://") :]
        if not rest.startswith("/") or len(rest) < 2:
            raise UsageError(f"warehouse {url!r}: use duckdb:///relative/path or duckdb:////absolute/path")
        path = Path(rest[1:])
        if path.name in ("", ".", ".."):
            raise UsageError(f"warehouse {url!r} names a folder, not a DuckDB file")
        return WarehouseURL("duckdb", text, path=path)
    if text.startswith("bigquery://"):
        parts = urlsplit(text)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        unknown = set(query) - {"location", "endpoint"}
        if unknown:
            raise UsageError(
                f"warehouse {url!r}: unknown option {sorted(unknown)[0]!r} (known: location, endpoint)"
            )
        segments = [s for s in parts.path.split("/") if s]
        project = parts.netloc or default_project or ""
        if len(segments) != 1:
            raise UsageError(f"warehouse {url!r}: use bigquery://project/dataset[?location=EU]")
        dataset = segments[0]
        if not project:
            raise UsageError(
                f"warehouse {url!r} names no project (bigquery://project/dataset or MDTH_GCP_PROJECT)"
            )
        if not _BQ_PROJECT.match(project):
            raise UsageError(f"warehouse {url!r}: {project!r} is not a Google Cloud project id")
        if not _BQ_NAME.match(dataset):
            raise UsageError(f"warehouse {url!r}: dataset {dataset!r} may hold only letters, digits and _")
        endpoint = query.get("endpoint") or os.environ.get(ENDPOINT_ENV) or None
        return WarehouseURL(
            "bigquery",
            f"bigquery://{project}/{dataset}"
            + (f"?location={query['location']}" if query.get("location") else ""),
            project=project,
            dataset=dataset,
            location=query.get("location") or None,
            endpoint=endpoint.rstrip("/") if endpoint else None,
        )
    raise UsageError(f"warehouse {url!r}: expected duckdb:///path or bigquery://project/dataset")
