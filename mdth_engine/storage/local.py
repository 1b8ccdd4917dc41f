"""A lake in a local folder: atomic writes by temp file + fsync + rename in the same folder.

Temp files are named ``.{name}.tmp-{host}-{pid}-{random}`` (``layout.is_temp_name``); listings skip them and
``sweep_temp`` removes the ones killed writers left behind: at once when the writer was a process of this host
that is gone, by age otherwise. Nothing else is ever deleted except by ``delete``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import functools
import hashlib
import io
import os
import re
import secrets
import shutil
import socket
import stat as stat_mod
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from mdth_engine.core.errors import NotFound, StoreError
from mdth_engine.storage.layout import is_temp_name
from mdth_engine.storage.store import (
    ObjectInfo,
    ReadCounter,
    Staged,
    check_path,
    check_prefix,
    os_store_error,
)

_READ_BUFFER = 64 * 1024
# ``.{name}.tmp-{host}-{pid}-{12 hex}``; older names (``.tmp-{hex}``) carry no writer and go by age only.
_TEMP_WRITER = re.compile(r"\.tmp-(?P<host>[A-Za-z0-9_-]+)-(?P<pid>\d+)-[0-9a-f]{12}$")


@functools.cache
def host_tag() -> str:
    """Which machine and pid namespace a temp file's writer ran in, as temp names carry it: the host name (no
    dots: a name may hold ``.tmp-``; at most 20 characters) and a digest of the boot id and pid namespace, so a
    cloned VM or a container sharing the host name never passes for this one."""
    name = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:20] or "host"
    identity = socket.gethostname()
    with contextlib.suppress(OSError):
        identity += Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    with contextlib.suppress(OSError):
        identity += str(os.stat("/proc/self/ns/pid").st_ino)
    return f"{name}_{hashlib.sha256(identity.encode()).hexdigest()[:8]}"


def pid_alive(pid: int) -> bool:
    """Whether a process with that id runs on this host (another user's counts; a zombie does not)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # killed but not yet reaped by its parent: it writes nothing any more
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True  # no /proc (macOS): signal 0 is all there is


def temp_writer(name: str) -> tuple[str, int] | None:
    """(host, pid) of the writer a temp name carries, or None for an older name."""
    match = _TEMP_WRITER.search(name.rsplit("/", 1)[-1])
    return (match["host"], int(match["pid"])) if match else None


def writer_gone(name: str, mtime: float, cutoff: float, host: str) -> bool:
    """A leftover to remove: its writer was a process of this host that no longer exists, or (any writer, on
    another host or unnamed) it was last written before ``cutoff``."""
    writer = temp_writer(name)
    dead_here = writer is not None and writer[0] == host and not pid_alive(writer[1])
    return dead_here or mtime <= cutoff


class _CountingFileIO(io.FileIO):
    """A raw file that counts the bytes it reads into the store's ``bytes_read``."""

    def __init__(self, path: Path, counter: ReadCounter) -> None:
        super().__init__(path, "rb")
        self._counter = counter

    def readinto(self, buffer):  # type: ignore[no-untyped-def, override]
        n = super().readinto(buffer)
        if n:
            self._counter.add(n)
        return n

    def read(self, size: int = -1) -> bytes:  # FileIO.read does not go through readinto
        data = super().read(size)
        if data:
            self._counter.add(len(data))
        return data

    def readall(self) -> bytes:
        data = super().readall()
        self._counter.add(len(data))
        return data


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quiet(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _info(rel: str, st: os.stat_result) -> ObjectInfo:
    updated = dt.datetime.fromtimestamp(st.st_mtime_ns / 1e9, tz=dt.UTC)
    return ObjectInfo(path=rel, size=st.st_size, updated=updated, generation=f"{st.st_mtime_ns}-{st.st_ino}")


class LocalStore:
    """ObjectStore over a folder; safe across threads and processes sharing the folder."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).expanduser().absolute()
        self._read = ReadCounter()

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    @property
    def url(self) -> str:
        return str(self.root)

    @property
    def bytes_read(self) -> int:
        return self._read.value

    # --- writes -------------------------------------------------------------------------------------------

    def _target(self, path: str) -> Path:
        return self.root / check_path(path)

    def _new_temp(self, target: Path) -> Path:
        """Reserve a fresh temp file next to ``target`` (created exclusively, so it is ours)."""
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            while True:
                temp = target.with_name(
                    f".{target.name}.tmp-{host_tag()}-{os.getpid()}-{secrets.token_hex(6)}"
                )
                try:
                    os.close(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
                    return temp
                except FileExistsError:
                    continue
        except OSError as exc:
            if isinstance(exc, NotADirectoryError) or exc.errno == errno.EEXIST:
                raise StoreError(f"cannot write {target}: a parent of it is a file") from exc
            raise os_store_error(exc, "writing", str(target)) from exc

    def _publish(self, temp: Path, target: Path, path: str) -> ObjectInfo:
        """fsync the temp file, rename it over the target, fsync the folder."""
        try:
            _fsync_file(temp)
            os.replace(temp, target)
            _fsync_dir(target.parent)
            return _info(path, target.stat())
        except OSError as exc:
            if isinstance(exc, IsADirectoryError):
                raise StoreError(f"cannot write {target}: it is a folder") from exc
            raise os_store_error(exc, "writing", path) from exc

    def stage(self, path: str, spool_dir: Path | None = None) -> Staged:
        """The temp file lives next to its target (``spool_dir`` is ignored) so the rename is atomic."""
        target = self._target(path)
        temp = self._new_temp(target)
        return Staged(path, temp, lambda: self._publish(temp, target, path), lambda: _unlink_quiet(temp))

    def put_bytes(self, path: str, data: bytes) -> ObjectInfo:
        with self.stage(path) as staged:
            try:
                with open(staged.local_path, "wb") as f:
                    f.write(data)
            except OSError as exc:
                raise os_store_error(exc, "writing", path) from exc
        assert staged.info is not None
        return staged.info

    def put_file(self, path: str, local_file: Path) -> ObjectInfo:
        source = Path(local_file)
        if not source.is_file():
            raise NotFound(f"no such local file {source}")
        with self.stage(path) as staged:
            try:
                shutil.copyfile(source, staged.local_path)  # sendfile/copy_file_range: streams, no RAM copy
            except OSError as exc:
                raise os_store_error(exc, "writing", path) from exc
        assert staged.info is not None
        return staged.info

    def put_if_absent(self, path: str, data: bytes) -> bool:
        """Write the whole temp file first, then hard-link it into place: exactly one racing writer wins."""
        target = self._target(path)
        temp = self._new_temp(target)
        try:
            try:
                with open(temp, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                try:
                    os.link(temp, target)
                except FileExistsError:
                    return False
                except OSError as exc:
                    if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                        raise
                    return self._create_exclusive(target, data)  # filesystem without hard links
                _fsync_dir(target.parent)
                return True
            except OSError as exc:
                raise os_store_error(exc, "writing", path) from exc
        finally:
            _unlink_quiet(temp)

    @staticmethod
    def _create_exclusive(target: Path, data: bytes) -> bool:
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return True

    def delete(self, path: str) -> None:
        target = self._target(path)
        try:
            os.unlink(target)
        except FileNotFoundError:
            pass
        except IsADirectoryError as exc:
            raise StoreError(f"cannot delete {target}: it is a folder") from exc
        except OSError as exc:
            raise os_store_error(exc, "deleting", path) from exc

    def sweep_temp(self, older_than_s: float = 3600.0) -> list[str]:
        """Remove temp files killed writers left: a dead process of this host's at once, any other once
        untouched for ``older_than_s``; returns their paths."""
        cutoff = time.time() - older_than_s
        host = host_tag()
        removed: list[str] = []
        for rel, entry in self._walk(""):
            if not is_temp_name(rel):
                continue
            try:
                if writer_gone(rel, entry.stat(follow_symlinks=False).st_mtime, cutoff, host):
                    os.unlink(entry.path)
                    removed.append(rel)
            except FileNotFoundError:
                continue  # its writer finished or another sweeper got it
        return sorted(removed)

    # --- reads --------------------------------------------------------------------------------------------

    def _open(self, path: str) -> BinaryIO:
        target = self._target(path)
        try:
            return _CountingFileIO(target, self._read)  # type: ignore[return-value]
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFound(f"no such object {target}") from None
        except OSError as exc:
            raise os_store_error(exc, "reading", path) from exc

    def get_bytes(self, path: str) -> bytes:
        with self._open(path) as f:
            return f.read()

    def get_range(self, path: str, start: int, length: int) -> bytes:
        if start < 0 or length < 0:
            raise ValueError(f"get_range needs start >= 0 and length >= 0, got {start}, {length}")
        with self._open(path) as f:
            f.seek(start)
            return f.read(length) if length else b""

    def get_tail(self, path: str, length: int) -> bytes:
        if length < 0:
            raise ValueError(f"get_tail needs length >= 0, got {length}")
        with self._open(path) as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - length))
            return f.read(length) if length else b""

    def open_read(self, path: str) -> BinaryIO:
        """A seekable buffered reader; only what is read (plus one buffer) is fetched from disk."""
        return io.BufferedReader(self._open(path), buffer_size=_READ_BUFFER)  # type: ignore[arg-type, return-value]

    def stat(self, path: str) -> ObjectInfo | None:
        target = self._target(path)
        try:
            st = target.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise os_store_error(exc, "reading", path) from exc
        return _info(path, st) if stat_mod.S_ISREG(st.st_mode) else None

    def exists(self, path: str) -> bool:
        return self.stat(path) is not None

    def list(self, prefix: str = "", recursive: bool = True) -> Iterator[ObjectInfo]:
        """Objects whose path starts with ``prefix`` (a string prefix, as on GCS), sorted by path."""
        check_prefix(prefix)
        found: list[ObjectInfo] = []
        for rel, entry in self._walk(prefix, recursive):
            if is_temp_name(rel) or not rel.startswith(prefix):
                continue
            if not recursive and "/" in rel[len(prefix) :]:
                continue
            try:
                found.append(_info(rel, entry.stat()))
            except FileNotFoundError:
                continue  # deleted while listing
        found.sort(key=lambda info: info.path)
        return iter(found)

    def _walk(self, prefix: str, recursive: bool = True) -> Iterator[tuple[str, os.DirEntry[str]]]:
        """(relative path, entry) of every file under the folder ``prefix`` lives in, pruning other folders."""
        base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        stack = [base]
        while stack:
            rel_dir = stack.pop()
            folder = self.root / rel_dir if rel_dir else self.root
            try:
                entries = list(os.scandir(folder))
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError as exc:
                raise os_store_error(exc, "listing", rel_dir or str(self.root)) from exc
            for entry in entries:
                rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
                if entry.is_dir(follow_symlinks=False):
                    if recursive and ((rel + "/").startswith(prefix) or prefix.startswith(rel + "/")):
                        stack.append(rel)
                elif entry.is_file():
                    yield rel, entry

    # --- naming -------------------------------------------------------------------------------------------

    def local_path(self, path: str) -> Path | None:
        return self._target(path)

    def join(self, path: str) -> str:
        return str(self._target(path))
