"""Vectorised CSV text in Tardis's dialect (comma, LF, no quoting, empty cells, shortest decimals) and gzip.

Numbers are rounded to their decimal grid first and then printed with Arrow's shortest round-trip formatting,
which matches JavaScript's ``Number#toString`` (``11657.08``, ``15``, ``0.00001``), as Tardis writes them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

try:  # isal is a hard dependency, but keep the module importable without it
    from isal import isal_zlib as _zlib
except ImportError:  # pragma: no cover
    import zlib as _zlib  # type: ignore[no-redef]

from mdth_engine.simulator.market import Grid

GZIP_LEVEL = 2
GZIP_WBITS = 31  # gzip container, header with mtime 0 and no file name: the same bytes every run
Column = pa.Array | str


def ints(values: np.ndarray, missing: np.ndarray | None = None) -> pa.Array:
    return pa.array(np.asarray(values, dtype=np.int64), mask=missing).cast(pa.string())


def floats(values: np.ndarray, missing: np.ndarray | None = None) -> pa.Array:
    """Already-rounded floats; NaN or ``missing`` becomes an empty cell."""
    v = np.asarray(values, dtype=np.float64) + 0.0  # no "-0"
    nan = np.isnan(v)
    mask = nan if missing is None else (nan | missing)
    return pa.array(np.where(nan, 0.0, v), mask=mask if mask.any() else None).cast(pa.string())


def on_grid(units: np.ndarray, grid: Grid, missing: np.ndarray | None = None) -> pa.Array:
    """Integer multiples of a decimal step, printed exactly (``units * step``)."""
    return floats(grid.to_float(units), missing)


_HEX = np.array([f"{i:02x}".encode() for i in range(256)], dtype="S2").view(np.uint8).reshape(256, 2)
_DASHES = (8, 13, 18, 23)


def uuids(h1: np.ndarray, h2: np.ndarray) -> pa.Array:
    """UUID-shaped ids (``8-4-4-4-12`` lower-case hex) from two 64-bit hashes per row."""
    n = h1.size
    raw = np.stack([h1.astype(np.uint64), h2.astype(np.uint64)], axis=1).view(np.uint8).reshape(n, 16)
    hexed = _HEX[raw].reshape(n, 32)
    out = np.empty((n, 36), dtype=np.uint8)
    out[:, list(_DASHES)] = ord("-")
    keep = [i for i in range(36) if i not in _DASHES]
    out[:, keep] = hexed
    data = pa.py_buffer(out.tobytes())
    offsets = pa.py_buffer((np.arange(n + 1, dtype=np.int32) * 36).tobytes())
    return pa.Array.from_buffers(pa.string(), n, [None, offsets, data])


def labels(index: np.ndarray, names: list[str]) -> pa.Array:
    return pa.DictionaryArray.from_arrays(
        pa.array(np.asarray(index, dtype=np.int32)), pa.array(names, pa.string())
    ).cast(pa.string())


def lines(columns: list[Column]) -> pa.Array:
    """One CSV line per row (each ending in LF) from string columns or constants."""
    cols: list[pa.Array | pa.Scalar] = [
        pa.scalar(c, pa.string()) if isinstance(c, str) else c for c in columns
    ]
    last = cols[-1]
    cols[-1] = pc.binary_join_element_wise(
        last, pa.scalar("", pa.string()), "\n", null_handling="replace", null_replacement=""
    )
    return pc.binary_join_element_wise(*cols, ",", null_handling="replace", null_replacement="")


def text_of(lines_array: pa.Array) -> memoryview:
    """The concatenated bytes of a string array of lines (no copy)."""
    if len(lines_array) == 0:
        return memoryview(b"")
    arr = lines_array.combine_chunks() if isinstance(lines_array, pa.ChunkedArray) else lines_array
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32)[arr.offset : arr.offset + len(arr) + 1]
    return memoryview(arr.buffers()[2])[int(offsets[0]) : int(offsets[-1])]


class GzipCsvWriter:
    """Streams lines into a gzip file; writes the header before the first row; no rows -> an empty gzip."""

    def __init__(self, fileobj: BinaryIO, header: list[str]) -> None:
        self._out = fileobj
        self._header = (",".join(header) + "\n").encode()
        self._z = _zlib.compressobj(GZIP_LEVEL, _zlib.DEFLATED, GZIP_WBITS)
        self.rows = 0
        self.raw_bytes = 0

    def write(self, lines_array: pa.Array) -> None:
        n = len(lines_array)
        if n == 0:
            return
        if self.rows == 0:
            self._out.write(self._z.compress(self._header))
            self.raw_bytes += len(self._header)
        data = text_of(lines_array)
        self.raw_bytes += len(data)
        self._out.write(self._z.compress(data))
        self.rows += n

    def close(self) -> None:
        self._out.write(self._z.flush())


def atomic_write(path: Path, produce) -> int:
    """Run ``produce(fileobj) -> rows`` into a temp file next to ``path`` and rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{id(produce):x}")
    try:
        with open(tmp, "wb") as fh:
            rows = produce(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        return rows
    finally:
        if tmp.exists():
            tmp.unlink()
