"""The progress throttle: bounded update rate per job, never losing errors, completions or the latest counters."""

from mdth_engine.core.events import Event, Kind, Throttle


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


def test_event_json_round_trip_has_kind_and_counters():
    ev = Event(
        Kind.UNIT, "download", job="j1", unit="2024-01-01/binance/trades/BTCUSDT", outcome="failed", rows=5
    )
    data = ev.to_dict()
    assert data["kind"] == "unit" and data["outcome"] == "failed" and data["rows"] == 5
    assert ev.is_failure
    assert '"kind":"unit"' in ev.to_json()
