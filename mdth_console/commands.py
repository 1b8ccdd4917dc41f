"""The `:` command line and the command palette: one registry, so both reach every screen and action.

``:inspect KEY [DATE]``, ``:jobs [FILTER]``, ``:job ID``, ``:launch [STAGE] [--start D ...]``,
``:coverage [START [END]]``, ``:stream SOURCE [TIMEFRAMES]``, ``:cancel ID``, ``:retry ID``, ``:cleanup ID``,
``:theme NAME``, ``:pause``, ``:help``, ``:quit``.
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Iterator
from typing import TYPE_CHECKING

from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.content import Content

if TYPE_CHECKING:
    from mdth_console.app import MdthApp


@dataclasses.dataclass(frozen=True)
class CommandSpec:
    name: str
    args: str
    help: str
    mutating: bool = False


COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec("dashboard", "", "the lake, running and recent jobs, failures, throughput"),
    CommandSpec("jobs", "[FILTER]", "every job (filter: running, failed, a job id part, ...)"),
    CommandSpec("job", "JOB_ID", "one job: shards, rates, ETA, heartbeats, failures, logs"),
    CommandSpec(
        "launch",
        "[STAGE] [--start D] [--end D] [--symbols ..] [--shards N]",
        "the launch form: these fields, defaults for the rest",
    ),
    CommandSpec("coverage", "[START [END]] [TYPES]", "the days x instruments grid of what the lake holds"),
    CommandSpec("inspect", "[KEY [DATE]]", "an instrument: definition, calendar, last ticks, candles"),
    CommandSpec("stream", "[SOURCE [TIMEFRAMES]]", "live bars and features (sim:BTCUSDT, replay:KEY@DAY)"),
    CommandSpec("cancel", "JOB_ID", "cancel a job (asks first)", mutating=True),
    CommandSpec("retry", "JOB_ID", "relaunch a job's failed shards", mutating=True),
    CommandSpec("cleanup", "JOB_ID", "stop a job's leftover VMs/processes (asks first)", mutating=True),
    CommandSpec("theme", "NAME", "colours: textual-dark, ansi-dark (follows your terminal), ansi-light, ..."),
    CommandSpec("pause", "", "pause or resume every refresh"),
    CommandSpec("help", "", "keys and commands"),
    CommandSpec("quit", "", "leave the console (jobs keep running)"),
)
BY_NAME = {c.name: c for c in COMMANDS}
ALIASES = {
    "q": "quit",
    "h": "help",
    "i": "inspect",
    "d": "dashboard",
    "l": "launch",
    "c": "coverage",
    "s": "stream",
}

# `:launch` options -> launch form fields
LAUNCH_OPTIONS = {
    "--start": "start",
    "--end": "end",
    "--date": "date",
    "--venues": "venues",
    "--types": "types",
    "--data-types": "data_types",
    "--symbols": "symbols",
    "--bases": "bases",
    "--max-instruments": "max_instruments",
    "--timeframes": "timeframes",
    "--shards": "shards",
    "--backend": "backend",
}


class CommandError(ValueError):
    """A command line that does not parse; the message says what to type instead."""


def parse(text: str) -> tuple[str, list[str]]:
    """``"inspect BINANCE:SPOT_PAIR:BTC-USDT"`` -> ("inspect", [...]); unknown names are a CommandError."""
    try:
        words = shlex.split(text.strip().removeprefix(":"))
    except ValueError as exc:
        raise CommandError(f"cannot read that command: {exc}") from None
    if not words:
        raise CommandError("type a command, e.g. :help")
    name = ALIASES.get(words[0].lower(), words[0].lower())
    if name not in BY_NAME:
        close = [c.name for c in COMMANDS if c.name.startswith(name[:2])]
        hint = f"; did you mean :{close[0]}?" if close else "; :help lists them"
        raise CommandError(f"unknown command :{words[0]}{hint}")
    return name, words[1:]


def parse_launch_args(args: list[str]) -> dict[str, str]:
    """``[STAGE] [--opt value | --opt=value | --force]`` -> launch form fields."""
    fields: dict[str, str] = {}
    i = 0
    while i < len(args):
        word = args[i]
        if not word.startswith("--"):
            if "stage" in fields:
                raise CommandError(f"unexpected {word!r}: options look like --start 2024-03-01")
            fields["stage"] = word.lower()
            i += 1
            continue
        name, eq, value = word.partition("=")
        if name == "--force":
            fields["force"] = "1"
            i += 1
            continue
        if name not in LAUNCH_OPTIONS:
            raise CommandError(f"unknown option {name}; known: {', '.join(LAUNCH_OPTIONS)}, --force")
        if not eq:
            if i + 1 >= len(args):
                raise CommandError(f"{name} needs a value")
            value = args[i + 1]
            i += 1
        fields[LAUNCH_OPTIONS[name]] = value
        i += 1
    if "date" in fields:
        fields["start"] = fields["end"] = fields.pop("date")
    return fields


def suggestions(read_only: bool) -> list[str]:
    return [c.name for c in COMMANDS if not (read_only and c.mutating)] + [
        "launch download",
        "launch pipeline",
        "launch candles",
        "launch instruments",
        "launch validate",
        "launch upload",
        "jobs running",
        "jobs failed",
        "stream sim:BTCUSDT",
        "theme ansi-dark",
        "theme textual-dark",
    ]


class MdthCommands(Provider):
    """Palette entries built from the current state: screens, launches, recent jobs, instruments with data."""

    def _entries(self) -> Iterator[tuple[str, str, str]]:
        app: MdthApp = self.app  # type: ignore[assignment]
        yield "Go to Dashboard", "dashboard", "the lake, jobs, failures and throughput"
        yield "Go to Jobs", "jobs", "every job with progress"
        yield "Go to Coverage", "coverage", "days x instruments grid"
        yield "Go to Instrument inspector", "inspect", "search the master"
        yield "Go to Stream", "stream", "live bars and features"
        yield "Go to Launch", "launch", "the launch form"
        if not app.read_only:
            for stage in ("pipeline", "download", "instruments", "candles", "validate", "upload"):
                yield f"Launch {stage}", f"launch {stage}", f"the launch form for {stage}"
        for job_id in app.known_jobs[:20]:
            yield f"Job {job_id}", f"job {job_id}", "shards, failures, logs"
        for key in app.known_keys[:200]:
            yield f"Inspect {key}", f"inspect {shlex.quote(key)}", "definition, calendar, ticks, candles"
        yield "Stream the simulator (sim:BTCUSDT)", "stream sim:BTCUSDT?speed=60 15s,1m", "live bars"
        yield "Pause / resume refreshing", "pause", "stop every poll (p)"
        yield "Theme: ANSI dark (terminal colours)", "theme ansi-dark", "fewer bytes over SSH"

    async def discover(self) -> Hits:
        for title, command, help_text in list(self._entries())[:9]:
            yield DiscoveryHit(Content(title), self._runner(command), text=title, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, command, help_text in self._entries():
            score = matcher.match(title)
            if score > 0:
                # Content, not matcher.highlight(): that parses the title as markup (engine text never is)
                yield Hit(score, Content(title), self._runner(command), text=title, help=help_text)

    def _runner(self, command: str):
        def run() -> None:
            self.app.run_command_line(command)  # type: ignore[attr-defined]

        return run
