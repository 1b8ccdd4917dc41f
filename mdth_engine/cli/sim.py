"""`mdth sim serve`: run the built-in market simulator until Ctrl-C and print how to point mdth at it."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Annotated

import typer

from mdth_engine.core.errors import MdthError

app = typer.Typer(
    help="The built-in market simulator (a Tardis-compatible API and a Binance-style feed).",
    no_args_is_help=True,
)


@app.callback()
def _group() -> None:
    """The built-in market simulator (a Tardis-compatible API and a Binance-style feed)."""


@app.command()
def serve(
    port: Annotated[int, typer.Option("--port", help="TCP port on 127.0.0.1 (0 = any free port).")] = 0,
    host: Annotated[str, typer.Option("--host", help="Interface to bind.")] = "127.0.0.1",
    scale: Annotated[
        str,
        typer.Option("--scale", help="Volume: tiny, small (default), medium, full, or a number (1 = full)."),
    ] = "small",
    faults: Annotated[
        str | None,
        typer.Option(
            "--faults",
            help="Faults to inject, e.g. '429,500,cut,truncate,slow' (each on 10% of dataset requests) or "
            "'429:first=1:retry_after=1,slow:delay=3:path=OPTIONS,500:p=0.2'.",
        ),
    ] = None,
    cache_dir: Annotated[
        str | None, typer.Option("--cache-dir", help="Where generated files are kept (default: user cache).")
    ] = None,
    now: Annotated[
        str,
        typer.Option(
            "--now", help="Simulated 'now': 'fixed' (2025-06-01T12:00Z, reproducible), 'real', or ISO."
        ),
    ] = "fixed",
    exported_until: Annotated[
        str | None, typer.Option("--exported-until", help="Override datasets.exportedUntil (ISO instant).")
    ] = None,
    no_auth: Annotated[
        bool,
        typer.Option("--no-auth", help="Serve every day without an API key (Tardis needs one off the 1st)."),
    ] = False,
    api_key: Annotated[
        list[str] | None,
        typer.Option("--api-key", help="Accept only these keys (repeatable); default: any non-empty key."),
    ] = None,
    live_speed: Annotated[float, typer.Option("--live-speed", help="Live feed speed (1 = real time).")] = 1.0,
    live_start: Annotated[
        str | None, typer.Option("--live-start", help="Simulated start of the live feed (default: now).")
    ] = None,
    live_scale: Annotated[
        str | None, typer.Option("--live-scale", help="Volume of the live feed (default: --scale).")
    ] = None,
) -> None:
    """Serve the Tardis metadata and datasets APIs, Binance klines and live streams on one port."""
    from mdth_engine.simulator.config import SimConfig, parse_now
    from mdth_engine.simulator.faults import Faults
    from mdth_engine.simulator.server import AsyncSimulator

    try:
        config = SimConfig(
            scale=scale,
            cache_dir=cache_dir,
            now=now,
            exported_until=exported_until,
            require_api_key=not no_auth,
            api_keys=frozenset(api_key) if api_key else None,
            live_speed=live_speed,
            live_start=parse_now(live_start) if live_start else None,
            live_scale=live_scale,
        )
        fault_set = Faults.parse(faults)
    except MdthError as exc:
        typer.echo(f"mdth: error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None

    async def run() -> None:
        sim = AsyncSimulator(config, faults=fault_set, host=host, port=port)
        try:
            await sim.start()
        except OSError as exc:
            typer.echo(
                f"mdth: error: cannot listen on {host}:{port}: {exc.strerror or exc} "
                "(is a simulator already running there? pick another --port, or --port 0 for any free one)",
                err=True,
            )
            raise typer.Exit(2) from None
        until = config.current_exported_until()
        typer.echo(
            f"mdth simulator: scale {config.scale_tag}, datasets exported until {until:%Y-%m-%dT%H:%MZ}, "
            f"cache {config.cache_path}"
        )
        typer.echo(f"  Tardis API       {sim.api_url}")
        typer.echo(f"  Tardis datasets  {sim.datasets_url}")
        typer.echo(f"  Binance klines   {sim.base_url}/api/v3/klines  (futures: /fapi/v1/klines)")
        typer.echo(
            f"  Binance streams  {sim.ws_url}/ws/btcusdt@trade  {sim.ws_url}/stream?streams=a/b  "
            f"(spot: {sim.ws_spot_url}/ws/...)"
        )
        if fault_set:
            typer.echo(f"  faults           {faults}")
        typer.echo("Point mdth at it:")
        for key, value in sim.env().items():
            typer.echo(f"{key}={value}")
        if config.require_api_key:
            typer.echo(
                "# days other than the 1st of a month need a key: any non-empty MDTH_TARDIS_API_KEY works"
            )
        typer.echo("Ctrl-C to stop.", err=True)
        stop = asyncio.Event()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        try:
            await stop.wait()
        finally:
            await sim.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
