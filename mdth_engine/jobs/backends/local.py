"""Shards as subprocesses on this machine: `python -m mdth_engine.cli worker --job ID --shard I --lake URL`.

Each worker starts in its own session (it survives the terminal and the launching process), writes stdout
and stderr to a log file under the temp folder (the worker also copies it to ``_jobs/{id}/logs/{i}.log``),
and inherits the environment, which carries the key; nothing secret is written anywhere.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from mdth_engine.core.errors import NotFound
from mdth_engine.core.settings import Settings
from mdth_engine.jobs.backends import ALIVE, GONE, UNKNOWN
from mdth_engine.storage import layout

# Workers this process started: (job, shard) -> Popen. Popen.poll() is the only exact liveness test for a
# child (a dead child is a zombie that still answers kill(pid, 0) until reaped).
_CHILDREN: dict[tuple[str, int], subprocess.Popen] = {}
_LOCK = threading.Lock()


def log_dir(job_id: str) -> Path:
    return Path(tempfile.gettempdir()) / "mdth-jobs" / job_id


def worker_command(job_id: str, shard: int, lake: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "mdth_engine.cli",
        "worker",
        "--job",
        job_id,
        "--shard",
        str(shard),
        "--lake",
        lake,
    ]


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X")


def _runs_shard(argv: list[str], job_id: str, shard: int | None) -> bool:
    if "worker" not in argv:
        return False
    pairs = dict(itertools.pairwise(argv))
    return pairs.get("--job") == job_id and (shard is None or pairs.get("--shard") == str(shard))


def find_workers(job_id: str, shard: int | None = None) -> list[int]:
    """Pids of live workers of a job (or one shard) on this machine, found through /proc."""
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    pids = []
    for entry in proc.iterdir():
        if entry.name.isdigit():
            pid = int(entry.name)
            if pid != os.getpid() and _runs_shard(_cmdline(pid), job_id, shard) and not _is_zombie(pid):
                pids.append(pid)
    return sorted(pids)


class LocalBackend:
    name = "local"
    launch_grace_s = 60.0

    def __init__(self, store: Any, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.host = socket.gethostname()

    def instance_name(self, spec: Any, shard: int, attempt: int) -> str:
        return ""

    def launch(self, spec: Any, shard: int, attempt: int) -> dict[str, Any]:
        folder = log_dir(spec.job_id)
        folder.mkdir(parents=True, exist_ok=True)
        log_path = folder / f"{shard}.log"
        env = dict(os.environ)
        env["MDTH_WORKER_LOG"] = str(log_path)
        env["PYTHONUNBUFFERED"] = "1"
        key = self.settings.api_key()
        if key and not (env.get("MDTH_TARDIS_API_KEY") or env.get("TARDIS_API_KEY")):
            env["MDTH_TARDIS_API_KEY"] = key  # handed down in the environment only
        with open(log_path, "ab") as log:
            log.write(
                f"--- attempt {attempt} at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n".encode()
            )
            log.flush()
            proc = subprocess.Popen(
                worker_command(spec.job_id, shard, self.store.url),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        with _LOCK:
            old = _CHILDREN.get((spec.job_id, shard))
            if old is not None:
                with contextlib.suppress(Exception):
                    old.poll()
            _CHILDREN[(spec.job_id, shard)] = proc
        return {"pid": proc.pid, "host": self.host, "log": str(log_path)}

    def _pids(self, spec: Any, shard: int, record: Any) -> list[int]:
        with _LOCK:
            child = _CHILDREN.get((spec.job_id, shard))
        if child is not None and child.poll() is None:
            return [child.pid]
        pids = find_workers(spec.job_id, shard)
        if not pids and record is not None and record.host == self.host and record.pid:
            pid = int(record.pid)
            if not Path("/proc").is_dir():  # no /proc (macOS): signal 0 is the best we have
                with contextlib.suppress(OSError):
                    os.kill(pid, 0)
                    pids = [pid]
        return pids

    def status(self, spec: Any, shard: int, record: Any) -> str:
        with _LOCK:
            child = _CHILDREN.get((spec.job_id, shard))
        if child is not None:
            return ALIVE if child.poll() is None else GONE
        if self._pids(spec, shard, record):
            return ALIVE
        if record is not None and record.host != self.host:
            return UNKNOWN  # another machine's worker (or launcher): only its heartbeat tells
        return GONE

    def logs(self, spec: Any, shard: int, tail: int | None = None) -> str:
        path = log_dir(spec.job_id) / f"{shard}.log"
        try:
            text = path.read_text(errors="replace")
        except OSError:
            try:
                text = self.store.get_bytes(layout.job_log_path(spec.job_id, shard)).decode(errors="replace")
            except NotFound:
                return ""
        return "\n".join(text.splitlines()[-tail:]) + "\n" if tail else text

    def cancel(self, spec: Any, shard: int, record: Any, *, force: bool = False) -> None:
        """SIGTERM (the worker records its state and exits), SIGKILL after 10 s or at once with ``force``."""
        pids = self._pids(spec, shard, record)
        for pid in pids:
            _signal_group(pid, signal.SIGKILL if force else signal.SIGTERM)
            _signal_group(pid, signal.SIGCONT)  # a stopped process handles SIGTERM only once continued
        deadline = time.monotonic() + (2.0 if force else 10.0)
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if _alive(p, spec.job_id, shard)]
            time.sleep(0.05)
        for pid in pids:
            _signal_group(pid, signal.SIGKILL)
        with _LOCK:
            child = _CHILDREN.get((spec.job_id, shard))
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=5)

    def cleanup(self, spec: Any) -> list[str]:
        stopped = []
        for shard in range(spec.shards):
            if self._pids(spec, shard, None):
                self.cancel(spec, shard, None)
                stopped.append(f"shard {shard} process")
        return stopped


def _alive(pid: int, job_id: str, shard: int) -> bool:
    with _LOCK:
        child = _CHILDREN.get((job_id, shard))
    if child is not None and child.pid == pid:
        return child.poll() is None
    if Path("/proc").is_dir():
        return not _is_zombie(pid) and _runs_shard(_cmdline(pid), job_id, shard)
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _signal_group(pid: int, sig: int) -> None:
    """Signal the worker's whole session (it is its own group leader), or the pid alone if that fails."""
    try:
        os.killpg(pid, sig)
    except OSError:
        with contextlib.suppress(OSError):
            os.kill(pid, sig)
