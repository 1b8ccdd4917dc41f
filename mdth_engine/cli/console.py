"""`mdth console`: the Textual operations console (imported only when asked for)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from mdth_engine.cli.common import LakeOpt, settings_for


def open_console(ctx: typer.Context, lake: str | None, read_only: bool, theme: str | None = None) -> None:
    settings = settings_for(ctx, lake)
    from mdth_console.app import MdthApp
    from mdth_engine.core.errors import UsageError

    try:
        app = MdthApp(lake=settings.lake, read_only=read_only, theme=theme)
    except ValueError as exc:  # an unknown theme
        raise UsageError(str(exc)) from None
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageError(
            "mdth console needs a terminal (stdin and stdout a TTY; over SSH use ssh -t); "
            "in scripts use the headless commands: mdth --help"
        )
    app.run()


def register(app: typer.Typer) -> None:
    @app.command("console")
    def console(
        ctx: typer.Context,
        lake: LakeOpt = None,
        read_only: Annotated[bool, typer.Option("--read-only", help="Hide every mutating action.")] = False,
        theme: Annotated[
            str | None,
            typer.Option(
                "--theme",
                envvar="MDTH_CONSOLE_THEME",
                help="textual-dark (default), ansi-dark / ansi-light (your terminal's colours; fewer bytes "
                "over SSH), or any Textual theme.",
            ),
        ] = None,
    ) -> None:
        """Open the operations console on the lake (keys: ? help, : commands, 1-6 screens, q quit)."""
        open_console(ctx, lake, read_only, theme)
