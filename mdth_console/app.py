"""The console application: screens as modes, global keys, the `:` command line, help, read-only, themes.

It talks to the engine only through ``ConsoleBackend`` (the public facade), from worker threads; every job it
launches runs in processes of its own, so quitting the console never stops one.
"""

from __future__ import annotations

import os
from typing import Any

from textual.app import App
from textual.binding import Binding
from textual.widgets import Input
from textual.worker import Worker, WorkerState

from mdth_console import commands as cmd
from mdth_console.backend import ConsoleBackend
from mdth_console.format import first_line
from mdth_console.widgets.chrome import MIN_HEIGHT, MIN_WIDTH, NavBar

DEFAULT_THEME = "textual-dark"
THEME_ALIASES = {"ansi": "ansi-dark", "dark": "textual-dark", "light": "textual-light"}


class MdthApp(App[None]):
    """Launch, watch and inspect everything over one lake."""

    TITLE = "mdth"
    CSS_PATH = "console.tcss"
    ENABLE_COMMAND_PALETTE = True
    COMMANDS = App.COMMANDS | {cmd.MdthCommands}
    HORIZONTAL_BREAKPOINTS = [(0, "-too-narrow"), (MIN_WIDTH, "-wide-enough")]
    VERTICAL_BREAKPOINTS = [(0, "-too-short"), (MIN_HEIGHT, "-tall-enough")]
    BINDINGS = [
        Binding("1", "goto('dashboard')", "Dashboard", show=False, id="nav.dashboard"),
        Binding("2", "goto('jobs')", "Jobs", show=False, id="nav.jobs"),
        Binding("3", "goto('launch')", "Launch", show=False, id="nav.launch"),
        Binding("4", "goto('coverage')", "Coverage", show=False, id="nav.coverage"),
        Binding("5", "goto('inspect')", "Inspect", show=False, id="nav.inspect"),
        Binding("6", "goto('stream')", "Stream", show=False, id="nav.stream"),
        Binding("question_mark,f1", "help", "Help", id="app.help"),
        # priority: handled on arrival, so keys typed right after ':' reach the command line, not the table
        Binding("colon", "command_line", "Cmd", priority=True, id="app.command"),
        Binding("p", "toggle_pause", "Pause", show=False, id="app.pause"),
        Binding("q", "quit", "Quit", id="app.quit"),
    ]

    def __init__(
        self,
        lake: str,
        read_only: bool = False,
        *,
        theme: str | None = None,
        backend: ConsoleBackend | None = None,
    ) -> None:
        super().__init__()
        from mdth_console.screens.coverage import CoverageScreen
        from mdth_console.screens.dashboard import DashboardScreen
        from mdth_console.screens.inspector import InspectorScreen
        from mdth_console.screens.jobs import JobsScreen
        from mdth_console.screens.launch import LaunchScreen
        from mdth_console.screens.stream import StreamScreen

        for mode, screen in (
            ("dashboard", DashboardScreen),
            ("jobs", JobsScreen),
            ("launch", LaunchScreen),
            ("coverage", CoverageScreen),
            ("inspect", InspectorScreen),
            ("stream", StreamScreen),
        ):
            self.add_mode(mode, screen)
        self.lake = lake
        self.read_only = read_only
        self.backend = backend or ConsoleBackend(lake)
        self.paused = False
        self.known_jobs: list[str] = []
        self.known_keys: list[str] = []
        if not os.environ.get("TEXTUAL_ANIMATIONS"):
            self.animation_level = "none"  # SSH-friendly: nothing slides or fades unless asked for
        name = THEME_ALIASES.get(theme or "", theme or DEFAULT_THEME)
        if name not in self.available_themes:
            raise ValueError(f"unknown theme {theme!r}; known: {', '.join(sorted(self.available_themes))}")
        self.theme = name

    def on_mount(self) -> None:
        self.switch_mode("dashboard")

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """A worker that raised (engine code we did not expect to fail) becomes a toast, never a crash."""
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            self.notify(
                first_line(event.worker.error), title="error", severity="error", markup=False, timeout=10
            )

    # -- navigation ----------------------------------------------------------------------------------------
    async def goto(self, mode: str) -> Any:
        """Switch to a screen (closing pushed detail screens of the current one); returns it."""
        if self.current_mode == mode:
            while len(self.screen_stack) > 1:
                self.pop_screen()
        else:
            await self.switch_mode(mode)
        return self.screen

    async def action_goto(self, mode: str) -> None:
        await self.goto(mode)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "command_line" and isinstance(self.focused, Input):
            return False  # a ':' typed into a field (instrument keys have them) stays text
        if (
            action == "goto"
            and parameters
            and parameters[0] == self.current_mode
            and len(self.screen_stack) == 1
        ):
            return None  # shown dimmed: you are there
        return True

    def action_help(self) -> None:
        from mdth_console.screens.modals import HelpScreen

        screen = self.screen
        keys = []
        seen = set()
        for active in self.active_bindings.values():
            binding = active.binding
            # the screens' own keys (they have ids), not the widgets' cursor keys
            if (
                not active.enabled
                or not binding.description
                or not binding.id
                or binding.id.startswith("nav.")
            ):
                continue
            if (binding.action, binding.description) in seen:
                continue
            seen.add((binding.action, binding.description))
            keys.append((self.get_key_display(binding), binding.tooltip or binding.description))
        name = type(screen).__name__.removesuffix("Screen")
        self.push_screen(HelpScreen(name, getattr(screen, "HELP", ""), keys, self.read_only))

    def action_command_line(self, text: str = "") -> None:
        from mdth_console.widgets.chrome import CommandLine

        found = self.screen.query(CommandLine)
        if found:
            found.first().open(text)

    def action_toggle_pause(self) -> None:
        self.paused = not self.paused
        for bar in self.screen.query(NavBar):
            bar.refresh()
        self.notify("refreshing paused (p resumes)" if self.paused else "refreshing resumed", timeout=3)
        if not self.paused:
            for poll in getattr(self.screen, "polls", []):
                poll.now()

    def command_suggestions(self) -> list[str]:
        return cmd.suggestions(self.read_only)

    # -- the `:` command line ------------------------------------------------------------------------------
    def run_command_line(self, text: str) -> None:
        """Parse and run one command; mistakes become a one-line toast."""
        try:
            name, args = cmd.parse(text)
            if self.read_only and cmd.BY_NAME[name].mutating:
                raise cmd.CommandError(f":{name} is not available in read-only mode")
            if name == "launch":
                args = [cmd.parse_launch_args(args)]  # type: ignore[list-item]
        except cmd.CommandError as exc:
            self.notify(str(exc), severity="warning", markup=False)
            return
        self.run_worker(self._dispatch(name, args), group="command", exclusive=False, exit_on_error=False)

    async def _dispatch(self, name: str, args: list[Any]) -> None:
        from mdth_console import jobactions

        try:
            if name in ("dashboard", "jobs", "launch", "coverage", "inspect", "stream"):
                screen = await self.goto(name)
                if args:
                    screen.open_with(args)
            elif name == "job":
                if not args:
                    raise cmd.CommandError(":job needs a job id (see :jobs)")
                await self.open_job(args[0])
            elif name in ("cancel", "cleanup", "retry"):
                if not args:
                    raise cmd.CommandError(f":{name} needs a job id (see :jobs)")
                if name == "retry":
                    jobactions.retry(self.screen, args[0])
                else:
                    action = jobactions.cancel if name == "cancel" else jobactions.cleanup
                    jobactions.with_status(self.screen, args[0], lambda status: action(self.screen, status))
            elif name == "theme":
                if not args:
                    raise cmd.CommandError(f"name a theme: {', '.join(sorted(self.available_themes))}")
                theme = THEME_ALIASES.get(args[0], args[0])
                if theme not in self.available_themes:
                    raise cmd.CommandError(f"unknown theme {args[0]!r}; try ansi-dark or textual-dark")
                self.theme = theme
            elif name == "pause":
                self.action_toggle_pause()
            elif name == "help":
                self.action_help()
            elif name == "quit":
                self.exit()
        except cmd.CommandError as exc:
            self.notify(str(exc), severity="warning", markup=False)
        except Exception as exc:
            self.notify(first_line(exc), severity="error", markup=False)

    async def open_job(self, job_id: str) -> None:
        """The job detail screen, over the Jobs screen."""
        from mdth_console.screens.jobs import JobDetailScreen

        await self.goto("jobs")
        await self.push_screen(JobDetailScreen(job_id))
