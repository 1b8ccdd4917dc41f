"""The public facade: what the CLI, the console and downstream code call. Nothing below knows a terminal exists."""

from __future__ import annotations

import datetime as dt
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from mdth_engine.core.errors import UsageError
from mdth_engine.core.events import Sink, null_sink
from mdth_engine.core.settings import Settings, load_settings
from mdth_engine.core.timeframes import parse_day
from mdth_engine.stages.base import Request
from mdth_engine.storage import layout


def lake_summary(url: str, prefix: str = "") -> list[dict[str, Any]]:
    """Files and bytes per (area, day, part) from one listing; part is the data type, timeframe or job id."""
    from mdth_engine.storage.store import open_store

    store = open_store(url)
    groups: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0])
    for info in store.list(prefix):
        parts = info.path.split("/")
        day = layout.day_of(info.path)
        part = next((p.split("-", 1)[1] for p in parts if p.startswith(("data_type-", "timeframe-"))), "")
        if parts[0] == "_jobs" and len(parts) > 1:
            part = parts[1]
        group = groups[(parts[0], day.isoformat() if day else "", part)]
        group[0] += 1
        group[1] += info.size
    return [
        {"area": a, "day": d, "part": p, "files": v[0], "bytes": v[1]}
        for (a, d, p), v in sorted(groups.items())
    ]


def stage_context(
    settings: Settings, sink: Sink = null_sink, job_id: str = "", spool_dir: Path | None = None
):
    """Everything a stage runs with, for this process."""
    from mdth_engine.stages.registry import StageContext
    from mdth_engine.storage.store import open_store

    spool = spool_dir or Path(tempfile.gettempdir()) / "mdth-spool"
    return StageContext(
        settings=settings, store=open_store(settings.lake), spool_dir=spool, sink=sink, job_id=job_id
    )


def plan_stage(request: Request, settings: Settings) -> list:
    """The work units a request becomes (for --dry-run and the console's launch form)."""
    from mdth_engine.stages.registry import get_stage

    return get_stage(request.operation, stage_context(settings)).plan(request)


async def run_stage(
    request: Request,
    settings: Settings,
    *,
    sink: Sink = null_sink,
    concurrency: int | None = None,
    units=None,
):
    """Plan (unless ``units`` are given) and run a stage in this process; returns the run summary."""
    from mdth_engine.jobs.runner import run_units
    from mdth_engine.stages.registry import get_stage

    stage = get_stage(request.operation, stage_context(settings, sink))
    planned = stage.plan(request) if units is None else units
    return await run_units(stage, planned, concurrency=concurrency or settings.concurrency, sink=sink)


async def run_recorded(
    request: Request,
    settings: Settings,
    *,
    sink: Sink = null_sink,
    concurrency: int | None = None,
    units=None,
):
    """Run a stage in this process as a one-shard job, so its unit outcomes (401, 404, failures) stay on record
    for validation and `mdth jobs`; returns the run summary like ``run_stage``."""
    from mdth_engine.jobs import create_job
    from mdth_engine.jobs.worker import arun_shard
    from mdth_engine.storage.store import open_store

    if concurrency:
        settings = settings.model_copy(update={"concurrency": concurrency})
    store = open_store(settings.lake)
    spec = create_job(store, request, shards=1, backend="local", settings=settings, units=units)
    run = await arun_shard(store, spec.job_id, 0, settings, sink)
    if run.summary is None:  # nothing ran (an empty plan, or the job was cancelled from elsewhere)
        from mdth_engine.jobs.runner import RunSummary

        return RunSummary(stage=request.operation)
    return run.summary


