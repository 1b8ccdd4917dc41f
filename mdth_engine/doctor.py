"""`mdth doctor`: checks settings, credentials, the Tardis endpoints, the lake and the warehouse, and says what to fix."""

from __future__ import annotations

import dataclasses
import os
import secrets
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from mdth_engine.core.settings import Settings, SettingsError, unknown_config_keys

BIGQUERY_FIX = (
    "gcloud auth application-default login, or a service account with roles/bigquery.dataEditor + "
    "roles/bigquery.jobUser"
)


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


def check_settings(load: Callable[[], Settings]) -> tuple[Settings | None, Check]:
    """Load the settings: a bad value fails the row (nothing else can be checked), unknown mdth.toml keys warn."""
    try:
        settings = load()
    except SettingsError as exc:
        return None, Check(
            "settings",
            "fail",
            str(exc),
            "correct the value where it is set (that environment variable or mdth.toml key), "
            "or unset it for the default",
        )
    unknown = unknown_config_keys()
    if unknown:
        return settings, Check(
            "settings", "warn", "; ".join(unknown), "rename or remove the key in mdth.toml: it has no effect"
        )
    return settings, Check("settings", "ok", f"lake {settings.lake}")


def check_warehouse(settings: Settings, timeout: float = 5.0) -> Check:
    url = settings.warehouse_url()
    try:
        from mdth_engine.warehouse.url import parse_warehouse_url

        parsed = parse_warehouse_url(url, default_project=settings.gcp_project)
    except Exception as exc:
        return Check("warehouse", "fail", f"{url}: {exc}", "use duckdb:///path or bigquery://project/dataset")
    if parsed.kind == "bigquery":
        return check_bigquery(parsed, timeout)
    if parsed.path is not None:
        folder = parsed.path.expanduser().resolve().parent
        while not folder.exists():
            folder = folder.parent
        if not os.access(folder, os.W_OK):
            return Check(
                "warehouse", "fail", f"{parsed.display}: {folder} is not writable", "set MDTH_WAREHOUSE"
            )
    return Check("warehouse", "ok", f"{parsed.display} ({parsed.kind})")


def check_bigquery(parsed: Any, timeout: float) -> Check:
    """Credentials load and the dataset answers, with the client and endpoint an upload would use."""
    try:
        import google.auth
        from google.api_core import exceptions as api
        from google.auth.exceptions import DefaultCredentialsError, GoogleAuthError
    except ImportError:
        return Check("warehouse", "fail", f"{parsed.display}: the Google Cloud clients are not installed",
                     "pip install 'mdth[gcp]'")  # fmt: skip

    from mdth_engine.warehouse.bigquery import BigQueryWarehouse, api_error_line

    name = f"{parsed.project}.{parsed.dataset}"
    credentials = (
        None  # a plain-http endpoint is a loopback stand-in: the warehouse sends no credentials there
    )
    if not (parsed.endpoint or "").startswith("http://"):
        try:
            credentials, _ = google.auth.default()
        except DefaultCredentialsError:
            return Check("warehouse", "fail", f"{parsed.display}: no Google credentials found", BIGQUERY_FIX)
    warehouse = BigQueryWarehouse(
        parsed.project, parsed.dataset, parsed.location, endpoint=parsed.endpoint, credentials=credentials
    )
    who = getattr(credentials, "service_account_email", None) or "your account"
    try:
        dataset = warehouse.client.get_dataset(name, retry=None, timeout=timeout)
    except api.NotFound:
        return Check(
            "warehouse",
            "warn",
            f"{parsed.display}: dataset {name} does not exist yet",
            f"the first `mdth upload` creates it if {who} has roles/bigquery.dataEditor on {parsed.project}",
        )
    except (api.Forbidden, api.Unauthorized, GoogleAuthError) as exc:
        return Check(
            "warehouse", "fail", f"{parsed.display}: access refused: {api_error_line(exc)}", BIGQUERY_FIX
        )
    except Exception as exc:  # network, endpoint, timeout: say which and where it pointed
        where = parsed.endpoint or "bigquery.googleapis.com"
        return Check(
            "warehouse",
            "fail",
            f"{parsed.display}: {where}: {api_error_line(exc)}",
            "check the network, and MDTH_BIGQUERY_API_ENDPOINT / endpoint= if set",
        )
    if parsed.location and dataset.location and dataset.location.upper() != parsed.location.upper():
        return Check(
            "warehouse",
            "fail",
            f"{parsed.display}: dataset {name} is in {dataset.location}",
            f"use ?location={dataset.location} in MDTH_WAREHOUSE, or another dataset",
        )
    return Check("warehouse", "ok", f"{parsed.display}: dataset {name} answers (location {dataset.location})")


def run_checks(load: Callable[[], Settings], *, timeout: float = 5.0) -> list[Check]:
    """Every check; ``load`` gives the settings, so a bad setting is a failing row instead of an exit."""
    settings, first = check_settings(load)
    if settings is None:
        return [first]
    return [
        first,
        check_key(settings),
        check_tardis_api(settings, timeout),
        check_tardis_datasets(settings, timeout),
        check_lake(settings),
        check_warehouse(settings, timeout),
    ]


def as_rows(checks: list[Check]) -> list[dict[str, Any]]:
    return [dataclasses.asdict(c) for c in checks]
