"""Splitting a plan into shards by expected bytes (LPT), deterministically, so shards finish together.

Longest-processing-time first: units sorted by expected bytes (largest first, ties by unit id) each go to the
currently lightest shard (ties by shard index). The result depends only on the (unit id, bytes) pairs, never
on input order, process or Python's salted ``hash()`` (the original's sharding bug, SEED_FACTS 1.3).
"""

from __future__ import annotations

import heapq
import zlib
from collections.abc import Sequence

from mdth_engine.core.errors import UsageError
from mdth_engine.stages.base import WorkUnit


def effective_shards(requested: int, units: int) -> int:
    """No more shards than units (an empty shard would only boot a worker to do nothing), at least one."""
    if requested < 1:
        raise UsageError(f"--shards must be at least 1, got {requested}")
    return max(1, min(requested, units))


def lpt_assign(sizes: Sequence[tuple[str, int]], shards: int) -> dict[str, int]:
    """unit id -> shard for (unit id, expected bytes) pairs; zero estimates count as 1 byte so they spread."""
    if shards < 1:
        raise UsageError(f"shards must be at least 1, got {shards}")
    order = sorted(((max(1, int(b)), uid) for uid, b in sizes), key=lambda t: (-t[0], t[1]))
    heap = [(0, i) for i in range(shards)]
    out: dict[str, int] = {}
    for size, uid in order:
        load, index = heapq.heappop(heap)
        out[uid] = index
        heapq.heappush(heap, (load + size, index))
    return out


def assign_shards(units: Sequence[WorkUnit], shards: int) -> dict[str, int]:
    """unit id -> shard for a plan (LPT over ``est_bytes``); unit ids must be unique."""
    ids = [u.unit_id for u in units]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"duplicate unit id {dup!r} in the plan")
    return lpt_assign([(u.unit_id, u.est_bytes) for u in units], shards)


def stable_hash_shard(key: str, shards: int) -> int:
    """Hash sharding done right (crc32, same on every machine): the comparison baseline in the benchmark."""
    return zlib.crc32(key.encode()) % shards


def shard_loads(assignment: dict[str, int], sizes: dict[str, int], shards: int) -> list[int]:
    """Total bytes per shard."""
    loads = [0] * shards
    for uid, shard in assignment.items():
        loads[shard] += sizes[uid]
    return loads


def spread(loads: Sequence[int | float]) -> float:
    """Largest shard over the mean shard: 1.0 is perfect; the job takes this much longer than ideal."""
    if not loads:
        return 1.0
    mean = sum(loads) / len(loads)
    return max(loads) / mean if mean else 1.0
