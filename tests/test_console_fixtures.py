"""Shared by the console tests: a frozen backend (fixed data, fixed clock) for snapshots and markup tests, a
small real lake built against the simulator, and helpers to drive the app with Pilot at 80x24.

The frozen backend subclasses the real ``ConsoleBackend`` and returns engine objects (``JobStatus`` built from
``JobSpec``/``ShardRecord``) with fixed values, so screens render exactly what they render over a real lake.
Snapshots: ``MDTH_UPDATE_SNAPSHOTS=1 .venv/bin/pytest tests/test_console_snapshots.py`` rewrites them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import os
from pathlib import Path
from typing import Any

import pytest

from mdth_console.backend import ConsoleBackend
from mdth_console.snapshot import screen_text
from mdth_engine.jobs.records import ShardRecord
from mdth_engine.jobs.spec import JobSpec
from mdth_engine.jobs.status import JobStatus

SIZE = (80, 24)
SNAPSHOTS = Path(__file__).parent / "snapshots"
NOW = 1_709_467_200.0  # 2024-03-03 12:00:00 UTC
MARKUP = "[/x] [bold]not bold[/bold] [link=x]"
DAYS = [dt.date(2024, 3, 1), dt.date(2024, 3, 2), dt.date(2024, 3, 3)]
KEYS = ["BINANCE:SPOT_PAIR:BTC-USDT", "BINANCE-FUTURES:PERPETUAL:BTC-USDT", "DERIBIT:PERPETUAL:BTC-USD"]


def _spec(job_id: str, operation: str, shards: int, units: int, backend: str = "local") -> JobSpec:
    return JobSpec(
        job_id=job_id,
        operation=operation,
        request={"operation": operation, "start": "2024-03-01", "end": "2024-03-03"},
        shards=shards,
        backend=backend,
        engine_version="0.1.0",
        created_by="ops@console-test",
        created_at=dt.datetime.fromtimestamp(NOW - 3600, dt.UTC).isoformat(timespec="seconds"),
        units=units,
        est_bytes=units * 1000,
    )


def frozen_jobs(markup: str = "") -> list[JobStatus]:
    """A running 4-shard download, a finished candles job, and a failed download with errors."""
    running = _spec("download-20240303-110000-aaaaaa", "download", 4, 400)
    shards = []
    for i in range(4):
        done = [100, 64, 37, 0][i]
        shards.append(
            ShardRecord(
                running.job_id,
                i,
                state=["done", "running", "running", "launched"][i],
                attempt=1,
                units_total=100,
                units_done=done,
                rows=done * 1234,
                bytes=done * 56_789,
                rate_bytes_s=[0.0, 250_000.0, 180_000.0, 0.0][i],
                rate_units_s=[0.0, 0.4, 0.3, 0.0][i],
                eta_s=[None, 90.0, 210.0, None][i],
                host="console-test",
                pid=4000 + i,
                backend="local",
                started_at=NOW - 600,
                updated_at=NOW - [100, 2, 45, 3][i],  # shard 2 is silent: stale
                finished_at=NOW - 100 if i == 0 else None,
            )
        )
    done_spec = _spec("candles-20240303-100000-bbbbbb", "candles", 1, 21)
    done_shard = ShardRecord(
        done_spec.job_id,
        0,
        state="done",
        attempt=1,
        units_total=21,
        units_done=21,
        rows=159_915,
        bytes=9_820_947,
        outcomes={"written": 21},
        updated_at=NOW - 3000,
        finished_at=NOW - 3000,
    )
    failed_spec = _spec("download-20240303-090000-cccccc", "download", 2, 10)
    failed_shards = [
        ShardRecord(
            failed_spec.job_id,
            0,
            state="done",
            attempt=1,
            units_total=5,
            units_done=5,
            units_failed=2,
            outcomes={"written": 3, "failed": 2},
            updated_at=NOW - 7000,
            finished_at=NOW - 7000,
        ),
        ShardRecord(
            failed_spec.job_id,
            1,
            state="dead",
            attempt=3,
            units_total=5,
            units_done=1,
            last_error=f"process exited before the shard finished {markup}".strip(),
            updated_at=NOW - 6900,
            finished_at=NOW - 6900,
        ),
    ]
    return [
        JobStatus(running, shards, at=NOW),
        JobStatus(done_spec, [done_shard], at=NOW),
        JobStatus(failed_spec, failed_shards, at=NOW),
    ]


def frozen_coverage() -> list[dict[str, Any]]:
    """Three days x three instruments x two data types, with one of each interesting outcome."""
    rows = []
    special = {
        (DAYS[1], KEYS[0], "trades"): ("missing", "error", "", "a job wrote it but the file is gone"),
        (DAYS[2], KEYS[1], "book_snapshot_5"): (
            "never_attempted",
            "error",
            "",
            "no file and no recorded attempt",
        ),
        (DAYS[0], KEYS[2], "trades"): ("empty", "ok", "ok", "0 rows (empty at the source)"),
        (DAYS[2], KEYS[2], "trades"): ("present", "ok", "error", "local_timestamp goes backwards"),
    }
    for day in DAYS:
        for key in KEYS:
            for data_type in ("book_snapshot_5", "trades"):
                cls, status, content, detail = special.get(
                    (day, key, data_type), ("present", "ok", "ok", "1,234 rows")
                )
                rows.append(
                    {
                        "day": day,
                        "instrument_key": key,
                        "venue": key.split(":")[0],
                        "instrument_type": key.split(":")[1],
                        "data_type": data_type,
                        "class": cls,
                        "status": status,
                        "rows": None
                        if cls in ("missing", "never_attempted")
                        else (0 if cls == "empty" else 1234),
                        "bytes": None,
                        "content": content,
                        "detail": detail,
                    }
                )
    return rows


class FrozenBackend(ConsoleBackend):
    """Fixed answers for every read; writes are recorded, never performed. ``markup`` is mixed into engine
    text (errors, symbols, reasons) to prove none of it is ever parsed as markup."""

    def __init__(self, markup: str = "") -> None:
        super().__init__("/lake/frozen")
        self.markup = markup
        self.launched: list[Any] = []
        self.cancelled: list[str] = []
        self.retried: list[tuple[str, list[int] | None]] = []
        self.cleaned: list[str] = []

    def now(self) -> float:
        return NOW

    @property
    def settings(self) -> Any:
        from mdth_engine.core.settings import load_settings

        return load_settings(lake=self.lake_url)

    def overview(self) -> dict[str, Any]:
        return {
            "url": self.lake_url,
            "files": 220,
            "bytes": 37_793_132,
            "areas": {
                "_jobs": {"files": 12, "bytes": 48_000},
                "instrument_availability": {"files": 3, "bytes": 48_928},
                "processed_candles": {"files": 147, "bytes": 9_820_947},
                "raw_tick_data": {"files": 63, "bytes": 7_698_698},
            },
            "tick_days": [d.isoformat() for d in DAYS],
            "master_days": [d.isoformat() for d in DAYS],
            "venues": ["BINANCE", "BINANCE-FUTURES", "DERIBIT"],
            "tick_keys": list(KEYS),
            "tick_data_types": ["book_snapshot_5", "trades"],
            "instruments_with_ticks": 3,
            "instruments_listed": 752,
        }

    def built_days(self) -> list[dt.date]:
        return list(DAYS)

    def instrument_keys(self, day: Any) -> list[dict[str, Any]]:
        rows = [
            {
                "instrument_key": k,
                "tardis_symbol": k.split(":")[2].replace("-", ""),
                "instrument_type": k.split(":")[1],
                "venue": k.split(":")[0],
            }
            for k in KEYS
        ]
        rows.append(
            {
                "instrument_key": "DERIBIT:OPTION:BTC-USD-240628-60000-CALL",
                "tardis_symbol": f"BTC-28JUN24-60000-C{self.markup}",
                "instrument_type": "OPTION",
                "venue": "DERIBIT",
            }
        )
        return rows

    def inspect(self, key: str, day: Any = None) -> dict[str, Any]:
        calendar = []
        for d in DAYS:
            data = {"trades": {"rows": 1000 + d.day, "bytes": 50_000, "file": "x"}}
            if d != DAYS[1]:
                data["book_snapshot_5"] = {"rows": 0 if d == DAYS[0] else 5210, "bytes": 900, "file": "y"}
            calendar.append({"day": d.isoformat(), "listed": True, "data": data})
        return {
            "key": key,
            "date": DAYS[-1].isoformat(),
            "definition": {
                "instrument_key": key,
                "venue": key.split(":")[0],
                "instrument_type": key.split(":")[1],
                "tardis_symbol": key.split(":")[2].replace("-", "") + self.markup,
                "data_types": ["book_snapshot_5", "trades"],
                "tick_size": 0.01,
                "listing": dt.datetime(2019, 9, 8, tzinfo=dt.UTC),
            },
            "calendar": calendar,
        }

    def last_ticks(self, key: str, data_type: str, day: Any, n: int = 20) -> list[dict[str, Any]]:
        base = dt.datetime(2024, 3, 3, 23, 59, tzinfo=dt.UTC)
        return [
            {
                "local_timestamp": base + dt.timedelta(seconds=i, milliseconds=7),
                "timestamp": base + dt.timedelta(seconds=i),
                "side": "buy" if i % 2 else "sell",
                "price": 60_000.0 + i * 0.5,
                "amount": 0.001 * (i + 1),
                "id": f"t{i}",
            }
            for i in range(n)
        ]

    def day_candles(self, key: str, timeframe: str, day: Any) -> dict[str, list[Any]]:
        start = dt.datetime(2024, 3, 3, tzinfo=dt.UTC)
        out: dict[str, list[Any]] = {
            c: [] for c in ("timestamp", "open", "high", "low", "close", "volume", "trade_count")
        }
        price = 60_000.0
        for i in range(24):
            o = price
            c = o + 80 * math.sin(i / 3.0)
            out["timestamp"].append(start + dt.timedelta(hours=i))
            out["open"].append(o)
            out["close"].append(c)
            out["high"].append(max(o, c) + 25)
            out["low"].append(min(o, c) - 25)
            out["volume"].append(10.0 + i)
            out["trade_count"].append(100 + i)
            price = c
        return out

    def jobs(self, limit: int = 50) -> list[Any]:
        return frozen_jobs(self.markup)[:limit]

    def job(self, job_id: str) -> Any:
        for status in frozen_jobs(self.markup):
            if status.job_id == job_id:
                return status
        from mdth_engine.core.errors import UsageError

        raise UsageError(f"no job {job_id} in {self.lake_url} {self.markup}".strip())

    def failures(self, job_id: str) -> list[dict[str, Any]]:
        if not job_id.endswith("cccccc"):
            return []
        at = dt.datetime.fromtimestamp(NOW - 7000, dt.UTC)
        return [
            {
                "unit_id": "2024-03-02/binance/trades/BTCUSDT",
                "outcome": "failed",
                "reason": f"HTTP 500 from the source {self.markup}".strip(),
                "attempt": 3,
                "finished_at": at,
            },
            {
                "unit_id": "2024-03-02/binance/book_snapshot_5/BTCUSDT",
                "outcome": "failed",
                "reason": "truncated gzip stream",
                "attempt": 3,
                "finished_at": at,
            },
        ]

    def log(self, job_id: str, shard: int, tail: int = 200) -> str:
        return "\n".join(f"shard {shard} line {i} {self.markup}".strip() for i in range(5)) + "\n"

    def cancel(self, job_id: str) -> list[int]:
        self.cancelled.append(job_id)
        return [1, 2, 3]

    def retry(self, job_id: str, shards: list[int] | None = None) -> list[int]:
        self.retried.append((job_id, shards))
        return [1]

    def cleanup(self, job_id: str) -> dict[str, Any]:
        self.cleaned.append(job_id)
        return {"job_id": job_id, "stopped": [4001], "marked_dead": [1, 3], "deleted": 0}

    def preview(self, request: Any, shards: int) -> dict[str, Any]:
        return {
            "operation": request.operation,
            "days": len(request.days()),
            "units": 42 * len(request.days()),
            "est_bytes": 123_456_789,
            "missing_master": [],
            "shards": shards,
            "note": "",
        }

    def launch(self, request: Any, shards: int, backend: str) -> dict[str, Any]:
        self.launched.append((request, shards, backend))
        return {"job_id": "download-20240303-110000-aaaaaa", "units": 42, "shards": shards}

    def coverage(self, start: Any, end: Any, **selection: Any) -> list[dict[str, Any]]:
        return frozen_coverage()


# -- driving the app -----------------------------------------------------------------------------------------


async def settle(pilot: Any, rounds: int = 2) -> None:
    """Let polls fetch and apply: pause, wait for busy workers, pause again."""
    for _ in range(rounds):
        await pilot.pause(0.02)
        await pilot.app.workers.wait_for_complete()
    await pilot.pause(0.02)


async def wait_for(pilot: Any, predicate: Any, timeout: float = 30.0, what: str = "") -> None:
    """Pause until ``predicate()`` holds (checked every 0.05 s), then let one more layout pass land (a widget
    updated in the same frame as the awaited text may need it)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if predicate():
            await settle(pilot, rounds=1)
            return
        await pilot.pause(0.05)
    raise AssertionError(f"timed out waiting for {what or predicate}:\n{screen_text(pilot.app)}")


async def press_text(pilot: Any, text: str) -> None:
    """Type ``text`` key by key, as a user would."""
    names = {
        " ": "space",
        ":": "colon",
        "/": "slash",
        "?": "question_mark",
        "[": "left_square_bracket",
        "]": "right_square_bracket",
        "-": "minus",
        ",": "comma",
        ".": "full_stop",
        "@": "at",
    }
    for ch in text:
        await pilot.press(names.get(ch, ch))


def check_snapshot(name: str, text: str) -> None:
    """Compare with tests/snapshots/NAME.txt; MDTH_UPDATE_SNAPSHOTS=1 rewrites it."""
    path = SNAPSHOTS / f"{name}.txt"
    if os.environ.get("MDTH_UPDATE_SNAPSHOTS") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return
    if not path.exists():
        pytest.fail(f"no snapshot {path.name}: run with MDTH_UPDATE_SNAPSHOTS=1 and review it")
    expected = path.read_text()
    if text != expected:
        import difflib

        diff = "\n".join(
            difflib.unified_diff(expected.splitlines(), text.splitlines(), "snapshot", "now", lineterm="")
        )
        pytest.fail(f"{path.name} differs (MDTH_UPDATE_SNAPSHOTS=1 to accept):\n{diff}")
