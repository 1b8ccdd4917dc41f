"""The console over real lakes and real processes, at 80x24, keyboard only: a download launched from the
Launch screen runs as a job of worker processes against the simulator and is seen to finish; the inspector
finds an instrument in a real master; the coverage screen shows injected gaps; the stream screen shows bars
of a lake replay close; and a launched job finishes after the console has quit."""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import time
from pathlib import Path

import pytest
from sim_fixtures import SIM_API_KEY
from test_console_fixtures import SIZE, press_text, settle, wait_for

from mdth_console.app import MdthApp
from mdth_console.screens.jobs import JobDetailScreen
from mdth_console.screens.modals import ConfirmScreen
from mdth_console.snapshot import screen_text

pytestmark = pytest.mark.timeout(120)

DAYS = ("2024-03-01", "2024-03-02")
SPOT = "BINANCE:SPOT_PAIR:BTC-USDT"
PERP = "BINANCE-FUTURES:PERPETUAL:BTC-USDT"


@pytest.fixture(scope="module")
def built_lake(sim_server, tmp_path_factory) -> Path:
    """Two days of trades and top-5 books for two instruments, and their candles, built in-process."""
    from mdth_engine.api import ensure_instruments, launch_request, run_stage
    from mdth_engine.core.settings import load_settings

    lake = tmp_path_factory.mktemp("console-lake") / "lake"
    settings = load_settings(
        lake=str(lake),
        tardis_api_url=sim_server.api_url,
        tardis_datasets_url=sim_server.datasets_url,
        tardis_api_key=SIM_API_KEY,
    )
    request = launch_request(
        "download", DAYS[0], DAYS[1], symbols=[SPOT, PERP], data_types="trades,book_snapshot_5"
    )

    async def build() -> None:
        await ensure_instruments(request, settings)
        summary = await run_stage(request, settings)
        assert summary.exit_code == 0
        candles = launch_request("candles", DAYS[0], DAYS[1], symbols=[SPOT, PERP], timeframes="1m,1h")
        assert (await run_stage(candles, settings)).exit_code == 0

    asyncio.run(build())
    return lake


@pytest.fixture
def lake_copy(built_lake: Path, tmp_path: Path) -> Path:
    target = tmp_path / "lake"
    shutil.copytree(built_lake, target)
    return target


async def test_inspector_finds_an_instrument_by_fuzzy_search(built_lake: Path):
    app = MdthApp(str(built_lake))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("5")
        await wait_for(pilot, lambda: "on 2024-03-02" in screen_text(app), 15, "the master")
        await pilot.press("slash")
        await press_text(pilot, "btcusdt perp")
        await pilot.press("enter")
        await wait_for(pilot, lambda: f"2024-03-02 {PERP}" in screen_text(app), 15, "the title")
        await wait_for(pilot, lambda: "instrument_type" in screen_text(app), 5, "the definition")
        text = screen_text(app)
        assert "instrument_type" in text and "PERPETUAL" in text and "binance-futures" in text
        await pilot.press("n")  # the calendar: both days hold trades
        await settle(pilot)
        text = screen_text(app)
        assert "2024-03-01" in text and "2024-03-02" in text and "trades" in text
        await pilot.press("n")  # the last ticks of the day
        await wait_for(pilot, lambda: "ticks (trades)" in screen_text(app), 10, "ticks")
        assert "buy" in screen_text(app) or "sell" in screen_text(app)
        await pilot.press("n")  # the chart of the day's 1h candles
        await wait_for(pilot, lambda: "1h candles of 2024-03-02" in screen_text(app), 10, "chart")
        assert "┤" in screen_text(app)  # plotext's axis: a chart was drawn


async def test_the_inspector_shows_a_lookup_error_in_full(built_lake: Path):
    """An error longer than the title line is shown wrapped below it, not cut at 80 columns."""
    app = MdthApp(str(built_lake))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("colon")
        await press_text(pilot, "inspect BINANCE:SPOT_PAIR:BTCUSDT")
        await pilot.press("enter")
        await wait_for(pilot, lambda: "✗ BINANCE:SPOT_PAIR:BTCUSDT" in screen_text(app), 15, "the error")
        text = " ".join(screen_text(app).split("▕"))  # the right pane, without the list's border
        assert "symbol 'BTCUSDT' must be BASE-QUOTE for SPOT_PAIR" in " ".join(text.split())
        await pilot.press("colon")  # a good key brings the tabs back
        await press_text(pilot, f"inspect {SPOT}")
        await pilot.press("enter")
        await wait_for(pilot, lambda: "instrument_type" in screen_text(app), 15, "the definition")
        assert "must be BASE-QUOTE" not in screen_text(app)


