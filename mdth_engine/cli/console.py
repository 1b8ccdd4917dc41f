"""`mdth console`: the Textual operations console (imported only when asked for)."""

from __future__ import annotations

from typing import Annotated

import typer

from mdth_engine.cli.common import LakeOpt, settings_for


def open_console(ctx: typer.Context, lake: str | None, read_only: bool) -> None:
    settings = settings_for(ctx, lake)
    from mdth_console.app import MdthApp

    MdthApp(lake=settings.lake, read_only=read_only).run()


def register(app: typer.Typer) -> None:
    @app.command("console")
    def console(
        ctx: typer.Context,
        lake: LakeOpt = None,
        read_only: Annotated[bool, typer.Option("--read-only", help="Hide every mutating action.")] = False,
    ) -> None:
        """Open the operations console on the lake."""
        open_console(ctx, lake, read_only)
