"""What every stage shares: work units, their outcomes, and the context a unit runs in (DESIGN.md section 5).

A stage turns a request into work units, the smallest idempotent pieces (one output each); running a unit
whose output already exists and matches its source is a cheap ``skipped``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from enum import StrEnum
from typing import Any


class Outcome(StrEnum):
    WRITTEN = "written"
    SKIPPED = "skipped"  # already present and matching
    EMPTY = "empty"  # the source exists but holds no rows: written as an empty file
    UNAUTHORIZED = "unauthorized"
    NOT_EXPORTED = "not_exported"  # the source has not exported that day yet
    NOT_FOUND = "not_found"
    FAILED = "failed"


FAILED_OUTCOMES = frozenset({Outcome.FAILED, Outcome.UNAUTHORIZED})


@dataclasses.dataclass(frozen=True, slots=True)
class WorkUnit:
    """One idempotent piece of a stage: produces (at most) the lake file at ``output``."""

    stage: str
    unit_id: str  # stable and unique within a plan, e.g. "2024-01-01/binance/trades/BTCUSDT"
    day: dt.date
    output: str  # lake path relative to the root
    est_bytes: int = 0
    params: dict[str, Any] = dataclasses.field(default_factory=dict)  # JSON-serialisable

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "unit_id": self.unit_id,
            "day": self.day.isoformat(),
            "output": self.output,
            "est_bytes": self.est_bytes,
            "params": self.params,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorkUnit:
        return cls(
            stage=data["stage"],
            unit_id=data["unit_id"],
            day=dt.date.fromisoformat(data["day"]),
            output=data["output"],
            est_bytes=int(data.get("est_bytes", 0)),
            params=dict(data.get("params") or {}),
        )


@dataclasses.dataclass(slots=True)
class UnitResult:
    """How one unit ended; ``reason`` is one line a user can act on when it did not succeed."""

    unit_id: str
    outcome: Outcome
    rows: int = 0
    bytes: int = 0
    reason: str = ""
    seconds: float = 0.0
    output: str = ""
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.outcome in FAILED_OUTCOMES

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["outcome"] = str(self.outcome)
        return out


@dataclasses.dataclass(frozen=True)
class Request:
    """What a user asked a stage for: dates and selectors; JSON-serialisable (it goes into job specs)."""

    operation: str  # instruments | download | candles | validate | upload
    start: dt.date
    end: dt.date
    venues: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    data_types: tuple[str, ...] = ()
    symbols: tuple[str, ...] = ()  # instrument keys or Tardis symbols
    bases: tuple[str, ...] = ()
    max_instruments: int | None = None
    timeframes: tuple[str, ...] = ()
    options: dict[str, Any] = dataclasses.field(default_factory=dict)  # force, on_bad_rows, ...

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["start"], out["end"] = self.start.isoformat(), self.end.isoformat()
        for name in ("venues", "types", "data_types", "symbols", "bases", "timeframes"):
            out[name] = list(out[name])
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Request:
        fields = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in data.items() if k in fields}
        kw["start"], kw["end"] = dt.date.fromisoformat(kw["start"]), dt.date.fromisoformat(kw["end"])
        for name in ("venues", "types", "data_types", "symbols", "bases", "timeframes"):
            kw[name] = tuple(kw.get(name) or ())
        kw["options"] = dict(kw.get("options") or {})
        return cls(**kw)

    def days(self) -> list[dt.date]:
        from mdth_engine.core.timeframes import day_range

        return day_range(self.start, self.end)
