"""The memory budget of validation: a full-scale BTCUSDT day of trades and book_snapshot_5 (built with the
simulator at full scale) validates under 400 MB peak RSS, measured in a fresh process (slow: ~2 min cold)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_validate.py"


@pytest.mark.slow
def test_full_scale_day_validates_within_400_mb(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--work-dir", str(tmp_path), "--budget-mb", "400"],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    peaks = [float(m) for m in re.findall(r"^  validate, [^\n]*?(\d+) MB$", proc.stdout, flags=re.M)]
    assert len(peaks) == 2 and max(peaks) < 400, proc.stdout
    rows = [
        int(m.replace(",", ""))
        for m in re.findall(r"^  (?:trades|book_snapshot_5)\s+([\d,]+) rows", proc.stdout, flags=re.M)
    ]
    assert len(rows) == 2 and min(rows) > 1_000_000  # really a full-scale day
