"""Download against the simulator with the real tardis-dev client: outcomes, faults healed by retries, every
written file equal to its source (decoded independently with the csv module), idempotent re-runs, bad input."""

import asyncio
import csv
import datetime as dt
import gzip
import io
import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pyarrow.parquet as pq
from sim_fixtures import SIM_API_KEY

from mdth_engine.api import ensure_instruments, run_stage
from mdth_engine.core.schemas import CSV_COLUMNS, csv_to_lake_name
from mdth_engine.core.settings import load_settings
from mdth_engine.stages.base import Request
from mdth_engine.storage import layout
from mdth_engine.storage.parquet import read_provenance
from mdth_engine.storage.store import open_store

DAY = dt.date(2024, 3, 12)
SYMBOLS = ("BINANCE:SPOT_PAIR:BTC-USDT", "BINANCE-FUTURES:PERPETUAL:BTC-USDT", "DERIBIT:OPTION_CHAIN:BTC-USD")
TYPES = ("trades", "book_snapshot_5", "derivative_ticker", "liquidations", "options_chain")


def settings_for(sim, lake, key=SIM_API_KEY):
    return load_settings(
        lake=str(lake), tardis_api_url=sim.api_url, tardis_datasets_url=sim.datasets_url, tardis_api_key=key
    )


def download(settings, *, day=DAY, symbols=SYMBOLS, data_types=TYPES, **options):
    request = Request("download", day, day, symbols=symbols, data_types=data_types, options=options)
    asyncio.run(ensure_instruments(request, settings))
    return asyncio.run(run_stage(request, settings, concurrency=6))


def source_rows(sim, unit_id):
    """The source file of a unit, fetched directly and decoded with the csv module (independent of mdth)."""
    day, exchange, data_type, symbol = unit_id.split("/")[0], *unit_id.split("/")[1:]
    url = f"{sim.datasets_url}/{exchange}/{data_type}/{day.replace('-', '/')}/{symbol}.csv.gz"
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {SIM_API_KEY}"})
    with urllib.request.urlopen(req) as resp:
        text = gzip.decompress(resp.read()).decode()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert not rows or list(rows[0]) == CSV_COLUMNS[data_type]
    return rows


def normalise(data_type, row):
    out = {}
    for name, value in row.items():
        if name in ("exchange",) or (name == "symbol" and data_type != "options_chain"):
            continue
        lake = csv_to_lake_name(data_type, name)
        if value == "":
            out[lake] = None
        elif name in ("timestamp", "local_timestamp", "funding_timestamp", "expiration"):
            out[lake] = int(value)
        elif name in ("id", "side", "type", "symbol", "underlying_index"):
            out[lake] = value
        elif name == "is_snapshot":
            out[lake] = value == "true"
        else:
            out[lake] = float(value)
    return out


def lake_rows(table):
    rows = []
    for row in table.to_pylist():
        row.pop("instrument_key", None)
        rows.append(
            {k: (int(v.timestamp() * 1_000_000) if isinstance(v, dt.datetime) else v) for k, v in row.items()}
        )
    return rows


def test_outcomes_and_every_file_equals_its_source(sim_server, tmp_path):
    settings = settings_for(sim_server, tmp_path)
    summary = download(settings)
    assert summary.exit_code == 0, [f.reason for f in summary.failures]
    store = open_store(str(tmp_path))
    assert summary.outcomes.get("written", 0) >= 6
    for result in summary.results:
        data_type = result.unit_id.split("/")[2]
        source = [normalise(data_type, r) for r in source_rows(sim_server, result.unit_id)]
        if data_type == "options_chain":
            source = [r for r in source if r["symbol"].startswith("BTC-")]
        table = pq.read_table(store.local_path(result.output))
        assert table.num_rows == len(source) == result.rows, result.unit_id
        assert lake_rows(table) == source, result.unit_id
        prov = read_provenance(store, result.output)
        assert int(prov["rows"]) == len(source) and len(prov["source_sha256"]) == 64
        assert prov["source_url"].endswith(
            result.unit_id.split("/", 2)[2].replace("/", "/2024/03/12/", 1) + ".csv.gz"
        )
        assert result.outcome == ("written" if source else "empty")


