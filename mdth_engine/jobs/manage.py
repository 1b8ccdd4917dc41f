"""Creating, launching, cancelling, retrying and cleaning up jobs (DESIGN.md section 5).

A job is planned once (spec + plan in the store), launched shard by shard on a backend, and then only
read: progress, failures and liveness all come from records the workers write.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from mdth_engine import __version__
from mdth_engine.core.errors import MdthError, UsageError
from mdth_engine.core.events import Sink, null_sink
from mdth_engine.core.settings import Settings
from mdth_engine.jobs import records as rec
from mdth_engine.jobs.backends import ALIVE, UNKNOWN, Backend, check_backend, get_backend
from mdth_engine.jobs.sharding import assign_shards, effective_shards
from mdth_engine.jobs.spec import DEFAULT_MAX_ATTEMPTS, JobSpec, new_job_id, settings_snapshot, who
from mdth_engine.jobs.status import STALE_AFTER_S, JobStatus
from mdth_engine.stages.base import Request, WorkUnit
from mdth_engine.storage import layout


def check_shared_warehouse(backend: str, settings: Settings) -> None:
    """Workers on other machines cannot share a DuckDB file: each VM would load into one on its own boot disk
    and delete it with itself, and the job would still report success."""
    if backend != "local" and settings.warehouse_url().startswith("duckdb:"):
        raise UsageError(
            f"--backend {backend} needs a warehouse the VMs share: "
            "set MDTH_WAREHOUSE=bigquery://project/dataset (or --warehouse)"
        )


def create_job(
    store: Any,
    request: Request,
    *,
    shards: int,
    backend: str,
    settings: Settings,
    sink: Sink = null_sink,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    units: list[WorkUnit] | None = None,
) -> JobSpec:
    """Plan the request through its stage (unless ``units`` were planned already), split it into shards by
    expected bytes, and record spec + plan."""
    from mdth_engine.stages.registry import StageContext, get_stage

    if shards < 1:
        raise UsageError(f"--shards must be at least 1, got {shards}")
    check_backend(backend, settings, request.operation)
    if request.operation == "upload":
        check_shared_warehouse(backend, settings)
    job_id = new_job_id(request.operation)
    if units is None:
        spool = Path(tempfile.mkdtemp(prefix=f"mdth-plan-p{os.getpid()}-"))  # a kill's leftover is swept
        try:
            stage = get_stage(request.operation, StageContext(settings, store, spool, sink, job_id))
            units = stage.plan(request)
        finally:
            shutil.rmtree(spool, ignore_errors=True)
    if not units:
        raise UsageError(
            f"nothing to run: {request.operation} planned no work for {request.start}..{request.end}"
        )
    n = effective_shards(shards, len(units))
    assignment = assign_shards(units, n)
    spec = JobSpec(
        job_id=job_id,
        operation=request.operation,
        request=request.to_dict(),
        shards=n,
        shards_requested=shards,
        backend=backend,
        engine_version=__version__,
        created_by=who(),
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        units=len(units),
        est_bytes=sum(u.est_bytes for u in units),
        max_attempts=max(1, max_attempts),
        lake=store.url,
        settings=settings_snapshot(settings),
    )
    rec.write_plan(store, job_id, units, assignment)
    rec.save_spec(store, spec)  # last: a job is listed only once its plan is in place
    return spec


def launch_shard(
    store: Any, spec: JobSpec, shard: int, backend: Backend, *, relaunches: int = 0, note: str = ""
) -> rec.ShardRecord:
    """Record the attempt as LAUNCHED, then start its worker; a failed start stays visible as the record's error."""
    previous = rec.read_shard(store, spec.job_id, shard)
    record = previous or rec.ShardRecord(spec.job_id, shard)
    record.state = rec.LAUNCHED
    record.attempt = record.attempt + 1
    record.relaunches = relaunches
    record.backend = spec.backend
    record.vm = backend.instance_name(spec, shard, record.attempt)
    record.host, record.pid = (
        getattr(backend, "host", ""),
        None,
    )  # local: this machine; the worker adds its pid
    record.started_at = record.finished_at = None
    record.eta_s = None
    record.last_error = note or record.last_error
    rec.write_shard(store, record)  # before the worker starts: it reads its attempt from here
    try:
        backend.launch(spec, shard, record.attempt)
    except Exception as exc:
        record.last_error = f"launch failed: {_line(exc)}"
        rec.write_shard(store, record)
        raise
    return record


def launch_job(store: Any, job_id: str, settings: Settings) -> None:
    """Start every shard not launched yet (idempotent); raises when no shard could be started."""
    spec = rec.load_spec(store, job_id)
    backend = get_backend(spec.backend, store, settings, spec.operation)
    errors = []
    pending = [r.shard for r in rec.read_shards(store, spec) if r.state == rec.PENDING]
    for shard in pending:
        try:
            launch_shard(store, spec, shard, backend)
        except Exception as exc:
            errors.append(f"shard {shard}: {_line(exc)}")
    if pending and len(errors) == len(pending):
        for shard in pending:
            _mark(store, spec.job_id, shard, rec.DEAD, "could not be launched")
        raise MdthError(f"no shard of {job_id} could be launched: {errors[0]}")


