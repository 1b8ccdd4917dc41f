"""The progress throttle: bounded update rate per job, never losing errors, completions or the latest counters."""

from mdth_engine.core.events import FAILED_OUTCOMES, Event, Kind, Throttle
from mdth_engine.stages.base import FAILED_OUTCOMES as STAGE_FAILED_OUTCOMES
from mdth_engine.stages.base import Outcome


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_throttle_limits_progress_rate_per_job_and_keeps_latest():
    got: list[Event] = []
    clock = FakeClock()
    throttle = Throttle(got.append, interval=0.1, clock=clock)
    for i in range(1000):  # 1000 updates within 1 s of fake time for each of two jobs
        clock.now = i / 1000
        throttle(Event(Kind.PROGRESS, "download", job="a", units_done=i))
        throttle(Event(Kind.PROGRESS, "download", job="b", units_done=i))
    throttle.flush()
    per_job = {j: [e.units_done for e in got if e.job == j] for j in "ab"}
    for done in per_job.values():
        assert 10 <= len(done) <= 12  # ~10 a second, plus the flushed last one
        assert done[-1] == 999  # the latest counters are never lost
        assert done == sorted(done)


def test_errors_and_finish_are_never_dropped_and_flush_pending_first():
    got: list[Event] = []
    clock = FakeClock()
    throttle = Throttle(got.append, interval=10, clock=clock)
    throttle(Event(Kind.PROGRESS, "s", job="j", units_done=1))
    throttle(Event(Kind.PROGRESS, "s", job="j", units_done=2))  # held back
    for i in range(50):
        throttle(Event(Kind.ERROR, "s", job="j", message=f"e{i}"))
    throttle(Event(Kind.FINISHED, "s", job="j", units_done=3))
    kinds = [(e.kind, e.units_done, e.message) for e in got]
    assert kinds[0] == (Kind.PROGRESS, 1, "")
    assert kinds[1] == (Kind.PROGRESS, 2, "")  # the pending update goes out before the error
    assert [m for k, _, m in kinds if k is Kind.ERROR] == [f"e{i}" for i in range(50)]
    assert kinds[-1][0] is Kind.FINISHED


def test_failed_units_are_never_dropped_between_written_ones():
    got: list[Event] = []
    clock = FakeClock()
    throttle = Throttle(got.append, interval=0.1, clock=clock)
    outcomes = {}
    for i in range(300):  # 300 unit events within 30 ms of fake time: failures interleaved with successes
        clock.now = i / 10_000
        outcome = Outcome.FAILED if i % 7 == 3 else Outcome.UNAUTHORIZED if i % 11 == 5 else Outcome.WRITTEN
        outcomes[f"u{i}"] = outcome
        throttle(Event(Kind.UNIT, "download", job="j", unit=f"u{i}", outcome=outcome, units_done=i + 1))
    throttle.flush()
    failed = [u for u, o in outcomes.items() if o in STAGE_FAILED_OUTCOMES]
    assert len(failed) > 40
    assert [e.unit for e in got if e.is_failure] == failed  # every one, in order
    assert len([e for e in got if not e.is_failure]) < len(failed)  # written units are still coalesced
    assert [e.units_done for e in got] == sorted(e.units_done for e in got)  # pending goes out first
    assert got[-1].unit == "u299"  # the latest counters are never lost


def test_three_units_within_the_interval_keep_the_failed_middle_one():
    got: list[Event] = []
    throttle = Throttle(got.append, interval=0.1, clock=FakeClock())
    for unit, outcome in (("u1", "written"), ("u2", "failed"), ("u3", "written")):
        throttle(Event(Kind.UNIT, "download", job="j", unit=unit, outcome=outcome))
    throttle.flush()
    assert [(e.unit, e.outcome) for e in got] == [("u1", "written"), ("u2", "failed"), ("u3", "written")]


def test_event_failure_outcomes_are_the_stages_ones():
    assert {str(o) for o in STAGE_FAILED_OUTCOMES} == FAILED_OUTCOMES
    for outcome in Outcome:
        ev = Event(Kind.UNIT, "download", outcome=outcome)
        assert ev.is_failure == (outcome in STAGE_FAILED_OUTCOMES)


def test_event_json_round_trip_has_kind_and_counters():
    ev = Event(
        Kind.UNIT, "download", job="j1", unit="2024-01-01/binance/trades/BTCUSDT", outcome="failed", rows=5
    )
    data = ev.to_dict()
    assert data["kind"] == "unit" and data["outcome"] == "failed" and data["rows"] == 5
    assert ev.is_failure
    assert '"kind":"unit"' in ev.to_json()
