"""A job's spec: the request, its shard count and backend, who started it and with which (non-secret) settings.

The spec is everything a worker on any machine needs besides the lake URL and the key: it rebuilds the
stage from ``operation`` and ``request`` and runs with the settings recorded here. Secrets never enter it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import getpass
import re
import secrets
import socket
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from mdth_engine.core.settings import Settings
from mdth_engine.stages.base import Request

DEFAULT_MAX_ATTEMPTS = 3
# Settings a worker must not take from the spec: the lake comes from --lake, secrets from env/Secret Manager.
_NOT_RECORDED = frozenset({"lake", "tardis_api_key"})


@dataclasses.dataclass
class JobSpec:
    """``_jobs/{job_id}/spec.json``."""

    job_id: str
    operation: str
    request: dict[str, Any]
    shards: int
    backend: str
    engine_version: str
    created_by: str
    created_at: str  # ISO 8601 UTC
    units: int = 0
    est_bytes: int = 0
    shards_requested: int = 0
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    lake: str = ""
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSpec:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def request_obj(self) -> Request:
        return Request.from_dict(self.request)


def new_job_id(operation: str, now: dt.datetime | None = None) -> str:
    """``{operation}-{YYYYmmdd-HHMMSS}-{6 hex}``: sortable, unique, and valid as a GCE label and VM name part."""
    now = now or dt.datetime.now(dt.UTC)
    op = re.sub(r"[^a-z0-9]+", "-", operation.lower()).strip("-")[:16] or "job"
    if not op[0].isalpha():
        op = "j" + op
    return f"{op}-{now:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def who() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry in some containers
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _strip_credentials(value: Any) -> Any:
    """A URL with ``user:password@`` loses them; anything else is returned as is."""
    if isinstance(value, str) and "://" in value and "@" in value.split("://", 1)[1].split("/", 1)[0]:
        parts = urlsplit(value)
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return value


def settings_snapshot(settings: Settings) -> dict[str, Any]:
    """The settings a worker should run with, minus the lake and anything secret."""
    from pydantic import SecretStr

    out: dict[str, Any] = {}
    for name in type(settings).model_fields:
        if name in _NOT_RECORDED:
            continue
        value = getattr(settings, name)
        if isinstance(value, SecretStr) or "secret_value" in type(value).__name__.lower():
            continue
        out[name] = _strip_credentials(value)
    return out


def worker_settings(spec: JobSpec, lake: str) -> Settings:
    """What a worker runs with: the spec's settings on top of the environment (which supplies the key)."""
    from mdth_engine.core.settings import load_settings

    recorded = {k: v for k, v in spec.settings.items() if k not in _NOT_RECORDED and v is not None}
    return load_settings(lake=lake, **recorded)
