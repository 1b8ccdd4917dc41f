"""The embedded warehouse: one DuckDB file, one table per timeframe, each day replaced in one transaction.

Rows are inserted by DuckDB's own Parquet reader (no Python row loops), sorted by (instrument_key, timestamp)
so zone maps prune per-instrument queries. Extension autoinstall/autoload is off: only what the wheel ships.
DuckDB allows one writing process per file: a connection is opened per operation and a lock held by another
process is waited on (``lock_timeout``), so sharded uploads take turns instead of failing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from mdth_engine import __version__
from mdth_engine.core.errors import UsageError
from mdth_engine.warehouse.base import DayBatch, LoadRecord, LoadResult, WarehouseError
from mdth_engine.warehouse.schema import (
    DAY,
    KEY,
    LOADS_TABLE,
    REQUIRED,
    TS,
    duckdb_type,
    loads_schema,
    table_schema,
)

CONFIG = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}
_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _path_lock(path: Path) -> threading.Lock:
    """One writer at a time per database file within this process (DuckDB's own lock covers other processes)."""
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(str(path), threading.Lock())


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def connect(path: Path, *, read_only: bool = False, lock_timeout: float = 60.0) -> Any:
    """A DuckDB connection in UTC with extension downloads off; waits while another process holds the file."""
    import duckdb

    deadline = time.monotonic() + lock_timeout
    delay = 0.05
    while True:
        try:
            con = duckdb.connect(str(path), read_only=read_only, config=CONFIG)
            break
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or time.monotonic() >= deadline:
                first = str(exc).strip().splitlines()[0]
                raise WarehouseError(f"cannot open DuckDB warehouse {path}: {first}") from None
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
    with contextlib.suppress(duckdb.Error):  # ICU ships in the wheel; without it TIMESTAMPTZ is UTC anyway
        con.execute("SET TimeZone = 'UTC'")
    return con


class DuckDBWarehouse:
    """Candle tables in one DuckDB file."""

    kind = "duckdb"

    def __init__(self, path: Path, *, lock_timeout: float = 60.0) -> None:
        self.path = Path(path).expanduser().absolute()
        self.display = f"duckdb:///{self.path}"
        self.lock_timeout = lock_timeout

    @contextlib.contextmanager
    def _connection(self, read_only: bool = False) -> Iterator[Any]:
        if read_only and not self.path.exists():
            raise UsageError(
                f"no DuckDB warehouse at {self.path} (run `mdth upload` first, or pass --warehouse)"
            )
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        con = connect(self.path, read_only=read_only, lock_timeout=self.lock_timeout)
        try:
            yield con
        finally:
            con.close()

    # -- loads ---------------------------------------------------------------------------------------------

    def last_load(self, table: str, day: dt.date) -> LoadRecord | None:
        if not self.path.exists():
            return None
        with _path_lock(self.path), self._connection() as con:
            if not _table_exists(con, LOADS_TABLE):
                return None
            row = con.execute(
                f"SELECT fingerprint, rows, files, job_id, epoch_us(loaded_at), sources FROM {quote(LOADS_TABLE)} "
                "WHERE table_name = ? AND day = ? ORDER BY loaded_at DESC LIMIT 1",
                [table, day],
            ).fetchall()
        if not row:
            return None
        fp, rows, files, job_id, loaded_us, sources = row[0]
        return LoadRecord(
            table=table,
            day=day,
            fingerprint=fp,
            rows=int(rows),
            files=int(files),
            job_id=job_id,
            loaded_at=dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=int(loaded_us)),
            sources=json.loads(sources or "[]"),
        )

    def load_day(self, batch: DayBatch) -> LoadResult:
        """Delete the day, insert every file of it and record the load, in one transaction (or nothing at all)."""
        missing = [f.path for f in batch.files if f.local is None]
        if missing:
            raise WarehouseError(f"{missing[0]} has no local copy to load")
        schema = table_schema(batch.schema)
        job_id = f"duckdb-{batch.table}-{batch.day:%Y%m%d}-{time.time_ns()}"
        with _path_lock(self.path), self._connection() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                _ensure_loads_table(con)
                added = ensure_table(con, batch.table, schema)
                rows = self._replace_day(con, batch, schema)
                _insert_record(con, batch, rows, job_id)
                con.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(Exception):
                    con.execute("ROLLBACK")
                raise
        return LoadResult(rows=rows, job_id=job_id, added_columns=added)

    def _replace_day(self, con: Any, batch: DayBatch, schema: pa.Schema) -> int:
        day = batch.day
        start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
        end = start + dt.timedelta(days=1)
        table = quote(batch.table)
        con.execute(f"DELETE FROM {table} WHERE {DAY} = ?", [day])
        file_cols = [f.name for f in batch.schema]
        files = ", ".join(literal(str(f.local)) for f in batch.files)
        select = ", ".join(quote(c) for c in file_cols)
        columns = ", ".join(quote(c) for c in [DAY, KEY, *file_cols])
        key_expr = r"regexp_extract(filename, '([^/\\]+)\.parquet$', 1)"
        con.execute(
            f"INSERT INTO {table} ({columns}) "
            f"SELECT ?::DATE, {key_expr}, {select} "
            f"FROM read_parquet([{files}], filename = true, union_by_name = true) "
            f"ORDER BY 2, {quote(TS)}",
            [day],
        )
        # Check what landed before committing: every file's rows under its key, all inside the day, no repeats.
        got = dict(
            con.execute(f"SELECT {KEY}, count(*) FROM {table} WHERE {DAY} = ? GROUP BY 1", [day]).fetchall()
        )
        want = {f.instrument_key: f.rows for f in batch.files if f.rows}  # an empty file adds no rows
        if got != want:
            bad = sorted(set(got) ^ set(want)) or sorted(k for k in want if got.get(k) != want[k])
            raise WarehouseError(
                f"{batch.table} {day}: loaded rows do not match the files' footers (first mismatch: {bad[0]})"
            )
        outside, dupes = con.execute(
            f"SELECT count(*) FILTER (WHERE {quote(TS)} < ? OR {quote(TS)} >= ? OR {quote(TS)} IS NULL), "
            f"count(*) - count(DISTINCT ({KEY}, {quote(TS)})) FROM {table} WHERE {DAY} = ?",
            [start, end, day],
        ).fetchall()[0]
        if outside:
            raise WarehouseError(f"{batch.table} {day}: {outside} candle rows lie outside {day} (UTC)")
        if dupes:
            raise WarehouseError(f"{batch.table} {day}: {dupes} repeated (instrument_key, timestamp) rows")
        return sum(want.values())

    # -- queries -------------------------------------------------------------------------------------------

    def query(self, sql: str, max_rows: int | None = None) -> tuple[pa.Table, bool]:
        """One statement against a read-only connection; SQL mistakes are a one-line ``UsageError``."""
        import duckdb

        with self._connection(read_only=True) as con:
            try:
                rel = con.sql(sql)
                if rel is None:
                    return pa.table({}), False
                if max_rows is None:
                    return rel.to_arrow_table(), False
                reader = rel.to_arrow_reader(min(max_rows + 1, 100_000) or 1)
                batches, count = [], 0
                try:
                    for batch in reader:
                        batches.append(batch)
                        count += batch.num_rows
                        if count > max_rows:
                            break
                finally:
                    reader.close()
            except duckdb.Error as exc:
                raise UsageError(f"SQL error: {_first_line(exc)}") from None
        table = pa.Table.from_batches(batches, schema=reader.schema)
        return table.slice(0, max_rows), count > max_rows

    def tables(self) -> list[str]:
        if not self.path.exists():
            return []
        with self._connection(read_only=True) as con:
            return [
                r[0]
                for r in con.execute("SELECT table_name FROM information_schema.tables ORDER BY 1").fetchall()
            ]

    def close(self) -> None:
        """Nothing stays open between operations."""


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _table_exists(con: Any, name: str) -> bool:
    return bool(
        con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'main' AND table_name = ?",
            [name],
        ).fetchall()[0][0]
    )


