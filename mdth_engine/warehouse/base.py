"""What every warehouse shares: the protocol, a day's batch of candle files, and the record of each load.

Unit of loading = (table, day): all instrument files of that day and timeframe replace the table's whole day
partition in one atomic step, so a re-run is idempotent and the warehouse mirrors the lake exactly.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa

from mdth_engine.core.errors import MdthError


class WarehouseError(MdthError):
    """A load or query the warehouse refused or could not finish; the message is one actionable line."""


@dataclasses.dataclass
class SourceFile:
    """One candle file of a day: where it is in the lake, how it is identified, and where to read it locally."""

    path: str  # lake path relative to the root
    instrument_key: str
    size: int
    generation: str  # store generation (GCS) or modification stamp (local): changes on every rewrite
    local: Path | None = None
    rows: int = 0
    sha256: str = ""

    def identity(self) -> dict[str, Any]:
        """What the skip check compares: known from one listing, without reading the file."""
        return {"path": self.path, "size": self.size, "generation": self.generation}

    def to_record(self) -> dict[str, Any]:
        return {
            **self.identity(),
            "instrument_key": self.instrument_key,
            "rows": self.rows,
            "sha256": self.sha256,
        }


def fingerprint(sources: list[SourceFile]) -> str:
    """A stable digest of which files (and which versions of them) make up a day."""
    ids = sorted(json.dumps(s.identity(), sort_keys=True) for s in sources)
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


@dataclasses.dataclass
class DayBatch:
    """Everything one load needs: the day's files (read locally), their union schema, and where to spool."""

    table: str
    timeframe: str
    day: dt.date
    files: list[SourceFile]  # sorted by instrument_key; every ``local`` set
    schema: pa.Schema  # union of the files' candle columns (no day / instrument_key)
    fingerprint: str
    spool: Path
    store: Any = None  # the lake's ObjectStore, for staging next to a gs:// lake

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.files)


@dataclasses.dataclass
class LoadRecord:
    """A row of the warehouse's ``_loads`` table: what a load of (table, day) put there."""

    table: str
    day: dt.date
    fingerprint: str
    rows: int
    files: int
    job_id: str
    loaded_at: dt.datetime
    sources: list[dict[str, Any]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class LoadResult:
    rows: int
    job_id: str
    added_columns: list[str] = dataclasses.field(default_factory=list)


class Warehouse(Protocol):
    """A place candle tables live: DuckDB (embedded) or BigQuery. Methods block; stages call them in threads."""

    kind: str
    display: str

    def last_load(self, table: str, day: dt.date) -> LoadRecord | None:
        """The latest load record of (table, day), or None when that day was never loaded."""
        ...

    def load_day(self, batch: DayBatch) -> LoadResult:
        """Replace the day's partition of ``batch.table`` with the batch's files, atomically, and record it."""
        ...

    def query(self, sql: str, max_rows: int | None = None) -> tuple[pa.Table, bool]:
        """Run one SQL statement; the first ``max_rows`` rows and whether more were cut off."""
        ...

    def close(self) -> None: ...
