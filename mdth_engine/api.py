"""The public facade: what the CLI, the console and downstream code call. Nothing below knows a terminal exists."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from mdth_engine.storage.layout import day_of


def lake_summary(url: str, prefix: str = "") -> list[dict[str, Any]]:
    """Files and bytes per (area, day, part) from one listing; part is the data type, timeframe or job id."""
    from mdth_engine.storage.store import open_store

    store = open_store(url)
    groups: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0])
    for info in store.list(prefix):
        parts = info.path.split("/")
        day = day_of(info.path)
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
