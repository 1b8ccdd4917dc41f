"""Jobs: a request planned into work units, split into shards, run by workers on a backend, watched from records.

The public functions load lazily (``from mdth_engine.jobs import run_job``), so importing the runner or the
estimator does not pull in backends or the stage registry.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "JobSpec": "mdth_engine.jobs.spec",
    "JobStatus": "mdth_engine.jobs.status",
    "ShardRecord": "mdth_engine.jobs.records",
    "ShardRun": "mdth_engine.jobs.worker",
    "create_job": "mdth_engine.jobs.manage",
    "launch_job": "mdth_engine.jobs.manage",
    "run_job": "mdth_engine.jobs.manage",
    "cancel_job": "mdth_engine.jobs.manage",
    "retry_job": "mdth_engine.jobs.manage",
    "cleanup_job": "mdth_engine.jobs.manage",
    "follow_job": "mdth_engine.jobs.follow",
    "job_status": "mdth_engine.jobs.status",
    "list_jobs": "mdth_engine.jobs.status",
    "run_shard": "mdth_engine.jobs.worker",
    "estimate_bytes": "mdth_engine.jobs.estimate",
    "assign_shards": "mdth_engine.jobs.sharding",
    "run_units": "mdth_engine.jobs.runner",
    "RunSummary": "mdth_engine.jobs.runner",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mdth_engine.jobs' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