def test_rerun_skips_and_force_rewrites(sim_server, tmp_path):
    settings = settings_for(sim_server, tmp_path)
    first = download(settings, symbols=SYMBOLS[:1], data_types=("trades",))
    assert first.outcomes == {"written": 1}
    again = download(settings, symbols=SYMBOLS[:1], data_types=("trades",))
    assert again.outcomes == {"skipped": 1}
    forced = download(settings, symbols=SYMBOLS[:1], data_types=("trades",), force=True)
    assert forced.outcomes == {"written": 1}


def test_faults_are_retried_until_every_unit_is_written(make_sim_server, tmp_path):
    # Each dataset path is answered 500, then 429, then a cut body, then a truncated gzip, then the file (the
    # first status rule that fires answers, so staggered counts make every fault reach the client once).
    faults = "500:first=1,429:first=2:retry_after=0,cut:first=3,truncate:first=4"
    sim = make_sim_server(faults=faults)
    settings = settings_for(sim, tmp_path)
    summary = download(settings, symbols=SYMBOLS[:2], data_types=("trades", "book_snapshot_5"))
    assert summary.exit_code == 0, [f.reason for f in summary.failures]
    assert summary.outcomes == {"written": 4}
    served: dict[str, list[tuple[int, str]]] = {}
    for record in sim.requests:
        if record.path.startswith("/datasets/"):
            served.setdefault(record.path, []).append((record.status, record.fault.split(",")[0]))
    assert len(served) == 4
    for path, answers in served.items():
        assert answers == [(500, "500"), (429, "429"), (200, "cut"), (200, "truncate"), (200, "")], path
    store = open_store(str(tmp_path))
    for result in summary.results:
        data_type = result.unit_id.split("/")[2]
        source = [normalise(data_type, r) for r in source_rows(sim, result.unit_id)]
        table = pq.read_table(store.local_path(result.output))
        assert lake_rows(table) == source and result.rows == len(source) > 0, result.unit_id


def test_a_source_that_keeps_answering_500_fails_its_unit_within_the_unit_timeout(make_sim_server, tmp_path):
    sim = make_sim_server(faults="500:p=1:path=/trades/.*BTCUSDT")
    settings = settings_for(sim, tmp_path).model_copy(update={"unit_timeout_s": 3})
    started = time.monotonic()
    summary = download(settings, symbols=SYMBOLS[:1], data_types=("trades", "book_snapshot_5"))
    assert time.monotonic() - started < 30
    assert summary.outcomes == {"failed": 1, "written": 1} and summary.exit_code == 1
    (failure,) = summary.failures
    assert "/trades/" in failure.unit_id and "gave up after 3 s of retries" in failure.reason
    assert not any(open_store(str(tmp_path)).list("raw_tick_data/by_date/day-2024-03-12/data_type-trades/"))


def test_a_unit_that_keeps_failing_is_reported_and_the_rest_is_kept(make_sim_server, tmp_path):
    sim = make_sim_server(faults="404:p=1:path=/trades/.*BTCUSDT")
    settings = settings_for(sim, tmp_path)
    summary = download(settings, symbols=SYMBOLS[:1], data_types=("trades", "book_snapshot_5"))
    assert summary.outcomes == {"not_found": 1, "written": 1}
    assert summary.exit_code == 0  # not_found is an outcome, not a failure of the run