class Lake:
    """Read access to a lake for downstream code: instruments, ticks and candles as Arrow tables."""

    def __init__(self, url: str, settings: Settings | None = None) -> None:
        from mdth_engine.storage.store import open_store

        self.url = url
        self.settings = settings or load_settings(lake=url)
        self.store = open_store(url)

    @classmethod
    def open(cls, url: str | None = None) -> Lake:
        settings = load_settings(lake=url)
        return cls(settings.lake, settings)

    # -- instruments --------------------------------------------------------------------------------------------
    def instruments(
        self,
        date: str | dt.date,
        *,
        venue: str | None = None,
        type: str | None = None,
        base: str | None = None,
        quote: str | None = None,
        search: str | None = None,
        expiring_before: str | dt.date | None = None,
    ) -> pa.Table:
        """The instrument master of a UTC day, filtered; a UsageError when that day was never built."""
        from mdth_engine.stages.instruments import parse_types, parse_venues, read_instruments

        day = parse_day(date)
        table = read_instruments(self.store, layout.instruments_path(day))
        if table is None:
            raise UsageError(
                f"no instrument master for {day}; build it with: mdth instruments --start {day} --end {day}"
            )
        mask = pc.is_valid(table["instrument_key"])
        if venue:
            mask = pc.and_(mask, pc.is_in(table["venue"], pa.array(parse_venues(venue.split(",")))))
        if type:
            mask = pc.and_(mask, pc.is_in(table["instrument_type"], pa.array(parse_types(type.split(",")))))
        if base:
            mask = pc.and_(mask, pc.equal(table["base_asset"], base.upper()))
        if quote:
            mask = pc.and_(mask, pc.equal(table["quote_asset"], quote.upper()))
        if search:
            text = search.upper()
            hit = pc.or_(
                pc.match_substring(table["instrument_key"], text),
                pc.match_substring(pc.utf8_upper(table["tardis_symbol"]), text),
            )
            mask = pc.and_(mask, hit)
        if expiring_before:
            limit = dt.datetime.combine(parse_day(expiring_before, "--expiring-before"), dt.time(), dt.UTC)
            mask = pc.and_(
                mask, pc.less(table["expiry"], pa.scalar(limit, table.schema.field("expiry").type))
            )
        return table.filter(pc.fill_null(mask, False))

    def instrument(self, key: str, date: str | dt.date) -> dict[str, Any]:
        """One instrument's definition on a day; an unknown key gets the closest matches in the error."""
        from mdth_engine.core.keys import closest_keys, parse_key

        canonical = str(parse_key(key))
        table = self.instruments(date)
        hit = table.filter(pc.equal(table["instrument_key"], canonical))
        if hit.num_rows:
            return hit.to_pylist()[0]
        near = closest_keys(canonical, table["instrument_key"].to_pylist())
        hint = f"; did you mean {', '.join(near)}?" if near else ""
        raise UsageError(f"{canonical} is not in the instrument master of {parse_day(date)}{hint}")

    def built_days(self) -> list[dt.date]:
        """Days whose instrument master exists, oldest first."""
        days = {layout.day_of(info.path) for info in self.store.list(layout.INSTRUMENTS_ROOT + "/")}
        return sorted(d for d in days if d is not None)

    def inspect(self, key: str, date: str | dt.date | None = None, *, days: int = 14) -> dict[str, Any]:
        """Definition, availability and a per-day calendar of what the lake holds for one instrument."""
        from mdth_engine.core.keys import parse_key
        from mdth_engine.storage.parquet import read_provenance

        canonical = parse_key(key)
        built = self.built_days()
        if not built:
            raise UsageError(
                "the lake has no instrument master yet; build one with: mdth instruments --start D"
            )
        day = parse_day(date) if date else built[-1]
        definition = self.instrument(str(canonical), day)
        window = [d for d in built if d <= day][-days:]
        chain = str(canonical.chain_key()) if canonical.type == "OPTION" else None
        calendar = []
        for d in window:
            master = self.instruments(d)
            listed = bool(pc.any(pc.equal(master["instrument_key"], str(canonical))).as_py())
            present: dict[str, dict[str, Any]] = {}
            for info in self.store.list(f"{layout.RAW_ROOT}/{layout.day_dir(d)}/"):
                name = info.path.rsplit("/", 1)[-1].removesuffix(".parquet")
                if name in (str(canonical), chain):
                    data_type = info.path.split("/")[-2].removeprefix("data_type-")
                    prov = read_provenance(self.store, info.path) or {}
                    present[data_type] = {
                        "rows": int(prov.get("rows", 0) or 0),
                        "bytes": info.size,
                        "file": info.path,
                    }
            calendar.append({"day": d.isoformat(), "listed": listed, "data": present})
        return {
            "key": str(canonical),
            "date": day.isoformat(),
            "definition": definition,
            "calendar": calendar,
        }

    # -- ticks and candles (ranged reads: mdth_engine.reader) -------------------------------------------------
    def ticks(
        self,
        key: str,
        data_type: str,
        start: Any,
        end: Any,
        *,
        columns: list[str] | None = None,
        by: str = "timestamp",
    ) -> pa.Table:
        """Tick rows with ``by`` (exchange ``timestamp``, or ``local_timestamp``) in [start, end), UTC."""
        from mdth_engine.reader import ticks

        return ticks(self, key, data_type, start, end, columns=columns, by=by)

    def sparse_ticks(
        self,
        key: str,
        data_type: str,
        times: Any,
        *,
        buffer: Any = "1m",
        columns: list[str] | None = None,
        by: str = "timestamp",
    ) -> pa.Table:
        """Tick rows in [t - buffer, t + buffer) for every t, each file read once, with a query_time column."""
        from mdth_engine.reader import sparse_ticks

        return sparse_ticks(self, key, data_type, times, buffer=buffer, columns=columns, by=by)

    def candles(
        self, key: str, timeframe: str, start: Any, end: Any, *, columns: list[str] | None = None
    ) -> pa.Table:
        """Candles whose bucket starts in [start, end), UTC."""
        from mdth_engine.reader import candles

        return candles(self, key, timeframe, start, end, columns=columns)

    def sparse_candles(
        self,
        key: str,
        times: Any,
        timeframe: str = "1m",
        *,
        buffer: Any = "5m",
        columns: list[str] | None = None,
    ) -> pa.Table:
        """Candles starting in [t - buffer, t + buffer] for every t, with a query_time column."""
        from mdth_engine.reader import sparse_candles

        return sparse_candles(self, key, times, timeframe, buffer=buffer, columns=columns)