def _line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _mark(store: Any, job_id: str, shard: int, state: str, error: str) -> None:
    record = rec.read_shard(store, job_id, shard) or rec.ShardRecord(job_id, shard)
    record.state = state
    record.last_error = error or record.last_error
    record.finished_at = time.time()
    rec.write_shard(store, record)


def run_job(
    store: Any,
    request: Request,
    *,
    shards: int,
    backend: str,
    settings: Settings,
    sink: Sink = null_sink,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    **follow_options: Any,
) -> JobStatus:
    """Create, launch and follow a job to its end; ``status.exit_code`` is 1 when any unit failed."""
    from mdth_engine.jobs.follow import follow_job

    spec = create_job(
        store,
        request,
        shards=shards,
        backend=backend,
        settings=settings,
        sink=sink,
        max_attempts=max_attempts,
    )
    launch_job(store, spec.job_id, settings)
    return follow_job(store, spec.job_id, sink, settings=settings, **follow_options)


def cancel_job(
    store: Any, job_id: str, settings: Settings | None = None, *, wait_s: float = 10.0
) -> list[int]:
    """Ask every worker to stop (a record they poll, so it works from any machine), stop what this machine can
    reach (local processes here, the job's VMs), and mark shards that are gone as cancelled. Returns them."""
    spec = rec.load_spec(store, job_id)
    settings = settings or _settings_for(store)
    rec.request_cancel(store, job_id, who())
    backend = get_backend(spec.backend, store, settings)
    open_shards = [r for r in rec.read_shards(store, spec) if not r.final]
    for record in open_shards:
        try:
            backend.cancel(spec, record.shard, record)
        except MdthError:
            pass  # the record still asks the worker to stop
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:  # until every worker stopped (or, elsewhere, recorded that it did)
        records = rec.read_shards(store, spec)
        if all(r.final or backend.status(spec, r.shard, r) not in (ALIVE, UNKNOWN) for r in records):
            break
        time.sleep(0.2)
    marked = []
    for record in rec.read_shards(store, spec):
        if not record.final and backend.status(spec, record.shard, record) != ALIVE:
            _mark(store, job_id, record.shard, rec.CANCELLED, f"cancelled by {who()}")
            marked.append(record.shard)
    return sorted({r.shard for r in open_shards} | set(marked))


def needs_retry(record: rec.ShardRecord, now: float | None = None) -> bool:
    """A shard that did not finish cleanly, finished with units worth another try, or whose worker went
    silent with nobody supervising it."""
    if record.state == rec.PENDING:
        return True
    if not record.final:
        return record.state == rec.INTERRUPTED or record.age(now) > STALE_AFTER_S
    return record.state != rec.DONE or any(o not in rec.FINAL_OUTCOMES for o in record.outcomes)


def retry_job(
    store: Any, job_id: str, settings: Settings | None = None, *, shards: list[int] | None = None
) -> list[int]:
    """Relaunch failed, dead or cancelled shards (or those given); their workers redo only unsettled units."""
    spec = rec.load_spec(store, job_id)
    settings = settings or _settings_for(store)
    backend = get_backend(spec.backend, store, settings, spec.operation)  # it launches workers
    if rec.cancel_requested(store, job_id):
        rec.clear_cancel(store, job_id)
    records = rec.read_shards(store, spec)
    if shards is not None:
        bad = [s for s in shards if not 0 <= s < spec.shards]
        if bad:
            raise UsageError(f"job {job_id} has shards 0..{spec.shards - 1}, not {bad[0]}")
        chosen = [records[s] for s in sorted(set(shards))]
        busy = [r.shard for r in chosen if not r.final and not needs_retry(r)]
        if busy:
            raise UsageError(
                f"shard {busy[0]} of {job_id} is still {records[busy[0]].state}; cancel it first"
            )
    else:
        chosen = [r for r in records if needs_retry(r)]
    for record in chosen:
        if not record.final and record.state != rec.PENDING:
            backend.cancel(spec, record.shard, record, force=True)  # a silent worker must not come back
        launch_shard(store, spec, record.shard, backend, relaunches=0, note="")
    return [r.shard for r in chosen]


def cleanup_job(
    store: Any, job_id: str, settings: Settings | None = None, *, purge: bool = False
) -> dict[str, Any]:
    """Stop whatever still runs for the job (VMs, processes here), mark unfinished shards whose worker is gone
    as dead, and with ``purge`` delete the job's records."""
    spec = rec.load_spec(store, job_id)
    settings = settings or _settings_for(store)
    backend = get_backend(spec.backend, store, settings)
    stopped = backend.cleanup(spec)
    marked = []
    for record in rec.read_shards(store, spec):
        if not record.final and record.state != rec.PENDING:
            _mark(store, job_id, record.shard, rec.DEAD, record.last_error or "cleaned up: worker gone")
            marked.append(record.shard)
    deleted = 0
    if purge:
        for info in list(store.list(layout.job_dir(job_id) + "/")):
            if info.path != layout.job_spec_path(job_id):
                store.delete(info.path)
                deleted += 1
        store.delete(layout.job_spec_path(job_id))  # last: the job disappears from listings only when empty
        deleted += 1
    return {"job_id": job_id, "stopped": stopped, "marked_dead": marked, "deleted": deleted}


def _settings_for(store: Any) -> Settings:
    from mdth_engine.core.settings import load_settings

    return load_settings(lake=store.url)
