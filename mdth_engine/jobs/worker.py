"""One shard of a job, run from the store's records alone (`mdth worker --job ID --shard I`), idempotently.

The worker loads its plan rows, skips units whose outcome is already settled in earlier results, runs the
rest through the unit runner, and meanwhile writes a heartbeat every ~2 s and appends unit outcomes in
batches. Killed at any point, a relaunch resumes: settled units are skipped from the results, and units
done but not yet recorded are cheap ``skipped`` outcomes of the stage itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import re
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any

from mdth_engine import __version__
from mdth_engine.core.errors import UsageError
from mdth_engine.core.events import Event, Kind, Sink, null_sink
from mdth_engine.core.settings import Settings
from mdth_engine.jobs import records as rec
from mdth_engine.jobs.runner import RunSummary, one_line, run_units
from mdth_engine.stages.base import FAILED_OUTCOMES, UnitResult, WorkUnit
from mdth_engine.storage import layout

HEARTBEAT_S = 2.0
FLUSH_S = 5.0
FLUSH_UNITS = 500
LOG_UPLOAD_S = 30.0
RATE_WINDOW_S = 30.0
LEFTOVER_MAX_AGE_S = 86400.0  # a temp file or spool folder whose writer cannot be asked is gone after a day
# ``mdth-{job_id}-{shard}-p{pid}-{random}`` spool folders and ``mdth-plan-p{pid}-{random}`` planning folders:
# only names that carry their writer's pid are ever removed (a user's own ``mdth-...`` folder never is).
_SPOOL = re.compile(r"mdth-(?:[a-z][a-z0-9-]*-\d+-|plan-)p(?P<pid>\d+)-[a-z0-9_]{8}")


@dataclasses.dataclass
class ShardRun:
    """How a worker run ended."""

    job_id: str
    shard: int
    state: str
    units_total: int = 0
    units_prior: int = 0  # settled before this run, not redone
    summary: RunSummary | None = None

    @property
    def exit_code(self) -> int:
        return 0 if self.state == rec.DONE else 1


class _Progress:
    """Counters behind the heartbeat; touched from the event loop and read from the writer thread."""

    def __init__(self, record: rec.ShardRecord, units: list[WorkUnit], latest: dict[str, dict[str, Any]]):
        self.lock = threading.Lock()
        self.record = record
        self.est = {u.unit_id: u.est_bytes for u in units}
        self.latest: dict[str, str] = {}
        self.rows = 0
        self.bytes = 0
        for uid in self.est:
            row = latest.get(uid)
            if row is not None:
                self.latest[uid] = row["outcome"]
                self.rows += int(row["rows"] or 0)
                self.bytes += int(row["bytes"] or 0)
        self.settled = {uid for uid, o in self.latest.items() if o in rec.FINAL_OUTCOMES}
        self.done = set(self.settled)
        self.window: deque[tuple[float, int, int, int]] = deque()
        self.last_error = ""

    def add(self, unit: WorkUnit, result: UnitResult) -> None:
        with self.lock:
            self.latest[unit.unit_id] = str(result.outcome)
            self.done.add(unit.unit_id)
            self.rows += result.rows
            self.bytes += result.bytes
            if result.failed:
                self.last_error = f"{unit.unit_id}: {result.reason}"[:500]

    def snapshot(self) -> rec.ShardRecord:
        """The record as of now, with rates over the last ~30 s and an ETA from expected bytes."""
        with self.lock:
            r = self.record
            now = time.time()
            est_done = sum(self.est[u] for u in self.done)
            units_done = len(self.done)
            self.window.append((now, self.bytes, units_done, est_done))
            while len(self.window) > 2 and now - self.window[0][0] > RATE_WINDOW_S:
                self.window.popleft()
            t0, b0, u0, e0 = self.window[0]
            span = now - t0
            r.units_total = len(self.est)
            r.units_done = units_done
            r.outcomes = dict(Counter(self.latest.values()))
            r.units_failed = sum(1 for o in self.latest.values() if o in FAILED_OUTCOMES)
            r.rows, r.bytes = self.rows, self.bytes
            r.est_bytes_total = sum(self.est.values())
            r.est_bytes_done = est_done
            if span > 0.05:
                r.rate_bytes_s = (self.bytes - b0) / span
                r.rate_units_s = (units_done - u0) / span
                est_rate = (est_done - e0) / span
                remaining = r.est_bytes_total - est_done
                if remaining <= 0:
                    r.eta_s = 0.0
                elif est_rate > 0:
                    r.eta_s = remaining / est_rate
                elif r.rate_units_s > 0:
                    r.eta_s = (r.units_total - units_done) / r.rate_units_s
            r.last_error = self.last_error or r.last_error
            return rec.ShardRecord.from_dict(r.to_dict())


def run_shard(
    store: Any,
    job_id: str,
    shard: int,
    settings: Settings | None = None,
    sink: Sink = null_sink,
    **kwargs: Any,
) -> ShardRun:
    """Run one shard to its end in a fresh event loop (what `mdth worker` calls)."""
    return asyncio.run(arun_shard(store, job_id, shard, settings, sink, **kwargs))


async def arun_shard(
    store: Any,
    job_id: str,
    shard: int,
    settings: Settings | None = None,
    sink: Sink = null_sink,
    *,
    heartbeat_s: float | None = None,
    flush_s: float = FLUSH_S,
    handle_signals: bool = False,
) -> ShardRun:
    """Run one shard; ``handle_signals`` turns SIGTERM into a clean stop (results flushed, state recorded).

    The heartbeat interval defaults to ``MDTH_WORKER_HEARTBEAT_S`` or 2 s.
    """
    if heartbeat_s is None:
        heartbeat_s = float(os.environ.get("MDTH_WORKER_HEARTBEAT_S") or HEARTBEAT_S)
    from mdth_engine.jobs.secrets import with_api_key
    from mdth_engine.jobs.spec import worker_settings
    from mdth_engine.stages.registry import StageContext, get_stage

    spec = rec.load_spec(store, job_id)
    if not 0 <= shard < spec.shards:
        raise UsageError(f"job {job_id} has shards 0..{spec.shards - 1}, not {shard}")
    run_settings = worker_settings(spec, settings.lake if settings else store.url)
    if not run_settings.api_key() and settings is not None and settings.api_key():
        run_settings = run_settings.model_copy(update={"tardis_api_key": settings.tardis_api_key})
    run_settings = await asyncio.to_thread(with_api_key, run_settings)

    previous = await asyncio.to_thread(rec.read_shard, store, job_id, shard)
    record = rec.ShardRecord(job_id, shard, backend=spec.backend, engine_version=__version__)
    if previous is not None:
        record.relaunches = previous.relaunches
        record.vm = previous.vm
        record.last_error = previous.last_error  # e.g. why this attempt was launched, until a newer error
        record.attempt = previous.attempt if previous.state == rec.LAUNCHED else previous.attempt + 1
    record.attempt = max(1, record.attempt)
    record.host, record.pid = socket.gethostname(), os.getpid()
    record.vm = os.environ.get("MDTH_VM_NAME", record.vm)
    record.started_at = time.time()
    record.state = rec.RUNNING

    if await asyncio.to_thread(rec.cancel_requested, store, job_id):
        record.state = rec.CANCELLED
        record.finished_at = time.time()
        await asyncio.to_thread(rec.write_shard, store, record)
        return ShardRun(job_id, shard, rec.CANCELLED)

    plan = [u for u, _ in await asyncio.to_thread(rec.read_plan, store, job_id, shard)]
    prior = rec.latest_outcomes(await asyncio.to_thread(rec.read_results, store, job_id, shard))
    progress = _Progress(record, plan, prior)
    todo = sorted(
        (u for u in plan if u.unit_id not in progress.settled), key=lambda u: (-u.est_bytes, u.unit_id)
    )
    run = ShardRun(job_id, shard, rec.RUNNING, units_total=len(plan), units_prior=len(progress.settled))
    sink(
        Event(
            Kind.INFO,
            spec.operation,
            job=job_id,
            message=f"shard {shard} attempt {record.attempt}: {len(todo)} of {len(plan)} units to run",
        )
    )

    spool = Path(tempfile.mkdtemp(prefix=f"mdth-{job_id}-{shard}-p{os.getpid()}-"))
    writer = _Writer(store, job_id, shard, record.attempt, progress, flush_s, sink, spec.operation)
    error: Exception | None = None
    try:
        await asyncio.to_thread(rec.write_shard, store, progress.snapshot())  # started, before any long work
        swept = await asyncio.to_thread(sweep_leftovers, store)
        if swept:
            sink(
                Event(
                    Kind.INFO, spec.operation, job=job_id, message=f"removed {swept} leftovers of killed runs"
                )
            )
        stage = get_stage(spec.operation, StageContext(run_settings, store, spool, sink, job_id))
        run.summary = await _run_with_heartbeat(
            stage, todo, run_settings, sink, writer, heartbeat_s, handle_signals
        )
        await writer.flush()
        failed = any(o in FAILED_OUTCOMES for o in progress.latest.values())
        run.state = rec.FAILED if failed else rec.DONE
    except _Cancelled:
        run.state = rec.CANCELLED
    except _Interrupted as exc:
        cancelled = await asyncio.to_thread(rec.cancel_requested, store, job_id)
        run.state = rec.CANCELLED if cancelled else rec.INTERRUPTED
        progress.last_error = progress.last_error if cancelled else f"stopped by {exc}"
    except Exception as exc:
        # the shard cannot go on (stage not buildable, store failing): recorded, then re-raised
        run.state = rec.FAILED
        progress.last_error = f"shard stopped: {one_line(exc)}"
        error = exc
    except BaseException:  # cancelled from outside or KeyboardInterrupt: not final, the supervisor relaunches
        run.state = rec.INTERRUPTED
        progress.last_error = "stopped"
        raise
    finally:
        with contextlib.suppress(Exception):
            await writer.flush()
        record = progress.snapshot()
        record.state = run.state
        record.finished_at = time.time() if record.state in rec.FINAL_STATES else None
        if record.state == rec.DONE:
            record.eta_s = 0.0
        with contextlib.suppress(Exception):
            await asyncio.to_thread(rec.write_shard, store, record)
        with contextlib.suppress(Exception):
            await asyncio.to_thread(upload_log, store, job_id, shard)
        shutil.rmtree(spool, ignore_errors=True)
    if error is not None:
        raise error
    return run


class _Cancelled(Exception):
    """The job's cancel request was seen."""