async def test_coverage_shows_an_injected_gap_and_its_reason(lake_copy: Path):
    from mdth_engine.storage import layout

    day = dt.date(2024, 3, 2)
    victim = lake_copy / layout.raw_path(day, "trades", SPOT)
    victim.write_bytes(victim.read_bytes()[:100])  # cut: no longer a Parquet file
    (lake_copy / layout.raw_path(day, "book_snapshot_5", PERP)).unlink()  # gone, never recorded
    app = MdthApp(str(lake_copy))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("4")
        await wait_for(pilot, lambda: "gap(s)" in screen_text(app), 20, "coverage")
        text = screen_text(app)
        assert "2 gap(s)" in text, text
        spot_line = next(line for line in text.splitlines() if line.strip().startswith(SPOT))
        perp_line = next(line for line in text.splitlines() if line.strip().startswith(PERP))
        assert spot_line.split()[1:] == ["█", "✗"]  # 03-01 fine, 03-02 corrupt
        assert perp_line.split()[1:] == ["█", "?"]  # 03-02 never downloaded (as far as the lake knows)
        # drill down: move to the spot row's 03-02 cell; the reasons show below
        table = app.screen.query_one("#cov-grid")
        row = [line.split()[0] for line in text.splitlines() if line.strip().startswith(("BINANCE",))].index(
            SPOT
        )
        table.move_cursor(row=row, column=2)
        await settle(pilot)
        text = screen_text(app)
        assert "corrupt" in text and "trades" in text


async def test_fix_downloads_a_missing_cell_chosen_by_keys_and_the_job_ends_done(
    lake_copy: Path, sim_env, monkeypatch
):
    """Keys only: arrows to the missing cell, f, the dialog names what it downloads, y; the download job
    launched for it runs as worker processes against the simulator and the file is back."""
    from mdth_engine.storage import layout

    monkeypatch.setenv("MDTH_WORKER_HEARTBEAT_S", "0.4")
    victim = lake_copy / layout.raw_path(dt.date(2024, 3, 2), "trades", PERP)
    victim.unlink()
    app = MdthApp(str(lake_copy))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("4")
        await wait_for(pilot, lambda: "1 gap(s)" in screen_text(app), 20, "coverage")
        labels = [
            line.split()[0] for line in screen_text(app).splitlines() if line.strip().startswith("BINANCE")
        ]
        await pilot.press(*["down"] * labels.index(PERP), "right")  # the cursor starts on the first day
        await settle(pilot)
        assert "never_attempted" in screen_text(app)  # the reasons of the cell under the cursor
        await pilot.press("f")
        await wait_for(pilot, lambda: "Download what is missing?" in screen_text(app), 15, "the dialog")
        assert isinstance(app.screen, ConfirmScreen)
        text = screen_text(app)  # the dialog's lines are framed: check them one by one
        assert f"1 file(s) in {PERP} on 2024-03-02: 1" in text and "download job(s)" in text
        assert "download --start 2024-03-02 --data-types trades --symbols" in text
        await pilot.press("y")
        await wait_for(pilot, lambda: isinstance(app.screen, JobDetailScreen), 30, "the job detail")
        await wait_for(pilot, lambda: "\n done  1/1 units" in screen_text(app), 90, "the job to finish")
        assert "written 1" in screen_text(app) and "0 failed" in screen_text(app)
    assert victim.exists()


