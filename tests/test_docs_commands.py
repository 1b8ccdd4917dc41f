"""Every command in README.md and docs/*.md runs (tests/docs_runner.py says how), so the docs cannot rot.

Each page runs in its own folder holding a copy of the lake `make demo` builds (``./mdth-lake``, the default
lake), with the environment pointing mdth at the session's simulator; pages that use Google Cloud run against
the GCS emulator and the loopback BigQuery and Compute Engine stand-ins (they are not Google: see
bigquery_standin.py and compute_standin.py). Nothing in a command is substituted: only the environment differs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import urllib.error
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
from bigquery_standin import BigQueryStandin
from compute_standin import ComputeStandIn
from docs_runner import (
    REPO,
    VENV_BIN,
    DocError,
    DocShell,
    check_parses,
    doc_pages,
    executed_commands,
    generated_sections,
    inline_commands,
    missing_output,
    parse_args_of,
    parse_blocks,
    run_page,
    runnable_form,
    shell_commands,
)
from sim_fixtures import SIM_API_KEY

pytestmark = pytest.mark.timeout(600)

# What the Google Cloud pages name; the stand-ins serve exactly these.
GCP_PROJECT = "my-project"
GCP_ZONE = "europe-west1-b"
KEY_SECRET = "tardis-api-key"

# Settings a page's `<!-- docs-runner: environment -->` block may name: the runner sets them itself.
PROVIDED = frozenset(
    {
        "MDTH_TARDIS_API_URL",
        "MDTH_TARDIS_DATASETS_URL",
        "MDTH_TARDIS_API_KEY",
        "MDTH_BINANCE_REST_URL",
        "MDTH_BINANCE_FUTURES_REST_URL",
        "STORAGE_EMULATOR_HOST",
        "MDTH_GCE_API_ENDPOINT",
        "MDTH_BIGQUERY_API_ENDPOINT",
    }
)
# Never inherited from the machine running the tests: a page sets what it needs.
_DROPPED = re.compile(r"^(MDTH_|TARDIS_|GOOGLE_|CLOUDSDK_|STORAGE_EMULATOR_HOST$)")


def _bucket_names() -> set[str]:
    names = set()
    for page in doc_pages():
        names |= set(re.findall(r"gs://([a-z0-9][a-z0-9._-]{1,61}[a-z0-9])/", page.read_text()))
    return names


@pytest.fixture(scope="module")
def cloud(gcs_emulator_session) -> Iterator[tuple[dict[str, str], ComputeStandIn]]:  # type: ignore[no-untyped-def]
    """The GCS emulator (with every bucket the pages name), BigQuery and Compute Engine stand-ins: the
    environment that points mdth at them, and the Compute stand-in (it boots VMs with the runner's env)."""
    for name in _bucket_names():
        try:
            gcs_emulator_session.create_bucket(name)
        except urllib.error.HTTPError as exc:
            if exc.code != 409:  # already there (another page, an earlier run in this session)
                raise
    secrets = {f"projects/{GCP_PROJECT}/secrets/{KEY_SECRET}": SIM_API_KEY}
    with (
        ComputeStandIn(project=GCP_PROJECT, zone=GCP_ZONE, secrets=secrets) as compute,
        BigQueryStandin(gcs_endpoint=gcs_emulator_session.url) as bigquery,
    ):
        env = {
            "STORAGE_EMULATOR_HOST": gcs_emulator_session.url,
            "MDTH_GCE_API_ENDPOINT": compute.url,
            "MDTH_BIGQUERY_API_ENDPOINT": bigquery.endpoint,
        }
        yield env, compute


@pytest.fixture(scope="module")
def docs_env(sim_server, sim_cache_dir, cloud, tmp_path_factory) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """The environment every page runs with: the simulator, the emulators, the venv first on PATH."""
    cloud_env, compute = cloud
    env = {k: v for k, v in os.environ.items() if not _DROPPED.match(k)}
    home = tmp_path_factory.mktemp("docs-home")
    env.update(
        {
            "PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
            "MDTH_CONFIG": str(home / "no-mdth.toml"),
            "MDTH_SIM_CACHE": str(sim_cache_dir),
            "XDG_RUNTIME_DIR": str(home),
            "COLUMNS": "120",
            **sim_server.env(),
            "MDTH_TARDIS_API_KEY": SIM_API_KEY,
            "MDTH_BINANCE_REST_URL": sim_server.base_url,
            "MDTH_BINANCE_FUTURES_REST_URL": sim_server.base_url,
            # jobs report quickly enough for a test (a real VM heartbeats every few seconds)
            "MDTH_WORKER_HEARTBEAT_S": "0.5",
            "MDTH_GCE_STATUS_TTL": "0",
            **cloud_env,
        }
    )
    env.pop("PYTHONPATH", None)
    # The stand-in "boots" a VM by running its startup script here: give it what a real VM would reach.
    compute.boot_env = {
        k: env[k]
        for k in (
            "PATH",
            "MDTH_TARDIS_API_URL",
            "MDTH_TARDIS_DATASETS_URL",
            "MDTH_SIM_CACHE",
            "STORAGE_EMULATOR_HOST",
            "MDTH_WORKER_HEARTBEAT_S",
            "MDTH_CONFIG",
        )
    }
    return env


@pytest.fixture(scope="module")
def demo_lake(docs_env, tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    """The lake `make demo` builds, built once (its pipeline against its own simulator, no console)."""
    lake = tmp_path_factory.mktemp("docs-demo") / "mdth-lake"
    env = {**docs_env, "MDTH_LAKE": str(lake), "CI": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mdth_engine.demo"], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return lake


def _page_id(page: Path) -> str:
    return str(page.relative_to(REPO))


PARALLEL_PAGES = 3  # pages spend most of their time waiting (job polls, stream durations): overlap them


@pytest.fixture(scope="module")
def page_runs(request, docs_env, demo_lake, tmp_path_factory) -> Iterator[dict[Path, Future]]:  # type: ignore[no-untyped-def]
    """Every selected page started at once on a few threads, each in its own folder with a copy of the demo
    lake; a page's test waits for its own result (failures, and the log of what ran)."""
    selected = [
        item.callspec.params["page"]
        for item in request.session.items
        if item.originalname == "test_every_command_of_the_page_runs" and hasattr(item, "callspec")
    ]

    def run(page: Path) -> tuple[list[str], list[str]]:
        workdir = tmp_path_factory.mktemp("docs-page") / "work"
        workdir.mkdir()
        shutil.copytree(demo_lake, workdir / "mdth-lake")
        log: list[str] = []
        failures = run_page(page, DocShell(workdir, docs_env), provided=PROVIDED, log=log.append)
        return failures, log

    with ThreadPoolExecutor(PARALLEL_PAGES, thread_name_prefix="docs-page") as pool:
        yield {page: pool.submit(run, page) for page in selected}


@pytest.mark.parametrize("page", doc_pages(), ids=_page_id)
def test_every_command_of_the_page_runs(page: Path, page_runs):  # type: ignore[no-untyped-def]
    failures, log = page_runs[page].result(timeout=900)
    print("\n".join(log))
    assert not failures, "\n\n".join(failures)


@pytest.mark.parametrize("page", doc_pages(), ids=_page_id)
def test_every_inline_command_parses(page: Path):
    problems = []
    for line, command in inline_commands(page):
        problem = check_parses(parse_args_of(command))
        if problem:
            problems.append(f"{_page_id(page)}:{line}: `{command}`: {problem}")
    assert not problems, "\n".join(problems)


def test_every_command_of_a_table_is_run_somewhere():
    """The README's table of commands (and any page's) is documentation too: each command that can run as
    written (no ``...`` or JOB-like placeholder) must be a command some block runs, so it is run by a test."""
    executed = executed_commands(doc_pages())
    not_run = []
    for page in doc_pages():
        for line, command in inline_commands(page, tables_only=True):
            typed = runnable_form(command)
            if typed is not None and not any(typed in ran for ran in executed):
                not_run.append(f"{_page_id(page)}:{line}: `{command}`")
    assert not not_run, "table commands no block runs (add them to a page's sh block):\n" + "\n".join(not_run)


def test_the_runner_runs_every_shell_block_it_can():
    """Skips are rare and say why; every page's blocks are well-formed (fences closed, directives known)."""
    skips = []
    for page in doc_pages():
        for block in parse_blocks(page):
            if block.directive == "skip":
                skips.append(f"{block.where}: {block.reason}")
    assert len(skips) <= 3, "too many skipped blocks:\n" + "\n".join(skips)


def test_every_guide_is_listed_in_the_index_and_links_resolve():
    index = (REPO / "docs" / "README.md").read_text()
    broken = []
    for page in sorted((REPO / "docs").glob("*.md")):
        if page.name != "README.md":
            assert f"({page.name})" in index, f"docs/README.md does not link {page.name}"
    for page in doc_pages():
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (page.parent / target).exists():
                broken.append(f"{_page_id(page)}: {target}")
    assert not broken, "links to nothing:\n" + "\n".join(broken)


def test_generated_sections_are_current():
    from docs_runner import GENERATORS

    stale = []
    for page in sorted((REPO / "docs").glob("*.md")):
        for name, content in generated_sections(page.read_text()):
            if name not in GENERATORS:
                stale.append(f"{_page_id(page)}: no generator for {name}")
            elif content.rstrip("\n") != GENERATORS[name]().rstrip("\n"):
                stale.append(f"{_page_id(page)}: section {name} (regenerate: python tests/docs_runner.py)")
    assert not stale, "\n".join(stale)


# --- the runner itself ---------------------------------------------------------------------------------------


@pytest.fixture
def scratch_page(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Write a page of markdown into the test's folder; returns its path."""
    count = iter(range(1000))

    def make(text: str) -> Path:
        path = tmp_path / f"page-{next(count)}.md"
        path.write_text(text)
        return path

    return make


def test_runner_reads_commands_exit_codes_and_continuations(scratch_page):
    page = scratch_page(
        "text\n\n```sh\n# a comment\nmdth validate --date 2024-03-01   # exits 1\nmdth gaps \\\n"
        "    --date 2024-03-01\n```\n\n```text\nday  ... ok\n```\n"
    )
    (block, output) = parse_blocks(page)
    assert block.output is output
    assert [(c.text, c.expect, c.line) for c in shell_commands(block)] == [
        ("mdth validate --date 2024-03-01   # exits 1", 1, 5),
        ("mdth gaps --date 2024-03-01", 0, 6),
    ]


def test_runner_directives_need_their_details(scratch_page):
    with pytest.raises(DocError, match="needs its reason"):
        parse_blocks(scratch_page("<!-- docs-runner: skip -->\n```sh\nmdth doctor\n```\n"))
    with pytest.raises(DocError, match="ready when"):
        parse_blocks(scratch_page("<!-- docs-runner: background -->\n```sh\nmdth sim serve\n```\n"))
    with pytest.raises(DocError, match="unknown docs-runner directive"):
        parse_blocks(scratch_page("<!-- docs-runner: maybe -->\n```sh\nmdth doctor\n```\n"))


def test_runner_reports_a_failing_command_a_wrong_excerpt_and_an_unknown_setting(scratch_page, tmp_path):
    env = {"PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", "HOME": str(tmp_path)}
    page = scratch_page(
        "```sh\nX=41\necho $((X + 1))\n```\n\n```text\n42\n```\n\n```sh\necho hello\n```\n\n```text\nbye\n```\n"
    )
    failures = run_page(page, DocShell(tmp_path, env), provided=frozenset())
    assert len(failures) == 1 and "first missing line:\n  bye" in failures[0]  # X carried over, 42 matched

    page = scratch_page("```sh\nfalse\necho never\n```\n")
    (failure,) = run_page(page, DocShell(tmp_path, env), provided=frozenset())
    assert "exit 1, documented 0" in failure and "never" not in failure

    page = scratch_page("<!-- docs-runner: environment -->\n```sh\nexport MDTH_NOPE=1\n```\n")
    (failure,) = run_page(page, DocShell(tmp_path, env), provided=frozenset({"MDTH_LAKE"}))
    assert "MDTH_NOPE is not a setting the runner provides" in failure


def test_table_commands_are_matched_as_typed():
    assert runnable_form("mdth lake ls [PREFIX]") == "mdth lake ls"
    assert runnable_form("mdth validate --start 2024-03-01 [--fix]") == "mdth validate --start 2024-03-01"
    assert (
        runnable_form("mdth jobs watch JOB") is None and runnable_form("mdth download ... --shards 8") is None
    )


def test_runner_parse_check_catches_a_renamed_option():
    assert check_parses(parse_args_of("mdth download --start 2024-03-01 ... [--dry-run]")) == ""
    assert "No such option" in check_parses(parse_args_of("mdth download --start-day 2024-03-01"))


def test_output_excerpts_match_in_order_with_wildcards():
    printed = "download: 63 units (6 empty, 57 written), 130,282 rows in 1.7 s\nvalidate: 3 day(s)\n"
    assert missing_output("download: 63 units ... rows in ... s\n...\nvalidate:  3 day(s)", printed) == []
    assert missing_output("validate: 3 day(s)\ndownload: 63 units", printed) == ["download: 63 units"]


# --- errors a user can hit on the way say what to do next ------------------------------------------------------


def _mdth(args: list[str], env: dict[str, str]):  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from mdth_engine.cli import app

    return CliRunner().invoke(app, args, env=env)


@pytest.fixture
def lake_copy(demo_lake: Path, tmp_path: Path) -> Path:
    lake = tmp_path / "mdth-lake"
    shutil.copytree(demo_lake, lake)
    return lake


def test_an_unknown_tardis_symbol_names_the_closest(docs_env, lake_copy):  # type: ignore[no-untyped-def]
    args = ["download", "--start", "2024-03-01", "--dry-run", "--lake", str(lake_copy)]
    result = _mdth([*args, "--symbols", "BTCUSDTX"], docs_env)
    assert result.exit_code == 2
    assert "Tardis symbol BTCUSDTX is not in the instrument master of 2024-03-01; did you mean BTCUSDT" in (
        result.stderr
    )
    ok = _mdth([*args, "--symbols", "btcusdt", "--data-types", "trades"], docs_env)
    assert ok.exit_code == 0 and "binance/trades/BTCUSDT" in ok.stdout  # any case, as Tardis writes it


def test_units_that_produce_nothing_say_why(docs_env, tmp_path):  # type: ignore[no-untyped-def]
    result = _mdth(
        ["upload", "--start", "2024-04-01", "--timeframes", "1m", "--lake", str(tmp_path / "lake")], docs_env
    )
    assert result.exit_code == 0
    assert (
        "note: not_found: 2024-04-01/1m: no 1m candle files for 2024-04-01 in the lake (run mdth candles"
        in (result.stderr)
    )


def test_sql_on_a_missing_table_lists_the_tables(docs_env, lake_copy):  # type: ignore[no-untyped-def]
    result = _mdth(["sql", "SELECT * FROM candles_2m", "--lake", str(lake_copy)], docs_env)
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert "candles_2m does not exist" in line and "; tables: _loads, candles_15m," in line
    assert "\n" not in line


def test_busy_ports_and_a_missing_terminal_say_what_to_do(docs_env, lake_copy):  # type: ignore[no-untyped-def]
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = str(busy.getsockname()[1])
        sim = _mdth(["sim", "serve", "--port", port], docs_env)
        assert sim.exit_code == 2 and "pick another --port, or --port 0" in sim.stderr
        source = "replay:BINANCE:SPOT_PAIR:BTC-USDT@2024-03-01"
        serve = _mdth(
            ["stream", "serve", "--source", source, "--port", port, "--lake", str(lake_copy)], docs_env
        )
        assert serve.exit_code == 2, serve.output
        assert f"cannot serve on 127.0.0.1:{port}" in serve.stderr and "pick another --port" in serve.stderr
    console = _mdth(["console", "--lake", str(lake_copy)], docs_env)  # CliRunner's stdin is no terminal
    assert console.exit_code == 2 and "mdth console needs a terminal" in console.stderr
    watch = _mdth(["jobs", "watch", "--lake", str(lake_copy.parent / "empty-lake")], docs_env)
    assert watch.exit_code == 2 and "a job is what --shards N makes of" in watch.stderr


def test_small_files_are_read_whole_and_projected_onto_a_schema(tmp_path: Path):
    """read_whole reads small files on the calling thread and projects onto a schema the way
    read_table(schema=...) does: columns the file lacks are nulls."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mdth_engine.storage.parquet import read_whole

    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"a": pa.array([1, 2], pa.int32()), "b": ["x", "y"]}), path)
    schema = pa.schema([pa.field("a", pa.int64()), pa.field("c", pa.float64()), pa.field("b", pa.string())])
    with open(path, "rb") as handle:
        table = read_whole(handle, schema=schema)
    assert table.schema == schema
    assert table.to_pydict() == {"a": [1, 2], "c": [None, None], "b": ["x", "y"]}
    with open(path, "rb") as handle:
        assert read_whole(handle, columns=["b"]).to_pydict() == {"b": ["x", "y"]}


def test_the_deploy_guide_commands_parse():
    """deploy/README.md is gcloud and docker setup (not runnable here): its ``mdth`` lines, in blocks and in
    prose, must still parse, so a renamed option cannot rot there either."""
    page = REPO / "deploy" / "README.md"
    commands = list(inline_commands(page))
    for block in parse_blocks(page):
        if block.lang == "sh":
            commands += [(c.line, c.text) for c in shell_commands(block) if c.text.startswith("mdth ")]
    assert any(text.startswith("mdth jobs cleanup") for _, text in commands)
    problems = [
        f"deploy/README.md:{line}: `{text}`: {problem}"
        for line, text in commands
        if (problem := check_parses(parse_args_of(text)))
    ]
    assert not problems, "\n".join(problems)