class _Interrupted(Exception):
    """The worker was told to stop (SIGTERM/SIGINT) without a cancel request."""


class _Writer:
    """Appends unit outcomes to results batches and writes heartbeats; all store I/O off the event loop."""

    def __init__(
        self,
        store: Any,
        job_id: str,
        shard: int,
        attempt: int,
        progress: _Progress,
        flush_s: float,
        sink: Sink,
        stage: str,
    ) -> None:
        self.store, self.job_id, self.shard, self.attempt = store, job_id, shard, attempt
        self.sink, self.stage = sink, stage
        self.progress = progress
        self.flush_s = flush_s
        self.buffer: list[dict[str, Any]] = []
        self.seq: int | None = None
        self.last_flush = time.monotonic()
        self.lock = asyncio.Lock()

    async def on_result(self, unit: WorkUnit, result: UnitResult) -> None:
        self.progress.add(unit, result)
        self.buffer.append(rec.result_row(unit, result, self.attempt))
        if len(self.buffer) >= FLUSH_UNITS:
            await self.flush()

    async def flush(self) -> None:
        async with self.lock:
            if not self.buffer:
                return
            rows, self.buffer = self.buffer, []
            if self.seq is None:
                self.seq = await asyncio.to_thread(rec.next_result_seq, self.store, self.job_id, self.shard)
            used = await asyncio.to_thread(
                rec.write_results, self.store, self.job_id, self.shard, self.seq, rows
            )
            self.seq = used + 1
            self.last_flush = time.monotonic()

    async def beat(self) -> None:
        await asyncio.to_thread(rec.write_shard, self.store, self.progress.snapshot())


