"""Following a job: read its records, turn them into progress events, and heal shards that died.

A shard is relaunched (a bounded number of times) when its process exited or its VM was preempted without a
final record, when its heartbeat stopped, or when it never started; the new worker resumes from the lake.
"""

from __future__ import annotations

import time
from typing import Any

from mdth_engine.core.events import Event, Kind, Sink
from mdth_engine.core.settings import Settings
from mdth_engine.jobs import records as rec
from mdth_engine.jobs.backends import ALIVE, GONE, PREEMPTED, Backend, get_backend
from mdth_engine.jobs.manage import launch_shard
from mdth_engine.jobs.spec import JobSpec
from mdth_engine.jobs.status import STALE_AFTER_S, JobStatus, job_status, shard_view
from mdth_engine.stages.base import FAILED_OUTCOMES

RESULTS_SCAN_S = 5.0  # how often new unit outcomes are read for failures
REEMIT_S = 10.0  # a shard's progress event is repeated this often even when nothing moved


class Supervisor:
    """Decides, per poll, which shards are dead and relaunches them (or gives up after ``max_attempts``)."""

    def __init__(
        self,
        store: Any,
        spec: JobSpec,
        backend: Backend,
        sink: Sink,
        *,
        stale_after: float = STALE_AFTER_S,
        launch_grace: float | None = None,
    ) -> None:
        self.store, self.spec, self.backend, self.sink = store, spec, backend, sink
        self.stale_after = stale_after
        self.launch_grace = backend.launch_grace_s if launch_grace is None else launch_grace

    def check(self, status: JobStatus) -> None:
        for record in status.shards:
            if record.final:
                continue
            if record.state == rec.PENDING:
                if status.cancel_requested:
                    record.state, record.finished_at = rec.CANCELLED, time.time()
                    rec.write_shard(self.store, record)
                else:
                    self._launch(record, "")
                continue
            try:
                reason = self.dead_reason(record, status.at)
            except Exception as exc:  # the backend cannot be asked right now: judge again at the next poll
                self._warn(f"shard {record.shard}: cannot check its worker: {exc}")
                continue
            if reason:
                self.heal(record, reason, cancelled=status.cancel_requested)

    def dead_reason(self, record: rec.ShardRecord, now: float) -> str:
        """Why the shard's worker is to be considered dead, or '' while it is (or may still be) working."""
        presence = self.backend.status(self.spec, record.shard, record)
        age = record.age(now)
        if presence in (GONE, PREEMPTED):
            fresh = rec.read_shard(self.store, self.spec.job_id, record.shard)
            if fresh is not None and (fresh.final or fresh.attempt != record.attempt):
                return ""  # it finished (or was relaunched) after we read it
            if presence == PREEMPTED:
                return f"VM {record.vm or ''} preempted or stopped".replace("  ", " ")
            if record.state == rec.LAUNCHED and age < (30 if self.spec.backend == "gce" else 5):
                return ""  # the VM may not be listed yet, the process may be between fork and exec
            what = "VM is gone" if self.spec.backend == "gce" else "process exited"
            said = f" ({record.last_error})" if record.state == rec.INTERRUPTED and record.last_error else ""
            return f"{what} before the shard finished{said}"
        if presence == ALIVE and record.state == rec.INTERRUPTED and age > self.stale_after:
            return "worker stopped without finishing"
        if record.state == rec.RUNNING and age > self.stale_after:
            return f"heartbeat stopped {age:.0f}s ago"
        if record.state == rec.LAUNCHED and age > self.launch_grace:
            return f"worker did not start within {self.launch_grace:.0f}s"
        if record.state == rec.INTERRUPTED and presence != ALIVE and age > self.stale_after:
            return "worker stopped without finishing"
        return ""

    def heal(self, record: rec.ShardRecord, reason: str, *, cancelled: bool = False) -> None:
        job = self.spec.job_id
        try:
            self.backend.cancel(self.spec, record.shard, record, force=True)  # never two workers on one shard
        except Exception as exc:
            self._warn(f"shard {record.shard}: could not stop the old worker: {exc}")
        if cancelled:
            record.state, record.finished_at = rec.CANCELLED, time.time()
            rec.write_shard(self.store, record)
            return
        if record.relaunches + 1 >= self.spec.max_attempts:
            record.state, record.finished_at = rec.DEAD, time.time()
            record.last_error = f"{reason}; gave up after {record.attempt} attempts"
            rec.write_shard(self.store, record)
            self.sink(
                Event(
                    Kind.ERROR,
                    self.spec.operation,
                    job=job,
                    message=f"shard {record.shard}: {record.last_error}",
                )
            )
            return
        self._warn(
            f"shard {record.shard}: {reason}; relaunching "
            f"(relaunch {record.relaunches + 1} of {self.spec.max_attempts - 1})"
        )
        self._launch(record, reason, relaunches=record.relaunches + 1)

    def _launch(self, record: rec.ShardRecord, note: str, relaunches: int = 0) -> None:
        try:
            launch_shard(self.store, self.spec, record.shard, self.backend, relaunches=relaunches, note=note)
        except Exception as exc:
            # counted as an attempt: the next poll sees the worker gone, and relaunches or gives up
            self._warn(f"shard {record.shard}: launch failed: {exc}")

    def _warn(self, message: str) -> None:
        self.sink(Event(Kind.WARNING, self.spec.operation, job=self.spec.job_id, message=message))


