"""Progress events every stage emits, and a throttle that keeps consumers at ~10 updates a second per job.

The CLI renders events (rich on a TTY, plain lines otherwise, NDJSON with ``--json``), the console turns them
into widgets, and shards persist them as heartbeats. Errors and completions are never dropped by the throttle.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable
from enum import StrEnum
from typing import Any


class Kind(StrEnum):
    STARTED = "started"  # a stage or job began; total units known
    PROGRESS = "progress"  # counters moved
    UNIT = "unit"  # one unit finished (with its outcome)
    WARNING = "warning"
    ERROR = "error"
    FINISHED = "finished"  # the stage or job ended (with totals)
    INFO = "info"


# Kinds a throttle must always deliver; a failed UNIT (``Event.is_failure``) is delivered too.
_NEVER_DROPPED = frozenset({Kind.STARTED, Kind.ERROR, Kind.FINISHED, Kind.WARNING})


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    """One progress event; ``job`` scopes throttling, ``data`` carries stage-specific fields."""

    kind: Kind
    stage: str
    job: str = ""
    message: str = ""
    units_done: int = 0
    units_total: int = 0
    rows: int = 0
    bytes: int = 0
    outcome: str = ""
    unit: str = ""
    at: float = dataclasses.field(default_factory=time.time)
    data: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in dataclasses.asdict(self).items() if v not in ("", {}, None)}
        out["kind"] = str(self.kind)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), default=str, separators=(",", ":"))

    @property
    def is_failure(self) -> bool:
        """An error, or a unit whose outcome fails the command; the throttle never drops either."""
        return self.kind is Kind.ERROR or (self.kind is Kind.UNIT and self.outcome in FAILED_OUTCOMES)


# Unit outcomes that mean the work did not succeed (the command exits 1); the same set as
# ``stages.base.FAILED_OUTCOMES``, kept here as strings so core does not import the stages.
FAILED_OUTCOMES = frozenset({"failed", "unauthorized"})

Sink = Callable[[Event], None]


def null_sink(_: Event) -> None:
    """A sink for callers that do not watch progress."""


class Throttle:
    """Wraps a sink: per job, at most one PROGRESS/UNIT event per ``interval``; the latest is kept, not lost.

    Failed units, errors, warnings, starts and finishes always go through, after the pending event; ``flush()``
    sends what is pending.
    """

    def __init__(
        self, sink: Sink, interval: float = 0.1, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._sink = sink
        self._interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}
        self._pending: dict[str, Event] = {}
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        to_send: list[Event] = []
        with self._lock:
            key = event.job or event.stage
            if event.kind in _NEVER_DROPPED or event.is_failure:
                pending = self._pending.pop(key, None)
                if pending is not None:
                    to_send.append(pending)
                to_send.append(event)
                self._last[key] = self._clock()
            else:
                now = self._clock()
                if now - self._last.get(key, float("-inf")) >= self._interval:
                    self._pending.pop(key, None)
                    self._last[key] = now
                    to_send.append(event)
                else:
                    self._pending[key] = event
        for item in to_send:
            self._sink(item)

    def flush(self) -> None:
        with self._lock:
            pending = list(self._pending.values())
            self._pending.clear()
        for item in pending:
            self._sink(item)
