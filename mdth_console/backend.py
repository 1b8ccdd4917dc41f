"""The console's only door to the engine: the facade `mdth_engine.api` (and ``LiveFeatureStream`` from the
top-level package), never the engine's internal modules. Every method blocks (store and network I/O): call
them from worker threads only.

Screens receive a ``ConsoleBackend`` from the app, so tests can give them one over any lake.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Any

FINISHED_REREAD_S = 30.0


class ConsoleBackend:
    """One lake, its settings and store, and the facade calls the screens need."""

    def __init__(self, lake: str) -> None:
        self.lake_url = lake
        self._lake: Any = None
        self._lock = threading.RLock()
        self._trackers: dict[str, Any] = {}
        self._finished: dict[str, Any] = {}
        self._finished_at = time.monotonic()

    # -- plumbing ------------------------------------------------------------------------------------------
    @property
    def lake(self) -> Any:
        """The ``mdth_engine.api.Lake`` (opened on first use, in a worker)."""
        with self._lock:
            if self._lake is None:
                from mdth_engine.api import Lake

                self._lake = Lake(self.lake_url)
            return self._lake

    @property
    def store(self) -> Any:
        return self.lake.store

    @property
    def settings(self) -> Any:
        return self.lake.settings

    def now(self) -> float:
        """Wall clock for heartbeat ages (a frozen backend returns a fixed time)."""
        return time.time()

    # -- lake ----------------------------------------------------------------------------------------------
    def overview(self) -> dict[str, Any]:
        from mdth_engine.api import lake_overview

        return lake_overview(self.lake_url)

    def built_days(self) -> list[dt.date]:
        return self.lake.built_days()

    def instrument_keys(self, day: dt.date | str) -> list[dict[str, Any]]:
        """The master of a day, trimmed to what search needs."""
        table = self.lake.instruments(day)
        cols = ["instrument_key", "tardis_symbol", "instrument_type", "venue"]
        return table.select(cols).to_pylist()

    def inspect(self, key: str, day: dt.date | str | None = None) -> dict[str, Any]:
        return self.lake.inspect(key, day)

    def last_ticks(self, key: str, data_type: str, day: dt.date | str, n: int = 20) -> list[dict[str, Any]]:
        """The day's last ``n`` ticks (by arrival), reading the last hour first and the whole day if empty."""
        from mdth_engine.api import parse_day

        start_day = parse_day(day)
        end = dt.datetime.combine(start_day + dt.timedelta(days=1), dt.time(), dt.UTC)
        for window in (dt.timedelta(hours=1), dt.timedelta(days=1)):
            table = self.lake.ticks(key, data_type, end - window, end, by="local_timestamp")
            if table.num_rows:
                return table.slice(max(0, table.num_rows - n)).to_pylist()
        return []

    def day_candles(self, key: str, timeframe: str, day: dt.date | str) -> dict[str, list[Any]]:
        """One day's candles of an instrument (columns as lists: timestamp, open, high, low, close, volume)."""
        from mdth_engine.api import parse_day

        first = dt.datetime.combine(parse_day(day), dt.time(), dt.UTC)
        cols = ["timestamp", "open", "high", "low", "close", "volume", "trade_count"]
        table = self.lake.candles(key, timeframe, first, first + dt.timedelta(days=1), columns=cols)
        return {c: table[c].to_pylist() for c in cols}

    # -- jobs ----------------------------------------------------------------------------------------------
    def jobs(self, limit: int = 50) -> list[Any]:
        """Newest jobs; finished ones are read again only every ``FINISHED_REREAD_S`` (a retry elsewhere shows
        up within that; one from this console at once), so a lake with many old jobs stays cheap to poll."""
        from mdth_engine.api import recent_jobs

        now = time.monotonic()
        with self._lock:
            if now - self._finished_at > FINISHED_REREAD_S:
                self._finished, self._finished_at = {}, now
            reuse = dict(self._finished)
        statuses = recent_jobs(self.store, limit, reuse=reuse)
        with self._lock:
            for status in statuses:
                if status.finished:
                    self._finished.setdefault(status.job_id, status)
        return statuses

    def forget(self, job_id: str) -> None:
        """Read this job's records again at the next poll (it was just retried or cleaned up)."""
        with self._lock:
            self._finished.pop(job_id, None)

    def job(self, job_id: str) -> Any:
        from mdth_engine.api import job_status

        return job_status(self.store, job_id)

    def failures(self, job_id: str) -> list[dict[str, Any]]:
        """Failed units of a job with reasons, read incrementally (each result file once)."""
        from mdth_engine.api import FailureTracker

        store = self.store
        with self._lock:
            tracker = self._trackers.get(job_id)
            if tracker is None:
                tracker = self._trackers[job_id] = FailureTracker(store, job_id)
            return tracker.update()  # one poll at a time per tracker

    def log(self, job_id: str, shard: int, tail: int = 200) -> str:
        from mdth_engine.api import job_log

        return job_log(self.store, job_id, shard, tail)

    def cancel(self, job_id: str) -> list[int]:
        from mdth_engine.api import cancel_job

        return cancel_job(self.store, job_id, self.settings, wait_s=5.0)

    def retry(self, job_id: str, shards: list[int] | None = None) -> list[int]:
        """Relaunch failed shards, then hand the job to a detached supervisor again (the old one has ended)."""
        from mdth_engine.api import retry_job, spawn_supervisor

        self.forget(job_id)
        relaunched = retry_job(self.store, job_id, self.settings, shards=shards)
        if relaunched:
            spawn_supervisor(job_id, self.lake_url)
        return relaunched

    def cleanup(self, job_id: str) -> dict[str, Any]:
        from mdth_engine.api import cleanup_job

        self.forget(job_id)
        return cleanup_job(self.store, job_id, self.settings)

    # -- launching -----------------------------------------------------------------------------------------
    def request(self, operation: str, fields: dict[str, Any]) -> Any:
        from mdth_engine.api import launch_request

        return launch_request(operation, **fields)

    def command_line(self, request: Any, shards: int, backend: str) -> str:
        from mdth_engine.api import command_line

        return command_line(request, shards=shards, backend=backend, lake=self.lake_url)

    def preview(self, request: Any, shards: int) -> dict[str, Any]:
        from mdth_engine.api import plan_launch

        return plan_launch(request, self.settings, shards=shards)

    def launch(self, request: Any, shards: int, backend: str) -> dict[str, Any]:
        """Start the request as a job (a pipeline as successive jobs) that outlives the console."""
        from mdth_engine.api import start_job, start_pipeline

        if request.operation == "pipeline":
            started = start_pipeline(request, self.settings, shards=shards, backend=backend)
            return {"pipeline": started["name"], "log": started["log"], "job_id": None}
        spec = start_job(request, self.settings, shards=shards, backend=backend)
        return {"job_id": spec.job_id, "units": spec.units, "shards": spec.shards}

    # -- coverage ------------------------------------------------------------------------------------------
    def coverage(self, start: dt.date, end: dt.date, **selection: Any) -> list[dict[str, Any]]:
        from mdth_engine.api import coverage

        return coverage(self.store, start, end, settings=self.settings, **selection).to_pylist()

    def fix_requests(self, rows: list[dict[str, Any]], base: Any = None) -> list[Any]:
        from mdth_engine.api import coverage_fix_requests

        return coverage_fix_requests(rows, base)

    # -- live ----------------------------------------------------------------------------------------------
    def open_stream(self, source: str, symbols: list[str], timeframes: str) -> Any:
        """A ``LiveFeatureStream`` for display: drops its oldest bars rather than ever blocking the engine."""
        from mdth_engine import LiveFeatureStream

        return LiveFeatureStream(
            symbols, timeframes, source=source, lake=self.lake_url, policy="drop_oldest", events=True
        )