class _Reporter:
    """Turns successive statuses into events: per-shard progress (stage ``op[i]``, ``data.shard``), the job's
    total (stage ``op``, ``data`` = the job's status), failures (ERROR per failed unit), shard ends (INFO)."""

    def __init__(self, store: Any, spec: JobSpec, sink: Sink) -> None:
        self.store, self.spec, self.sink = store, spec, sink
        self.signatures: dict[int, tuple] = {}
        self.emitted_at: dict[int, float] = {}
        self.final: set[int] = set()
        self.seen_results: set[str] = set()
        self.last_scan = 0.0
        self.last_job: tuple | None = None

    def started(self, status: JobStatus) -> None:
        self.sink(
            Event(
                Kind.STARTED,
                self.spec.operation,
                job=self.spec.job_id,
                units_total=self.spec.units,
                message=f"{self.spec.shards} shard(s) on {self.spec.backend}",
                data={"job_id": self.spec.job_id, "shards": self.spec.shards, "backend": self.spec.backend},
            )
        )
        for record in status.shards:
            if record.final:
                self.final.add(record.shard)

    def report(self, status: JobStatus, *, force_scan: bool = False) -> None:
        now = time.monotonic()
        if force_scan or now - self.last_scan >= RESULTS_SCAN_S:
            self.last_scan = now
            self._failures()
        job, op = self.spec.job_id, self.spec.operation
        for record in status.shards:
            view = shard_view(record, status.at)
            sig = (
                record.state,
                record.units_done,
                record.rows,
                record.bytes,
                record.last_error,
                record.attempt,
            )
            if (
                sig != self.signatures.get(record.shard)
                or now - self.emitted_at.get(record.shard, 0) >= REEMIT_S
            ):
                self.signatures[record.shard] = sig
                self.emitted_at[record.shard] = now
                self.sink(
                    Event(
                        Kind.PROGRESS,
                        f"{op}[{record.shard}]",  # its own stage: a generic renderer draws one bar per shard
                        job=job,
                        message=f"shard {record.shard} {record.state}",
                        units_done=record.units_done,
                        units_total=record.units_total,
                        rows=record.rows,
                        bytes=record.bytes,
                        data={"shard": record.shard, **view},
                    )
                )
            if record.final and record.shard not in self.final:
                self.final.add(record.shard)
                text = f"shard {record.shard} {record.state}: {record.units_done}/{record.units_total} units"
                if record.units_failed:
                    text += f", {record.units_failed} failed"
                if record.state != rec.DONE and record.last_error:
                    text += f" ({record.last_error})"
                self.sink(
                    Event(
                        Kind.INFO,
                        op,
                        job=job,
                        message=text,
                        data={"shard": record.shard, "state": record.state},
                    )
                )
        job_sig = (status.units_done, status.rows, status.bytes, tuple(s.state for s in status.shards))
        if job_sig != self.last_job:
            self.last_job = job_sig
            self.sink(
                Event(
                    Kind.PROGRESS,
                    op,
                    job=job,
                    units_done=status.units_done,
                    units_total=status.units_total,
                    rows=status.rows,
                    bytes=status.bytes,
                    data=status.to_dict(),
                )
            )

    def _failures(self) -> None:
        for path in rec.result_files(self.store, self.spec.job_id):
            if path in self.seen_results:
                continue
            self.seen_results.add(path)
            for row in rec.read_result_file(self.store, path):
                if row["outcome"] in FAILED_OUTCOMES:
                    self.sink(
                        Event(
                            Kind.ERROR,
                            self.spec.operation,
                            job=self.spec.job_id,
                            unit=row["unit_id"],
                            outcome=row["outcome"],
                            message=row["reason"] or row["outcome"],
                        )
                    )

    def finished(self, status: JobStatus) -> None:
        outcomes = status.outcomes()
        text = ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())) or "no units"
        self.sink(
            Event(
                Kind.FINISHED,
                self.spec.operation,
                job=self.spec.job_id,
                units_done=status.units_done,
                units_total=status.units_total,
                rows=status.rows,
                bytes=status.bytes,
                message=f"job {status.state}: {text}",
                data=status.to_dict(),
            )
        )


def follow_job(
    store: Any,
    job_id: str,
    sink: Sink,
    *,
    supervise: bool = True,
    poll: float = 1.0,
    settings: Settings | None = None,
    stale_after: float = STALE_AFTER_S,
    launch_grace: float | None = None,
    timeout: float | None = None,
    backend: Backend | None = None,
) -> JobStatus:
    """Report a job's progress until every shard ended (or ``timeout``), relaunching dead shards when supervising."""
    status = job_status(store, job_id)
    spec = status.spec
    supervisor = None
    if supervise:
        if backend is None:
            from mdth_engine.jobs.manage import _settings_for

            backend = get_backend(spec.backend, store, settings or _settings_for(store), spec.operation)
        supervisor = Supervisor(
            store, spec, backend, sink, stale_after=stale_after, launch_grace=launch_grace
        )
    reporter = _Reporter(store, spec, sink)
    reporter.started(status)
    deadline = time.monotonic() + timeout if timeout is not None else None
    while True:
        if supervisor is not None and not status.finished:
            supervisor.check(status)
            status = job_status(store, job_id)
        reporter.report(status)
        if status.finished or (deadline is not None and time.monotonic() >= deadline):
            break
        time.sleep(poll)
        status = job_status(store, job_id)
    reporter.report(status, force_scan=True)
    if status.finished:
        reporter.finished(status)
    return status
