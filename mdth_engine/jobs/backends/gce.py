"""Shards on Compute Engine: one VM per shard attempt, through the real google-cloud-compute client.

The VM gets the machine type, image, zone, service account and Spot choice from settings, labels naming
the job, shard and attempt, and ``startup.sh`` (next to this module) as its startup script; the script reads the Tardis
key from Secret Manager with the VM's service account (only the secret's *name* is in metadata), runs the
worker, and deletes its own VM when the shard ends.

``MDTH_GCE_API_ENDPOINT`` points the client elsewhere (a loopback stand-in in tests: plain ``http://``
endpoints get anonymous credentials). google-cloud-compute 1.57 waits on operations through an internal
client that ignores ``client_options``, so operations are awaited with our own ZoneOperationsClient.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from mdth_engine import __version__
from mdth_engine.core.errors import MdthError, NotFound, UsageError
from mdth_engine.core.settings import Settings
from mdth_engine.jobs.backends import ALIVE, GONE, PREEMPTED
from mdth_engine.storage import layout

LABEL_JOB, LABEL_SHARD, LABEL_ATTEMPT = "mdth-job", "mdth-shard", "mdth-attempt"
_ALIVE_STATES = frozenset({"PROVISIONING", "STAGING", "RUNNING", "REPAIRING", "PENDING"})
_STOPPED_STATES = frozenset({"STOPPING", "STOPPED", "SUSPENDING", "SUSPENDED", "TERMINATED"})
SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
OPERATION_TIMEOUT_S = 300.0


# Operations whose workers call Tardis: without the key they end unauthorized after paying for the VMs.
KEY_OPERATIONS = frozenset({"download", "instruments", "pipeline"})
NEEDS_KEY_SECRET = (
    "--backend gce needs MDTH_TARDIS_API_KEY_SECRET: the name of the Secret Manager secret holding the Tardis "
    "key (the key itself never goes to a VM)"
)


def check_settings(settings: Settings, operation: str | None = None) -> None:
    """A usage error before any VM exists. The key-secret check runs where the operation is known (creating
    or launching a job); watching, cancelling or cleaning up a job needs no key."""
    if not settings.gcp_project:
        raise UsageError("--backend gce needs a project: set MDTH_GCP_PROJECT (or gcp_project in mdth.toml)")
    if not settings.gcp_zone:
        raise UsageError("--backend gce needs a zone: set MDTH_GCP_ZONE")
    if (
        settings.lake
        and not settings.lake.startswith("gs://")
        and not os.environ.get("MDTH_GCE_API_ENDPOINT")
    ):
        raise UsageError(
            f"--backend gce needs a lake the VMs can reach (gs://bucket/prefix), not {settings.lake}"
        )
    if operation in KEY_OPERATIONS and not settings.tardis_api_key_secret:
        raise UsageError(NEEDS_KEY_SECRET)


def startup_script() -> str:
    """The VMs' startup script: the one shipped in this package, or the file ``MDTH_GCE_STARTUP_SCRIPT`` names."""
    from importlib.resources import files

    named = os.environ.get("MDTH_GCE_STARTUP_SCRIPT")
    if named:
        if not Path(named).is_file():
            raise UsageError(f"MDTH_GCE_STARTUP_SCRIPT names no file: {named}")
        return Path(named).read_text()
    return (files(__package__) / "startup.sh").read_text()


def vm_name(job_id: str, shard: int, attempt: int) -> str:
    """``mdth-{job}-s{shard}-a{attempt}``: a valid, unique instance name (63 characters at most)."""
    tail = f"-s{shard}-a{attempt}"
    return f"mdth-{job_id}"[: 63 - len(tail)].rstrip("-") + tail


def _label(value: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in value.lower())[:63]


