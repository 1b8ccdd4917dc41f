"""The last recorded outcome of every download unit, from the job records in the lake (``_jobs/``).

A file that is absent is explained by the last attempt at the unit that should have written it: 404,
401, not exported yet, failed, or written (and since deleted). In-process runs (``mdth download`` without
``--shards``) keep no records, so their failures read as never attempted; ``mdth validate --fix`` always
runs as a recorded job.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from typing import Any


@dataclasses.dataclass(frozen=True, slots=True)
class RecordedOutcome:
    """One unit's latest result row, with the job that recorded it."""

    unit_id: str
    outcome: str
    reason: str
    rows: int
    job_id: str
    finished_at: dt.datetime | None
    output: str = ""  # the unit's (first) lake path; a grouped unit writes only the outputs it planned


class DownloadOutcomes:
    """Latest outcome per download unit id, over every download job whose request covers the day.

    Job specs are listed once; each job's results are read once, on first need (thread-safe).
    """

    def __init__(self, store: Any) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._ranges: list[tuple[str, dt.date, dt.date, str]] | None = None  # job, start, end, created
        self._results: dict[str, list[dict[str, Any]]] = {}

    def _jobs(self) -> list[tuple[str, dt.date, dt.date, str]]:
        from mdth_engine.jobs import records as rec
        from mdth_engine.jobs.status import list_job_ids

        with self._lock:
            if self._ranges is not None:
                return self._ranges
        found = []
        for job_id in list_job_ids(self.store):
            try:
                spec = rec.load_spec(self.store, job_id)
            except Exception:  # an unreadable job record does not hide the others
                continue
            if spec.operation != "download":
                continue
            try:
                start = dt.date.fromisoformat(spec.request["start"])
                end = dt.date.fromisoformat(spec.request["end"])
            except (KeyError, TypeError, ValueError):
                continue
            found.append((job_id, start, end, spec.created_at or ""))
        found.sort(key=lambda j: (j[3], j[0]))
        with self._lock:
            self._ranges = found
        return found

    def _rows(self, job_id: str) -> list[dict[str, Any]]:
        from mdth_engine.jobs import records as rec

        with self._lock:
            cached = self._results.get(job_id)
        if cached is not None:
            return cached
        try:
            rows = rec.read_results(self.store, job_id)
        except Exception:
            rows = []
        with self._lock:
            self._results[job_id] = rows
        return rows

    def for_day(self, day: dt.date) -> dict[str, RecordedOutcome]:
        """unit id -> its latest outcome, for the download units of ``day``."""
        prefix = f"{day.isoformat()}/"
        latest: dict[str, tuple[tuple[float, int], RecordedOutcome]] = {}
        for order, (job_id, start, end, _) in enumerate(self._jobs()):
            if not start <= day <= end:
                continue
            for row in self._rows(job_id):
                unit_id = row.get("unit_id") or ""
                if not unit_id.startswith(prefix):
                    continue
                finished = row.get("finished_at")
                when = finished.timestamp() if isinstance(finished, dt.datetime) else 0.0
                rank = (when, order)
                held = latest.get(unit_id)
                if held is None or rank >= held[0]:
                    latest[unit_id] = (
                        rank,
                        RecordedOutcome(
                            unit_id,
                            str(row.get("outcome") or ""),
                            str(row.get("reason") or ""),
                            int(row.get("rows") or 0),
                            job_id,
                            finished if isinstance(finished, dt.datetime) else None,
                            str(row.get("output") or ""),
                        ),
                    )
        return {uid: outcome for uid, (_, outcome) in latest.items()}
