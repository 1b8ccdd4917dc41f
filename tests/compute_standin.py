"""A loopback STAND-IN for the Compute Engine REST API, the VM metadata server and Secret Manager.

It is not Google: it implements just what mdth's GCE backend and ``mdth_engine/jobs/backends/startup.sh`` use, and checks the
requests it receives the way the real API would (names, machine type and image paths, labels, decimal
operation ids). The real google-cloud-compute client is pointed at it with ``client_options.api_endpoint``.

"Booting" a VM runs the startup script from the instance's metadata with bash on this machine, with the
metadata, Compute and Secret Manager endpoints pointed back here, so the script really reads its metadata,
fetches the key from the stand-in's Secret Manager with the VM's token, runs the worker and deletes its own
instance. ``preempt(name)`` kills the VM's processes and leaves the instance TERMINATED, as a Spot
preemption does.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_LABEL_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")
_FILTER = re.compile(r'labels\.([a-z0-9_-]+)\s*=\s*"?([a-z0-9_-]*)"?')


class ComputeStandIn:
    """The stand-in server; use as a context manager. ``requests`` logs every call (method, path, body)."""

    def __init__(
        self, project: str = "test-project", zone: str = "europe-west1-b", secrets: dict | None = None
    ):
        self.project, self.zone = project, zone
        self.secrets: dict[str, str] = dict(secrets or {})  # "projects/P/secrets/S" -> value
        self.instances: dict[str, dict[str, Any]] = {}
        self.operations: dict[str, dict[str, Any]] = {}
        self.requests: list[dict[str, Any]] = []
        self.secret_reads: list[dict[str, Any]] = []
        self.self_deletes: list[str] = []
        self.vm_processes: dict[str, subprocess.Popen] = {}
        self.boot = True
        self.boot_env: dict[str, str] = {}
        self.workdir = Path(tempfile.mkdtemp(prefix="compute-standin-"))
        self._ids = itertools.count(1000001)
        self._lock = threading.RLock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    # --- lifecycle -----------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> ComputeStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for name in list(self.vm_processes):
            self._kill_vm(name)
        self._server.shutdown()
        self._server.server_close()
        shutil.rmtree(self.workdir, ignore_errors=True)

    # --- what tests drive ----------------------------------------------------------------------------------------

    def inserts(self) -> list[dict[str, Any]]:
        return [
            r["body"] for r in self.requests if r["method"] == "POST" and r["path"].endswith("/instances")
        ]

    def preempt(self, name: str) -> None:
        """A Spot preemption: the VM's processes die at once and the instance is left TERMINATED."""
        self._kill_vm(name)
        with self._lock:
            self.instances[name]["status"] = "TERMINATED"
            self.instances[name]["lastStopTimestamp"] = _now()

    def wait_vm(self, name: str, timeout: float = 60) -> int | None:
        proc = self.vm_processes.get(name)
        return proc.wait(timeout) if proc else None

    # --- internals -----------------------------------------------------------------------------------------------

    def _kill_vm(self, name: str) -> None:
        proc = self.vm_processes.get(name)
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            proc.wait(10)

    def _operation(self, kind: str, target: str) -> dict[str, Any]:
        op_id = str(next(self._ids))  # decimal: the client's protobuf parsing needs it
        op = {
            "kind": "compute#operation",
            "id": op_id,
            "name": f"operation-{op_id}",
            "zone": f"{self.url}/compute/v1/projects/{self.project}/zones/{self.zone}",
            "operationType": kind,
            "targetLink": target,
            "status": "RUNNING",  # done on the first poll, so the caller must wait on it
            "progress": 0,
            "insertTime": _now(),
            "selfLink": f"{self.url}/compute/v1/projects/{self.project}/zones/{self.zone}/operations/operation-{op_id}",
        }
        self.operations[op["name"]] = op
        return op

    def _validate_insert(self, body: dict[str, Any]) -> str:
        name = body.get("name", "")
        if not _NAME.match(name):
            return f"Invalid value for field 'resource.name': '{name}'"
        if name in self.instances:
            return f"409:The resource 'projects/{self.project}/zones/{self.zone}/instances/{name}' already exists"
        if not re.match(rf"^zones/{self.zone}/machineTypes/[a-z0-9-]+$", body.get("machineType", "")):
            return f"Invalid value for field 'resource.machineType': '{body.get('machineType')}'"
        disks = body.get("disks") or []
        if not any(d.get("boot") and d.get("initializeParams", {}).get("sourceImage") for d in disks):
            return "Invalid value for field 'resource.disks': a boot disk with a source image is required"
        for key, value in (body.get("labels") or {}).items():
            if not _LABEL_KEY.match(key) or not _LABEL_VALUE.match(str(value)):
                return f"Invalid value for field 'resource.labels': '{key}={value}'"
        if not body.get("networkInterfaces"):
            return "Invalid value for field 'resource.networkInterfaces': at least one is required"
        return ""

    def _boot(self, name: str) -> None:
        """Run the instance's startup script as this VM: metadata, Compute and Secret Manager point back here."""
        items = {
            i["key"]: i.get("value", "") for i in self.instances[name].get("metadata", {}).get("items", [])
        }
        script = items.get("startup-script")
        if not script:
            return
        vm_dir = self.workdir / name
        vm_dir.mkdir(parents=True, exist_ok=True)
        (vm_dir / "startup.sh").write_text(script)
        env = {k: v for k, v in os.environ.items() if k not in ("MDTH_TARDIS_API_KEY", "TARDIS_API_KEY")}
        env.update(
            {
                "MDTH_METADATA_URL": f"{self.url}/_vm/{name}/computeMetadata/v1",
                "MDTH_COMPUTE_API": f"{self.url}/compute/v1",
                "MDTH_SECRETMANAGER_API": f"{self.url}/secretmanager/v1",
                "MDTH_WORKER_PYTHON": sys.executable,
                "MDTH_LOG_DIR": str(vm_dir / "log"),
                "MDTH_NO_SHUTDOWN": "1",
                **self.boot_env,
            }
        )
        with open(vm_dir / "serial.log", "ab") as serial:
            self.vm_processes[name] = subprocess.Popen(
                ["bash", str(vm_dir / "startup.sh")],
                env=env,
                stdout=serial,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, code: int, obj: Any, ctype: str = "application/json") -> None:
                data = obj.encode() if isinstance(obj, str) else json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _error(self, code: int, message: str) -> None:
                self._reply(
                    code, {"error": {"code": code, "message": message, "errors": [{"message": message}]}}
                )

            def _body(self) -> dict[str, Any]:
                n = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(n) or b"{}") if n else {}

            def do_GET(self) -> None:
                self._route("GET")

            def do_POST(self) -> None:
                self._route("POST")

            def do_DELETE(self) -> None:
                self._route("DELETE")

            def _route(self, method: str) -> None:
                parts = urlsplit(self.path)
                path, query = unquote(parts.path), parse_qs(parts.query)
                body = self._body() if method == "POST" else {}
                with standin._lock:
                    standin.requests.append(
                        {
                            "method": method,
                            "path": path,
                            "query": query,
                            "body": body,
                            "auth": self.headers.get("Authorization", ""),
                        }
                    )
                    try:
                        if path.startswith("/_vm/"):
                            return self._metadata(path)
                        if path.startswith("/secretmanager/v1/"):
                            return self._secret(path)
                        if path.startswith("/compute/v1/"):
                            return self._compute(method, path, query, body)
                    except Exception as exc:  # a bug in the stand-in must show, not hang the client
                        return self._error(500, f"stand-in error: {exc!r}")
                self._error(404, f"no such endpoint {path}")

            # the VM metadata server ------------------------------------------------------------------------------
            def _metadata(self, path: str) -> None:
                m = re.match(r"^/_vm/([^/]+)/computeMetadata/v1/(.*)$", path)
                if not m or self.headers.get("Metadata-Flavor") != "Google":
                    return self._error(403, "missing Metadata-Flavor: Google")
                name, what = m.group(1), m.group(2)
                inst = standin.instances.get(name)
                if inst is None:
                    return self._error(404, "no such instance")
                if what == "instance/name":
                    return self._reply(200, name, "text/plain")
                if what == "instance/zone":
                    return self._reply(200, f"projects/123456789/zones/{standin.zone}", "text/plain")
                if what == "project/project-id":
                    return self._reply(200, standin.project, "text/plain")
                if what == "instance/service-accounts/default/token":
                    return self._reply(
                        200,
                        {"access_token": f"standin-token-{name}", "expires_in": 3599, "token_type": "Bearer"},
                    )
                if what.startswith("instance/attributes/"):
                    key = what.split("/", 2)[2]
                    for item in inst.get("metadata", {}).get("items", []):
                        if item["key"] == key:
                            return self._reply(200, item.get("value", ""), "text/plain")
                    return self._error(404, f"no attribute {key}")
                return self._error(404, f"metadata {what} not served by the stand-in")

            def _vm_of_token(self) -> str:
                auth = self.headers.get("Authorization", "")
                return (
                    auth.removeprefix("Bearer standin-token-")
                    if auth.startswith("Bearer standin-token-")
                    else ""
                )

            # Secret Manager --------------------------------------------------------------------------------------
            def _secret(self, path: str) -> None:
                m = re.match(
                    r"^/secretmanager/v1/(projects/[^/]+/secrets/[^/]+)/versions/([^/:]+):access$", path
                )
                if not m:
                    return self._error(404, "not found")
                vm = self._vm_of_token()
                if not vm:
                    return self._error(401, "Request had invalid authentication credentials.")
                value = standin.secrets.get(m.group(1))
                if value is None:
                    return self._error(404, f"Secret [{m.group(1)}] not found or has no versions.")
                standin.secret_reads.append({"vm": vm, "secret": m.group(1), "version": m.group(2)})
                self._reply(
                    200,
                    {
                        "name": f"{m.group(1)}/versions/1",
                        "payload": {"data": base64.b64encode(value.encode()).decode()},
                    },
                )

            # Compute Engine --------------------------------------------------------------------------------------
            def _compute(self, method: str, path: str, query: dict, body: dict) -> None:
                prefix = f"/compute/v1/projects/{standin.project}/zones/{standin.zone}/"
                if not path.startswith(prefix):
                    return self._error(404, f"unknown project or zone in {path}")
                rest = path[len(prefix) :]
                if rest == "instances" and method == "POST":
                    problem = standin._validate_insert(body)
                    if problem:
                        code, _, text = (
                            problem.partition(":") if problem.startswith("409:") else ("400", "", problem)
                        )
                        return self._error(int(code), text)
                    inst = dict(body)
                    inst.update(
                        {
                            "kind": "compute#instance",
                            "id": str(next(standin._ids)),
                            "status": "PROVISIONING",
                            "zone": f"{standin.url}/compute/v1/projects/{standin.project}/zones/{standin.zone}",
                            "selfLink": f"{standin.url}{prefix}instances/{body['name']}",
                            "creationTimestamp": _now(),
                        }
                    )
                    standin.instances[body["name"]] = inst
                    op = standin._operation("insert", inst["selfLink"])
                    if standin.boot:
                        standin._boot(body["name"])
                    inst["status"] = "RUNNING"
                    return self._reply(200, op)
                if rest == "instances" and method == "GET":
                    items = list(standin.instances.values())
                    for key, value in _FILTER.findall((query.get("filter") or [""])[0]):
                        items = [i for i in items if (i.get("labels") or {}).get(key) == value]
                    return self._reply(200, {"kind": "compute#instanceList", "id": "list", "items": items})
                m = re.match(r"^instances/([^/]+)$", rest)
                if m and method == "GET":
                    inst = standin.instances.get(m.group(1))
                    return (
                        self._reply(200, inst)
                        if inst
                        else self._error(404, f"instance {m.group(1)} not found")
                    )
                if m and method == "DELETE":
                    name = m.group(1)
                    if name not in standin.instances:
                        return self._error(404, f"The resource '{prefix}instances/{name}' was not found")
                    if self._vm_of_token() == name:
                        standin.self_deletes.append(name)
                    else:
                        threading.Thread(target=standin._kill_vm, args=(name,), daemon=True).start()
                    del standin.instances[name]
                    return self._reply(200, standin._operation("delete", f"{prefix}instances/{name}"))
                m = re.match(r"^operations/([^/]+?)(/wait)?$", rest)
                if m:
                    op = standin.operations.get(m.group(1))
                    if op is None:
                        return self._error(404, f"operation {m.group(1)} not found")
                    op.update({"status": "DONE", "progress": 100, "endTime": _now()})
                    return self._reply(200, op)
                return self._error(404, f"no such compute call {method} {rest}")

        return Handler


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000-00:00", time.gmtime())