def missing_master_days(request: Request, settings: Settings) -> list[dt.date]:
    """Days of a request whose instrument master is missing or lacks a requested venue."""
    from mdth_engine.stages.instruments import parse_venues, read_instruments
    from mdth_engine.storage.store import open_store

    store = open_store(settings.lake)
    wanted = set(parse_venues(request.venues)) if request.venues else set()
    missing = []
    for day in request.days():
        table = read_instruments(store, layout.instruments_path(day))
        if table is None or not wanted <= set(table["venue"].unique().to_pylist()):
            missing.append(day)
    return missing


async def ensure_instruments(request: Request, settings: Settings, *, sink: Sink = null_sink):
    """Build the instrument master for the days of ``request`` that lack it (one run: each venue fetched once)."""
    import dataclasses

    from mdth_engine.stages.registry import get_stage

    days = set(missing_master_days(request, settings))
    if not days:
        return None
    sub = dataclasses.replace(  # whole venues: a later request for other types must find them in the master
        request, operation="instruments", start=min(days), end=max(days), types=(), options={}
    )
    units = [u for u in get_stage("instruments", stage_context(settings)).plan(sub) if u.day in days]
    return await run_stage(sub, settings, sink=sink, concurrency=4, units=units)


# -- the console's facade (appended): launch forms, job detail, lake overview, coverage fixes ------------------
# Everything here is headless: the console calls these from worker threads, scripts can call them too.

LAUNCH_OPERATIONS = ("pipeline", "instruments", "download", "candles", "validate", "upload")
PIPELINE_STAGES = ("download", "candles", "validate", "upload")
_SELECTING = ("pipeline", "download", "candles", "validate")  # operations that take instrument selectors


def _items(value: Any) -> list[str]:
    """A comma text or a list of strings as a clean list (empty -> no filter)."""
    if value is None:
        return []
    if isinstance(value, str):
        value = value.split(",")
    return [str(v).strip() for v in value if str(v).strip()]


