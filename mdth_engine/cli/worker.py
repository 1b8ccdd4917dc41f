"""`mdth worker --job ID --shard I`: run one shard of a job from the lake's records (what backends start)."""

from __future__ import annotations

import sys
import time
from typing import Annotated

import typer

from mdth_engine.cli.common import JsonOpt, LakeOpt, json_mode, settings_for
from mdth_engine.core.events import Event, Kind


class _LogLines:
    """Timestamped lines for a worker's log: starts, ends, failures, warnings, and counters every 10 s."""

    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self.last = 0.0

    def __call__(self, ev: Event) -> None:
        now = time.monotonic()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ev.at))
        loud = ev.kind in (Kind.STARTED, Kind.FINISHED, Kind.ERROR, Kind.WARNING, Kind.INFO) or ev.is_failure
        if not loud and now - self.last < self.every:
            return
        self.last = now
        line = f"{stamp} [{ev.stage}] {ev.kind}"
        if ev.units_total:
            line += f" {ev.units_done}/{ev.units_total} units {ev.rows} rows {ev.bytes} bytes"
        if ev.unit and (ev.is_failure or ev.kind is not Kind.UNIT):
            line += f" {ev.unit} {ev.outcome}".rstrip()
        if ev.message and (loud or ev.is_failure):
            line += f": {ev.message}"
        print(line, flush=True)


def register(app: typer.Typer) -> None:
    @app.command("worker")
    def worker(
        ctx: typer.Context,
        job: Annotated[str, typer.Option("--job", help="Job id (see mdth jobs list).")],
        shard: Annotated[int, typer.Option("--shard", min=0, help="Shard index, 0-based.")],
        lake: LakeOpt = None,
        json_out: JsonOpt = False,
    ) -> None:
        """Run one shard of a job: skips units already settled, heartbeats into the lake. Safe to re-run."""
        from mdth_engine.core.events import Throttle
        from mdth_engine.jobs.worker import run_shard
        from mdth_engine.storage.store import open_store

        settings = settings_for(ctx, lake)
        store = open_store(settings.lake)
        base = (lambda ev: print(ev.to_json(), flush=True)) if json_mode(ctx, json_out) else _LogLines()
        throttle = Throttle(base, interval=1.0)  # failed units are never coalesced away
        try:
            run = run_shard(store, job, shard, settings, throttle, handle_signals=True)
        finally:
            throttle.flush()
            sys.stdout.flush()
        raise typer.Exit(run.exit_code)
