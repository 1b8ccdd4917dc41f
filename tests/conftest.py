"""Shared fixtures: the GCS emulator (one process per session), fresh stores, and the simulator (sim_fixtures)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from gcs_emulator import GCSEmulator
from sim_fixtures import *  # noqa: F403  (sim_server, sim_env, make_sim_server, sim_process, sim_cache_dir)


@pytest.fixture(scope="session")
def gcs_emulator_session() -> Iterator[GCSEmulator]:
    """The emulator process for the whole session; does not touch the environment (see ``gcs_emulator``)."""
    with GCSEmulator() as emulator:
        yield emulator


@pytest.fixture
def gcs_emulator(gcs_emulator_session: GCSEmulator, monkeypatch: pytest.MonkeyPatch) -> GCSEmulator:
    """The session's emulator, with STORAGE_EMULATOR_HOST pointing at it for this test (and its children)."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator_session.url)
    return gcs_emulator_session


@pytest.fixture
def gcs_bucket(gcs_emulator: GCSEmulator) -> str:
    """A fresh, empty bucket in the emulator."""
    return gcs_emulator.create_bucket(f"t-{uuid.uuid4().hex[:16]}")


@pytest.fixture
def gcs_store(gcs_bucket: str):  # type: ignore[no-untyped-def]
    """A GCSStore on a fresh bucket, rooted under a prefix so prefix handling is always exercised."""
    from mdth_engine.storage.store import open_store

    return open_store(f"gs://{gcs_bucket}/lake")


@pytest.fixture
def local_store(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A LocalStore in a fresh folder (created lazily by the first write)."""
    from mdth_engine.storage.store import open_store

    return open_store(str(tmp_path / "lake"))


@pytest.fixture(params=["local", "gcs"])
def store(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """Each store implementation in turn: tests using it are the store contract."""
    return request.getfixturevalue(f"{request.param}_store")


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """End the test process the way mdth's own processes end (``core.shutdown.leave``), after pytest's summary.

    The suite runs Arrow and DuckDB in this process; their native pools can abort an interpreter at teardown
    (apache/arrow#34314) after every test has passed. The exit code stays pytest's own.
    """
    from mdth_engine.core.shutdown import leave

    session = getattr(config, "_mdth_session", None)
    if session is not None:
        leave(int(session.exitstatus))


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config._mdth_session = session  # type: ignore[attr-defined]