def launch_request(
    operation: str,
    start: str | dt.date,
    end: str | dt.date | None = None,
    *,
    venues: Any = (),
    types: Any = (),
    data_types: Any = (),
    symbols: Any = (),
    bases: Any = (),
    max_instruments: int | str | None = None,
    timeframes: Any = (),
    force: bool = False,
) -> Request:
    """The Request a launch form describes, checked like the command line checks it (UsageError, one line).

    ``operation`` "pipeline" keeps that name: it means download, then every later stage, for the same days."""
    from mdth_engine.core.timeframes import day_range, parse_timeframes
    from mdth_engine.stages.download import parse_data_types
    from mdth_engine.stages.instruments import parse_types, parse_venues

    if operation not in LAUNCH_OPERATIONS:
        raise UsageError(f"unknown operation {operation!r}; use one of: {', '.join(LAUNCH_OPERATIONS)}")
    if not start:
        raise UsageError("give a start day (YYYY-MM-DD)")
    first = parse_day(start, "start")
    last = parse_day(end, "end") if end else first
    day_range(first, last)
    limit = None
    if max_instruments not in (None, ""):
        try:
            limit = int(max_instruments)  # type: ignore[arg-type]
        except ValueError:
            raise UsageError(f"max instruments must be a whole number, not {max_instruments!r}") from None
        if limit < 1:
            raise UsageError("max instruments must be at least 1")
    selecting = operation in _SELECTING
    venue_list = _items(venues) if operation != "upload" else []
    chosen_tfs = _items(timeframes) if operation in ("candles", "upload") else []
    return Request(
        operation,
        first,
        last,
        venues=tuple(parse_venues(venue_list)) if venue_list else (),
        types=tuple(parse_types(_items(types))) if operation != "upload" else (),
        data_types=tuple(parse_data_types(_items(data_types)))
        if operation in ("pipeline", "download", "validate")
        else (),
        symbols=tuple(_items(symbols)) if selecting else (),
        bases=tuple(b.upper() for b in _items(bases)) if selecting else (),
        max_instruments=limit if selecting else None,
        timeframes=tuple(parse_timeframes(",".join(chosen_tfs))) if chosen_tfs else (),
        options={"force": bool(force)} if force else {},
    )


def command_line(
    request: Request, *, shards: int = 1, backend: str = "local", lake: str | None = None
) -> str:
    """The `mdth` command that does what ``request`` asks, as a user would type it (shell-quoted)."""
    import shlex

    from mdth_engine.stages.download import DEFAULT_DATA_TYPES

    op = request.operation
    args = ["mdth"] + (["--lake", lake] if lake else []) + [op]
    if op == "pipeline" and request.start == request.end:
        args += ["--date", request.start.isoformat()]
    else:
        args += ["--start", request.start.isoformat()]
        if request.end != request.start:
            args += ["--end", request.end.isoformat()]
    if request.venues:
        args += ["--venues", ",".join(request.venues)]
    if request.types:
        args += ["--types", ",".join(request.types)]
    if request.data_types and tuple(request.data_types) != tuple(DEFAULT_DATA_TYPES):
        args += ["--data-types", ",".join(request.data_types)]
    if request.symbols:
        args += ["--symbols", ",".join(request.symbols)]
    if request.bases:
        args += ["--bases", ",".join(request.bases)]
    if request.max_instruments:
        args += ["--max-instruments", str(request.max_instruments)]
    if request.timeframes:
        args += ["--timeframes", ",".join(request.timeframes)]
    if request.options.get("force"):
        args.append("--force")
    if op not in ("pipeline", "instruments") and (shards > 1 or backend != "local"):
        args += ["--shards", str(shards)]
        if backend != "local":
            args += ["--backend", backend]
    return shlex.join(args)


def plan_launch(request: Request, settings: Settings, *, shards: int = 1) -> dict[str, Any]:
    """What launching ``request`` would do, before anything runs: units, expected bytes, shards, and a note.

    A download (or pipeline) over days without an instrument master cannot be planned yet: the days are listed
    and the master is built first at launch. A pipeline's later stages are planned when the download is done."""
    import dataclasses

    from mdth_engine.jobs.sharding import effective_shards

    op = request.operation
    planned = dataclasses.replace(request, operation="download") if op == "pipeline" else request
    out: dict[str, Any] = {"operation": op, "days": len(request.days()), "units": None, "est_bytes": None}
    notes = []
    missing = missing_master_days(planned, settings) if planned.operation == "download" else []
    out["missing_master"] = [d.isoformat() for d in missing]
    if missing:
        notes.append(f"instrument master missing for {len(missing)} day(s): it is built first, then planned")
    else:
        units = plan_stage(planned, settings)
        out["units"] = len(units)
        out["est_bytes"] = sum(u.est_bytes for u in units)
        if not units:
            notes.append("nothing to run: the plan is empty")
    if op == "pipeline":
        notes.append("then candles, validate and upload run as jobs of their own, one after the other")
    if op == "instruments":
        out["shards"] = 1
    else:
        out["shards"] = effective_shards(shards, out["units"]) if out["units"] else shards
    out["note"] = "; ".join(notes)
    return out


_DETACHED: list[Any] = []  # processes started detached: polled now and then so they are reaped when done


