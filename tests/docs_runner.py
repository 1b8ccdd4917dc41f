"""Run the commands of README.md and docs/*.md as a reader would type them, so the docs cannot rot.

What a page holds, and what the runner does with it:

- A fenced ```sh block: each command line runs in bash, in the page's working folder, with the environment
  the runner provides plus whatever earlier lines of the page exported or assigned (``VAR=...`` persists, as in
  an interactive shell; ``cd`` too). A line must exit 0, or the code its trailing ``# exits N`` comment states.
  Lines ending in ``\\`` continue on the next; ``make TARGET`` lines are checked with ``make -n TARGET``.
- A fenced ```python block: saved to a file and run with the venv's Python, same environment and folder.
- A ```text block right after an sh or python block is that block's output, excerpted: each of its lines must
  appear in what the block printed, in order (whitespace runs match any whitespace; ``...`` matches anything;
  a line that is only ``...`` is skipped).
- An HTML comment right before a block changes what happens to it:
  ``<!-- docs-runner: skip (reason) -->``        not run; its ``mdth`` lines must still parse (``--help``), a
                                                  python block must compile. Keep these rare.
  ``<!-- docs-runner: environment -->``           ``export`` lines of settings the runner provides itself
                                                  (simulator URLs, emulator endpoints): the names are checked,
                                                  the values are not applied.
  ``<!-- docs-runner: background, ready when "TEXT" -->``  the block's one command runs in the background
                                                  until TEXT shows in its output; it is stopped (SIGINT) when the
                                                  page ends and must then exit 0.
- An inline code span starting with ``mdth `` (tables, prose): its options must parse (``--help``);
  ``...`` and brackets around optional parts are dropped first.

``python tests/docs_runner.py`` rewrites the generated sections of docs/data-model.md (``<!-- generated: NAME
-->`` ... ``<!-- end generated -->``) from the code; tests/test_docs_commands.py checks they are current.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCS_DIR = REPO / "docs"
VENV_BIN = Path(sys.executable).parent

COMMAND_TIMEOUT_S = 180.0
BACKGROUND_READY_S = 60.0
RUNNER_VARS = "__DOCS_"

_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)\s*$")
_DIRECTIVE = re.compile(r"^<!--\s*docs-runner:\s*(.*?)\s*-->\s*$")
_EXITS = re.compile(r"\s+#\s*exits\s+(\d+)\s*$")
_INLINE = re.compile(r"(?<!`)`(mdth [^`]+)`(?!`)")
_EXPORT = re.compile(r"^export\s+([A-Za-z_][A-Za-z0-9_]*)=")
_READY = re.compile(r'ready when\s+"([^"]+)"')


@dataclasses.dataclass
class Block:
    """A fenced code block of a page, with the runner directive written right before it (if any)."""

    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    directive: str = ""  # skip | environment | background | "" (run)
    reason: str = ""  # skip's reason, background's ready text
    output: Block | None = None  # the ```text block right after it, if any

    @property
    def where(self) -> str:
        return f"{_shown(self.path)}:{self.line}"


@dataclasses.dataclass
class Command:
    text: str
    line: int
    expect: int = 0


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


class DocError(AssertionError):
    """A page breaks a rule of the runner (not a failing command: a malformed directive or block)."""


# --- reading pages ------------------------------------------------------------------------------------------


def doc_pages() -> list[Path]:
    """README.md and every page under docs/."""
    return [REPO / "README.md", *sorted(DOCS_DIR.glob("*.md"))]


def parse_blocks(path: Path) -> list[Block]:
    """Every fenced block of a page, in order, with directives and output blocks attached."""
    lines = path.read_text().splitlines()
    blocks: list[Block] = []
    i = 0
    last_end = -10  # line index just past the previous block's closing fence
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = m.group(1), m.group(2), m.group(3).lower()
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i])
            i += 1
        if i >= len(lines):
            raise DocError(f"{_shown(path)}:{start + 1}: code block never closed")
        block = Block(path, start + 1, lang, "\n".join(body))
        prev = start - 1
        while prev >= 0 and not lines[prev].strip():
            prev -= 1
        d = _DIRECTIVE.match(lines[prev].strip()) if prev >= 0 else None
        if d:
            _apply_directive(block, d.group(1))
        if (
            lang == "text"
            and blocks
            and blocks[-1].lang in ("sh", "python")
            and all(not line.strip() for line in lines[last_end:start])
        ):
            blocks[-1].output = block
        blocks.append(block)
        i += 1
        last_end = i
    return blocks


def _apply_directive(block: Block, text: str) -> None:
    kind = text.split(maxsplit=1)[0].rstrip(",;") if text else ""
    if kind == "skip":
        reason = re.search(r"\((.+)\)", text)
        if not reason:
            raise DocError(f"{block.where}: a skip needs its reason: <!-- docs-runner: skip (why) -->")
        block.directive, block.reason = "skip", reason.group(1)
    elif kind == "environment":
        block.directive = "environment"
    elif kind == "background":
        ready = _READY.search(text)
        if not ready:
            raise DocError(f'{block.where}: say when it is ready: background, ready when "TEXT"')
        block.directive, block.reason = "background", ready.group(1)
    else:
        raise DocError(f"{block.where}: unknown docs-runner directive {text!r}")


def shell_commands(block: Block) -> list[Command]:
    """The command lines of an sh block: continuations joined, comments and blank lines dropped."""
    out: list[Command] = []
    pending: list[str] = []
    first = 0
    for n, raw in enumerate(block.text.splitlines()):
        line = raw.rstrip()
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if not pending:
            first = n
        if line.endswith("\\"):
            pending.append(line[:-1])
            continue
        pending.append(line)
        text = " ".join(p.strip() for p in pending)
        pending = []
        expect = 0
        m = _EXITS.search(text)
        if m:
            expect = int(m.group(1))
        out.append(Command(text, block.line + 1 + first, expect))
    if pending:
        raise DocError(f"{block.where}: the last command ends with a line continuation")
    return out


def inline_commands(path: Path, *, tables_only: bool = False) -> list[tuple[int, str]]:
    """``mdth ...`` code spans outside fenced blocks (only in table rows with ``tables_only``), with line numbers."""
    out = []
    inside = False
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if _FENCE.match(line):
            inside = not inside
            continue
        if not inside and (not tables_only or line.lstrip().startswith("|")):
            out += [(n, m.group(1)) for m in _INLINE.finditer(line)]
    return out


PLACEHOLDERS = frozenset(
    {"COMMAND", "JOB", "ID", "I", "N", "KEY", "DAY", "D", "PREFIX", "SOURCE", "URL", "PATH"}
)


def runnable_form(command: str) -> str | None:
    """A documented command as it would be typed: optional ``[...]`` parts dropped; None when it has
    placeholders (``...``, ``JOB``) and cannot run as written."""
    text = re.sub(r"\s*\[[^\]]*\]", "", command).strip()
    if "..." in text or any(tok in PLACEHOLDERS for tok in text.split()):
        return None
    return " ".join(text.split())


def executed_commands(pages: list[Path]) -> list[str]:
    """Every command line the runner executes (sh blocks that are not skipped or environment), normalized."""
    out = []
    for page in pages:
        for block in parse_blocks(page):
            if block.lang == "sh" and block.directive not in ("skip", "environment"):
                out += [" ".join(_EXITS.sub("", c.text).split()) for c in shell_commands(block)]
    return out


def parse_args_of(command: str) -> list[str]:
    """The arguments after ``mdth`` of a documented command, with placeholders dropped, for a --help check."""
    text = command.split(" # ", 1)[0]
    text = text.replace("...", " ").replace("[", " ").replace("]", " ")
    args = shlex.split(text)
    if not args or args[0] != "mdth":
        raise DocError(f"not an mdth command: {command!r}")
    if len(args) > 1 and args[1] in PLACEHOLDERS:  # `mdth COMMAND --help`: about every command
        return []
    return args[1:]


def check_parses(args: list[str]) -> str:
    """'' when ``mdth ARGS --help`` parses (every option exists), else what went wrong."""
    from typer.testing import CliRunner

    from mdth_engine.cli import app

    result = CliRunner().invoke(app, [*args, "--help"])
    if result.exit_code != 0 or "Usage:" not in result.output:
        return f"exit {result.exit_code}: {result.output.strip()[-600:]}"
    return ""


# --- output excerpts -------------------------------------------------------------------------------------


def _pattern(line: str) -> re.Pattern[str]:
    parts = [re.escape(p) for p in line.strip().split("...")]
    body = ".*?".join(re.sub(r"(\\ )+|\s+", r"\\s+", p) for p in parts)
    return re.compile(body)


def missing_output(excerpt: str, output: str) -> list[str]:
    """Lines of an output excerpt that do not appear, in order, in what was printed."""
    lines = output.splitlines()
    at = 0
    missing = []
    for want in excerpt.splitlines():
        if not want.strip() or want.strip() in ("...", "…"):
            continue
        pattern = _pattern(want)
        for j in range(at, len(lines)):
            if pattern.search(lines[j]):
                at = j + 1
                break
        else:
            missing.append(want)
    return missing


# --- running ---------------------------------------------------------------------------------------------

_SCRIPT = """set -a
set -o pipefail
{command}
__DOCS_RC=$?
set +a
env -0 > "$__DOCS_ENV_OUT"
exit $__DOCS_RC
"""


@dataclasses.dataclass
class Result:
    command: str
    code: int
    output: str
    seconds: float


class DocShell:
    """One page's shell session: a working folder, an environment that earlier lines may change, and the
    background processes the page started."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.env = dict(env)
        self.cwd = workdir
        self.background: list[tuple[Block, subprocess.Popen[bytes], Path]] = []
        self._n = 0

    def _next(self, suffix: str) -> Path:
        self._n += 1
        return self.workdir / f".docs-runner-{self._n:03d}{suffix}"

    def run(self, command: str, timeout: float = COMMAND_TIMEOUT_S) -> Result:
        """One command line in bash; exports, assignments and ``cd`` carry over to the next."""
        script = self._next(".sh")
        script.write_text(_SCRIPT.format(command=command))
        env_out = self._next(".env")
        log = self._next(".log")
        env = {**self.env, "__DOCS_ENV_OUT": str(env_out)}
        started = time.monotonic()
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                ["bash", str(script)],
                cwd=self.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                code = proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                code = -1
        output = log.read_text(errors="replace")
        if code == -1:
            output += f"\n[docs-runner: killed after {timeout:.0f} s]"
        if env_out.exists():
            self._take_env(env_out.read_bytes())
        return Result(command, code, output, time.monotonic() - started)

    def _take_env(self, raw: bytes) -> None:
        env = {}
        for item in raw.split(b"\0"):
            name, sep, value = item.decode(errors="replace").partition("=")
            if sep and not name.startswith(RUNNER_VARS) and name not in ("_", "SHLVL", "OLDPWD"):
                env[name] = value
        self.env = env
        if env.get("PWD") and Path(env["PWD"]).is_dir():
            self.cwd = Path(env["PWD"])

    def run_python(self, source: str, timeout: float = COMMAND_TIMEOUT_S) -> Result:
        path = self._next(".py")
        path.write_text(source)
        return self.run(f"{shlex.quote(sys.executable)} {shlex.quote(str(path))}", timeout)

    def start_background(self, block: Block, command: str) -> Result:
        """Start a long-running command; returns once its output shows the block's ready text."""
        log = self._next(".log")
        out = open(log, "wb")  # noqa: SIM115  (kept open for the process' lifetime)
        proc = subprocess.Popen(
            ["bash", "-c", f"set -a\nexec {command}"],
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        out.close()
        self.background.append((block, proc, log))
        deadline = time.monotonic() + BACKGROUND_READY_S
        while time.monotonic() < deadline:
            text = log.read_text(errors="replace")
            if block.reason in text:
                return Result(command, 0, text, 0.0)
            if proc.poll() is not None:
                return Result(command, proc.returncode or -2, text, 0.0)
            time.sleep(0.1)
        return Result(command, -1, log.read_text(errors="replace") + "\n[docs-runner: never ready]", 0.0)

    def stop_background(self) -> list[Result]:
        """Stop what the page left running (SIGINT, like Ctrl-C), newest first; their exit codes."""
        results = []
        for block, proc, log in reversed(self.background):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    _kill_group(proc)
            results.append(Result(block.text.strip(), proc.returncode, log.read_text(errors="replace"), 0))
        self.background = []
        return results


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    proc.wait()


def run_page(
    path: Path,
    shell: DocShell,
    *,
    provided: frozenset[str],
    log: Callable[[str], None] = lambda _: None,
    echo: bool = False,
) -> list[str]:
    """Run every block of a page in order; the failures as readable paragraphs (empty: the page works).
    Whatever the page started in the background is stopped at the end, also when a block failed."""
    failures: list[str] = []
    try:
        _run_blocks(path, shell, provided, log, echo, failures)
    finally:
        for result in shell.stop_background():
            if result.code != 0:
                tail = "\n".join(result.output.splitlines()[-30:])
                failures.append(
                    f"{_shown(path)}: background command exited {result.code} when stopped\n"
                    f"$ {result.command}\n{tail}"
                )
    return failures


def _run_blocks(
    path: Path,
    shell: DocShell,
    provided: frozenset[str],
    log: Callable[[str], None],
    echo: bool,
    failures: list[str],
) -> None:
    def fail(block: Block, what: str, result: Result | None = None) -> None:
        text = f"{block.where}: {what}"
        if result is not None:
            tail = "\n".join(result.output.splitlines()[-40:])
            text += f"\n$ {result.command}\n{tail}"
        failures.append(text)

    for block in parse_blocks(path):
        if block.lang in ("sh", "bash", "shell", "console"):
            if block.lang != "sh":
                fail(block, "write shell blocks as ```sh so the runner sees them")
                continue
            if block.directive == "skip":
                for cmd in shell_commands(block):
                    if cmd.text.startswith("mdth "):
                        problem = check_parses(parse_args_of(cmd.text))
                        if problem:
                            fail(block, f"skipped command does not parse: {cmd.text}\n{problem}")
                continue
            if block.directive == "environment":
                for cmd in shell_commands(block):
                    m = _EXPORT.match(cmd.text)
                    if not m:
                        fail(block, f"an environment block holds export lines only, not: {cmd.text}")
                    elif m.group(1) not in provided:
                        fail(block, f"{m.group(1)} is not a setting the runner provides ({sorted(provided)})")
                continue
            commands = shell_commands(block)
            if block.directive == "background":
                if len(commands) != 1:
                    fail(block, "a background block holds exactly one command")
                    continue
                log(f"{block.where}: background: {commands[0].text}")
                result = shell.start_background(block, commands[0].text)
                if result.code != 0:
                    fail(block, f"background command did not get ready (exit {result.code})", result)
                    return
                continue
            printed = []
            for cmd in commands:
                make = cmd.text.startswith("make ")
                result = _make_dry_run(cmd.text) if make else shell.run(cmd.text)
                log(f"{block.where}: exit {result.code} in {result.seconds:.1f} s: {cmd.text}")
                if echo:
                    log(result.output)
                printed.append(result.output)
                if result.code != cmd.expect:
                    fail(block, f"line {cmd.line}: exit {result.code}, documented {cmd.expect}", result)
                    return  # later commands depend on this one
            _check_excerpt(block, "\n".join(printed), fail)
        elif block.lang == "python":
            if block.directive == "skip":
                try:
                    compile(block.text, block.where, "exec", flags=_TOP_LEVEL_AWAIT)
                except SyntaxError as exc:
                    fail(block, f"skipped python block does not compile: {exc}")
                continue
            if block.directive:
                fail(block, f"{block.directive} does not apply to a python block")
                continue
            result = shell.run_python(block.text)
            log(f"{block.where}: python exit {result.code} in {result.seconds:.1f} s")
            if echo:
                log(result.output)
            if result.code != 0:
                fail(block, f"python block exited {result.code}", result)
                return
            _check_excerpt(block, result.output, fail)


_TOP_LEVEL_AWAIT = 0x2000  # ast.PyCF_ALLOW_TOP_LEVEL_AWAIT


def _check_excerpt(block: Block, printed: str, fail: Callable[..., None]) -> None:
    if block.output is None:
        return
    missing = missing_output(block.output.text, printed)
    if missing:
        shown = "\n".join(printed.splitlines()[-60:])
        fail(
            block.output,
            "output excerpt not in what the block printed; first missing line:\n"
            f"  {missing[0]}\n--- printed (last 60 lines) ---\n{shown}",
        )


def _make_dry_run(command: str) -> Result:
    """``make X`` lines: the target exists and its recipe expands (``make -n``), nothing is run."""
    args = shlex.split(command.split(" # ", 1)[0])
    proc = subprocess.run(
        ["make", "-n", *args[1:]], cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )
    return Result(f"make -n {' '.join(args[1:])}", proc.returncode, proc.stdout + proc.stderr, 0.0)


# --- generated sections ------------------------------------------------------------------------------------

_GENERATED = re.compile(r"(<!-- generated: ([\w-]+) -->\n)(.*?)(<!-- end generated -->)", re.S)


def generated_sections(text: str) -> Iterator[tuple[str, str]]:
    """(name, current content) of every generated section of a page."""
    for m in _GENERATED.finditer(text):
        yield m.group(2), m.group(3)


def regenerate(text: str, generators: dict[str, Callable[[], str]]) -> str:
    """The page with every generated section rewritten by its generator."""

    def repl(m: re.Match[str]) -> str:
        name = m.group(2)
        if name not in generators:
            raise DocError(f"no generator for section {name!r}")
        return m.group(1) + generators[name]().rstrip("\n") + "\n" + m.group(4)

    return _GENERATED.sub(repl, text)


# --- the generators ----------------------------------------------------------------------------------------
# Each generator returns the markdown of one section of docs/data-model.md, from the code it documents.
# Descriptions the code does not hold are written here, keyed by name: a name the code adds without a
# description fails the test until someone describes it.

_KEY_EXAMPLES = (
    ("binance", "BTCUSDT", "spot"),
    ("binance-futures", "BTCUSDT", "perpetual"),
    ("binance-futures", "BTCUSDT_240628", "future"),
    ("deribit", "BTC-PERPETUAL", "perpetual"),
    ("deribit", "BTC-28JUN24", "future"),
    ("deribit", "BTC-28JUN24-60000-C", "option"),
    ("deribit", "XRP_USDC-29DEC23-1d14-C", "option"),
    ("bybit", "BTCUSD", "perpetual"),
    ("okex-swap", "BTC-USDT-SWAP", "perpetual"),
    ("okex-futures", "BTC-USD-240628", "future"),
)

PROVENANCE = {
    "source_url": "the Tardis dataset URL the file was converted from (empty for candles and reports)",
    "source_bytes": "size of the gzipped source as downloaded",
    "source_sha256": "SHA-256 of the gzipped source",
    "rows": "rows in the file (0: the source day exists and is empty)",
    "first_timestamp": "first `local_timestamp` (or `timestamp`) in the file, ISO UTC",
    "last_timestamp": "last `local_timestamp` (or `timestamp`) in the file, ISO UTC",
    "schema_version": "version of the lake schemas the file follows",
    "mdth_version": "mdth version that wrote it",
    "written_at": "when it was published, ISO UTC",
    "data_type": "the tick data type (tick files)",
    "instrument_key": "the canonical key the file holds",
}

OUTCOMES = {
    "written": "the file was (re)written",
    "skipped": "already present with the footer of the same source: nothing to do",
    "empty": "the source day exists but holds no rows: an empty file (`rows=0`) is written",
    "unauthorized": "HTTP 401/403: no key, or the key's plan does not cover it (a failure: exit 1)",
    "not_exported": "Tardis exports day D on D+1: not there yet, try again later",
    "not_found": "the source has nothing there (HTTP 404; for later stages: no input in the lake)",
    "failed": "anything else, with the reason (a failure: exit 1)",
}

CLASSES = {
    "present": "a readable file with rows",
    "empty": "a readable file with no rows: the source day exists but is empty",
    "missing": "a job recorded it as written, but the file is gone",
    "corrupt": "a file that cannot be read as Parquet (truncated, overwritten)",
    "not_found": "the source answered 404",
    "unauthorized": "the source answered 401/403 (no key, or a plan that does not cover it)",
    "not_exported": "the source has not exported that day yet",
    "failed": "the last attempt failed (the reason is in the detail)",
    "never_attempted": "no file and no recorded outcome",
}


def _type_name(typ: object) -> str:
    import pyarrow as pa

    assert isinstance(typ, pa.DataType)
    if pa.types.is_dictionary(typ):
        return "string (dictionary)"
    if pa.types.is_timestamp(typ):
        return f"timestamp[{typ.unit}, {typ.tz}]" if typ.tz else f"timestamp[{typ.unit}]"
    if pa.types.is_list(typ):
        return f"list<{_type_name(typ.value_type)}>"
    return {"double": "float64", "date32[day]": "date", "bool": "bool"}.get(str(typ), str(typ))


def _columns(schema: object) -> str:
    """A schema as one line of `name` type items; book levels folded into one item."""
    items: list[str] = []
    levels = 0
    for field in schema:  # type: ignore[attr-defined]
        m = re.fullmatch(r"(ask|bid)_(price|amount)_(\d+)", field.name)
        if m:
            levels = max(levels, int(m.group(3)))
            continue
        null = "" if field.nullable else ", not null"
        items.append(f"`{field.name}` {_type_name(field.type)}{null}")
    if levels:
        items.insert(
            2, f"`ask_price_i`, `ask_amount_i`, `bid_price_i`, `bid_amount_i` float64 for i = 1..{levels}"
        )
    return "; ".join(items)


def gen_venues() -> str:
    from mdth_engine.core.keys import VENUE_TO_EXCHANGE

    lines = ["| venue | Tardis exchange |", "|---|---|"]
    lines += [f"| `{v}` | `{e}` |" for v, e in VENUE_TO_EXCHANGE.items()]
    return "\n".join(lines)


def gen_key_examples() -> str:
    from mdth_engine.core.keys import key_from_tardis

    lines = ["| Tardis exchange | Tardis symbol | key | expiry |", "|---|---|---|---|"]
    for exchange, symbol, kind in _KEY_EXAMPLES:
        got = key_from_tardis(exchange, symbol, symbol_type=kind)
        assert got is not None, (exchange, symbol)
        expiry = got.expiry_at.strftime("%Y-%m-%d %H:%M UTC") if got.expiry_at else ""
        lines.append(f"| `{exchange}` | `{symbol}` | `{got.key}` | {expiry} |")
    return "\n".join(lines)


def gen_layout() -> str:
    import datetime as dt

    from mdth_engine.storage import layout as L

    day, job = dt.date(2024, 3, 1), "download-20240301-120000-a1b2c3"
    rows = [
        ("instrument master of a day", L.instruments_path(day)),
        ("a tick file", L.raw_path(day, "trades", "BINANCE:SPOT_PAIR:BTC-USDT")),
        (
            "an option chain (one file per underlying)",
            L.raw_path(day, "options_chain", "DERIBIT:OPTION_CHAIN:BTC-USD"),
        ),
        ("candles of one timeframe", L.candles_path(day, "1m", "BINANCE:SPOT_PAIR:BTC-USDT")),
        ("the validation report of a day", L.report_path(day)),
        ("its summary", L.report_summary_path(day)),
        (
            "bad source lines kept by --on-bad-rows quarantine",
            L.quarantine_path(day, "trades", "BINANCE:SPOT_PAIR:BTC-USDT"),
        ),
        ("live capture (rolled into by_date after midnight)", f"{L.STREAMING_ROOT}/..."),
        ("a job's request (no secrets)", L.job_spec_path(job)),
        ("its plan (units, shard of each)", L.job_plan_path(job)),
        ("a shard's heartbeat record", L.job_shard_path(job, 0)),
        ("unit outcomes, appended by each shard", L.job_result_path(job, 0, 1)),
        ("a shard worker's log", L.job_log_path(job, 0)),
        ("a cancel request", L.job_cancel_path(job)),
    ]
    lines = ["| what | path (relative to the lake root) |", "|---|---|"]
    lines += [f"| {what} | `{path}` |" for what, path in rows]
    return "\n".join(lines)


def gen_tick_schemas() -> str:
    import pyarrow as pa

    from mdth_engine.core.schemas import DATA_TYPES, SCHEMAS

    lines = ["| data type | columns after `timestamp`, `local_timestamp` |", "|---|---|"]
    for t in DATA_TYPES:
        schema = SCHEMAS[t]
        assert schema.names[:2] == ["timestamp", "local_timestamp"], t
        lines.append(f"| `{t}` | {_columns(pa.schema(list(schema)[2:]))} |")
    return "\n".join(lines)


def gen_instrument_master() -> str:
    from mdth_engine.stages.instruments import INSTRUMENTS_SCHEMA

    return _columns(INSTRUMENTS_SCHEMA)


def gen_candle_columns() -> str:
    from mdth_engine.features.spec import candle_schema

    return _columns(candle_schema())


def gen_provenance() -> str:
    from mdth_engine.storage.parquet import PREFIX, STANDARD_KEYS

    missing = [k for k in STANDARD_KEYS if k not in PROVENANCE]
    assert not missing, f"describe these provenance keys in tests/docs_runner.py PROVENANCE: {missing}"
    lines = ["| footer key | what |", "|---|---|"]
    lines += [f"| `{PREFIX}{k}` | {PROVENANCE[k]} |" for k in STANDARD_KEYS]
    return "\n".join(lines)


def gen_outcomes() -> str:
    from mdth_engine.stages.base import FAILED_OUTCOMES, Outcome

    missing = [o.value for o in Outcome if o.value not in OUTCOMES]
    assert not missing, f"describe these outcomes in tests/docs_runner.py OUTCOMES: {missing}"
    lines = ["| outcome | meaning | counts as failed |", "|---|---|---|"]
    for o in Outcome:
        lines.append(f"| `{o.value}` | {OUTCOMES[o.value]} | {'yes' if o in FAILED_OUTCOMES else 'no'} |")
    return "\n".join(lines)


def gen_classes() -> str:
    from mdth_engine.cli.validate import CELLS
    from mdth_engine.validation.report import CLASSES as CODE_CLASSES
    from mdth_engine.validation.report import FIXABLE_CLASSES

    missing = [c for c in CODE_CLASSES if c not in CLASSES]
    assert not missing, f"describe these classes in tests/docs_runner.py CLASSES: {missing}"
    lines = ["| class | `mdth gaps` | meaning | `--fix` downloads it |", "|---|---|---|---|"]
    for c in CODE_CLASSES:
        cell = CELLS[c][0] if c in CELLS else ""
        fix = "yes" if c in FIXABLE_CLASSES else "no"
        lines.append(f"| `{c}` | `{cell}` | {CLASSES[c]} | {fix} |")
    return "\n".join(lines)


def gen_report_columns() -> str:
    from mdth_engine.validation.report import REPORT_SCHEMA

    return _columns(REPORT_SCHEMA)


def gen_loads_columns() -> str:
    from mdth_engine.warehouse.schema import loads_schema

    return _columns(loads_schema())


GENERATORS: dict[str, Callable[[], str]] = {
    "venues": gen_venues,
    "key-examples": gen_key_examples,
    "layout": gen_layout,
    "tick-schemas": gen_tick_schemas,
    "instrument-master": gen_instrument_master,
    "candle-columns": gen_candle_columns,
    "provenance": gen_provenance,
    "outcomes": gen_outcomes,
    "classes": gen_classes,
    "report-columns": gen_report_columns,
    "loads-columns": gen_loads_columns,
}


def main(argv: list[str]) -> int:
    """``python tests/docs_runner.py``: rewrite the generated sections of docs/*.md.
    ``python tests/docs_runner.py run PAGE [LAKE]``: run one page here, with this shell's environment (point it
    at a simulator first), in a temp folder holding a copy of LAKE (default ./mdth-lake); prints every output."""
    import shutil
    import tempfile

    if argv[:1] == ["run"] and len(argv) in (2, 3):
        page = Path(argv[1]).resolve()
        lake = Path(argv[2] if len(argv) == 3 else "mdth-lake").resolve()
        with tempfile.TemporaryDirectory(prefix="docs-run-") as tmp:
            if lake.is_dir():
                shutil.copytree(lake, Path(tmp) / "mdth-lake")
            shell = DocShell(Path(tmp), dict(os.environ))
            failures = run_page(page, shell, provided=frozenset(os.environ), log=print, echo=True)
        print("\n\n".join(failures) or "ok: every block ran")
        return 1 if failures else 0
    if argv:
        print(main.__doc__)
        return 2
    for page in sorted(DOCS_DIR.glob("*.md")):
        text = page.read_text()
        new = regenerate(text, GENERATORS)
        if new != text:
            page.write_text(new)
            print(f"rewrote generated sections of {page.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
