"""Runs a stage's work units with bounded concurrency, turning every unit into an outcome and events.

A unit that raises becomes ``failed`` with a one-line reason; the run goes on past it. The summary's exit code
is 1 when any unit failed for good (the rest is kept), 0 otherwise.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from mdth_engine.core.events import Event, Kind, Sink, null_sink
from mdth_engine.stages.base import Outcome, UnitResult, WorkUnit


class Stage(Protocol):
    """What the runner needs of a stage: a name and an async way to run one unit."""

    name: str

    async def run_unit(self, unit: WorkUnit) -> UnitResult: ...


@dataclasses.dataclass
class RunSummary:
    """Totals of a run; ``failures`` keeps every unit that did not succeed, with its reason."""

    stage: str
    units: int = 0
    outcomes: Counter = dataclasses.field(default_factory=Counter)
    rows: int = 0
    bytes: int = 0
    seconds: float = 0.0
    failures: list[UnitResult] = dataclasses.field(default_factory=list)
    results: list[UnitResult] = dataclasses.field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.failures else 0

    def to_dict(self) -> dict:
        return {
            "stage": self.stage,
            "units": self.units,
            "outcomes": dict(self.outcomes),
            "rows": self.rows,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "failed": len(self.failures),
        }


def one_line(exc: BaseException) -> str:
    """An exception as the one line a user reads: type and first line of the message."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


async def run_units(
    stage: Stage,
    units: Sequence[WorkUnit],
    *,
    concurrency: int = 8,
    sink: Sink = null_sink,
    job: str = "",
    on_result: Callable[[WorkUnit, UnitResult], Awaitable[None] | None] | None = None,
) -> RunSummary:
    """Run every unit, at most ``concurrency`` at once, emitting STARTED, UNIT/PROGRESS and FINISHED events."""
    summary = RunSummary(stage=stage.name, units=len(units))
    started = time.monotonic()
    sink(Event(Kind.STARTED, stage.name, job=job, units_total=len(units)))
    queue: asyncio.Queue[WorkUnit] = asyncio.Queue()
    for unit in units:
        queue.put_nowait(unit)
    done = 0

    async def worker() -> None:
        nonlocal done
        while True:
            try:
                unit = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            t0 = time.monotonic()
            try:
                result = await stage.run_unit(unit)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any unit failure is recorded, never fatal to the run
                result = UnitResult(unit.unit_id, Outcome.FAILED, reason=one_line(exc), output=unit.output)
            result.seconds = result.seconds or time.monotonic() - t0
            done += 1
            summary.outcomes[str(result.outcome)] += 1
            summary.rows += result.rows
            summary.bytes += result.bytes
            summary.results.append(result)
            if result.failed:
                summary.failures.append(result)
            if on_result is not None:
                maybe = on_result(unit, result)
                if maybe is not None:
                    await maybe
            sink(
                Event(
                    Kind.UNIT,
                    stage.name,
                    job=job,
                    unit=unit.unit_id,
                    outcome=str(result.outcome),
                    message=result.reason,
                    units_done=done,
                    units_total=len(units),
                    rows=summary.rows,
                    bytes=summary.bytes,
                )
            )

    workers = [asyncio.create_task(worker()) for _ in range(max(1, min(concurrency, len(units))))]
    try:
        await asyncio.gather(*workers)
    finally:
        for task in workers:
            task.cancel()
    summary.seconds = time.monotonic() - started
    sink(
        Event(
            Kind.FINISHED,
            stage.name,
            job=job,
            units_done=done,
            units_total=len(units),
            rows=summary.rows,
            bytes=summary.bytes,
            message=", ".join(f"{k} {v}" for k, v in sorted(summary.outcomes.items())),
            data=summary.to_dict(),
        )
    )
    return summary