async def _run_with_heartbeat(
    stage: Any,
    todo: list[WorkUnit],
    settings: Settings,
    sink: Sink,
    writer: _Writer,
    heartbeat_s: float,
    handle_signals: bool,
) -> RunSummary:
    """run_units beside a heartbeat task that also flushes results, uploads the log and watches for cancel."""
    run_task = asyncio.ensure_future(
        run_units(
            stage,
            todo,
            concurrency=settings.concurrency,
            sink=sink,
            job=writer.job_id,
            on_result=writer.on_result,
        )
    )
    stop_reason: list[str] = []
    loop = asyncio.get_running_loop()
    installed: list[int] = []
    if handle_signals and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, _stop, run_task, stop_reason, signal.Signals(sig).name)
                installed.append(sig)

    async def heartbeat() -> None:
        last_log = time.monotonic()
        beats = 0
        while True:
            await asyncio.sleep(heartbeat_s)
            beats += 1
            try:
                if time.monotonic() - writer.last_flush >= writer.flush_s:
                    await writer.flush()
                await writer.beat()
                if beats % 2 == 0 and await asyncio.to_thread(
                    rec.cancel_requested, writer.store, writer.job_id
                ):
                    _stop(run_task, stop_reason, "cancel")
            except Exception as exc:  # a store hiccup must not end the heartbeat; the next beat retries
                writer.sink(
                    Event(
                        Kind.WARNING, writer.stage, job=writer.job_id, message=f"heartbeat: {one_line(exc)}"
                    )
                )
            if time.monotonic() - last_log >= LOG_UPLOAD_S:
                last_log = time.monotonic()
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(upload_log, writer.store, writer.job_id, writer.shard)

    beat_task = asyncio.create_task(heartbeat())
    try:
        return await run_task
    except asyncio.CancelledError:
        if not stop_reason:
            raise
        if stop_reason[0] == "cancel":
            raise _Cancelled() from None
        raise _Interrupted(stop_reason[0]) from None
    finally:
        beat_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await beat_task
        for sig in installed:
            loop.remove_signal_handler(sig)


