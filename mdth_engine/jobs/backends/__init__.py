"""Where shards run, behind one interface: launch, status, logs, cancel, cleanup.

``local`` runs each shard as a subprocess on this machine (the default); ``gce`` runs each on its own
Compute Engine VM. Monitoring never asks the backend for progress: that comes from the store's records; the
backend only answers "is the worker still there?".
"""

from __future__ import annotations

from typing import Any, Protocol

from mdth_engine.core.errors import UsageError
from mdth_engine.core.settings import Settings

# Worker presence as a backend sees it.
ALIVE = "alive"  # the process or VM is there
GONE = "gone"  # it exited, or the VM no longer exists
PREEMPTED = "preempted"  # the VM was stopped under it (Spot preemption, host maintenance)
UNKNOWN = "unknown"  # cannot tell from here (another host): the heartbeat decides

BACKENDS = ("local", "gce")


class Backend(Protocol):
    """What the supervisor needs to run shards somewhere."""

    name: str
    launch_grace_s: float  # how long a launched shard may take to write its first heartbeat

    def instance_name(self, spec: Any, shard: int, attempt: int) -> str:
        """A name for the worker of that attempt ('' when the backend has none before launch)."""
        ...

    def launch(self, spec: Any, shard: int, attempt: int) -> dict[str, Any]: ...

    def status(self, spec: Any, shard: int, record: Any) -> str: ...

    def logs(self, spec: Any, shard: int, tail: int | None = None) -> str: ...

    def cancel(self, spec: Any, shard: int, record: Any, *, force: bool = False) -> None: ...

    def cleanup(self, spec: Any) -> list[str]: ...


def check_backend(name: str, settings: Settings, operation: str | None = None) -> None:
    """A usage error before any work when the backend is unknown or not configured (for ``operation``)."""
    if name not in BACKENDS:
        raise UsageError(f"unknown backend {name!r}; use one of: {', '.join(BACKENDS)}")
    if name == "gce":
        from mdth_engine.jobs.backends.gce import check_settings

        check_settings(settings, operation)


def get_backend(name: str, store: Any, settings: Settings, operation: str | None = None) -> Backend:
    check_backend(name, settings, operation)
    if name == "gce":
        from mdth_engine.jobs.backends.gce import GceBackend

        return GceBackend(store, settings)
    from mdth_engine.jobs.backends.local import LocalBackend

    return LocalBackend(store, settings)
