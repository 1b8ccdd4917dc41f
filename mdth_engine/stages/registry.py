"""Finds a stage by operation name, so a worker can rebuild any stage from a job's spec."""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import Any, Protocol

from mdth_engine.core.errors import UsageError
from mdth_engine.core.events import Sink, null_sink
from mdth_engine.core.settings import Settings
from mdth_engine.stages.base import Request, UnitResult, WorkUnit

# operation -> "module:factory"; each factory takes a StageContext and returns a PlannedStage.
STAGES: dict[str, str] = {
    "instruments": "mdth_engine.stages.instruments:make_stage",
    "download": "mdth_engine.stages.download:make_stage",
    "candles": "mdth_engine.stages.candles:make_stage",
    "validate": "mdth_engine.stages.validate:make_stage",
    "upload": "mdth_engine.stages.warehouse:make_stage",
}


@dataclasses.dataclass
class StageContext:
    """What a stage runs with: settings (with the key), the lake store, a local spool folder, a progress sink."""

    settings: Settings
    store: Any  # mdth_engine.storage.store.ObjectStore
    spool_dir: Path
    sink: Sink = null_sink
    job_id: str = ""


class PlannedStage(Protocol):
    """A stage: plans a request into units, and runs one unit (idempotently)."""

    name: str

    def plan(self, request: Request) -> list[WorkUnit]: ...

    async def run_unit(self, unit: WorkUnit) -> UnitResult: ...


def get_stage(operation: str, ctx: StageContext) -> PlannedStage:
    try:
        target = STAGES[operation]
    except KeyError:
        raise UsageError(f"unknown operation {operation!r}; known: {', '.join(STAGES)}") from None
    module_name, factory = target.split(":")
    return getattr(importlib.import_module(module_name), factory)(ctx)
