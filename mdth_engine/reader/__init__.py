"""Ranged reads of the lake for downstream code: ticks and candles by time range or around instants.

``mdth_engine.Lake`` delegates here. Reads fetch the footer once per file generation, then only the row
groups, pages and columns a request needs, with coalesced byte-range requests (``scan.py``).
"""

from mdth_engine.reader.lake import LakeWarning, candles, sparse_candles, sparse_ticks, ticks
from mdth_engine.reader.scan import ReadStats, read_windows

__all__ = ["LakeWarning", "ReadStats", "candles", "read_windows", "sparse_candles", "sparse_ticks", "ticks"]