def _spawn_detached(argv: list[str], log_path: Path) -> int:
    """Start ``argv`` in its own session (it outlives this process and its terminal), output to ``log_path``."""
    import os
    import subprocess

    for proc in list(_DETACHED):
        if proc.poll() is not None:
            _DETACHED.remove(proc)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )
    _DETACHED.append(proc)
    return proc.pid


def supervisor_log(job_id: str) -> Path:
    """Where the detached supervisor of a job launched by ``start_job`` writes (NDJSON events)."""
    return Path(tempfile.gettempdir()) / "mdth-jobs" / job_id / "supervisor.log"


def start_job(
    request: Request, settings: Settings, *, shards: int = 1, backend: str = "local", supervise: bool = True
):
    """Create a job and hand it to a detached supervisor (``mdth jobs watch ID --supervise``) that launches its
    shards, relaunches dead ones and outlives the caller; returns the JobSpec at once.

    A download over days without an instrument master builds it first (as ``mdth download`` does)."""
    import asyncio

    from mdth_engine.core.errors import MdthError
    from mdth_engine.jobs.manage import create_job, launch_job
    from mdth_engine.storage.store import open_store

    if request.operation == "pipeline":
        raise UsageError("a pipeline is several jobs: use start_pipeline")
    if request.operation == "download" and missing_master_days(request, settings):
        summary = asyncio.run(ensure_instruments(request, settings))
        if summary is not None and summary.exit_code:
            reasons = "; ".join(f.reason for f in summary.failures[:3])
            raise MdthError(f"instrument master could not be built: {reasons}")
    store = open_store(settings.lake)
    spec = create_job(store, request, shards=shards, backend=backend, settings=settings)
    if not supervise:
        launch_job(store, spec.job_id, settings)
        return spec
    spawn_supervisor(spec.job_id, settings.lake)
    return spec


def spawn_supervisor(job_id: str, lake: str) -> int:
    """A detached ``mdth jobs watch ID --supervise``: launches pending shards, relaunches dead ones, ends with
    the job, and outlives the caller (its NDJSON events go to ``supervisor_log``); returns its pid."""
    import sys

    argv = [sys.executable, "-m", "mdth_engine.cli", "jobs", "watch", job_id, "--supervise", "--json"]
    return _spawn_detached([*argv, "--lake", lake], supervisor_log(job_id))


def start_pipeline(request: Request, settings: Settings, *, shards: int = 1, backend: str = "local") -> dict:
    """Run download, candles, validate and upload for the request's days as successive jobs, in a detached
    process (it outlives the caller); returns its pid and log path. Each stage's job shows in the job list."""
    import json
    import sys

    from mdth_engine.jobs.backends import check_backend
    from mdth_engine.jobs.spec import new_job_id

    check_backend(backend, settings, "pipeline")
    if shards < 1:
        raise UsageError(f"shards must be at least 1, got {shards}")
    name = new_job_id("pipeline")
    log = Path(tempfile.gettempdir()) / "mdth-pipelines" / f"{name}.log"
    code = (
        "import sys; from mdth_engine.api import pipeline_main; from mdth_engine.core.shutdown import leave; "
        "leave(pipeline_main(sys.argv[1:]))"
    )
    body = json.dumps({"request": request.to_dict(), "shards": shards, "backend": backend})
    pid = _spawn_detached([sys.executable, "-c", code, settings.lake, body], log)
    return {"name": name, "pid": pid, "log": str(log)}


def pipeline_main(argv: list[str]) -> int:
    """The detached process of ``start_pipeline``: argv = [lake, JSON]; NDJSON events on stdout; 0 or 1."""
    import asyncio
    import dataclasses
    import json
    import sys

    from mdth_engine.core.errors import MdthError
    from mdth_engine.jobs.follow import follow_job
    from mdth_engine.jobs.manage import create_job, launch_job
    from mdth_engine.storage.store import open_store

    lake, body = argv[0], json.loads(argv[1])
    settings = load_settings(lake=lake)
    request = Request.from_dict(body["request"])
    store = open_store(settings.lake)

    def sink(event: Any) -> None:
        sys.stdout.write(event.to_json() + "\n")
        sys.stdout.flush()

    base = dataclasses.replace(request, operation="download")
    summary = asyncio.run(ensure_instruments(base, settings, sink=sink))
    if summary is not None and summary.exit_code:
        return 1
    worst = 0
    for operation in PIPELINE_STAGES:
        step = dataclasses.replace(request, operation=operation)
        if operation in ("candles", "upload"):
            step = dataclasses.replace(step, data_types=())
        try:
            spec = create_job(store, step, shards=body["shards"], backend=body["backend"], settings=settings)
            launch_job(store, spec.job_id, settings)
            status = follow_job(store, spec.job_id, sink, settings=settings)
        except MdthError as exc:
            sys.stdout.write(json.dumps({"kind": "error", "stage": operation, "message": str(exc)}) + "\n")
            worst = max(worst, 1 if "nothing to run" not in str(exc) else 0)
            continue
        worst = max(worst, status.exit_code)
    return worst


