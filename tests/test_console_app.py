"""The console driven by keyboard only with Pilot at 80x24 over frozen data: every screen is reachable, the `:`
command line reaches everything, help and the palette open, read-only hides every mutating action, a too-small
terminal gets a notice, engine text is never parsed as markup, and a cancel asks first naming the job."""

from __future__ import annotations

import pytest
from test_console_fixtures import MARKUP, SIZE, FrozenBackend, press_text, settle, wait_for

from mdth_console.app import MdthApp
from mdth_console.screens.coverage import CoverageScreen
from mdth_console.screens.dashboard import DashboardScreen
from mdth_console.screens.inspector import InspectorScreen
from mdth_console.screens.jobs import JobDetailScreen, JobsScreen
from mdth_console.screens.launch import LaunchScreen
from mdth_console.screens.modals import ConfirmScreen, HelpScreen
from mdth_console.screens.stream import StreamScreen
from mdth_console.snapshot import screen_text

pytestmark = pytest.mark.timeout(60)

SCREENS = {
    "1": DashboardScreen,
    "2": JobsScreen,
    "3": LaunchScreen,
    "4": CoverageScreen,
    "5": InspectorScreen,
    "6": StreamScreen,
}


def make_app(**kw) -> MdthApp:
    return MdthApp("/lake/frozen", backend=kw.pop("backend", None) or FrozenBackend(), **kw)


async def test_every_screen_is_reachable_by_number_keys_and_back():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert isinstance(app.screen, DashboardScreen)
        for key, screen_type in [*SCREENS.items(), ("1", DashboardScreen)]:
            await pilot.press(key)
            await settle(pilot)
            assert isinstance(app.screen, screen_type), key
            assert "terminal too small" not in screen_text(app)


async def test_command_line_reaches_every_screen_and_the_job_detail():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        for command, screen_type in [
            ("jobs", JobsScreen),
            ("launch candles --start 2024-03-02 --timeframes 1m,1h", LaunchScreen),
            ("coverage 2024-03-01 2024-03-03", CoverageScreen),
            ("inspect DERIBIT:PERPETUAL:BTC-USD", InspectorScreen),
            ("stream", StreamScreen),
            ("d", DashboardScreen),
            ("job download-20240303-090000-cccccc", JobDetailScreen),
        ]:
            await pilot.press("colon")
            if len(command) < 8:
                await press_text(pilot, command)
            else:
                app.screen.query_one("#command-line").value = command  # long ones: typing is tested above
            await pilot.press("enter")
            await settle(pilot)
            assert isinstance(app.screen, screen_type), command
        # the job detail shows the job's failures with their reasons and the dead shard's error
        await wait_for(pilot, lambda: "HTTP 500 from the source" in screen_text(app), 5, "failures")
        assert "dead" in screen_text(app)
        await pilot.press("escape")
        await settle(pilot)
        assert isinstance(app.screen, JobsScreen)


async def test_launch_command_fills_the_form_and_shows_the_equivalent_command():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("colon")
        await press_text(pilot, "l candles")  # typed; the options are pasted
        line = app.screen.query_one("#command-line")
        line.value += " --start 2024-03-02 --end 2024-03-03 --timeframes 1m,1h --shards 2"
        await pilot.press("enter")
        await wait_for(pilot, lambda: "plan: 84 unit(s)" in screen_text(app), 10, "the plan")
        await settle(pilot)  # the command box grows by a line: one more layout pass
        text = " ".join(screen_text(app).split())  # the command wraps
        assert (
            "$ mdth --lake /lake/frozen candles --start 2024-03-02 --end 2024-03-03 --timeframes 1m,1h"
            in text
        )
        assert "--shards 2" in text
        await pilot.press("ctrl+l")
        await wait_for(pilot, lambda: isinstance(app.screen, JobDetailScreen), 10, "the job detail")
        request, shards, _backend = app.backend.launched[0]
        assert (request.operation, str(request.start), request.timeframes, shards) == (
            "candles",
            "2024-03-02",
            ("1m", "1h"),
            2,
        )
        # a bad value: a one-line error under the form, and ctrl+l does nothing
        await pilot.press("escape")
        await pilot.press("colon")
        app.screen.query_one("#command-line").value = "launch download --start 2024-13-45"
        await pilot.press("enter")
        await wait_for(pilot, lambda: "is not a date" in screen_text(app), 10, "the error")
        await pilot.press("ctrl+l")
        await settle(pilot)
        assert len(app.backend.launched) == 1


