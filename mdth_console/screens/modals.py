"""Modal screens: the confirm dialog (default No, names what it acts on) and the help screen."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from mdth_console.commands import COMMANDS
from mdth_console.widgets.chrome import NAV


class ConfirmScreen(ModalScreen[bool]):
    """Yes/No with No focused: Enter on the default does nothing harmful; y/n/Esc work too."""

    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    ConfirmScreen > Vertical { width: 70; max-width: 95%; height: auto; border: thick $error; padding: 1 2;
                               background: $surface; }
    ConfirmScreen #confirm-text { height: auto; margin-bottom: 1; }
    ConfirmScreen Horizontal { height: auto; align: center middle; }
    ConfirmScreen Button { margin: 0 2; }
    """
    BINDINGS = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, title: str, body: str, yes: str = "Yes") -> None:
        super().__init__()
        self.title_text, self.body, self.yes = title, body, yes

    def compose(self) -> ComposeResult:
        text = Text(self.title_text + "\n", style="bold")
        text.append(self.body)  # engine text (job ids, errors): plain
        with Vertical():
            yield Static(text, id="confirm-text")
            with Horizontal():
                yield Button("No", id="no", variant="primary", compact=True)
                yield Button(self.yes, id="yes", variant="error", compact=True)

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, value: bool) -> None:
        self.dismiss(value)


class HelpScreen(ModalScreen[None]):
    """Keys of the screen it was opened from, the screens, and every `:` command."""

    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 90%; max-width: 100; height: 90%; border: thick $primary;
                                  background: $surface; padding: 0 1; }
    """
    BINDINGS = [Binding("escape,q,question_mark,f1", "dismiss", "Close")]

    def __init__(self, screen_name: str, about: str, keys: list[tuple[str, str]], read_only: bool) -> None:
        super().__init__()
        self.screen_name, self.about, self.keys, self.read_only = screen_name, about, keys, read_only

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-body"):
            yield Static(self._render_help())

    def _render_help(self) -> Table:
        grid = Table.grid(padding=(0, 2), expand=True)
        grid.add_column(style="bold cyan", max_width=30, overflow="fold")
        grid.add_column(ratio=1)
        grid.add_row(Text(f"{self.screen_name}", style="bold"), Text(self.about))
        grid.add_row("", "")
        grid.add_row(Text("keys here", style="bold"), "")
        for key, description in self.keys:
            grid.add_row(Text(key), Text(description))
        grid.add_row("", "")
        grid.add_row(Text("screens", style="bold"), "")
        for key, _mode, label in NAV:
            grid.add_row(Text(key), Text(label))
        grid.add_row(Text("everywhere", style="bold"), "")
        for key, description in (
            ("?  F1", "this help"),
            (":", "command line (Tab completes, Up/Down history)"),
            ("/", "filter the list (words AND, !word NOT, a|b OR)"),
            ("ctrl+p", "command palette (fuzzy search of actions, jobs, instruments)"),
            ("p", "pause/resume refreshing"),
            ("F5  ctrl+r", "refresh now"),
            ("esc", "back / close"),
            ("q  ctrl+q", "quit (jobs keep running: they are separate processes)"),
        ):
            grid.add_row(Text(key), Text(description))
        grid.add_row("", "")
        grid.add_row(Text("commands", style="bold"), "")
        for command in COMMANDS:
            if self.read_only and command.mutating:
                continue
            grid.add_row(Text(f":{command.name} {command.args}".strip()), Text(command.help))
        if self.read_only:
            grid.add_row("", "")
            grid.add_row(
                Text("read-only", style="bold yellow"),
                Text("launching, cancel, retry, cleanup and fix are hidden"),
            )
        return grid
