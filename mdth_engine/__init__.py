"""mdth engine: the headless core (no terminal, no work at import time).

``Lake`` and ``LiveFeatureStream`` are loaded lazily so ``import mdth_engine`` stays cheap.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Lake", "LiveFeatureStream", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "Lake":
        from mdth_engine.api import Lake

        return Lake
    if name == "LiveFeatureStream":
        from mdth_engine.live.stream import LiveFeatureStream

        return LiveFeatureStream
    raise AttributeError(name)
