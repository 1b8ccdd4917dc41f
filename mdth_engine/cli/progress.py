"""Renders progress events: rich bars on a TTY, plain lines otherwise, NDJSON with ``--json``."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator

from mdth_engine.core.events import Event, Kind, Sink, Throttle


class _PlainRenderer:
    """One line per stage start/finish, per failure, and a counter line at most every few seconds."""

    def __init__(self, every: float = 5.0) -> None:
        self._every = every
        self._last = 0.0

    def __call__(self, ev: Event) -> None:
        now = time.monotonic()
        if ev.kind in (Kind.STARTED, Kind.FINISHED, Kind.ERROR, Kind.WARNING, Kind.INFO) or ev.is_failure:
            line = f"[{ev.stage}] {ev.kind}"
            if ev.units_total:
                line += f" {ev.units_done}/{ev.units_total} units"
            if ev.rows:
                line += f" {ev.rows} rows"
            if ev.unit:
                line += f" {ev.unit}"
            if ev.outcome:
                line += f" {ev.outcome}"
            if ev.message:
                line += f": {ev.message}"
            print(line, file=sys.stderr if ev.kind is Kind.ERROR or ev.is_failure else sys.stdout, flush=True)
            self._last = now
        elif now - self._last >= self._every and ev.units_total:
            print(f"[{ev.stage}] {ev.units_done}/{ev.units_total} units, {ev.rows} rows", flush=True)
            self._last = now


class _RichRenderer:
    """A progress bar per stage with units, rows, MB/s and ETA; failures printed above the bars."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = Console(stderr=False)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rows]:>12,} rows"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self._tasks: dict[str, int] = {}
        self._started: dict[str, float] = {}

    def __enter__(self) -> _RichRenderer:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, ev: Event) -> None:
        from rich.text import Text

        key = f"{ev.job}/{ev.stage}"
        if key not in self._tasks:
            self._tasks[key] = self.progress.add_task(ev.stage, total=ev.units_total or None, rows=0, rate="")
            self._started[key] = time.monotonic()
        task = self._tasks[key]
        elapsed = max(time.monotonic() - self._started[key], 1e-6)
        rate = f"{ev.bytes / elapsed / 1e6:6.1f} MB/s" if ev.bytes else ""
        self.progress.update(
            task, total=ev.units_total or None, completed=ev.units_done, rows=ev.rows, rate=rate
        )
        if ev.kind is Kind.ERROR or ev.is_failure or ev.kind is Kind.WARNING:
            text = Text(
                f"{ev.stage}: {ev.unit + ' ' if ev.unit else ''}{ev.outcome or ev.kind}: {ev.message}"
            )
            text.stylize("red" if ev.kind is not Kind.WARNING else "yellow")
            self.progress.console.print(text)


@contextlib.contextmanager
def progress_sink(json_mode: bool, tty: bool | None = None) -> Iterator[Sink]:
    """The sink a command hands to the engine, throttled to ~10 updates a second."""
    if json_mode:
        throttle = Throttle(lambda ev: print(ev.to_json(), flush=True))
        yield throttle
        throttle.flush()
        return
    if tty is None:
        tty = sys.stdout.isatty()
    if tty:
        with _RichRenderer() as renderer:
            throttle = Throttle(renderer)
            yield throttle
            throttle.flush()
        return
    throttle = Throttle(_PlainRenderer())
    yield throttle
    throttle.flush()
