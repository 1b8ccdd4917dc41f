"""The built-in market simulator: a Tardis-compatible HTTP API (metadata and CSV datasets), Binance-style
klines and live WebSocket streams, all from one deterministic synthetic market model.

    from mdth_engine.simulator import SimulatorServer
    with SimulatorServer(scale="small", cache_dir=tmp) as sim:
        tardis_dev.download_datasets(..., endpoint=sim.datasets_url, api_key="any")

Names are loaded lazily so importing the package does no work.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "MODEL_VERSION",
    "SCALES",
    "AsyncSimulator",
    "FaultRule",
    "Faults",
    "SimConfig",
    "SimulatorServer",
    "dataset_bytes",
]

_LAZY = {
    "AsyncSimulator": "mdth_engine.simulator.server",
    "SimulatorServer": "mdth_engine.simulator.server",
    "SimConfig": "mdth_engine.simulator.config",
    "SCALES": "mdth_engine.simulator.config",
    "MODEL_VERSION": "mdth_engine.simulator.config",
    "Faults": "mdth_engine.simulator.faults",
    "FaultRule": "mdth_engine.simulator.faults",
    "dataset_bytes": "mdth_engine.simulator.datasets",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(name)
    import importlib

    return getattr(importlib.import_module(module), name)
