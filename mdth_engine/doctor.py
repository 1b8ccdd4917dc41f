"""`mdth doctor`: checks settings, credentials, the Tardis endpoints, the lake and the warehouse, and says what to fix."""

from __future__ import annotations

import dataclasses
import secrets
import urllib.error
import urllib.request
from typing import Any

from mdth_engine.core.settings import Settings


@dataclasses.dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | warn | fail
    detail: str
    fix: str = ""


def _get(url: str, timeout: float, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"User-Agent": "mdth-doctor", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read(4096)
    except urllib.error.HTTPError as exc:
        return exc.code, b""


def check_tardis_api(settings: Settings, timeout: float) -> Check:
    url = settings.tardis_api_url.rstrip("/") + "/exchanges"
    try:
        status, _ = _get(url, timeout)
    except (OSError, ValueError) as exc:
        return Check(
            "tardis api",
            "fail",
            f"{url}: {exc}",
            "check MDTH_TARDIS_API_URL and the network (or run `mdth sim serve`)",
        )
    if status != 200:
        return Check("tardis api", "fail", f"{url}: HTTP {status}", "check MDTH_TARDIS_API_URL")
    return Check("tardis api", "ok", f"{url} answers")


def check_tardis_datasets(settings: Settings, timeout: float) -> Check:
    """A first-of-month file needs no key, so any answer but a connection error means the endpoint is there."""
    base = settings.tardis_datasets_url.rstrip("/")
    url = f"{base}/binance/trades/2024/01/01/NO-SUCH-SYMBOL.csv.gz"
    try:
        status, _ = _get(url, timeout)
    except (OSError, ValueError) as exc:
        return Check(
            "tardis datasets", "fail", f"{base}: {exc}", "check MDTH_TARDIS_DATASETS_URL and the network"
        )
    if status >= 500:
        return Check(
            "tardis datasets", "warn", f"{base}: HTTP {status}", "the service has trouble; retry later"
        )
    return Check("tardis datasets", "ok", f"{base} answers")


def check_key(settings: Settings) -> Check:
    if settings.api_key():
        return Check("tardis api key", "ok", "set (from MDTH_TARDIS_API_KEY or TARDIS_API_KEY); not shown")
    return Check(
        "tardis api key",
        "warn",
        "not set: only the first day of each month downloads",
        "export MDTH_TARDIS_API_KEY=... (never put it in mdth.toml that you commit)",
    )


def check_lake(settings: Settings) -> Check:
    """Write, read back and delete a small probe object: proves permissions and credentials."""
    from mdth_engine.storage.store import open_store

    url = settings.lake
    probe = f"_doctor/probe-{secrets.token_hex(6)}"
    try:
        store = open_store(url)
        payload = secrets.token_bytes(32)
        store.put_bytes(probe, payload)
        ok = store.get_bytes(probe) == payload
        store.delete(probe)
    except Exception as exc:  # any failure here is the user's to fix: say which and how
        fix = "gcloud auth application-default login, and grant roles/storage.objectAdmin on the bucket"
        if not url.startswith("gs://"):
            fix = "choose a writable folder with --lake or MDTH_LAKE"
        return Check(
            "lake", "fail", f"{url}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", fix
        )
    return Check("lake", "ok" if ok else "fail", f"{url} is writable" if ok else f"{url}: read back differs")


def check_warehouse(settings: Settings) -> Check:
    url = settings.warehouse_url()
    try:
        from mdth_engine.warehouse.url import parse_warehouse_url

        parsed = parse_warehouse_url(url, default_project=settings.gcp_project)
    except Exception as exc:
        return Check("warehouse", "fail", f"{url}: {exc}", "use duckdb:///path or bigquery://project/dataset")
    if parsed.kind == "duckdb" and parsed.path is not None:
        folder = parsed.path.expanduser().resolve().parent
        while not folder.exists():
            folder = folder.parent
        import os

        if not os.access(folder, os.W_OK):
            return Check(
                "warehouse", "fail", f"{parsed.display}: {folder} is not writable", "set MDTH_WAREHOUSE"
            )
    return Check("warehouse", "ok", f"{parsed.display} ({parsed.kind})")


def run_checks(settings: Settings, *, timeout: float = 5.0) -> list[Check]:
    return [
        Check("settings", "ok", f"lake {settings.lake}"),
        check_key(settings),
        check_tardis_api(settings, timeout),
        check_tardis_datasets(settings, timeout),
        check_lake(settings),
        check_warehouse(settings),
    ]


def as_rows(checks: list[Check]) -> list[dict[str, Any]]:
    return [dataclasses.asdict(c) for c in checks]
