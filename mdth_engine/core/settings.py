"""Settings from ``MDTH_*`` environment variables and an optional ``mdth.toml``; loaded lazily, never at import.

Precedence: command-line overrides > environment > ``mdth.toml`` (or the file ``MDTH_CONFIG`` names) > defaults.
"""

from __future__ import annotations

import difflib
import os
import tomllib
import warnings
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field, SecretStr, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from mdth_engine.core.errors import UsageError

DEFAULT_TARDIS_API_URL = "https://api.tardis.dev/v1"
DEFAULT_TARDIS_DATASETS_URL = "https://datasets.tardis.dev/v1"
_SECRET_FIELDS = frozenset({"tardis_api_key"})  # their values are never quoted in an error
_SHOWN_VALUE = 60  # characters of a bad value quoted in an error


class SettingsError(UsageError):
    """A setting that does not validate, or an unreadable mdth.toml: the message names it and where to fix it."""


class SettingsWarning(UserWarning):
    """Something in mdth.toml that loading ignores (a misspelled key): settings still load."""


def _config_file() -> Path:
    return Path(os.environ.get("MDTH_CONFIG", "mdth.toml"))


class Settings(BaseSettings):
    """What an operator can configure; every field is documented in the README's settings table."""

    model_config = SettingsConfigDict(env_prefix="MDTH_", extra="ignore", populate_by_name=True)

    lake: str = Field("./mdth-lake", description="Lake URL: a folder, or gs://bucket/prefix.")
    tardis_api_url: str = Field(DEFAULT_TARDIS_API_URL, description="Tardis metadata API endpoint.")
    tardis_datasets_url: str = Field(DEFAULT_TARDIS_DATASETS_URL, description="Tardis CSV datasets endpoint.")
    tardis_api_key: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("MDTH_TARDIS_API_KEY", "TARDIS_API_KEY", "tardis_api_key"),
        description="Tardis API key (also read from TARDIS_API_KEY). Never written anywhere.",
    )
    tardis_api_key_secret: str | None = Field(
        None,
        description="Secret Manager name of the Tardis key (projects/P/secrets/S[/versions/V]): VM workers read "
        "the key from it; required by --backend gce for downloads.",
    )
    warehouse: str | None = Field(
        None,
        description="Warehouse URL: duckdb:///path (default: <lake>/warehouse.duckdb, or ./mdth-warehouse.duckdb "
        "for a gs:// lake) or bigquery://project/dataset.",
    )
    gcp_project: str | None = Field(None, description="Google Cloud project for GCS, BigQuery and GCE.")
    gcp_zone: str = Field("europe-west1-b", description="Compute Engine zone for shard VMs.")
    gce_machine_type: str = Field("e2-standard-4", description="Machine type of shard VMs.")
    gce_image: str = Field(
        "projects/debian-cloud/global/images/family/debian-12", description="Boot image of shard VMs."
    )
    gce_service_account: str | None = Field(None, description="Service account email shard VMs run as.")
    gce_spot: bool = Field(True, description="Run shard VMs as Spot VMs.")
    gce_worker_image: str | None = Field(
        None,
        description="Container image with mdth for shard VMs (else the startup script pip-installs mdth).",
    )
    gce_pip_spec: str | None = Field(
        None,
        description="What shard VMs pip-install without a worker image (default: mdth[gcp]==<this version>).",
    )
    gce_disk_gb: int = Field(
        50, ge=10, le=65536, description="Boot disk of shard VMs in GB (pd-balanced); downloads spool there."
    )
    gce_network: str = Field(
        "global/networks/default", description="Network of shard VMs (each gets an ephemeral external IP)."
    )
    concurrency: int = Field(8, ge=1, le=256, description="Work units in flight per worker.")
    unit_timeout_s: float = Field(
        1800,
        ge=1,
        description="Seconds one Tardis file may take to download, retries included, before its unit fails "
        "(raise it for very large files on a slow link).",
    )
    binance_ws_url: str = Field(
        "wss://stream.binance.com:9443", description="Binance spot WebSocket (live streams)."
    )
    binance_futures_ws_url: str = Field(
        "wss://fstream.binance.com", description="Binance USD-M futures WebSocket (live streams)."
    )
    binance_rest_url: str = Field(
        "https://api.binance.com", description="Binance spot REST (klines for cross-source validation)."
    )
    binance_futures_rest_url: str = Field(
        "https://fapi.binance.com",
        description="Binance USD-M futures REST (klines for cross-source validation).",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _config_file()
        if path.is_file():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    def warehouse_url(self) -> str:
        """The configured warehouse, or a DuckDB file inside a local lake."""
        if self.warehouse:
            return self.warehouse
        if self.lake.startswith("gs://"):
            return "duckdb:///./mdth-warehouse.duckdb"
        return f"duckdb:///{Path(self.lake).resolve() / 'warehouse.duckdb'}"

    def api_key(self) -> str | None:
        return self.tardis_api_key.get_secret_value() if self.tardis_api_key else None


def load_settings(**overrides: Any) -> Settings:
    """Settings as configured, with non-None ``overrides`` (command-line options) on top.

    A bad value is a ``SettingsError`` naming each bad setting; an unknown mdth.toml key is a ``SettingsWarning``.
    """
    try:
        settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise SettingsError(describe_invalid(exc)) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SettingsError(
            f"{_config_file()} is not valid TOML: {exc} (fix it, or point MDTH_CONFIG at another file)"
        ) from None
    for line in unknown_config_keys():
        _warn_once(line)
    return settings


def describe_invalid(exc: ValidationError) -> str:
    """One line naming each bad setting, its value and where it is set, from pydantic's error details."""
    parts = []
    for error in exc.errors():
        name = _field_name(str(error["loc"][0]) if error["loc"] else "")
        env = f"MDTH_{name.upper()}"
        value = "(hidden)" if name in _SECRET_FIELDS else repr(_shorten(error.get("input")))
        parts.append(f"{env}={value}: {error['msg']} (env {env} or {_config_file().name} key {name})")
    return "invalid settings: " + "; ".join(parts)


def unknown_config_keys() -> list[str]:
    """One line per mdth.toml key that is no setting (loading ignores it), with the closest valid key."""
    path = _config_file()
    try:
        keys = list(tomllib.loads(path.read_text(encoding="utf-8"))) if path.is_file() else []
    except (OSError, ValueError):  # unreadable or invalid: loading reports that itself
        return []
    known = sorted(Settings.model_fields)
    aliases = {a.lower() for f in Settings.model_fields.values() for a in _aliases(f)}
    lines = []
    for key in keys:
        if key.lower() in known or key.lower() in aliases:  # the file's keys match case-insensitively
            continue
        close = difflib.get_close_matches(key.lower().removeprefix("mdth_"), known, n=1)
        hint = f" (did you mean {close[0]}?)" if close else " (the README's settings table lists the keys)"
        lines.append(f"{path}: unknown key {key!r} is ignored{hint}")
    return lines


def _field_name(key: str) -> str:
    """The field a key or alias names (``MDTH_TARDIS_API_KEY`` and ``TARDIS_API_KEY`` -> ``tardis_api_key``)."""
    name = key.lower().removeprefix("mdth_")
    for field, info in Settings.model_fields.items():
        if name == field or key.lower() in {a.lower() for a in _aliases(info)}:
            return field
    return name


def _aliases(info: Any) -> list[str]:
    return [a for a in getattr(info.validation_alias, "choices", []) if isinstance(a, str)]


def _shorten(value: Any) -> Any:
    text = str(value)
    return value if len(text) <= _SHOWN_VALUE else text[: _SHOWN_VALUE - 3] + "..."


_warned: set[str] = set()  # warnings already given in this process: settings load many times per command


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, SettingsWarning, stacklevel=3)


def settings_table() -> str:
    """The README's settings table, generated from the model so the documentation cannot drift from the code."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        env = f"`MDTH_{name.upper()}`"
        if name == "tardis_api_key":
            env += " / `TARDIS_API_KEY`"
        default = "—" if field.default is None else f"`{field.default}`"
        lines.append(f"| {env} | {default} | {field.description or ''} |")
    return "\n".join(lines)
