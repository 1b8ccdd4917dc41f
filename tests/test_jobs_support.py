"""A tiny real stage ("fake") for the job framework tests, and how worker subprocesses find it.

It plans one unit per (day, symbol), writes a small deterministic file per unit into the lake through the
store, skips units whose file exists (idempotent like every stage), and can be told to fail units (listed in
``fake/fail.json`` in the lake), crash its whole process on a unit, or take its time. Worker subprocesses
load it through a ``sitecustomize`` on PYTHONPATH that registers it in the stage registry.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import os
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import pytest

from mdth_engine.core.errors import NotFound
from mdth_engine.stages.base import Outcome, Request, UnitResult, WorkUnit

TESTS_DIR = Path(__file__).resolve().parent
FAIL_LIST = "fake/fail.json"
CALLS: dict[str, int] = {}  # unit id -> run_unit calls that wrote, in this process

SITECUSTOMIZE = """
try:
    from mdth_engine.stages import registry
except ImportError:  # an interpreter without mdth (e.g. the system python3 the startup script uses)
    pass
else:
    registry.STAGES.setdefault("fake", "test_jobs_support:make_stage")
"""


def unit_bytes(unit_id: str, size: int) -> bytes:
    """The file a unit writes: a function of its id alone, so any two runs can be compared byte for byte."""
    seed = hashlib.sha256(unit_id.encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


def fake_request(
    days: int = 1,
    symbols: tuple[str, ...] = ("AAA", "BBB", "CCC", "DDD"),
    start: dt.date = dt.date(2024, 1, 1),
    **options: Any,
) -> Request:
    return Request(
        "fake",
        start,
        start + dt.timedelta(days=days - 1),
        symbols=symbols,
        options=options,
    )


class FakeStage:
    name = "fake"

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    def plan(self, request: Request) -> list[WorkUnit]:
        sizes = request.options.get("sizes", {})
        units = []
        for day in request.days():
            for sym in request.symbols:
                size = int(sizes.get(sym, 200 + zlib.crc32(sym.encode()) % 800))
                units.append(
                    WorkUnit(
                        "fake",
                        f"{day}/{sym}",
                        day,
                        f"fake/day-{day}/{sym}.bin",
                        est_bytes=size,
                        params={
                            "size": size,
                            "delay": float(request.options.get("delay", 0.0)),
                            "crash_unit": request.options.get("crash_unit", ""),
                        },
                    )
                )
        return units

    def _fail_list(self) -> list[str]:
        try:
            return json.loads(self.ctx.store.get_bytes(FAIL_LIST))
        except NotFound:
            return []

    async def run_unit(self, unit: WorkUnit) -> UnitResult:
        store = self.ctx.store
        if unit.unit_id == unit.params.get("crash_unit"):
            sys.stdout.flush()
            os._exit(3)  # the whole worker process dies, as on an OOM kill
        if unit.unit_id in await asyncio.to_thread(self._fail_list):
            raise RuntimeError(f"source refused {unit.unit_id}")
        if await asyncio.to_thread(store.exists, unit.output):
            return UnitResult(unit.unit_id, Outcome.SKIPPED, output=unit.output)
        if unit.params["delay"]:
            await asyncio.sleep(unit.params["delay"])
        data = unit_bytes(unit.unit_id, unit.params["size"])
        await asyncio.to_thread(store.put_bytes, unit.output, data)
        CALLS[unit.unit_id] = CALLS.get(unit.unit_id, 0) + 1
        key = self.ctx.settings.api_key()
        extra = {"pid": os.getpid(), "at": time.time()}
        if key:
            extra["key_sha"] = hashlib.sha256(key.encode()).hexdigest()[:12]  # proves the key arrived
        return UnitResult(
            unit.unit_id, Outcome.WRITTEN, rows=1, bytes=len(data), output=unit.output, extra=extra
        )


def make_stage(ctx: Any) -> FakeStage:
    return FakeStage(ctx)


@pytest.fixture
def fake_stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Register the fake stage here and in every worker subprocess this test starts; returns the lake path."""
    from mdth_engine.jobs.backends import local
    from mdth_engine.stages import registry

    monkeypatch.setitem(registry.STAGES, "fake", "test_jobs_support:make_stage")
    monkeypatch.setattr(local, "log_dir", lambda job_id: tmp_path / "worker-logs" / job_id)
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    paths = [str(site), str(TESTS_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))
    for name in ("MDTH_TARDIS_API_KEY", "TARDIS_API_KEY", "MDTH_CONFIG", "MDTH_GCE_API_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MDTH_CONFIG", str(tmp_path / "no-mdth.toml"))
    CALLS.clear()
    return tmp_path / "lake"


def lake_files(root: Path, prefix: str = "fake/day-") -> dict[str, bytes]:
    """Every data file under the lake (not job records), path -> content."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and rel.startswith(prefix):
            out[rel] = path.read_bytes()
    return out
