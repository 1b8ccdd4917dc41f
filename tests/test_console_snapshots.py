"""Snapshot tests: each main screen rendered at 80x24 over frozen data (FrozenBackend, fixed clock), compared
as text with tests/snapshots/console_*.txt. After an intended change: MDTH_UPDATE_SNAPSHOTS=1, then review
the diff of the .txt files like code."""

from __future__ import annotations

import pytest
from test_console_fixtures import SIZE, FrozenBackend, check_snapshot, settle, wait_for

from mdth_console.app import MdthApp
from mdth_console.snapshot import screen_text

pytestmark = pytest.mark.timeout(60)


async def _shot(keys: list[str], name: str, read_only: bool = False, until: str = "") -> str:
    app = MdthApp("/lake/frozen", read_only=read_only, backend=FrozenBackend())
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        for key in keys:
            await pilot.press(key)
            await settle(pilot)
        if until:
            await wait_for(pilot, lambda: until in screen_text(app), 10, until)
            await settle(pilot)
        text = screen_text(app)
    check_snapshot(name, text)
    return text


async def test_dashboard_snapshot():
    text = await _shot([], "console_dashboard")
    assert "37.8 MB" in text or "36.0 MB" in text
    assert "download-20240303-110000-aaaaaa" in text
    assert "HTTP 500 from the source" in text  # a recent failure with its reason


async def test_jobs_snapshot():
    text = await _shot(["2"], "console_jobs")
    assert "stale" in text  # the running job has a silent shard
    assert "failed" in text


async def test_job_detail_snapshot():
    text = await _shot(["2", "enter"], "console_job_detail")
    assert "4 shard(s) on local" in text and "shard 1" not in text
    assert "201/400 units" in text  # the shards' own counts: 100 + 64 + 37 + 0
    assert "stale" in text


async def test_launch_snapshot():
    text = await _shot(["3"], "console_launch", until="plan:")
    assert "$ mdth --lake /lake/frozen download --start 2024-03-04 --symbols" in text  # continues the lake
    assert "126 unit(s)" not in text and "42 unit(s)" in text


async def test_coverage_snapshot():
    text = await _shot(["4"], "console_coverage")
    assert "✗" in text and "?" in text and "◆" in text


async def test_inspector_snapshot():
    text = await _shot(["5", "enter", "n", "n", "n"], "console_inspector", until="candles of")
    assert "1h candles of 2024-03-03" in text


async def test_read_only_dashboard_snapshot():
    text = await _shot(["2"], "console_jobs_read_only", read_only=True)
    assert "READ-ONLY" in text
    assert "Cancel" not in text and "Retry" not in text
