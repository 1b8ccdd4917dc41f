"""What the source says about its own data: incident reports (collection outages) and how far it has exported.

Fetched once per exchange per run from ``GET /v1/exchanges/{exchange}`` (public); when the source cannot be
reached, validation goes on without the annotations.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from typing import Any

from mdth_engine.core.timeframes import datetime_to_us, us_to_datetime

FETCH_TIMEOUT_S = 15.0


@dataclasses.dataclass(frozen=True, slots=True)
class Incident:
    """One ``incidentReports`` entry: ``[start_us, end_us)``."""

    start_us: int
    end_us: int
    status: str
    details: str

    def overlaps(self, start_us: int, end_us: int) -> bool:
        return self.start_us < end_us and start_us < self.end_us

    def describe(self) -> str:
        a, b = us_to_datetime(self.start_us), us_to_datetime(self.end_us)
        span = (
            f"{a:%Y-%m-%d %H:%M}-{b:%H:%M}"
            if a.date() == b.date()
            else f"{a:%Y-%m-%d %H:%M}-{b:%Y-%m-%d %H:%M}"
        )
        text = f"Tardis incident {span} UTC"
        if self.status:
            text += f" ({self.status})"
        return f"{text}: {self.details}" if self.details else text


@dataclasses.dataclass(frozen=True, slots=True)
class SourceFacts:
    """An exchange's incidents and export horizon; ``error`` says why they are unknown."""

    incidents: tuple[Incident, ...] = ()
    exported_until: dt.datetime | None = None
    error: str = ""

    def during(self, start_us: int, end_us: int) -> list[Incident]:
        return [i for i in self.incidents if i.overlaps(start_us, end_us)]


def _instant(value: Any) -> dt.datetime | None:
    if not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def parse_details(details: dict[str, Any]) -> SourceFacts:
    """The parts of an exchange-details answer validation uses; malformed entries are skipped."""
    incidents = []
    for item in details.get("incidentReports") or []:
        if not isinstance(item, dict):
            continue
        start, end = _instant(item.get("from")), _instant(item.get("to"))
        if start is None or end is None or end <= start:
            continue
        incidents.append(
            Incident(
                datetime_to_us(start),
                datetime_to_us(end),
                str(item.get("status") or ""),
                str(item.get("details") or "").strip(),
            )
        )
    exported = _instant((details.get("datasets") or {}).get("exportedUntil"))
    return SourceFacts(tuple(sorted(incidents, key=lambda i: i.start_us)), exported)


class SourceFactsCache:
    """One fetch per exchange per run, shared by concurrent days."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self._tasks: dict[str, asyncio.Task[SourceFacts]] = {}

    def get(self, exchange: str) -> asyncio.Task[SourceFacts]:
        if exchange not in self._tasks:
            self._tasks[exchange] = asyncio.ensure_future(self._fetch(exchange))
        return self._tasks[exchange]

    async def _fetch(self, exchange: str) -> SourceFacts:
        from mdth_engine.sources import tardis

        try:
            details = await asyncio.wait_for(
                tardis.exchange_details(self.settings, exchange), FETCH_TIMEOUT_S
            )
        except Exception as exc:  # unreachable or refusing: annotations are a bonus, never a failure
            text = str(exc).strip().splitlines()
            return SourceFacts(error=f"{type(exc).__name__}: {text[0] if text else ''}".strip(": "))
        return parse_details(details if isinstance(details, dict) else {})