async def test_unknown_command_is_a_hint_not_a_crash():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("colon")
        await press_text(pilot, "jbos")
        await pilot.press("enter")
        await settle(pilot)
        assert any("unknown command :jbos" in str(n.message) for n in app._notifications)
        assert isinstance(app.screen, DashboardScreen)


async def test_help_lists_this_screens_keys_and_every_command():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("2")
        await settle(pilot)
        await pilot.press("question_mark")
        await settle(pilot)
        assert isinstance(app.screen, HelpScreen)
        help_text = screen_text(app)
        assert "Cancel" in help_text and "keys here" in help_text
        app.screen.query_one("#help-body").scroll_end(animate=False)
        await settle(pilot)
        assert ":coverage" in screen_text(app) or ":inspect" in screen_text(app)
        await pilot.press("escape")
        await settle(pilot)
        assert isinstance(app.screen, JobsScreen)


async def test_command_palette_opens_and_runs_a_console_command():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+p")
        await settle(pilot)
        await press_text(pilot, "Go to Coverage")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, CoverageScreen)


async def test_filter_narrows_the_jobs_list_and_escape_clears_it():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("2")
        await settle(pilot)
        await pilot.press("slash")
        await press_text(pilot, "candles|failed")
        await settle(pilot)
        text = screen_text(app)
        assert "candles-20240303-100000-bbbbbb" in text and "download-20240303-090000-cccccc" in text
        assert "download-20240303-110000-aaaaaa" not in text
        await pilot.press("escape")
        await settle(pilot)
        assert "download-20240303-110000-aaaaaa" in screen_text(app)


async def goto(pilot, key: str) -> None:
    """Let the app start, then open the screen of number ``key``."""
    await settle(pilot)
    await pilot.press(key)
    await settle(pilot)


async def paste_command(pilot, command: str) -> None:
    """Open the command line, paste ``command`` (typing it is tested elsewhere) and run it."""
    await pilot.press("colon")
    pilot.app.screen.query_one("#command-line").value = command
    await pilot.press("enter")


async def test_cancel_asks_first_naming_the_job_and_no_is_the_default():
    backend = FrozenBackend()
    app = make_app(backend=backend)
    async with app.run_test(size=SIZE) as pilot:
        await goto(pilot, "2")
        await pilot.press("c")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmScreen)
        text = screen_text(app)
        assert "Cancel job download-20240303-110000-aaaaaa?" in text
        assert "4 shard(s) on local" in text and "pid 4001@console-test" in text
        await pilot.press("enter")  # the focused default: No
        await settle(pilot)
        assert backend.cancelled == []
        await pilot.press("c")
        await settle(pilot)
        await pilot.press("y")
        await settle(pilot)
        assert backend.cancelled == ["download-20240303-110000-aaaaaa"]


async def test_retry_relaunches_the_selected_job_and_clean_up_asks_first():
    backend = FrozenBackend()
    app = make_app(backend=backend)
    async with app.run_test(size=SIZE) as pilot:
        await goto(pilot, "2")
        failed = "download-20240303-090000-cccccc"
        await pilot.press("down", "down")  # newest first: the failed download is the third row
        await pilot.press("r")
        await wait_for(pilot, lambda: backend.retried != [], 5, "the retry")
        assert backend.retried == [(failed, None)]
        await wait_for(
            pilot, lambda: any("relaunched shard(s) 1" in str(n.message) for n in app._notifications), 5
        )
        await pilot.press("x")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmScreen)
        assert f"Clean up job {failed}?" in screen_text(app)
        await pilot.press("n")
        await settle(pilot)
        assert backend.cleaned == [] and isinstance(app.screen, JobsScreen)
        await pilot.press("x")
        await settle(pilot)
        await pilot.press("y")
        await wait_for(pilot, lambda: backend.cleaned != [], 5, "the clean up")
        assert backend.cleaned == [failed]
        await wait_for(
            pilot, lambda: any("marked dead: 1, 3" in str(n.message) for n in app._notifications), 5
        )
        assert backend.cancelled == [] and backend.launched == []