def _stop(task: asyncio.Future, reasons: list[str], reason: str) -> None:
    if not reasons:
        reasons.append(reason)
    task.cancel()


def sweep_leftovers(store: Any) -> int:
    """Remove what killed runs left: temp files in a local lake whose writer is dead (or, when it cannot be
    asked, that are older than a day) and spool folders here whose process is gone. Returns how many; never
    fails the shard."""
    from mdth_engine.storage.local import LocalStore, pid_alive

    removed = 0
    if isinstance(store, LocalStore):  # a gs:// lake has no temp objects: uploads spool locally
        with contextlib.suppress(Exception):
            removed += len(store.sweep_temp(older_than_s=LEFTOVER_MAX_AGE_S))
    with contextlib.suppress(OSError), os.scandir(tempfile.gettempdir()) as entries:
        for entry in entries:
            match = _SPOOL.fullmatch(entry.name)
            if match is None or not entry.is_dir(follow_symlinks=False):
                continue
            with contextlib.suppress(OSError):
                if not pid_alive(int(match["pid"])):
                    shutil.rmtree(entry.path)
                    removed += 1
    return removed


def upload_log(store: Any, job_id: str, shard: int) -> None:
    """Copy this worker's log file (``MDTH_WORKER_LOG``) to ``_jobs/{id}/logs/{i}.log`` so any machine can read it."""
    path = os.environ.get("MDTH_WORKER_LOG")
    if path and Path(path).is_file():
        store.put_file(layout.job_log_path(job_id, shard), Path(path))
