"""`mdth doctor`: is everything set up? One line per check, with what to fix."""

from __future__ import annotations

import warnings
from typing import Annotated

import typer

from mdth_engine.cli.common import JsonOpt, LakeOpt, json_mode, print_rows, settings_for


def register(app: typer.Typer) -> None:
    @app.command("doctor")
    def doctor(
        ctx: typer.Context,
        timeout: Annotated[float, typer.Option("--timeout", help="Seconds per network check.")] = 5.0,
        lake: LakeOpt = None,
        json_out: JsonOpt = False,
    ) -> None:
        """Check settings, the API key, the Tardis endpoints, the lake and the warehouse; exit 1 if any fails."""
        from mdth_engine.core.settings import SettingsWarning
        from mdth_engine.doctor import as_rows, run_checks

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SettingsWarning)  # the settings row shows them, with the fix
            checks = run_checks(lambda: settings_for(ctx, lake), timeout=timeout)
        print_rows(
            as_rows(checks),
            ["name", "status", "detail", "fix"],
            fmt="json" if json_mode(ctx, json_out) else "auto",
        )
        if any(c.status == "fail" for c in checks):
            raise typer.Exit(1)
