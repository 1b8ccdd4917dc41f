"""``python -m mdth_engine.simulator serve [--port N] [--scale S] ...``: the same as ``mdth sim serve``."""

from __future__ import annotations

from mdth_engine.cli.sim import app

if __name__ == "__main__":
    app(prog_name="python -m mdth_engine.simulator")
