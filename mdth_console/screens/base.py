"""What every console screen shares: the chrome, read-only checks, and polling that never overlaps.

Polling (Dolphie / k9s pattern): a thread worker fetches through the backend; when it is done the result is
applied on the UI thread and the next fetch is scheduled with ``set_timer``, so fetches never pile up. A
screen that is not the current one (or a paused console) skips fetching but keeps its schedule.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Footer, Input

from mdth_console.format import first_line
from mdth_console.widgets.chrome import CommandLine, FilterBar, NavBar, PromptRow, TooSmall

# Actions that change something (jobs, the lake): hidden in --read-only mode.
MUTATING = frozenset(
    {"launch", "cancel_job", "retry_job", "retry_shard", "cleanup_job", "fix_cell", "fix_all"}
)


class Poll:
    """One polled fetch: ``fetch`` runs in a thread, ``apply`` (or ``on_error``) on the UI thread."""

    def __init__(
        self,
        screen: BaseScreen,
        name: str,
        fetch: Callable[[], Any],
        apply: Callable[[Any], None],
        interval: float,
        on_error: Callable[[BaseException], None] | None = None,
        when: Callable[[], bool] | None = None,
    ) -> None:
        self.screen, self.name, self.fetch, self.apply = screen, name, fetch, apply
        self.interval, self.on_error, self.when = interval, on_error, when
        self.timer: Any = None
        self.running = False
        self.last_ok = 0.0

    def schedule(self, delay: float | None = None) -> None:
        if self.timer is not None:
            self.timer.stop()
        self.timer = self.screen.set_timer(max(0.01, self.interval if delay is None else delay), self.tick)

    def now(self) -> None:
        """Fetch as soon as possible (a key press, a resume), unless a fetch is under way."""
        self.schedule(0)

    def tick(self) -> None:
        app = self.screen.app
        if self.running:
            return
        if getattr(app, "paused", False) or not self.screen.is_current or (self.when and not self.when()):
            self.schedule()
            return
        self.running = True
        self.screen.run_worker(
            self._work, thread=True, group=f"poll-{self.name}", exit_on_error=False, description=self.name
        )

    def _work(self) -> None:
        try:
            result: Any = self.fetch()
            ok = True
        except Exception as exc:  # engine errors become a message on screen, never a crash
            result, ok = exc, False
        try:
            self.screen.app.call_from_thread(self._done, result, ok)
        except Exception:
            pass  # the app is shutting down

    def _done(self, result: Any, ok: bool) -> None:
        self.running = False
        if not self.screen.is_attached:
            return
        try:
            if ok:
                self.last_ok = time.monotonic()
                self.apply(result)
            elif self.on_error is not None:
                self.on_error(result)
            else:
                self.screen.show_error(result)
        finally:
            self.schedule()


class BaseScreen(Screen):
    """A console screen: ``compose_body`` supplies the content; chrome, polls and read-only come from here."""

    AUTO_FOCUS = None  # focus_main() decides: the default "*" can pick a hidden filter/command input
    MODE = ""
    MAIN = ""  # id of the widget that gets focus (the main table or list)
    HELP = ""  # one paragraph for the help screen
    BINDINGS = [
        Binding("slash", "filter", "Filter", priority=True, id="screen.filter"),
        Binding("f5,ctrl+r", "refresh", "Refresh", show=False, id="screen.refresh"),
    ]
    FILTERABLE = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.polls: list[Poll] = []

    @property
    def backend(self) -> Any:
        return self.app.backend  # type: ignore[attr-defined]

    @property
    def read_only(self) -> bool:
        return bool(getattr(self.app, "read_only", False))

    def compose(self) -> ComposeResult:
        yield NavBar(self.MODE)
        yield from self.compose_body()
        yield TooSmall()
        yield PromptRow("/", FilterBar(id="filter-bar"), id="filter-row")
        yield PromptRow(":", CommandLine(self.app.command_suggestions(), id="command-line"), id="command-row")  # type: ignore[attr-defined]
        yield Footer(compact=True, show_command_palette=True)

    def compose_body(self) -> ComposeResult:
        yield from ()

    # -- polling -------------------------------------------------------------------------------------------
    def poll(
        self, name: str, fetch: Callable[[], Any], apply: Callable[[Any], None], interval: float, **kw
    ) -> Poll:
        poll = Poll(self, name, fetch, apply, interval, **kw)
        self.polls.append(poll)
        poll.schedule(0)
        return poll

    def on_screen_resume(self) -> None:
        self.query_one(NavBar).refresh()
        for poll in self.polls:
            if time.monotonic() - poll.last_ok > min(poll.interval, 2.0):
                poll.now()
        self.focus_main()

    def on_unmount(self) -> None:
        for poll in self.polls:
            if poll.timer is not None:
                poll.timer.stop()

    def action_refresh(self) -> None:
        for poll in self.polls:
            poll.now()

    # -- focus, filter, errors -----------------------------------------------------------------------------
    def main_widget(self) -> Widget | None:
        if not self.MAIN:
            return None
        found = self.query(f"#{self.MAIN}")
        return found.first() if found else None

    def focus_main(self) -> None:
        widget = self.main_widget()
        if widget is not None and widget.focusable:
            widget.focus()

    def action_filter(self) -> None:
        self.query_one(FilterBar).open()

    def on_filter_bar_filter_changed(self, event: FilterBar.FilterChanged) -> None:
        self.apply_filter(event.text)

    def apply_filter(self, text: str) -> None:
        widget = self.main_widget()
        if widget is not None and hasattr(widget, "set_filter"):
            widget.set_filter(text)

    def show_error(self, exc: BaseException | str, title: str = "error") -> None:
        self.notify(first_line(exc), title=title, severity="error", markup=False, timeout=8)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in MUTATING and self.read_only:
            return False
        if action == "filter" and isinstance(self.focused, Input):
            return False  # a '/' typed into a field stays text
        return self.FILTERABLE or action != "filter"

    def on_command_line_run(self, event: CommandLine.Run) -> None:
        self.app.run_command_line(event.text)  # type: ignore[attr-defined]