def recent_jobs(store: Any, limit: int = 50, *, reuse: dict[str, Any] | None = None) -> list:
    """The newest ``limit`` jobs' statuses (newest first); an unreadable job does not hide the others.

    ``reuse``: statuses (of finished jobs) the caller already holds, returned as they are instead of reading
    their records again; a poller over a lake with many old jobs then reads only the live ones."""
    from mdth_engine.jobs.status import job_status, list_job_ids

    ids = sorted(list_job_ids(store), key=lambda i: i.split("-", 1)[-1], reverse=True)
    out = []
    for job_id in ids[:limit]:
        if reuse and job_id in reuse:
            out.append(reuse[job_id])
            continue
        try:
            out.append(job_status(store, job_id))
        except Exception:
            continue
    return out


class FailureTracker:
    """A job's failed units with reasons, read incrementally: each (immutable) result file is read once, and a
    unit that later succeeded (a retry) leaves the list. Memory is bounded by the failures, not the plan."""

    def __init__(self, store: Any, job_id: str) -> None:
        self.store, self.job_id = store, job_id
        self.seen: set[str] = set()
        self.failures: dict[str, dict[str, Any]] = {}

    def update(self) -> list[dict[str, Any]]:
        """Read the result files written since the last call; the current failures, newest first."""
        from mdth_engine.jobs import records as rec
        from mdth_engine.stages.base import FAILED_OUTCOMES

        for path in rec.result_files(self.store, self.job_id):
            if path in self.seen:
                continue
            self.seen.add(path)
            for row in rec.read_result_file(self.store, path):
                if row["outcome"] in FAILED_OUTCOMES:
                    self.failures[row["unit_id"]] = {
                        k: row.get(k) for k in ("unit_id", "outcome", "reason", "attempt", "finished_at")
                    }
                else:
                    self.failures.pop(row["unit_id"], None)
        return sorted(self.failures.values(), key=lambda r: str(r.get("finished_at") or ""), reverse=True)


def job_log(store: Any, job_id: str, shard: int, tail: int = 200) -> str:
    """The last ``tail`` lines of a shard worker's log: this machine's copy when it ran here, else the lake's."""
    from mdth_engine.jobs import records as rec
    from mdth_engine.jobs.backends import get_backend
    from mdth_engine.jobs.backends.local import LocalBackend

    spec = rec.load_spec(store, job_id)
    if not 0 <= shard < spec.shards:
        raise UsageError(f"job {job_id} has shards 0..{spec.shards - 1}, not {shard}")
    settings = load_settings(lake=store.url)
    try:
        return get_backend(spec.backend, store, settings).logs(spec, shard, tail or None)
    except UsageError:  # a backend not configured here (gce without a project): the lake's copy
        return LocalBackend(store, settings).logs(spec, shard, tail or None)


