"""Validation: what a lake day should hold, what it holds, and whether what it holds can be trusted.

- ``expected``: completeness, from the download stage's own plan and the jobs' recorded outcomes;
- ``scan`` + ``content``: one streaming pass per tick file (bounded memory), turned into checks;
- ``candle_checks``: candles against their ticks, across timeframes, and their grids;
- ``cross_source``: 1m candles against Binance klines;
- ``report``: the stable report schema, ``report.parquet`` + ``summary.json`` per day;
- ``coverage``: the days x instruments x data types grid the console and ``mdth gaps`` draw (import
  ``mdth_engine.validation.coverage.coverage``: the submodule shadows a package-level name);
- ``fix``: the exact download requests for what is missing or broken.

The stage that runs all of it per day is ``mdth_engine.stages.validate``.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "COVERAGE_SCHEMA": "mdth_engine.validation.coverage",
    "REPORT_SCHEMA": "mdth_engine.validation.report",
    "read_report": "mdth_engine.validation.report",
    "read_summary": "mdth_engine.validation.report",
    "fix_requests": "mdth_engine.validation.fix",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mdth_engine.validation' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