def _columns(con: Any, name: str) -> dict[str, str]:
    rows = con.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'main' AND table_name = ? ORDER BY ordinal_position",
        [name],
    ).fetchall()
    return dict(rows)


def _column_sql(field: pa.Field) -> str:
    null = " NOT NULL" if field.name in REQUIRED else ""
    return f"{quote(field.name)} {duckdb_type(field)}{null}"


def ensure_table(con: Any, name: str, schema: pa.Schema) -> list[str]:
    """Create the table, or add the columns it lacks (nullable); a column whose type changed is an error."""
    existing = _columns(con, name)
    if not existing:
        con.execute(f"CREATE TABLE {quote(name)} ({', '.join(_column_sql(f) for f in schema)})")
        return []
    added = []
    for field in schema:
        want = duckdb_type(field)
        have = existing.get(field.name)
        if have is None:
            con.execute(f"ALTER TABLE {quote(name)} ADD COLUMN {quote(field.name)} {want}")
            added.append(field.name)
        elif have != want:
            raise WarehouseError(
                f"column {field.name!r} of {name} is {have} in the warehouse but {want} in the new rows"
            )
    return added


def _ensure_loads_table(con: Any) -> None:
    if not _table_exists(con, LOADS_TABLE):
        con.execute(
            f"CREATE TABLE {quote(LOADS_TABLE)} ({', '.join(_column_sql_loads(f) for f in loads_schema())})"
        )


def _column_sql_loads(field: pa.Field) -> str:
    null = "" if field.nullable else " NOT NULL"
    return f"{quote(field.name)} {duckdb_type(field)}{null}"


def _insert_record(con: Any, batch: DayBatch, rows: int, job_id: str) -> None:
    con.execute(
        f"INSERT INTO {quote(LOADS_TABLE)} VALUES (?, ?, ?, ?, ?, ?, ?, now(), ?, ?)",
        [
            batch.table,
            batch.day,
            batch.timeframe,
            batch.fingerprint,
            len(batch.files),
            rows,
            job_id,
            json.dumps([f.to_record() for f in batch.files], separators=(",", ":")),
            __version__,
        ],
    )
