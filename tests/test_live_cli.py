"""`mdth stream` as a user runs it: NDJSON bars from a replay, plain lines, usage errors (exit 2, one line, before
any work), `mdth stream serve` for another process (token file, SIGTERM), `mdth stream roll`, and a persisting
stream killed with SIGKILL (every part file complete, at most the last few seconds missing)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from lake_builders import arrival_trades, book_table, write_ticks
from terminal import plain_text, run_in_terminal

from mdth_engine.core.timeframes import day_start_us
from mdth_engine.features.batch import build_candles
from mdth_engine.features.spec import FEATURE_NAMES
from mdth_engine.live.events import Trade
from mdth_engine.live.journal import Journal
from mdth_engine.live.serve import connect
from mdth_engine.storage import layout
from mdth_engine.storage.parquet import write_table
from mdth_engine.storage.store import open_store

DAY = dt.date(2024, 3, 12)
KEY = "BINANCE:SPOT_PAIR:BTC-USDT"


def mdth(*args: str, lake: Path, timeout: float = 120, **kw) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MDTH_LAKE": str(lake)}
    return subprocess.run(
        [sys.executable, "-m", "mdth_engine.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        **kw,
    )


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> Path:
    """One day of trades and books for KEY (arrival delays under 3 s), and its batch candles."""
    root = tmp_path_factory.mktemp("cli-lake")
    store = open_store(str(root))
    trades = arrival_trades(DAY, 4000, seed=3)
    keep = pa.array(trades["timestamp"].cast(pa.int64()).to_numpy() >= day_start_us(DAY))
    trades = trades.filter(keep)  # the replay covers one day: no rows stamped the day before
    books = book_table(DAY, 2000, seed=4)
    write_ticks(store, DAY, "trades", KEY, trades)
    write_ticks(store, DAY, "book_snapshot_5", KEY, books)
    built = build_candles(DAY, trades=trades, liquidations=None, derivative_ticker=None, book=books)
    for tf, table in built.items():
        write_table(store, layout.candles_path(DAY, tf, KEY), table, {"data_type": "candles"})
    return root


def lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_json_bars_from_a_replay_carry_every_feature_and_the_batch_numbers(lake):
    proc = mdth("--json", "stream", "--source", f"replay:{KEY}@{DAY}", "--timeframes", "1h,24h", lake=lake)
    assert proc.returncode == 0, proc.stderr
    out = lines(proc.stdout)
    bars = [o for o in out if o["kind"] == "bar"]
    assert [o["event"] for o in out if o["kind"] == "event"] == ["warm_start", "end"]
    assert out[-1]["kind"] == "summary" and out[-1]["late"] == 0 and out[-1]["dropped"] == 0
    assert "latency_p50_us" not in out[-1]  # a replay's events do not arrive: no arrival-to-bar latency
    assert [b["timeframe"] for b in bars].count("1h") == 24 and [b["timeframe"] for b in bars].count(
        "24h"
    ) == 1
    for bar in bars:
        assert {"instrument_key", "timeframe", "timestamp", "timestamp_out", *FEATURE_NAMES} <= set(bar)
    store = open_store(str(lake))
    batch = pq.read_table(store.local_path(layout.candles_path(DAY, "1h", KEY))).to_pylist()
    hourly = [b for b in bars if b["timeframe"] == "1h"]
    for got, want in zip(hourly, batch, strict=True):
        assert got["timestamp"] == want["timestamp"].strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        for name in FEATURE_NAMES:
            w = want[name]
            if isinstance(w, float) and w != w:
                assert got[name] is None, name  # NaN is null in JSON
            elif isinstance(w, float):
                assert got[name] == pytest.approx(w, rel=1e-12), name
            else:
                assert got[name] == w, name


def test_plain_lines_without_a_terminal(lake):
    proc = mdth("stream", "--source", f"replay:{KEY}@{DAY}", "--timeframes", "4h", lake=lake)
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if " 4h " in line]
    assert len(rows) == 6 and rows[0].startswith("2024-03-12T00:00:00.000000Z  BINANCE:SPOT_PAIR:BTC-USDT")
    assert "event end" in proc.stdout and "stream: " in proc.stderr
    assert "replay: latency not measured" in proc.stderr and "p99" not in proc.stderr


def test_a_live_source_reports_its_arrival_to_bar_latency(tmp_path):
    source = f"sim:BTCUSDT?speed=60&start={DAY}T10:00:00Z"
    proc = mdth(
        "--json",
        "stream",
        "--source",
        source,
        "--timeframes",
        "15s",
        "--warm",
        "0",
        "--duration",
        "3",
        lake=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    summary = lines(proc.stdout)[-1]
    assert summary["kind"] == "summary" and summary["events_in"] > 0
    assert 0 < summary["latency_p50_us"] <= summary["latency_p99_us"]


def test_a_terminal_gets_the_live_table_and_the_status_line(lake):
    """On a TTY (a pty here, 160 columns): the rich table with every instrument and timeframe's last closed bar,
    the status line and the end notice; the summary goes to stderr."""
    env = {**os.environ, "MDTH_LAKE": str(lake)}
    cmd = [sys.executable, "-m", "mdth_engine.cli", "stream", "--source", f"replay:{KEY}@{DAY}"]
    cmd += ["--timeframes", "1h", "--speed", "max"]
    code, raw, err = run_in_terminal(cmd, env)
    assert code == 0, err
    assert b"\x1b[" in raw  # drawn with terminal control codes, not printed as plain lines
    text = plain_text(raw)
    screen = text[text.rindex("instrument") :]  # the last frame drawn
    cells = [[c.strip() for c in re.split("[┃│]", line)] for line in screen.splitlines()]
    assert cells[0] == [
        "instrument", "tf", "bar", "open", "high", "low", "close", "volume", "trades", "vwap", "spread bps", "flags",
    ]  # fmt: skip
    batch = pq.read_table(open_store(str(lake)).local_path(layout.candles_path(DAY, "1h", KEY)))
    last = batch.to_pylist()[-1]
    (row,) = [c for c in cells if c[0] == KEY]
    assert row[:3] == [KEY, "1h", "23:00:00"] and row[-1] == ""  # the day's last hourly bar, no flags
    assert row[6] == f"{last['close']:.6g}" and row[8] == str(last["trade_count"])
    status = next(line for line in screen.splitlines() if " events (" in line)
    assert re.search(r"[\d,]+ events \([\d,]+/s\)  24 bars  late 0  dropped 0  disconnects 0", status), status
    assert "replay: latency not measured" in status
    assert " end: " in screen and "stream: " in err


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "give --source"),
        (["--source", "kraken:XBTUSD"], "unknown source 'kraken:XBTUSD'"),
        (
            ["--source", f"replay:{KEY}@2024-03-13"],
            "no tick data for BINANCE:SPOT_PAIR:BTC-USDT on 2024-03-13",
        ),
        (["--source", f"replay:{KEY}"], "a replay names keys and a day"),
        (["--source", "sim:BTCUSDT", "--timeframes", "2m"], "unknown timeframe '2m'"),
        (["--source", "sim:BTCUSDT", "--speed", "fast-ish"], "speed 'fast-ish'"),
        (["--source", "sim:BTCUSDT", "--serve", "--host", "0.0.0.0"], "loopback only"),
        (["--source", "binance:BTCUSD_PERP"], "is not a Binance spot symbol"),
    ],
)
def test_usage_errors_exit_2_with_one_line(lake, args, message):
    proc = mdth("stream", *args, lake=lake, timeout=60)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and message in err[0] and proc.stdout == ""


def test_serve_for_another_process_with_a_token_file(lake, tmp_path):
    token_file = tmp_path / "run" / "token"
    env = {**os.environ, "MDTH_LAKE": str(lake)}
    cmd = [
        sys.executable,
        "-m",
        "mdth_engine.cli",
        "--json",
        "stream",
        "serve",
        "--source",
        f"replay:{KEY}@{DAY}",
    ]
    cmd += ["--speed", "600x", "--timeframes", "1m", "--token-file", str(token_file), "--duration", "60"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        first = json.loads(proc.stdout.readline())
        assert first["kind"] == "serving" and first["url"].startswith("ws://127.0.0.1:")
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        token = token_file.read_text().strip()
        assert token not in first["url"]

        async def client() -> list[dict]:
            got = []
            async for msg in connect(first["url"], token):
                got.append(msg)
                if sum(m["kind"] == "bar" and not m.get("history") for m in got) >= 3:
                    return got
            return got

        got = asyncio.run(asyncio.wait_for(client(), 60))
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert got[0]["kind"] == "hello" and got[0]["instruments"] == [KEY] and got[0]["timeframes"] == ["1m"]
    bars = [m for m in got if m["kind"] == "bar"]
    batch = pq.read_table(open_store(str(lake)).local_path(layout.candles_path(DAY, "1m", KEY))).to_pylist()
    by_time = {row["timestamp"].strftime("%Y-%m-%dT%H:%M:%S.%fZ"): row for row in batch}
    for bar in bars:
        assert bar["trade_count"] == by_time[bar["timestamp"]]["trade_count"]
    printed = lines(out)
    assert printed[-1]["kind"] == "summary" and not token_file.exists()  # the token file goes with the server
    assert token not in out + err


def test_roll_merges_journal_parts_into_by_date(tmp_path):
    store = open_store(str(tmp_path))
    journal = Journal(store, "binance:test")
    start = day_start_us(DAY) + 3_600_000_000
    events = [
        Trade(KEY, start + i * 1000, start + i * 1000 + 500, 100.0 + i, 1.0, "buy", str(i)) for i in range(10)
    ]
    journal.add(events[:6])
    journal._write_chunk(dict(journal._buffers))  # two sessions' worth of parts
    journal2 = Journal(store, "binance:test")
    journal2.add(events[6:])
    journal2._write_chunk(dict(journal2._buffers))
    proc = mdth("--json", "stream", "roll", "--date", str(DAY), lake=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (result,) = lines(proc.stdout)
    assert result["outcome"] == "written" and result["parts"] == 2 and result["rows"] == 10
    table = pq.read_table(store.local_path(layout.raw_path(DAY, "trades", KEY)))
    assert table["id"].to_pylist() == [str(i) for i in range(10)]
    assert list(store.list(layout.STREAMING_RAW_ROOT + "/")) == []
    again = mdth("stream", "roll", lake=tmp_path)
    assert again.returncode == 0 and "nothing to roll" in again.stdout


def test_a_killed_persisting_stream_leaves_complete_parts_missing_only_the_last_seconds(tmp_path):
    env = {**os.environ, "MDTH_LAKE": str(tmp_path)}
    cmd = [
        sys.executable,
        "-m",
        "mdth_engine.cli",
        "--json",
        "stream",
        "--source",
        "sim:BTCUSDT?scale=medium",
    ]
    cmd += ["--persist", "--timeframes", "15s", "--warm", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    store = open_store(str(tmp_path))
    try:
        deadline = time.monotonic() + 60
        while (
            time.monotonic() < deadline
            and sum("/data_type-" in i.path for i in store.list(layout.STREAMING_RAW_ROOT + "/")) < 4
        ):
            time.sleep(0.2)
        time.sleep(1.0)
        killed_at = time.time_ns() // 1000
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    parts = [i.path for i in store.list(layout.STREAMING_RAW_ROOT + "/") if "/data_type-" in i.path]
    assert len(parts) >= 4
    newest = 0
    for path in parts:
        table = pq.read_table(store.local_path(path))  # every part is a whole Parquet file
        assert table.num_rows > 0
        newest = max(newest, int(np.max(table["local_timestamp"].cast(pa.int64()).to_numpy())))
    leftovers = [p for p in Path(tmp_path).rglob("*") if p.is_file() and ".tmp-" in p.name]
    assert all(p.name.startswith(".") for p in leftovers)  # a temp file of a write in flight is hidden
    assert killed_at - newest < 5_000_000  # the journal flushes every 2 s: at most the last seconds are lost