class GceBackend:
    name = "gce"
    launch_grace_s = 900.0  # boot, package install and first heartbeat

    def __init__(self, store: Any, settings: Settings, *, status_ttl_s: float | None = None) -> None:
        check_settings(settings)
        self.store = store
        self.settings = settings
        self.project: str = settings.gcp_project  # type: ignore[assignment]
        self.zone = settings.gcp_zone
        self.endpoint = os.environ.get("MDTH_GCE_API_ENDPOINT") or None
        if status_ttl_s is None:
            status_ttl_s = float(os.environ.get("MDTH_GCE_STATUS_TTL", "10"))
        self.status_ttl_s = status_ttl_s
        self._instances_client: Any = None
        self._operations_client: Any = None
        self._listing: tuple[float, str, list[Any]] | None = None

    # --- clients --------------------------------------------------------------------------------------------

    def _client_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"transport": "rest"}
        if self.endpoint:
            from google.api_core.client_options import ClientOptions

            kwargs["client_options"] = ClientOptions(api_endpoint=self.endpoint)
            if self.endpoint.startswith("http://"):
                from google.auth.credentials import AnonymousCredentials

                kwargs["credentials"] = AnonymousCredentials()
        return kwargs

    @property
    def instances(self) -> Any:
        if self._instances_client is None:
            from google.cloud import compute_v1

            self._instances_client = compute_v1.InstancesClient(**self._client_kwargs())
        return self._instances_client

    @property
    def operations(self) -> Any:
        if self._operations_client is None:
            from google.cloud import compute_v1

            self._operations_client = compute_v1.ZoneOperationsClient(**self._client_kwargs())
        return self._operations_client

    def _wait(self, operation: Any, what: str) -> None:
        """Poll the zone operation with our own client until DONE; its error becomes one line."""
        deadline = time.monotonic() + OPERATION_TIMEOUT_S
        op = operation
        delay = 0.2
        while _enum_name(getattr(op, "status", "")) != "DONE":
            if time.monotonic() > deadline:
                raise MdthError(
                    f"{what}: operation {operation.name} not done after {OPERATION_TIMEOUT_S:.0f}s"
                )
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
            op = self.operations.get(project=self.project, zone=self.zone, operation=operation.name)
        errors = list(getattr(getattr(op, "error", None), "errors", []) or [])
        if errors:
            first = errors[0]
            raise MdthError(f"{what}: {first.code}: {first.message}")

    # --- the instance ---------------------------------------------------------------------------------------

    def instance_name(self, spec: Any, shard: int, attempt: int) -> str:
        return vm_name(spec.job_id, shard, attempt)

    def instance_body(self, spec: Any, shard: int, attempt: int) -> Any:
        """The Instance resource for one shard attempt (no secret anywhere in it)."""
        from google.cloud import compute_v1

        s = self.settings
        zone = self.zone
        name = vm_name(spec.job_id, shard, attempt)
        items = {
            "startup-script": startup_script(),
            "mdth-job": spec.job_id,
            "mdth-shard": str(shard),
            "mdth-attempt": str(attempt),
            "mdth-lake": self.store.url,
            "mdth-version": __version__,
            "mdth-pip-spec": s.gce_pip_spec or f"mdth[gcp]=={__version__}",
        }
        if s.tardis_api_key_secret:
            items["mdth-tardis-key-secret"] = (
                s.tardis_api_key_secret
            )  # a name; the key stays in Secret Manager
        if s.gce_worker_image:
            items["mdth-worker-image"] = s.gce_worker_image
        if s.gcp_project:
            items["mdth-project"] = s.gcp_project
        if s.gce_spot:
            scheduling = compute_v1.Scheduling(
                provisioning_model="SPOT",
                instance_termination_action="DELETE",
                automatic_restart=False,
                on_host_maintenance="TERMINATE",
            )
        else:
            scheduling = compute_v1.Scheduling(
                provisioning_model="STANDARD", automatic_restart=True, on_host_maintenance="MIGRATE"
            )
        return compute_v1.Instance(
            name=name,
            machine_type=f"zones/{zone}/machineTypes/{s.gce_machine_type}",
            disks=[
                compute_v1.AttachedDisk(
                    boot=True,
                    auto_delete=True,
                    initialize_params=compute_v1.AttachedDiskInitializeParams(
                        source_image=s.gce_image,
                        disk_size_gb=s.gce_disk_gb,
                        disk_type=f"zones/{zone}/diskTypes/pd-balanced",
                    ),
                )
            ],
            network_interfaces=[
                compute_v1.NetworkInterface(
                    network=s.gce_network,
                    access_configs=[compute_v1.AccessConfig(name="External NAT", type_="ONE_TO_ONE_NAT")],
                )
            ],
            metadata=compute_v1.Metadata(items=[compute_v1.Items(key=k, value=v) for k, v in items.items()]),
            labels={
                "mdth": "worker",
                LABEL_JOB: _label(spec.job_id),
                LABEL_SHARD: str(shard),
                LABEL_ATTEMPT: str(attempt),
            },
            scheduling=scheduling,
            service_accounts=[
                compute_v1.ServiceAccount(email=s.gce_service_account or "default", scopes=list(SCOPES))
            ],
        )

    # --- backend interface ----------------------------------------------------------------------------------

    def launch(self, spec: Any, shard: int, attempt: int) -> dict[str, Any]:
        body = self.instance_body(spec, shard, attempt)
        try:
            op = self.instances.insert_unary(project=self.project, zone=self.zone, instance_resource=body)
        except Exception as exc:
            raise MdthError(f"creating VM {body.name}: {_api_error(exc)}") from None
        self._wait(op, f"creating VM {body.name}")
        self._listing = None
        return {"vm": body.name, "zone": self.zone}

    def job_instances(self, spec: Any, *, fresh: bool = False) -> list[Any]:
        """Every VM labelled with the job (one list call, reused for ``status_ttl_s``)."""
        now = time.monotonic()
        cached = self._listing
        if not fresh and cached and cached[1] == spec.job_id and now - cached[0] < self.status_ttl_s:
            return cached[2]
        flt = f'labels.{LABEL_JOB} = "{_label(spec.job_id)}"'
        try:
            from google.cloud import compute_v1

            request = compute_v1.ListInstancesRequest(project=self.project, zone=self.zone, filter=flt)
            found = list(self.instances.list(request=request))
        except Exception as exc:
            raise MdthError(f"listing VMs of {spec.job_id}: {_api_error(exc)}") from None
        self._listing = (now, spec.job_id, found)
        return found

    def _shard_instances(self, spec: Any, shard: int) -> list[Any]:
        return [i for i in self.job_instances(spec) if dict(i.labels).get(LABEL_SHARD) == str(shard)]

    def status(self, spec: Any, shard: int, record: Any) -> str:
        """ALIVE while the attempt's VM runs; PREEMPTED when it was stopped; GONE once it no longer exists."""
        wanted = getattr(record, "vm", "") or ""
        found = self._shard_instances(spec, shard)
        if wanted:
            found = [i for i in found if i.name == wanted]
        elif found:
            found = [max(found, key=lambda i: int(dict(i.labels).get(LABEL_ATTEMPT, "0") or 0))]
        if not found:
            return GONE
        state = _enum_name(found[0].status)
        if state in _STOPPED_STATES:
            return PREEMPTED
        return ALIVE if state in _ALIVE_STATES or not state else GONE

    def logs(self, spec: Any, shard: int, tail: int | None = None) -> str:
        try:
            text = self.store.get_bytes(layout.job_log_path(spec.job_id, shard)).decode(errors="replace")
        except NotFound:
            return ""
        return "\n".join(text.splitlines()[-tail:]) + "\n" if tail else text

    def _delete(self, name: str) -> None:
        try:
            self.instances.delete_unary(project=self.project, zone=self.zone, instance=name)
        except Exception as exc:
            if "404" in str(exc) or "not found" in str(exc).lower():
                return
            raise MdthError(f"deleting VM {name}: {_api_error(exc)}") from None

    def cancel(self, spec: Any, shard: int, record: Any, *, force: bool = False) -> None:
        """Delete every VM of the shard (not waited for: a relaunch uses a new name)."""
        for inst in self._shard_instances(spec, shard):
            self._delete(inst.name)
        self._listing = None

    def cleanup(self, spec: Any) -> list[str]:
        names = [i.name for i in self.job_instances(spec, fresh=True)]
        for name in names:
            self._delete(name)
        self._listing = None
        return names


def _enum_name(value: Any) -> str:
    """A proto enum's name (``str()`` of an IntEnum is its number on Python 3.11+)."""
    return str(getattr(value, "name", value))


def _api_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]