async def test_a_launch_command_resets_what_it_does_not_give():
    """`:launch candles --start D` after a two-day form is one day: the end it does not give is reset."""
    backend = FrozenBackend()
    app = make_app(backend=backend)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await paste_command(
            pilot, "launch candles --start 2024-03-02 --end 2024-03-03 --timeframes 1h --shards 2"
        )
        await wait_for(pilot, lambda: "plan: 84 unit(s)" in screen_text(app), 10, "the two-day plan")
        await pilot.press("colon")
        await press_text(pilot, "launch candles --start 2024-03-05")
        await pilot.press("enter")
        await wait_for(pilot, lambda: "plan: 42 unit(s)" in screen_text(app), 10, "the one-day plan")
        await settle(pilot)
        text = " ".join(screen_text(app).split())
        assert "$ mdth --lake /lake/frozen candles --start 2024-03-05 Launch" in text
        assert "2024-03-03" not in text
        assert "--timeframes" not in text and "--shards" not in text
        form = app.screen.values()
        assert (form["end"], form["timeframes"], form["shards"]) == ("", "", "1")
        await pilot.press("colon")  # a bare :launch keeps the form
        await press_text(pilot, "launch")
        await pilot.press("enter")
        await settle(pilot)
        assert app.screen.values()["start"] == "2024-03-05"


async def test_the_plan_shows_bytes_only_where_they_are_a_size():
    """A download's estimate is bytes to fetch; validate's only weighs units, so no "about 3 B" there."""
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        for command, shown in [
            (
                "launch download --start 2024-03-02",
                "plan: 42 unit(s) · about 117.7 MB to download · 1 day(s)",
            ),
            ("launch validate --start 2024-03-02", "plan: 42 unit(s) · 1 day(s)"),
        ]:
            await paste_command(pilot, command)
            await wait_for(pilot, lambda s=shown: s in screen_text(app), 10, shown)


async def test_a_finished_shard_without_a_log_says_none_was_recorded():
    class NoLogs(FrozenBackend):
        def log(self, job_id: str, shard: int, tail: int = 200) -> str:
            return ""

    app = make_app(backend=NoLogs())
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await paste_command(pilot, "job candles-20240303-100000-bbbbbb")
        await wait_for(pilot, lambda: "written 21" in screen_text(app), 5, "the finished job")
        await pilot.press("l")
        await wait_for(pilot, lambda: "no log recorded for shard 0: it ran in-process" in screen_text(app), 5)
        await pilot.press("escape")
        await settle(pilot)
        await paste_command(pilot, "job download-20240303-110000-aaaaaa")  # a running shard's: not yet
        await wait_for(pilot, lambda: "4 shard(s) on local" in screen_text(app), 5, "the running job")
        await pilot.press("down", "l")
        await wait_for(pilot, lambda: "(no log for shard 1 yet)" in screen_text(app), 5)


async def test_read_only_hides_every_mutating_action():
    backend = FrozenBackend()
    app = make_app(backend=backend, read_only=True)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("2")
        await settle(pilot)
        text = screen_text(app)
        assert "READ-ONLY" in text and "Cancel" not in text and "Retry" not in text and "Clean up" not in text
        for key in ("c", "r", "x"):
            await pilot.press(key)
            await settle(pilot)
            assert isinstance(app.screen, JobsScreen), key
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, JobDetailScreen)
        assert "Retry" not in screen_text(app) and "Cancel" not in screen_text(app)
        await pilot.press("colon")
        app.screen.query_one("#command-line").value = "cancel download-20240303-110000-aaaaaa"
        await pilot.press("enter")
        await settle(pilot)
        assert not isinstance(app.screen, ConfirmScreen)
        assert any("read-only" in str(n.message) for n in app._notifications)
        await pilot.press("escape")
        await pilot.press("3")
        await wait_for(pilot, lambda: "plan:" in screen_text(app), 10, "the plan")
        text = screen_text(app)
        assert "launching is off" in text and "Launch  ctrl+l" not in text and "^l" not in text
        await pilot.press("ctrl+l")
        await pilot.press("4")
        await settle(pilot)
        assert "Fix" not in screen_text(app)
        await pilot.press("f")
        await pilot.press("F")
        await settle(pilot)
        assert not isinstance(app.screen, ConfirmScreen)
        assert backend.launched == [] and backend.cancelled == []


async def test_a_too_small_terminal_gets_a_notice_until_it_grows():
    app = make_app()
    async with app.run_test(size=(60, 18)) as pilot:
        await settle(pilot)
        text = screen_text(app)
        assert "terminal too small: 60x18" in text and "at least 70x20" in text
        assert "Dashboard" not in text
        await pilot.resize_terminal(80, 24)
        await settle(pilot)
        text = screen_text(app)
        assert "terminal too small" not in text and "Dashboard" in text