async def test_stream_screen_shows_bars_close_from_a_lake_replay(built_lake: Path):
    app = MdthApp(str(built_lake))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("6")
        await settle(pilot)
        await pilot.press("colon")
        app.screen.query_one("#command-line").value = f"stream replay:{SPOT}@2024-03-02?speed=max 1m"
        await pilot.press("enter")
        await wait_for(pilot, lambda: "ended" in screen_text(app), 60, "the replay to end")
        await wait_for(pilot, lambda: "┤" in screen_text(app), 5, "the chart of closes")  # rebuilt <= 1 Hz
        text = screen_text(app)
        assert SPOT in text and " 1m " in text
        bars = int(text.split("bars ", 1)[1].split()[0])
        assert bars >= 1000  # a day of 1m bars closed (1440 minus the ones before the first trade)
        assert "23:59:00" in text  # the last bar of the day


async def test_download_launched_from_the_console_runs_as_a_job_and_finishes(
    tmp_path: Path, sim_env, monkeypatch
):
    monkeypatch.setenv("MDTH_WORKER_HEARTBEAT_S", "0.4")
    lake = tmp_path / "lake"
    app = MdthApp(str(lake))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("3")
        await settle(pilot)
        await pilot.press("colon")
        app.screen.query_one(
            "#command-line"
        ).value = f"launch download --start 2024-03-04 --symbols {SPOT},{PERP} --data-types trades --shards 2"
        await pilot.press("enter")
        await wait_for(pilot, lambda: "--start 2024-03-04" in screen_text(app), 15, "the plan")
        text = " ".join(screen_text(app).split())
        assert "planned at launch" in text and "instrument master missing for 1 day(s)" in text
        await pilot.press("ctrl+l")
        await wait_for(pilot, lambda: isinstance(app.screen, JobDetailScreen), 30, "the job detail")
        job_id = app.screen.job_id
        await wait_for(pilot, lambda: "\n done  2/2 units" in screen_text(app), 90, "the job to finish")
        text = screen_text(app)
        assert "written 2" in text and "0 failed" in text
        await pilot.press("escape")
        await settle(pilot)
        assert job_id in screen_text(app)
    from mdth_engine.api import Lake

    table = Lake(str(lake)).ticks(SPOT, "trades", "2024-03-04", "2024-03-05")
    assert table.num_rows > 0


@pytest.mark.slow
async def test_a_job_launched_from_the_console_finishes_after_the_console_quit(
    tmp_path: Path, sim_env, monkeypatch
):
    monkeypatch.setenv("MDTH_WORKER_HEARTBEAT_S", "0.4")
    lake = tmp_path / "lake"
    app = MdthApp(str(lake))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("colon")
        app.screen.query_one(
            "#command-line"
        ).value = f"launch download --start 2024-03-05 --end 2024-03-06 --symbols {SPOT},{PERP} --shards 2"
        await pilot.press("enter")
        await wait_for(pilot, lambda: "--start 2024-03-05" in screen_text(app), 15, "the plan")
        await pilot.press("ctrl+l")
        await wait_for(pilot, lambda: isinstance(app.screen, JobDetailScreen), 30, "the job detail")
        job_id = app.screen.job_id
        await pilot.press("q")
    from mdth_engine.jobs import job_status
    from mdth_engine.storage.store import open_store

    store = open_store(str(lake))
    deadline = time.monotonic() + 120
    status = job_status(store, job_id)
    while not status.finished and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        status = job_status(store, job_id)
    assert status.state == "done", status.to_dict()


@pytest.mark.slow
async def test_a_pipeline_launched_from_the_console_runs_each_stage_as_a_job(
    tmp_path: Path, sim_env, monkeypatch
):
    monkeypatch.setenv("MDTH_WORKER_HEARTBEAT_S", "0.4")
    lake = tmp_path / "lake"
    app = MdthApp(str(lake))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("colon")
        app.screen.query_one(
            "#command-line"
        ).value = f"launch pipeline --start 2024-03-07 --symbols {SPOT} --data-types trades"
        await pilot.press("enter")
        await wait_for(
            pilot, lambda: "pipeline --date 2024-03-07" in " ".join(screen_text(app).split()), 15, "plan"
        )
        await pilot.press("ctrl+l")
        await wait_for(pilot, lambda: "pipeline started" in screen_text(app), 30, "the start")
        await pilot.press("2")

        def all_done() -> bool:
            text = screen_text(app)
            return all(f"{op}-" in text for op in ("download", "candles", "validate", "upload")) and (
                "4 job(s) · 0 running · 0 failed" in text
            )

        await wait_for(pilot, all_done, 120, "four finished jobs")
