"""The CLI contract: --version, exit code 2 with one line for usage errors, `mdth lake ls` counts."""

import datetime as dt
import json
import os
import subprocess
import sys

import pyarrow as pa
from typer.testing import CliRunner

from mdth_engine import __version__
from mdth_engine.cli import app
from mdth_engine.storage import layout
from mdth_engine.storage.parquet import write_table
from mdth_engine.storage.store import open_store

runner = CliRunner()


def mdth(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mdth_engine.cli", *args], capture_output=True, text=True)


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"mdth {__version__}"


def test_usage_errors_exit_2_with_one_line(tmp_path):
    for args, needle in [
        (["instruments", "--start", "2024-13-01", "--lake", str(tmp_path)], "is not a date"),
        (
            ["instruments", "--start", "2024-01-02", "--end", "2024-01-01", "--lake", str(tmp_path)],
            "before start",
        ),
        (
            ["instruments", "--start", "2024-01-01", "--venues", "NOPE", "--lake", str(tmp_path)],
            "unknown venue",
        ),
        (["lake", "ls", "--lake", "s3://bucket/x"], "s3://bucket/x"),
        # Click's own usage errors: one line too, not Typer's framed panel
        (["download", "--start", "2024-01-01", "--shards", "many"], "'--shards'"),
        (["no-such-command"], "No such command 'no-such-command'"),
        (["jobs", "show"], "Missing argument"),
        (["instruments", "--start"], "'--start' requires an argument"),
    ]:
        proc = mdth(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and needle in lines[0], proc.stderr
        assert "Traceback" not in proc.stderr


def test_lake_ls_counts_files_and_bytes_per_area_and_day(tmp_path):
    store = open_store(str(tmp_path))
    table = pa.table({"x": list(range(100))})
    day = dt.date(2024, 1, 2)
    for key in ("BINANCE:SPOT_PAIR:BTC-USDT", "BINANCE:SPOT_PAIR:ETH-USDT"):
        write_table(store, layout.raw_path(day, "trades", key), table, {"data_type": "trades"})
    write_table(store, layout.instruments_path(day), table, {})
    result = runner.invoke(app, ["--json", "lake", "ls", "--lake", str(tmp_path)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    by_area = {(r["area"], r["part"]): r for r in rows}
    raw = by_area[("raw_tick_data", "trades")]
    assert raw["files"] == 2 and raw["day"] == "2024-01-02"
    assert raw["bytes"] == sum(i.size for i in store.list("raw_tick_data/"))
    assert by_area[("instrument_availability", "")]["files"] == 1
    empty = runner.invoke(app, ["lake", "ls", "--lake", str(tmp_path / "nothing")])
    assert empty.exit_code == 0 and "empty" in empty.output


def test_processes_leave_with_their_code_after_exit_handlers_and_flushed_output():
    """`core.shutdown.leave` skips native teardown, but not atexit handlers nor buffered output."""
    code = (
        "import atexit, sys; from mdth_engine.core.shutdown import leave; "
        "atexit.register(lambda: print('handler ran')); sys.stdout.write('unflushed '); "
        "sys.stderr.write('said '); leave(3)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 3
    assert proc.stdout == "unflushed handler ran\n" and proc.stderr == "said "


def test_the_mdth_script_keeps_click_exit_codes():
    """`main()` ends through `leave`: 0 for --version, 2 for a usage error Click itself reports."""
    ok = subprocess.run(
        [sys.executable, "-m", "mdth_engine.cli", "--version"], capture_output=True, text=True
    )
    assert ok.returncode == 0 and ok.stdout.strip() == f"mdth {__version__}"
    bad = subprocess.run(
        [sys.executable, "-m", "mdth_engine.cli", "--no-such-flag"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "no-such-flag" in bad.stderr


def test_date_with_start_or_end_is_a_usage_error_in_every_dated_command(tmp_path):
    """`--date D` means `--start D --end D`; giving both is refused before any work, in one line."""
    lake = tmp_path / "lake"
    for command in (["download"], ["candles"], ["instruments"], ["pipeline"], ["validate"], ["upload"]):
        for other in (["--start", "2024-03-12"], ["--end", "2024-03-12"]):
            proc = mdth(*command, "--date", "2024-03-12", *other, "--lake", str(lake))
            assert proc.returncode == 2, (command, other, proc.stderr)
            lines = [line for line in proc.stderr.splitlines() if line.strip()]
            assert lines == ["mdth: error: give --date or --start/--end, not both"], proc.stderr
    assert not lake.exists()


def test_download_date_plans_the_same_units_as_that_start_and_end(sim_server, tmp_path):
    import os

    from sim_fixtures import SIM_API_KEY

    env = {**os.environ, **sim_server.env(), "MDTH_TARDIS_API_KEY": SIM_API_KEY, "MDTH_LAKE": str(tmp_path)}
    base = [sys.executable, "-m", "mdth_engine.cli", "--json", "download", "--dry-run"]
    base += ["--symbols", "BINANCE:SPOT_PAIR:BTC-USDT", "--data-types", "trades"]

    def planned(*days: str) -> list[str]:
        proc = subprocess.run([*base, *days], capture_output=True, text=True, env=env)
        assert proc.returncode == 0, proc.stderr
        lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
        return [line["unit_id"] for line in lines if line["kind"] == "plan_unit"]

    by_date = planned("--date", "2024-03-12")
    assert by_date and all(unit.startswith("2024-03-12/") for unit in by_date), by_date
    assert by_date == planned("--start", "2024-03-12", "--end", "2024-03-12")
    assert not any(open_store(str(tmp_path)).list("raw_tick_data/"))  # a dry run downloads nothing


def test_output_lost_at_exit_is_an_error_but_a_closed_pipe_is_not():
    """A full disk under `> out.json` cuts the output: exit 120 as CPython's own exit would; `| head` is fine."""
    full = (
        "import sys; from mdth_engine.core.shutdown import leave; "
        "sys.stdout = open('/dev/full', 'w'); print('result'); leave(0)"
    )
    assert subprocess.run([sys.executable, "-c", full], capture_output=True).returncode == 120
    code = (
        "import sys; from mdth_engine.core.shutdown import leave; print('x'); sys.stdin.readline(); leave(0)"
    )
    pipe = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={
            k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"
        },  # the output waits in the buffer
    )
    assert pipe.stdout is not None and pipe.stdin is not None
    pipe.stdout.close()  # the reader went away (like `head`) while the output still sits in the buffer
    pipe.stdin.write(b"go\n")
    pipe.stdin.close()
    pipe.wait(timeout=30)
    assert pipe.returncode == 0
