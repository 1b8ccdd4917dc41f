"""The unit runner: bounded concurrency, failures recorded with reasons, the run goes on, exit code 1."""

import asyncio
import datetime as dt

from mdth_engine.core.events import Kind
from mdth_engine.jobs.runner import run_units
from mdth_engine.stages.base import Outcome, UnitResult, WorkUnit


class CountingStage:
    name = "test"

    def __init__(self) -> None:
        self.active = 0
        self.peak = 0

    async def run_unit(self, unit: WorkUnit) -> UnitResult:
        self.active += 1
        self.peak = max(self.peak, self.active)
        await asyncio.sleep(0.001)
        self.active -= 1
        if unit.params["n"] % 7 == 3:
            raise ValueError(f"bad row in unit {unit.params['n']}\nsecond line")
        return UnitResult(unit.unit_id, Outcome.WRITTEN, rows=unit.params["n"])


async def test_runner_bounds_concurrency_and_records_failures():
    units = [WorkUnit("test", f"u{i}", dt.date(2024, 1, 1), f"out/{i}", params={"n": i}) for i in range(50)]
    stage = CountingStage()
    events = []
    summary = await run_units(stage, units, concurrency=4, sink=events.append, job="j")
    assert stage.peak == 4
    failed = sorted(int(r.unit_id[1:]) for r in summary.failures)
    assert failed == [i for i in range(50) if i % 7 == 3]
    assert all(r.reason == f"ValueError: bad row in unit {r.unit_id[1:]}" for r in summary.failures)
    assert summary.outcomes == {"written": 50 - len(failed), "failed": len(failed)}
    assert summary.rows == sum(i for i in range(50) if i % 7 != 3)
    assert summary.exit_code == 1
    assert events[0].kind is Kind.STARTED and events[-1].kind is Kind.FINISHED
    assert sum(e.kind is Kind.UNIT for e in events) == 50