def lake_overview(url: str) -> dict[str, Any]:
    """What a lake holds, from one listing: bytes and files per area, days, venues and instruments with ticks
    (``tick_keys``) and their data types, the built instrument-master days, and how many instruments the latest
    master lists."""
    from mdth_engine.storage.store import open_store

    store = open_store(url)
    areas: dict[str, dict[str, int]] = defaultdict(lambda: {"files": 0, "bytes": 0})
    tick_days: set[dt.date] = set()
    master_days: set[dt.date] = set()
    keys: set[str] = set()
    data_types: set[str] = set()
    for info in store.list(""):
        parts = info.path.split("/")
        area = areas[parts[0]]
        area["files"] += 1
        area["bytes"] += info.size
        if info.path.startswith(layout.RAW_ROOT + "/"):
            day = layout.day_of(info.path)
            if day:
                tick_days.add(day)
            keys.add(parts[-1].removesuffix(".parquet"))
            data_types.update(p.removeprefix("data_type-") for p in parts if p.startswith("data_type-"))
        elif info.path.startswith(layout.INSTRUMENTS_ROOT + "/"):
            day = layout.day_of(info.path)
            if day:
                master_days.add(day)
    listed = 0
    if master_days:
        from mdth_engine.stages.instruments import read_instruments

        table = read_instruments(store, layout.instruments_path(max(master_days)))
        listed = table.num_rows if table is not None else 0
    return {
        "url": store.url,
        "files": sum(a["files"] for a in areas.values()),
        "bytes": sum(a["bytes"] for a in areas.values()),
        "areas": dict(sorted(areas.items())),
        "tick_days": [d.isoformat() for d in sorted(tick_days)],
        "master_days": [d.isoformat() for d in sorted(master_days)],
        "venues": sorted({k.split(":", 1)[0] for k in keys if k.count(":") == 2}),
        "tick_keys": sorted(k for k in keys if k.count(":") == 2),
        "tick_data_types": sorted(data_types),
        "instruments_with_ticks": len({k for k in keys if k.count(":") == 2}),
        "instruments_listed": listed,
    }


def coverage_fix_requests(rows: Any, base: Request | None = None) -> list[Request]:
    """Download requests for the coverage cells ``rows`` (dicts or a coverage table) that a download would
    fix: missing, corrupt, failed, refused or never attempted files, files whose content check failed (forced),
    and days without an instrument master (the whole ``base`` selection of that day)."""
    from mdth_engine.validation import fix_requests
    from mdth_engine.validation.fix import FixTarget
    from mdth_engine.validation.report import EMPTY, ERROR, FIXABLE_CLASSES, PRESENT

    if isinstance(rows, pa.Table):
        rows = rows.to_pylist()
    targets = set()
    for row in rows:
        day = parse_day(row["day"]) if not isinstance(row["day"], dt.date) else row["day"]
        cls = row.get("class")
        if cls == "no_master":
            targets.add(FixTarget(day, "", ""))
        elif cls in FIXABLE_CLASSES:
            targets.add(FixTarget(day, row["instrument_key"], row["data_type"]))
        elif cls in (PRESENT, EMPTY) and row.get("content") == ERROR:
            targets.add(FixTarget(day, row["instrument_key"], row["data_type"], True))
    if not targets:
        return []
    days = sorted(t.day for t in targets)
    base = base or Request("download", days[0], days[-1])
    return fix_requests(sorted(targets), base)


# -- the console's door to jobs and coverage (appended; each loads its module on call, so importing the facade
# starts nothing) ---------------------------------------------------------------------------------------------
def job_status(store: Any, job_id: str) -> Any:
    """One job's spec, shard records and cancel flag (a ``JobStatus``), read from the lake."""
    from mdth_engine.jobs.status import job_status as read_status

    return read_status(store, job_id)


def cancel_job(
    store: Any, job_id: str, settings: Settings | None = None, *, wait_s: float = 10.0
) -> list[int]:
    """Ask a job's workers to stop wherever they run; returns the shards marked cancelled."""
    from mdth_engine.jobs.manage import cancel_job as cancel

    return cancel(store, job_id, settings, wait_s=wait_s)


def retry_job(
    store: Any, job_id: str, settings: Settings | None = None, *, shards: list[int] | None = None
) -> list[int]:
    """Relaunch a job's failed, dead or cancelled shards (or those given); returns the relaunched ones."""
    from mdth_engine.jobs.manage import retry_job as retry

    return retry(store, job_id, settings, shards=shards)


def cleanup_job(store: Any, job_id: str, settings: Settings | None = None, *, purge: bool = False) -> dict:
    """Stop what still runs for a job and mark its unfinished shards dead (``purge`` deletes its records)."""
    from mdth_engine.jobs.manage import cleanup_job as cleanup

    return cleanup(store, job_id, settings, purge=purge)


def coverage(
    store: Any, start: str | dt.date, end: str | dt.date | None = None, **selection: Any
) -> pa.Table:
    """The validation ledger's coverage table of days x instruments x data types (see ``validation.coverage``)."""
    from mdth_engine.validation.coverage import coverage as read_coverage

    return read_coverage(store, start, end, **selection)