async def test_engine_text_with_markup_is_shown_as_written():
    app = make_app(backend=FrozenBackend(markup=MARKUP))
    async with app.run_test(size=(160, 40)) as pilot:
        await settle(pilot)
        assert MARKUP in screen_text(app)  # a shard error and a failure reason on the dashboard
        await pilot.press("colon")
        app.screen.query_one("#command-line").value = "job download-20240303-090000-cccccc"
        await pilot.press("enter")
        await wait_for(pilot, lambda: f"HTTP 500 from the source {MARKUP}" in screen_text(app), 5, "reason")
        await pilot.press("l")
        await wait_for(pilot, lambda: f"shard 0 line 0 {MARKUP}" in screen_text(app), 5, "the log")
        await pilot.press("colon")
        app.screen.query_one("#command-line").value = "job no-such-job"
        await pilot.press("enter")
        await wait_for(
            pilot, lambda: any(MARKUP in str(n.message) for n in app._notifications), 5, "the error toast"
        )
        await pilot.press("5")
        await pilot.press("slash")
        await press_text(pilot, "option")
        await pilot.press("enter")
        await wait_for(
            pilot, lambda: "2024-03-03 DERIBIT:OPTION:BTC-USD-240628-60000-CALL" in screen_text(app), 5, "key"
        )
        assert f"BTCUSD24062860000CALL{MARKUP}" in screen_text(app)


async def test_pause_stops_refreshing_and_shows_a_badge():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("p")
        await settle(pilot)
        assert "PAUSED" in screen_text(app)
        assert app.paused
        await pilot.press("p")
        await settle(pilot)
        assert "PAUSED" not in screen_text(app)


def test_cli_refuses_an_unknown_theme_with_exit_2(tmp_path):
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "mdth_engine.cli", "console", "--lake", str(tmp_path), "--theme", "neon"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert out.stderr.startswith("mdth: error: unknown theme 'neon'") and out.stderr.count("\n") == 1


async def test_a_worker_that_raises_becomes_a_toast():
    class Broken(FrozenBackend):
        def overview(self):
            raise RuntimeError("listing failed [/x]")

    app = make_app(backend=Broken())
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert any("listing failed [/x]" in str(n.message) for n in app._notifications)
        assert isinstance(app.screen, DashboardScreen)
        app.run_worker(_boom(), exit_on_error=False)
        await settle(pilot)
        assert any("boom [/y]" in str(n.message) for n in app._notifications)


async def _boom() -> None:
    raise ValueError("boom [/y]")


async def test_keys_typed_in_one_burst_after_colon_reach_the_command_line():
    """A terminal delivers fast typing (or tmux send-keys) in one read: every key arrives before ':' is
    acted on. The ':' binding is a priority one, so the rest still lands in the command line."""
    from textual import events

    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        for key, char in [("colon", ":"), ("j", "j"), ("o", "o"), ("b", "b"), ("s", "s"), ("enter", "\r")]:
            app.post_message(events.Key(key, char))
        await settle(pilot)
        assert isinstance(app.screen, JobsScreen)
        # and a ':' typed into a field stays text (instrument keys have them)
        await pilot.press("5")
        await settle(pilot)
        await pilot.press("slash")
        for key, char in [("d", "d"), ("colon", ":"), ("p", "p")]:
            app.post_message(events.Key(key, char))
        await settle(pilot)
        assert app.screen.query_one("#insp-search").value == "d:p"


async def test_a_stream_that_cannot_start_says_why():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await paste_command(pilot, "stream nowhere:[/x]")
        await wait_for(pilot, lambda: "unknown source 'nowhere:[/x]'" in screen_text(app), 10, "the reason")
        assert "failed" in screen_text(app) and "Start" in screen_text(app)


def test_the_console_imports_only_the_engine_facade():
    """DESIGN: the console talks to the engine through ``mdth_engine.api`` (and the top-level package's lazy
    names) only, so the engine's internals can move without breaking it."""
    import ast
    from pathlib import Path

    import mdth_console

    allowed = {"mdth_engine", "mdth_engine.api"}
    offenders = []
    for path in sorted(Path(mdth_console.__file__).parent.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] if node.level == 0 else []
            offenders += [
                f"{path.name}:{node.lineno} {name}"
                for name in names
                if name.startswith("mdth_engine")
                and name.split(".")[0] == "mdth_engine"
                and name not in allowed
            ]
    assert offenders == [], offenders
