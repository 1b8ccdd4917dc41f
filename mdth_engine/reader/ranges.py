"""Byte ranges of one object: coalesced, fetched with ranged GETs (in parallel on remote stores), served back.

``SparseFile`` hands pyarrow a seekable file that answers from the fetched ranges, so pyarrow decodes exactly
what the reader planned to fetch; a read outside them is fetched on the spot (and counted as a miss).
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from mdth_engine.storage.store import SeekableRaw

# Ranges closer than this are fetched as one request: a GET costs far more than a few KiB of bytes.
COALESCE_GAP = 4 * 1024
MAX_RANGE = 32 * 1024 * 1024  # never merge into one request larger than this
REMOTE_THREADS = 8


def coalesce(
    ranges: Iterable[tuple[int, int]], gap: int = COALESCE_GAP, max_length: int = MAX_RANGE
) -> list[tuple[int, int]]:
    """Sorted, merged ``(start, end)`` ranges: overlapping ones always, ones ``gap`` apart while small enough."""
    out: list[list[int]] = []
    for start, end in sorted(r for r in ranges if r[1] > r[0]):
        if out and start <= out[-1][1] + gap and max(end, out[-1][1]) - out[-1][0] <= max_length:
            out[-1][1] = max(out[-1][1], end)
        elif out and start <= out[-1][1]:  # overlapping but too long to merge: fetch the rest only
            if end > out[-1][1]:
                out.append([out[-1][1], end])
        else:
            out.append([start, end])
    return [(a, b) for a, b in out]


class Fetched:
    """Bytes of some ranges of one object, looked up by absolute offset."""

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._blocks: list[bytes] = []

    def add(self, start: int, data: bytes) -> None:
        i = bisect.bisect_left(self._starts, start)
        self._starts.insert(i, start)
        self._blocks.insert(i, data)

    def get(self, start: int, length: int) -> memoryview | None:
        """The bytes [start, start+length) when one fetched block holds them all, else None."""
        i = bisect.bisect_right(self._starts, start) - 1
        while i >= 0:
            block_start, block = self._starts[i], self._blocks[i]
            if block_start + len(block) >= start + length:
                offset = start - block_start
                return memoryview(block)[offset : offset + length]
            i -= 1
            if i >= 0 and self._starts[i] + len(self._blocks[i]) < start:
                break
        return None

    def covers(self, start: int, end: int) -> bool:
        return self.get(start, end - start) is not None

    @property
    def nbytes(self) -> int:
        return sum(len(b) for b in self._blocks)


def fetch(
    store: Any,
    path: str,
    ranges: Iterable[tuple[int, int]],
    *,
    gap: int = COALESCE_GAP,
    into: Fetched | None = None,
) -> Fetched:
    """Fetch ``(start, end)`` ranges (coalesced) into ``into``; parallel GETs when the store is remote."""
    out = into if into is not None else Fetched()
    wanted = [r for r in ranges if not out.covers(*r)]
    merged = coalesce(wanted, gap)
    if not merged:
        return out

    def one(r: tuple[int, int]) -> tuple[int, bytes]:
        return r[0], store.get_range(path, r[0], r[1] - r[0])

    remote = store.local_path(path) is None
    if remote and len(merged) > 1:
        with ThreadPoolExecutor(max_workers=min(REMOTE_THREADS, len(merged))) as pool:
            results = list(pool.map(one, merged))
    else:
        results = [one(r) for r in merged]
    for start, data in results:
        out.add(start, data)
    return out


class SparseFile(SeekableRaw):
    """A read-only, seekable view of an object of known size, answering from ``Fetched`` ranges."""

    def __init__(self, store: Any, path: str, size: int, fetched: Fetched) -> None:
        super().__init__(size)
        self._store, self._path, self._fetched = store, path, fetched
        self._lock = threading.Lock()
        self.misses = 0  # reads that were not planned: each costs an extra GET

    def readinto(self, buffer: Any) -> int:
        with self._lock:
            length = min(len(buffer), self._size - self._pos)
            if length <= 0:
                return 0
            view = self._fetched.get(self._pos, length)
            if view is None:
                self.misses += 1
                data = self._store.get_range(self._path, self._pos, length)
                self._fetched.add(self._pos, data)
                view = memoryview(data)
            n = len(view)
            buffer[:n] = view
            self._pos += n
            return n