@contextmanager
def garbling_proxy(sim, garble):
    """A datasets endpoint that serves the simulator's files with ``garble(lines)`` applied to their CSV lines."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            url = sim.datasets_url + self.path.split("?", 1)[0]
            headers = {"Authorization": self.headers.get("Authorization", "")}
            try:
                with urllib.request.urlopen(urllib.request.Request(url, headers=headers)) as resp:
                    lines = gzip.decompress(resp.read()).decode().splitlines()
                status, body = 200, gzip.compress(("\n".join(garble(lines)) + "\n").encode())
            except urllib.error.HTTPError as exc:
                status, body = exc.code, exc.read()
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_quarantined_bad_lines_are_kept_in_the_lake_and_the_good_rows_published(sim_server, tmp_path):
    bad = {}

    def garble(lines):
        bad[3] = lines[3].rsplit(",", 1)[0]  # a column short
        cols = lines[10].split(",")
        bad[10] = ",".join([*cols[:5], "sideways", *cols[6:]])  # an unknown side
        return [bad.get(i, line) for i, line in enumerate(lines)]

    with garbling_proxy(sim_server, garble) as url:
        settings = settings_for(sim_server, tmp_path).model_copy(update={"tardis_datasets_url": url})
        summary = download(settings, symbols=SYMBOLS[:1], data_types=("trades",), on_bad_rows="quarantine")
    assert summary.outcomes == {"written": 1} and summary.exit_code == 0
    (result,) = summary.results
    store = open_store(str(tmp_path))
    kept = layout.quarantine_path(DAY, "trades", SYMBOLS[0])
    assert result.reason == f"2 bad rows quarantined in {store.join(kept)}"
    assert store.local_path(kept).read_text() == bad[3] + "\n" + bad[10] + "\n"
    good = [r for i, r in enumerate(source_rows(sim_server, result.unit_id), start=1) if i not in bad]
    table = pq.read_table(store.local_path(result.output))
    assert lake_rows(table) == [normalise("trades", r) for r in good] and result.rows == len(good)
    assert pq.read_metadata(store.local_path(result.output)).metadata[b"mdth.bad_rows"] == b"2"


def test_unauthorized_off_the_first_of_the_month_without_a_key(sim_server, tmp_path):
    settings = settings_for(sim_server, tmp_path, key=None)
    first = download(settings, day=dt.date(2024, 3, 1), symbols=SYMBOLS[:1], data_types=("trades",))
    assert first.outcomes == {"written": 1}
    other = download(settings, day=DAY, symbols=SYMBOLS[:1], data_types=("trades",))
    assert other.outcomes == {"unauthorized": 1} and other.exit_code == 1
    assert "MDTH_TARDIS_API_KEY" in other.failures[0].reason or "401" in other.failures[0].reason
    assert not any(open_store(str(tmp_path)).list("raw_tick_data/by_date/day-2024-03-12/"))


def test_not_exported_yet(sim_server, tmp_path):
    settings = settings_for(sim_server, tmp_path)
    day = dt.date(2025, 6, 3)  # the simulator's fixed "now" is 2025-06-01: exported until 2025-05-31
    summary = download(settings, day=day, symbols=SYMBOLS[:1], data_types=("trades",))
    assert summary.outcomes == {"not_exported": 1}


def mdth(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "mdth_engine.cli", *args], capture_output=True, text=True, env=env
    )


def test_bad_input_exits_2_before_any_download(sim_server, tmp_path):
    import os

    env = {**os.environ, **sim_server.env(), "MDTH_TARDIS_API_KEY": SIM_API_KEY, "MDTH_LAKE": str(tmp_path)}
    cases = [
        (["download", "--start", "2024-03-12", "--venues", "KRAKEN"], "unknown venue 'KRAKEN'"),
        (["download", "--start", "2024-03-12", "--end", "2024-03-10"], "before start"),
        (["download", "--start", "2024-03-12", "--data-types", "trade"], "unknown data type 'trade'"),
        (
            ["download", "--start", "2018-06-01", "--venues", "BINANCE-FUTURES"],
            "BINANCE-FUTURES has no instruments",
        ),
        (["download", "--start", "2024-03-12", "--symbols", "BINANCE:SPOT_PAIR:BTC-USDX"], "did you mean"),
        (["download", "--start", "2024-03-12", "--symbols", "BINANCE:SPOT:BTC-USDT"], "type 'SPOT'"),
    ]
    for args, needle in cases:
        proc = mdth(*args, env=env)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        errors = [line for line in proc.stderr.splitlines() if line.startswith("mdth: error")]
        assert len(errors) == 1 and needle in errors[0], (args, proc.stderr)
    assert not any(open_store(str(tmp_path)).list("raw_tick_data/"))


def test_dry_run_prints_the_plan_and_downloads_nothing(sim_server, tmp_path):
    import os

    env = {**os.environ, **sim_server.env(), "MDTH_TARDIS_API_KEY": SIM_API_KEY, "MDTH_LAKE": str(tmp_path)}
    proc = mdth(
        "--json", "download", "--start", "2024-03-12", "--symbols", ",".join(SYMBOLS), "--dry-run", env=env
    )
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    units = [line for line in lines if line["kind"] == "plan_unit"]
    plan = next(line for line in lines if line["kind"] == "plan")
    assert plan["units"] == len(units) > 0 and plan["est_bytes"] == sum(u["est_bytes"] for u in units)
    assert [u["unit_id"] for u in units] == sorted((u["unit_id"] for u in units), key=lambda i: i.split("/"))
    assert not any(open_store(str(tmp_path)).list("raw_tick_data/"))


def test_cli_download_prints_a_summary_and_exit_code(sim_server, tmp_path):
    import os

    env = {**os.environ, **sim_server.env(), "MDTH_TARDIS_API_KEY": SIM_API_KEY, "MDTH_LAKE": str(tmp_path)}
    proc = mdth(
        "download", "--start", "2024-03-12", "--symbols", SYMBOLS[0], "--data-types", "trades", env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert "download: 1 units (1 written)" in proc.stdout


def test_a_rerun_plans_present_files_as_cheap_so_shards_balance_what_is_left(sim_server, tmp_path):
    """A unit whose output is already in the lake is estimated at a footer check; --force plans it in full."""
    import os

    from mdth_engine.jobs.estimate import PRESENT_BYTES

    env = {**os.environ, **sim_server.env(), "MDTH_TARDIS_API_KEY": SIM_API_KEY, "MDTH_LAKE": str(tmp_path)}
    base = ["download", "--start", str(DAY), "--data-types", "trades"]
    assert mdth(*base, "--symbols", SYMBOLS[0], env=env).returncode == 0

    def estimates(*extra: str) -> dict[str, int]:
        proc = mdth("--json", *base, "--symbols", ",".join(SYMBOLS[:2]), "--dry-run", *extra, env=env)
        assert proc.returncode == 0, proc.stderr
        lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
        return {u["unit_id"]: u["est_bytes"] for u in lines if u["kind"] == "plan_unit"}

    done, left = f"{DAY}/binance/trades/BTCUSDT", f"{DAY}/binance-futures/trades/BTCUSDT"
    planned = estimates()
    assert planned[done] == PRESENT_BYTES and planned[left] > 100 * PRESENT_BYTES
    forced = estimates("--force")
    assert forced[done] > 100 * PRESENT_BYTES and forced[left] == planned[left]


def test_a_terminal_gets_progress_bars_with_units_rows_and_rate(sim_server, tmp_path):
    """On a TTY (a pty here): rich progress for the stage (units done of total, rows, MB/s) and the summary."""
    import os
    import re

    from terminal import plain_text, run_in_terminal

    env = {**os.environ, **sim_server.env(), "MDTH_TARDIS_API_KEY": SIM_API_KEY, "MDTH_LAKE": str(tmp_path)}
    cmd = [sys.executable, "-m", "mdth_engine.cli", "download", "--start", str(DAY)]
    cmd += ["--symbols", ",".join(SYMBOLS[:2]), "--data-types", "trades,liquidations"]
    code, raw, err = run_in_terminal(cmd, env)
    assert code == 0, err
    assert b"\x1b[" in raw  # drawn with terminal control codes, not printed as plain lines
    text = plain_text(raw)
    bar = [line for line in text.splitlines() if line.startswith("download ") and "━" in line][-1]
    assert re.search(r"download\s.*━.*\s(\d+)/\1\s+[\d,]+ rows\s+[\d.]+ MB/s", bar), bar
    assert "download: 3 units (3 written)" in text  # spot has no liquidations
