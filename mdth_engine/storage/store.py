"""The object store every lake read and write goes through: one contract, a local folder or a GCS bucket.

Paths are relative to the store root and ``/``-separated. Writes are atomic (a reader sees the old object or
the new one, never a part), missing objects raise ``NotFound``, other failures ``StoreError`` with one line.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import errno
import io
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

from mdth_engine.core.errors import StoreError, UsageError
from mdth_engine.storage.layout import is_temp_name

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")


@dataclasses.dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What a listing or a write reports about one object; ``generation`` changes whenever it is replaced."""

    path: str
    size: int
    updated: dt.datetime  # UTC
    generation: str | None = None


class Staged:
    """A local file that becomes the object at ``path`` on ``commit()`` (atomically), or vanishes on ``abort()``.

    Used as a context manager: commit on a clean exit, abort (and re-raise) on an exception.
    """

    def __init__(
        self, path: str, local_path: Path, commit: Callable[[], ObjectInfo], abort: Callable[[], None]
    ) -> None:
        self.path = path
        self.local_path = local_path
        self.info: ObjectInfo | None = None
        self._commit = commit
        self._abort = abort
        self._done = False

    def commit(self) -> ObjectInfo:
        if self._done:
            raise StoreError(f"staged write of {self.path} already finished")
        self._done = True
        try:
            self.info = self._commit()
        except BaseException:
            self._abort()
            raise
        return self.info

    def abort(self) -> None:
        if not self._done:
            self._done = True
            self._abort()

    def __enter__(self) -> Staged:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


@runtime_checkable
class ObjectStore(Protocol):
    """The storage contract of the lake (DESIGN.md section 4); LocalStore and GCSStore implement it."""

    @property
    def url(self) -> str: ...

    @property
    def bytes_read(self) -> int:
        """Bytes fetched by get_bytes/get_range/get_tail/open_read so far (tests check ranged reads)."""
        ...

    def put_bytes(self, path: str, data: bytes) -> ObjectInfo: ...

    def put_file(self, path: str, local_file: Path) -> ObjectInfo: ...

    def put_if_absent(self, path: str, data: bytes) -> bool: ...

    def stage(self, path: str, spool_dir: Path | None = None) -> Staged:
        """A local file to write into that is published atomically at ``path`` on commit."""
        ...

    def get_bytes(self, path: str) -> bytes: ...

    def get_range(self, path: str, start: int, length: int) -> bytes: ...

    def get_tail(self, path: str, length: int) -> bytes:
        """The last ``length`` bytes (fewer if the object is smaller), in one request."""
        ...

    def open_read(self, path: str) -> BinaryIO: ...

    def stat(self, path: str) -> ObjectInfo | None: ...

    def exists(self, path: str) -> bool: ...

    def list(self, prefix: str = "", recursive: bool = True) -> Iterator[ObjectInfo]: ...

    def delete(self, path: str) -> None: ...

    def local_path(self, path: str) -> Path | None: ...

    def join(self, path: str) -> str: ...

    def sweep_temp(self, older_than_s: float = 3600.0) -> list[str]: ...


class SeekableRaw(io.RawIOBase):
    """The position bookkeeping of a read-only, seekable view of an object of known size; subclasses read."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._pos = base + offset
        return self._pos


class ReadCounter:
    """A thread-safe byte counter for ``bytes_read``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0

    def add(self, n: int) -> None:
        with self._lock:
            self.value += n


def check_path(path: str) -> str:
    """An object path relative to the root: no leading ``/``, no empty, ``.`` or ``..`` parts, no temp names."""
    if not isinstance(path, str) or not path or path.startswith("/") or "\\" in path or "\x00" in path:
        raise UsageError(f"invalid object path {path!r}: must be a relative '/'-separated path")
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise UsageError(f"invalid object path {path!r}: empty, '.' or '..' part")
    if is_temp_name(parts[-1]):
        raise UsageError(f"invalid object path {path!r}: the name is reserved for temp files")
    return path


def check_prefix(prefix: str) -> str:
    """A listing prefix: empty, or a path start (may end with ``/``)."""
    if prefix == "":
        return prefix
    check_path(prefix.rstrip("/") or "x")
    if prefix.startswith("/"):
        raise UsageError(f"invalid list prefix {prefix!r}: must be relative")
    return prefix


def os_store_error(exc: BaseException, action: str, where: str) -> StoreError:
    """One-line StoreError for an OS-level failure; disk full gets its own words."""
    text = str(exc)
    if getattr(exc, "errno", None) == errno.ENOSPC or "No space left" in text:
        return StoreError(f"no space left {action} {where}")
    if getattr(exc, "errno", None) == errno.EDQUOT or "quota exceeded" in text.lower():
        return StoreError(f"disk quota exceeded {action} {where}")
    if isinstance(exc, PermissionError):
        return StoreError(f"permission denied {action} {where}")
    reason = getattr(exc, "strerror", None) or (text.splitlines()[0] if text else type(exc).__name__)
    return StoreError(f"failed {action} {where}: {reason}")


def open_store(url: str, *, project: str | None = None) -> ObjectStore:
    """The store for a lake URL: a folder or ``file://`` path -> LocalStore, ``gs://bucket/prefix`` -> GCSStore.

    Cheap: no folder is created and no client is built until the first operation.
    """
    if not isinstance(url, str) or not url.strip():
        raise UsageError("empty lake URL: give a folder or gs://bucket/prefix")
    url = url.strip()
    match = _SCHEME.match(url)
    scheme = match.group(1).lower() if match else ""
    if scheme == "gs":
        from mdth_engine.storage.gcs import GCSStore

        bucket, _, prefix = url[len("gs://") :].partition("/")
        if not _BUCKET.match(bucket) or ".." in bucket:
            raise UsageError(f"invalid lake URL {url!r}: {bucket!r} is not a valid bucket name")
        prefix = prefix.strip("/")
        if prefix:
            try:
                check_path(prefix)
            except UsageError:
                raise UsageError(f"invalid lake URL {url!r}: bad prefix {prefix!r}") from None
        return GCSStore(bucket, prefix, project=project)
    if scheme == "file":
        rest = url[len("file://") :]
        host, sep, tail = rest.partition("/")
        if host not in ("", "localhost") or not sep:
            raise UsageError(f"invalid lake URL {url!r}: use file:///absolute/path")
        return _local(Path("/" + tail), url)
    if scheme:
        raise UsageError(f"unsupported lake URL {url!r}: use a folder, file:///path or gs://bucket/prefix")
    return _local(Path(url).expanduser(), url)


def _local(path: Path, url: str) -> ObjectStore:
    from mdth_engine.storage.local import LocalStore

    if path.exists() and not path.is_dir():
        raise UsageError(f"lake path {url!r} is a file, not a folder")
    return LocalStore(path)
