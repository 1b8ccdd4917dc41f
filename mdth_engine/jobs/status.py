"""A job's state read from its records alone, so any machine that can read the lake can monitor it."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from mdth_engine.jobs import records as rec
from mdth_engine.jobs.spec import JobSpec
from mdth_engine.storage import layout

# A running shard whose heartbeat is older than this is shown (and supervised) as stale.
STALE_AFTER_S = 30.0
# A launched shard that never reported for this long will not start: the longest launch grace of any backend
# (a VM's boot and package install), so a slow start is never called stopped.
LAUNCH_GIVEN_UP_S = 900.0


@dataclasses.dataclass
class JobStatus:
    """A job's spec and every shard's latest record, as of ``at``."""

    spec: JobSpec
    shards: list[rec.ShardRecord]
    cancel_requested: bool = False
    at: float = dataclasses.field(default_factory=time.time)

    @property
    def job_id(self) -> str:
        return self.spec.job_id

    @property
    def finished(self) -> bool:
        return all(s.final for s in self.shards)

    @property
    def stopped_reporting(self) -> bool:
        """Every unfinished shard's worker went silent: without a supervisor nothing will move it again."""
        open_shards = [s for s in self.shards if not s.final]
        return bool(open_shards) and all(is_stopped(s, self.at) for s in open_shards)

    @property
    def state(self) -> str:
        """pending | running | stale (no unfinished shard reports any more) | done | failed | cancelled."""
        if not self.finished:
            if all(s.state == rec.PENDING for s in self.shards):
                return "pending"
            return "stale" if self.stopped_reporting else "running"
        states = {s.state for s in self.shards}
        if rec.CANCELLED in states:
            return "cancelled"
        if states & {rec.FAILED, rec.DEAD} or self.units_failed:
            return "failed"
        return "done"

    @property
    def exit_code(self) -> int:
        """0 when every shard is done without a failed unit, else 1 (the rest of the work is kept)."""
        return 0 if self.state == "done" else 1

    @property
    def units_total(self) -> int:
        return self.spec.units

    @property
    def units_done(self) -> int:
        return sum(s.units_done for s in self.shards)

    @property
    def units_failed(self) -> int:
        return sum(s.units_failed for s in self.shards)

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.shards)

    @property
    def bytes(self) -> int:
        return sum(s.bytes for s in self.shards)

    @property
    def eta_s(self) -> float | None:
        """Shards run side by side: the job ends with its slowest shard (None until every one has an estimate)."""
        etas = [shard_eta(s, self.at) for s in self.shards if not s.final]
        if not etas:
            return 0.0
        if any(e is None for e in etas):
            return None
        return max(e for e in etas if e is not None)

    def outcomes(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for s in self.shards:
            for k, v in s.outcomes.items():
                total[k] = total.get(k, 0) + v
        return total

    def shard_view(self, shard: rec.ShardRecord) -> dict[str, Any]:
        return shard_view(shard, self.at)

    def to_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "operation": self.spec.operation,
            "backend": self.spec.backend,
            "state": self.state,
            "created_at": self.spec.created_at,
            "created_by": self.spec.created_by,
            "shards": len(self.shards),
            "units_total": self.units_total,
            "units_done": self.units_done,
            "units_failed": self.units_failed,
            "outcomes": self.outcomes(),
            "rows": self.rows,
            "bytes": self.bytes,
            "eta_s": _round(self.eta_s),
            "cancel_requested": self.cancel_requested,
            "exit_code": self.exit_code if self.finished else None,
            "shard_states": [s.state for s in self.shards],
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def is_stale(shard: rec.ShardRecord, now: float | None = None, stale_after: float = STALE_AFTER_S) -> bool:
    return shard.state == rec.RUNNING and shard.age(now) > stale_after


def is_stopped(shard: rec.ShardRecord, now: float | None = None, stale_after: float = STALE_AFTER_S) -> bool:
    """Not final, and its worker no longer reports: a stale heartbeat, interrupted and not relaunched since, or
    launched and never heard from."""
    if shard.state == rec.INTERRUPTED:
        return shard.age(now) > stale_after
    if shard.state == rec.LAUNCHED:
        return shard.age(now) > LAUNCH_GIVEN_UP_S
    return is_stale(shard, now, stale_after)


def shard_eta(shard: rec.ShardRecord, now: float | None = None) -> float | None:
    """Seconds left: the worker's estimate minus the time since it was written."""
    if shard.final:
        return 0.0
    if shard.eta_s is None or shard.state != rec.RUNNING:
        return None
    return max(0.0, shard.eta_s - shard.age(now))


def shard_view(shard: rec.ShardRecord, now: float | None = None) -> dict[str, Any]:
    """A shard's record plus what a reader derives: heartbeat age, staleness, ETA now."""
    now = now or time.time()
    out = shard.to_dict()
    out["heartbeat_age_s"] = _round(shard.age(now)) if shard.updated_at else None
    out["stale"] = is_stale(shard, now)
    out["eta_s"] = _round(shard_eta(shard, now))
    out["rate_bytes_s"] = round(shard.rate_bytes_s, 1)
    out["rate_units_s"] = round(shard.rate_units_s, 3)
    return out


def job_status(store: Any, job_id: str) -> JobStatus:
    spec = rec.load_spec(store, job_id)
    return JobStatus(spec, rec.read_shards(store, spec), rec.cancel_requested(store, job_id))


def list_job_ids(store: Any) -> list[str]:
    """Ids of every job with a spec in the lake (newest first: ids start with a timestamp after the operation)."""
    ids = []
    prefix = layout.JOBS_ROOT + "/"
    for info in store.list(prefix):
        parts = info.path[len(prefix) :].split("/")
        if len(parts) == 2 and parts[1] == "spec.json":
            ids.append(parts[0])
    return ids


def list_jobs(store: Any) -> list[JobStatus]:
    """Every job's status, newest first."""
    out = []
    for job_id in list_job_ids(store):
        try:
            out.append(job_status(store, job_id))
        except Exception:  # an unreadable job does not hide the others
            continue
    out.sort(key=lambda s: (s.spec.created_at, s.job_id), reverse=True)
    return out
