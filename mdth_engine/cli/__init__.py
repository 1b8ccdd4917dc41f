"""`mdth`: the headless command line (Typer). Every command maps engine errors to the exit-code contract."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from typer.core import TyperGroup

from mdth_engine import __version__
from mdth_engine.cli.common import CliState, state
from mdth_engine.core.errors import MdthError

try:  # Typer vendors Click since 0.2x; before, it depended on the click package
    from typer._click.exceptions import ClickException, UsageError
except ImportError:  # pragma: no cover
    from click.exceptions import ClickException, UsageError


def _one_line(exc: ClickException) -> typer.Exit:
    """A Click usage error as mdth's one line (not Typer's framed panel), with where to look for help."""
    message = " ".join(exc.format_message().split())
    ctx = getattr(exc, "ctx", None)
    hint = f" (see '{ctx.command_path} -h')" if isinstance(exc, UsageError) and ctx is not None else ""
    if message:  # a group run without a command has printed its help already: nothing to add
        typer.echo(f"mdth: error: {message}{hint}", err=True)
    return typer.Exit(exc.exit_code)


class _Group(TyperGroup):
    """Turns an ``MdthError`` or a Click usage error anywhere below into its one-line reason and exit code
    (2 for usage errors)."""

    def make_context(self, info_name, args, parent=None, **extra):  # type: ignore[no-untyped-def,override]
        try:
            return super().make_context(info_name, args, parent, **extra)
        except ClickException as exc:
            raise _one_line(exc) from None

    def invoke(self, ctx: typer.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except MdthError as exc:
            typer.echo(f"mdth: error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except ClickException as exc:
            raise _one_line(exc) from None


app = typer.Typer(
    cls=_Group,
    name="mdth",
    help="Market data tick handler: Tardis tick data into a verified Parquet lake, candles, validation, live.",
    no_args_is_help=False,
    invoke_without_command=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mdth {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    lake: Annotated[
        str | None,
        typer.Option("--lake", help="Lake URL: a folder or gs://bucket/prefix (default: MDTH_LAKE)."),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object per line on stdout.")] = False,
    verbose: Annotated[
        int, typer.Option("-v", "--verbose", count=True, help="More detail (repeatable).")
    ] = 0,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Global options apply to every command; a command's own --lake/--json win over them."""
    ctx.obj = CliState(lake=lake, json=json_out, verbose=verbose)
    if ctx.invoked_subcommand is None:
        if sys.stdin.isatty() and sys.stdout.isatty():
            from mdth_engine.cli.console import open_console

            open_console(ctx, lake=lake, read_only=False)
        else:
            typer.echo(ctx.get_help())
        raise typer.Exit()
    state(ctx)


def _register() -> None:
    """Mount every command group; each lives in its own module under ``mdth_engine.cli``."""
    import importlib
    import pkgutil

    import mdth_engine.cli as pkg

    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):  # __main__ runs the CLI when imported
            continue
        module = importlib.import_module(f"mdth_engine.cli.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(app)
        elif isinstance(getattr(module, "app", None), typer.Typer):
            app.add_typer(module.app, name=info.name)


_register()


def main() -> None:
    """The ``mdth`` script: run the command, then leave with its exit code (see ``core.shutdown``)."""
    from mdth_engine.core.shutdown import exit_code_of, leave

    try:
        app(prog_name="mdth")
        code = 0
    except SystemExit as exc:
        code = exit_code_of(exc)
    leave(code)
