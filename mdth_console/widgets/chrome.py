"""The chrome every screen shares: a one-line navigation bar, the `:` command line, the `/` filter bar and
the "terminal too small" notice."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult, RenderResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.suggester import SuggestFromList
from textual.widget import Widget
from textual.widgets import Input, Static

MIN_WIDTH, MIN_HEIGHT = 70, 20

NAV = (
    ("1", "dashboard", "Dashboard"),
    ("2", "jobs", "Jobs"),
    ("3", "launch", "Launch"),
    ("4", "coverage", "Coverage"),
    ("5", "inspect", "Inspect"),
    ("6", "stream", "Stream"),
)


class NavBar(Widget):
    """``1 Dashboard 2 Jobs ...`` with the current screen highlighted, plus READ-ONLY / PAUSED badges."""

    DEFAULT_CSS = "NavBar { height: 1; dock: top; background: $panel; }"

    def __init__(self, mode: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.mode = mode

    def render(self) -> RenderResult:
        app = self.app
        text = Text(" mdth ", style="bold reverse")
        for key, mode, label in NAV:
            style = "bold reverse" if mode == self.mode else ""
            text.append(" ")
            text.append(key, style="bold " + ("reverse" if mode == self.mode else "cyan"))
            text.append(f" {label} ", style=style)
        badges = []
        if getattr(app, "read_only", False):
            badges.append(("READ-ONLY", "bold yellow"))
        if getattr(app, "paused", False):
            badges.append(("PAUSED", "bold magenta"))
        for label, style in badges:
            text.append(" ")
            text.append(label, style=style)
        room = self.size.width - text.cell_len - 2
        lake = str(getattr(app, "lake", ""))
        if room > 8:
            if len(lake) > room:
                lake = "…" + lake[-(room - 1) :]
            text.append(" " * max(1, room - len(lake) + 1))
            text.append(lake, style="dim")
        return text


class TooSmall(Static):
    """Shown instead of everything else when the terminal is below the minimum size (screen CSS classes)."""

    DEFAULT_CSS = """
    TooSmall { display: none; width: 100%; height: 100%; content-align: center middle; text-align: center; }
    """

    def render(self) -> RenderResult:
        width, height = self.app.size
        return Text(
            f"terminal too small: {width}x{height}\nmdth console needs at least {MIN_WIDTH}x{MIN_HEIGHT}\n"
            "(enlarge the window, or press q to quit)",
            style="bold",
        )


class PromptRow(Horizontal):
    """One line at the bottom: a prompt character and its input; shown only while open."""

    DEFAULT_CSS = """
    PromptRow { display: none; height: 1; }
    PromptRow.-open { display: block; }
    PromptRow > .prompt { width: 1; color: $accent; text-style: bold; }
    """

    def __init__(self, prompt: str, line: Input, **kwargs) -> None:
        super().__init__(**kwargs)
        self.prompt, self.line = prompt, line

    def compose(self) -> ComposeResult:
        yield Static(self.prompt, classes="prompt", markup=False)
        yield self.line


class CommandLine(Input):
    """The `:` line at the bottom: Enter runs the command, Esc closes it; Up/Down walk the history."""

    DEFAULT_CSS = """
    CommandLine { height: 1; border: none; padding: 0 0; margin: 0; width: 1fr; }
    """
    BINDINGS = [
        Binding("escape", "close", "Close", show=False),
        Binding("up", "history(-1)", show=False),
        Binding("down", "history(1)", show=False),
    ]
    HISTORY: list[str] = []  # shared by every screen's command line, for this console run

    class Run(Message):
        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    def __init__(self, suggestions: list[str], **kwargs) -> None:
        super().__init__(
            placeholder=":command  (inspect KEY, jobs, launch download, coverage, stream SOURCE, help)",
            suggester=SuggestFromList(suggestions, case_sensitive=False),
            compact=True,
            **kwargs,
        )
        self.cursor_blink = False
        self._history_at = 0

    def open(self, text: str = "") -> None:
        self.value = text
        self.parent.add_class("-open")  # the prompt row: ":" and this line
        self._history_at = len(self.HISTORY)
        self.screen.set_focus(self)  # now, not after a refresh: keys typed right after ':' land here

    def action_close(self) -> None:
        self.value = ""
        self.parent.remove_class("-open")
        self.screen.focus_main()  # type: ignore[attr-defined]

    def action_history(self, step: int) -> None:
        if not self.HISTORY:
            return
        self._history_at = max(0, min(len(self.HISTORY), self._history_at + step))
        self.value = self.HISTORY[self._history_at] if self._history_at < len(self.HISTORY) else ""
        self.cursor_position = len(self.value)

    async def action_submit(self) -> None:
        text = self.value.strip().removeprefix(":").strip()
        self.value = ""
        self.parent.remove_class("-open")
        self.screen.focus_main()  # type: ignore[attr-defined]
        if text:
            if not self.HISTORY or self.HISTORY[-1] != text:
                self.HISTORY.append(text)
            self.post_message(self.Run(text))


class FilterBar(Input):
    """The `/` filter: narrows the screen's main list as you type; Enter keeps it, Esc clears it."""

    DEFAULT_CSS = """
    FilterBar { height: 1; border: none; padding: 0 0; margin: 0; width: 1fr; }
    """
    BINDINGS = [Binding("escape", "clear", "Clear filter", show=False)]

    class FilterChanged(Message):
        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    def __init__(self, **kwargs) -> None:
        super().__init__(
            placeholder="/filter  (words AND, !word NOT, a|b OR; Esc clears)", compact=True, **kwargs
        )
        self.cursor_blink = False

    def open(self) -> None:
        self.parent.add_class("-open")
        self.screen.set_focus(self)

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input is self:
            event.stop()
            self.post_message(self.FilterChanged(self.value))

    def action_clear(self) -> None:
        self.value = ""
        self.parent.remove_class("-open")
        self.post_message(self.FilterChanged(""))
        self.screen.focus_main()  # type: ignore[attr-defined]

    async def action_submit(self) -> None:
        if not self.value:
            self.parent.remove_class("-open")
        self.screen.focus_main()  # type: ignore[attr-defined]
