"""Pytest fixtures around the built-in market simulator. Use them from a conftest or a test module:

    from sim_fixtures import *  # noqa: F403  (sim_server, sim_env, make_sim_server, sim_process, ...)

``sim_server``   one in-process simulator for the whole session (scale "small", the fixed "now", so datasets are
                 exported until 2025-06-01; an API key is needed off the 1st day of a month, as on Tardis).
``sim_env``      the session simulator with MDTH_TARDIS_API_URL / _DATASETS_URL / _API_KEY set for one test.
``make_sim_server(**config)``  a private simulator (faults, another scale or "now"), stopped after the test.
``sim_process``  the simulator as a separate process (``python -m mdth_engine.simulator serve``), for tests
                 whose subprocesses or workers must reach it.
Generated files are cached in one temp folder per session, so each (symbol, type, day) is built once.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mdth_engine.simulator import SimulatorServer

__all__ = [
    "SIM_API_KEY",
    "SimProcess",
    "make_sim_server",
    "sim_cache_dir",
    "sim_env",
    "sim_process",
    "sim_server",
]

SIM_API_KEY = "sim-test-key"  # any non-empty key opens every day on the simulator


@pytest.fixture(scope="session")
def sim_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache of generated dataset files for the whole session."""
    return tmp_path_factory.mktemp("sim-cache")


@pytest.fixture(scope="session")
def sim_server(sim_cache_dir: Path) -> Iterator[SimulatorServer]:
    """The session's simulator: in-process (background thread), 127.0.0.1 on a free port, no faults."""
    with SimulatorServer(scale="small", cache_dir=sim_cache_dir) as sim:
        yield sim


@pytest.fixture
def sim_env(sim_server: SimulatorServer, monkeypatch: pytest.MonkeyPatch) -> SimulatorServer:
    """The session simulator, with mdth's settings pointing at it (and a key) for this test and its children."""
    for key, value in sim_server.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MDTH_TARDIS_API_KEY", SIM_API_KEY)
    return sim_server


@pytest.fixture
def make_sim_server(sim_cache_dir: Path) -> Iterator[Callable[..., SimulatorServer]]:
    """``make_sim_server(faults="429:first=1", scale="tiny", now="2024-06-01T12:00Z", ...)``: a started private
    simulator (same cache folder unless ``cache_dir`` is given); every one is stopped after the test."""
    started: list[SimulatorServer] = []

    def make(**kwargs: Any) -> SimulatorServer:
        kwargs.setdefault("cache_dir", sim_cache_dir)
        kwargs.setdefault("scale", "small")
        sim = SimulatorServer(**kwargs).start()
        started.append(sim)
        return sim

    yield make
    for sim in started:
        sim.stop()


class SimProcess:
    """A simulator running as ``python -m mdth_engine.simulator serve``; same addresses as ``SimulatorServer``."""

    def __init__(self, *args: str, cache_dir: Path | None = None, timeout: float = 30.0) -> None:
        cmd = [sys.executable, "-m", "mdth_engine.simulator", "serve", "--port", "0", *args]
        if cache_dir is not None:
            cmd += ["--cache-dir", str(cache_dir)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.output: list[str] = []
        deadline = time.monotonic() + timeout
        self._env: dict[str, str] = {}
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.output.append(line.rstrip("\n"))
            m = re.match(r"^(MDTH_TARDIS_(?:API|DATASETS)_URL)=(\S+)$", line.strip())
            if m:
                self._env[m.group(1)] = m.group(2)
            if len(self._env) == 2:
                break
        if len(self._env) != 2:
            self.stop()
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise RuntimeError(f"simulator process did not start: {' | '.join(self.output)} {err}")
        self.api_url = self._env["MDTH_TARDIS_API_URL"]
        self.datasets_url = self._env["MDTH_TARDIS_DATASETS_URL"]
        self.base_url = self.api_url.rsplit("/v1", 1)[0]
        self.port = int(self.base_url.rsplit(":", 1)[1])
        self.ws_url = "ws" + self.base_url[4:]
        self.ws_spot_url = self.ws_url + "/spot"

    def env(self) -> dict[str, str]:
        return dict(self._env)

    def requests(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"{self.base_url}/_sim/requests", timeout=10) as resp:
            return json.loads(resp.read())

    def set_faults(self, spec: str) -> None:
        req = urllib.request.Request(f"{self.base_url}/_sim/faults", data=spec.encode(), method="PUT")
        with urllib.request.urlopen(req, timeout=10) as resp:
            resp.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture(scope="session")
def sim_process(sim_cache_dir: Path) -> Iterator[SimProcess]:
    """The simulator in its own process (scale "small", fixed "now"), sharing the session's cache folder."""
    proc = SimProcess("--scale", "small", cache_dir=sim_cache_dir)
    try:
        yield proc
    finally:
        proc.stop()
