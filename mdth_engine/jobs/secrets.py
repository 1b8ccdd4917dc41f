"""The Tardis key for a worker: from the environment, else from Secret Manager by the name in settings.

The VM's startup script normally exports it after reading Secret Manager; this is the worker's own fallback
with the Python client (the VM's service account). The key is only ever held in memory.
"""

from __future__ import annotations

from mdth_engine.core.errors import MdthError
from mdth_engine.core.settings import Settings


def secret_version_name(name: str, project: str | None) -> str:
    """``projects/P/secrets/S/versions/V`` from a full name, ``projects/P/secrets/S`` or a bare ``S``."""
    name = name.strip().strip("/")
    if not name.startswith("projects/"):
        if not project:
            raise MdthError(
                f"secret {name!r} needs a project: set MDTH_GCP_PROJECT or give projects/P/secrets/S"
            )
        name = f"projects/{project}/secrets/{name}"
    if "/versions/" not in name:
        name += "/versions/latest"
    return name


def with_api_key(settings: Settings) -> Settings:
    """``settings`` with the key filled from Secret Manager when it is not set and a secret is named."""
    if settings.api_key() or not settings.tardis_api_key_secret:
        return settings
    from google.cloud import secretmanager
    from pydantic import SecretStr

    name = secret_version_name(settings.tardis_api_key_secret, settings.gcp_project)
    try:
        response = secretmanager.SecretManagerServiceClient().access_secret_version(name=name)
    except Exception as exc:
        raise MdthError(
            f"cannot read the Tardis key from Secret Manager ({name}): {type(exc).__name__}"
        ) from None
    key = response.payload.data.decode().strip()
    return settings.model_copy(update={"tardis_api_key": SecretStr(key)})
