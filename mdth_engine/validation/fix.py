"""What ``mdth validate --fix`` downloads: exactly the (day, instrument, data type) files a report found
missing, unreadable, failed or refused, plus those whose content is wrong (re-downloaded with ``force``).

Files the source does not have (404) or that were empty at the source are not re-fetched. The targets
become download requests whose cross product is exactly the target set: one per group of instruments that
share a data-type set and the ``force`` flag, merged over consecutive days.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import defaultdict
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from mdth_engine.stages.base import Request
from mdth_engine.validation import report as rp

# Content checks of a tick file whose error means the file itself is wrong: a fresh download replaces it.
REFETCH_CHECKS = frozenset(
    {"file", "local_timestamp", "exchange_timestamp", "values", "side", "duplicate_ids", "book"}
)


@dataclasses.dataclass(frozen=True, slots=True, order=True)
class FixTarget:
    """One file to download; ``instrument_key`` "" means the whole selection of a day without a master."""

    day: dt.date
    instrument_key: str
    data_type: str
    force: bool = False


def latest_rows(table: pa.Table) -> pa.Table:
    """The rows of a report written by its latest run (earlier runs' kept rows are not this run's verdict)."""
    if not table.num_rows:
        return table
    newest = pc.max(table["validated_at"])
    return table.filter(pc.equal(table["validated_at"], newest))


def fix_targets(table: pa.Table) -> list[FixTarget]:
    """The targets a report calls for (a file with both a completeness and a content error counts once)."""
    found: dict[tuple[dt.date, str, str], bool] = {}
    for row in table.to_pylist():
        key = (row["day"], row["instrument_key"], row["data_type"])
        if row["check"] == "instrument_master" and row["status"] == rp.ERROR:
            found[key] = False
        elif row["check"] == "completeness" and row["class"] in rp.FIXABLE_CLASSES:
            found[key] = found.get(key, False)
        elif (
            row["check"] in REFETCH_CHECKS
            and row["status"] == rp.ERROR
            and row["class"] in (rp.PRESENT, rp.EMPTY)
        ):
            found[key] = True
    return sorted(FixTarget(d, k, t, force) for (d, k, t), force in found.items())


def fix_requests(targets: list[FixTarget], base: Request) -> list[Request]:
    """Download requests covering exactly ``targets``; ``base`` supplies the selection of master-less days."""
    per_day: dict[dt.date, dict[str, tuple[set[str], bool]]] = defaultdict(dict)
    whole_days: list[dt.date] = []
    for t in targets:
        if not t.instrument_key:
            whole_days.append(t.day)
            continue
        types, force = per_day[t.day].get(t.instrument_key, (set(), False))
        types.add(t.data_type)
        per_day[t.day][t.instrument_key] = (types, force or t.force)
    pieces: list[tuple[dt.date, tuple[str, ...], tuple[str, ...], bool]] = []
    for day, keys in per_day.items():
        groups: dict[tuple[tuple[str, ...], bool], list[str]] = defaultdict(list)
        for key, (types, force) in keys.items():
            groups[(tuple(sorted(types)), force)].append(key)
        for (types, force), members in groups.items():
            pieces.append((day, tuple(sorted(members)), types, force))
    requests = _merge_days(pieces)
    for day in sorted(set(whole_days)):
        requests.append(
            dataclasses.replace(base, operation="download", start=day, end=day, options={"force": False})
        )
    return sorted(requests, key=lambda r: (r.start, r.symbols, r.data_types))


def _merge_days(pieces: list[tuple[dt.date, tuple[str, ...], tuple[str, ...], bool]]) -> list[Request]:
    """One request per run of consecutive days with the same instruments, data types and force flag."""
    by_shape: dict[tuple[tuple[str, ...], tuple[str, ...], bool], list[dt.date]] = defaultdict(list)
    for day, keys, types, force in pieces:
        by_shape[(keys, types, force)].append(day)
    out = []
    for (keys, types, force), days in by_shape.items():
        days.sort()
        run_start = prev = days[0]
        for day in [*days[1:], None]:
            if day is not None and day == prev + dt.timedelta(days=1):
                prev = day
                continue
            out.append(
                Request("download", run_start, prev, symbols=keys, data_types=types, options={"force": force})
            )
            if day is not None:
                run_start = prev = day
    return out


def describe(targets: list[FixTarget]) -> list[dict[str, Any]]:
    return [
        {
            "day": t.day.isoformat(),
            "instrument_key": t.instrument_key,
            "data_type": t.data_type,
            "force": t.force,
        }
        for t in targets
    ]
