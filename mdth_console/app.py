"""The console application shell; screens arrive as the engine's stages land."""

from __future__ import annotations

from textual.app import App, ComposeResult
from textual.widgets import Footer, Header, Static


class MdthApp(App[None]):
    """Launch, watch and inspect everything over one lake."""

    TITLE = "mdth"
    BINDINGS = [("q", "quit", "Quit")]

    def __init__(self, lake: str, read_only: bool = False) -> None:
        super().__init__()
        self.lake = lake
        self.read_only = read_only

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(f"lake: {self.lake}", id="lake", markup=False)
        yield Footer()
