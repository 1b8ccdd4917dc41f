"""A lake in a GCS bucket (google-cloud-storage, imported lazily: the client is built on the first call).

An object appears whole when its upload finishes, so replace is atomic by nature; create-if-absent uses
``if_generation_match=0`` on the simple (multipart) upload path. ``STORAGE_EMULATOR_HOST`` points the client
at an emulator, with anonymous credentials and a placeholder project.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import mimetypes
import os
import secrets
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from mdth_engine.core.errors import NotFound, StoreError
from mdth_engine.storage.layout import is_temp_name
from mdth_engine.storage.store import (
    ObjectInfo,
    ReadCounter,
    SeekableRaw,
    Staged,
    check_path,
    check_prefix,
    os_store_error,
)

DEFAULT_UPLOAD_CHUNK = 16 * 1024 * 1024  # resumable upload chunk (files above the client's 8 MiB single shot)
DEFAULT_READ_CHUNK = 256 * 1024  # open_read buffer: each miss fetches one ranged GET of this size
_GRANULE = 256 * 1024  # GCS requires resumable chunks in multiples of 256 KiB
_WRITER_KEY = "mdth-writer"  # custom metadata naming the put_if_absent call that created an object
_EMULATOR_PROJECT = "mdth-emulator"
_POOL_SIZE = 64


class _RangedRaw(SeekableRaw):
    """A seekable raw reader of one object generation: every ``readinto`` is one ranged GET."""

    def __init__(self, store: GCSStore, path: str, size: int, generation: int | None) -> None:
        super().__init__(size)
        self._store, self._path, self._generation = store, path, generation

    def readinto(self, buffer: Any) -> int:
        want = min(len(buffer), self._size - self._pos)
        if want <= 0:
            return 0
        data = self._store._fetch(self._path, self._pos, want, self._generation)
        if not data:
            raise StoreError(f"{self._store.join(self._path)} changed while being read")
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)


class GCSStore:
    """ObjectStore over ``gs://bucket/prefix``; thread-safe, one lazily built client per store."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        project: str | None = None,
        upload_chunk_size: int = DEFAULT_UPLOAD_CHUNK,
        read_chunk_size: int = DEFAULT_READ_CHUNK,
        timeout: float = 120.0,
    ) -> None:
        if upload_chunk_size <= 0 or upload_chunk_size % _GRANULE:
            raise ValueError(f"upload_chunk_size must be a positive multiple of {_GRANULE}")
        self.bucket_name = bucket
        self.prefix = prefix.strip("/")
        self._root = f"{self.prefix}/" if self.prefix else ""
        self._project = project
        self.upload_chunk_size = upload_chunk_size
        self.read_chunk_size = read_chunk_size
        self._timeout = timeout
        self._read = ReadCounter()
        self._lock = threading.Lock()
        self._client: Any = None
        self._bucket: Any = None

    def __repr__(self) -> str:
        return f"GCSStore({self.url!r})"

    @property
    def url(self) -> str:
        return f"gs://{self.bucket_name}/{self.prefix}" if self.prefix else f"gs://{self.bucket_name}"

    @property
    def bytes_read(self) -> int:
        return self._read.value

    # --- client -------------------------------------------------------------------------------------------

    def _get_bucket(self) -> Any:
        if self._bucket is None:
            with self._lock:
                if self._bucket is None:
                    self._client = self._make_client()
                    self._bucket = self._client.bucket(self.bucket_name)
        return self._bucket

    def _make_client(self) -> Any:
        import requests.adapters
        from google.auth.exceptions import DefaultCredentialsError
        from google.cloud import storage

        emulator = os.environ.get("STORAGE_EMULATOR_HOST")
        try:
            if emulator:
                from google.auth.credentials import AnonymousCredentials

                project = self._project or os.environ.get("GOOGLE_CLOUD_PROJECT") or _EMULATOR_PROJECT
                client = storage.Client(project=project, credentials=AnonymousCredentials())
            else:
                client = storage.Client(project=self._project)
        except DefaultCredentialsError:
            raise StoreError(
                f"no Google credentials for {self.url}: run `gcloud auth application-default login` "
                "or set GOOGLE_APPLICATION_CREDENTIALS"
            ) from None
        # Many threads share the client: a connection pool of one per thread, not urllib3's default 10.
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=_POOL_SIZE)
        client._http.mount("https://", adapter)
        client._http.mount("http://", adapter)
        return client

    def _blob(self, path: str, generation: int | None = None) -> Any:
        return self._get_bucket().blob(self._root + check_path(path), generation=generation)

    @contextlib.contextmanager
    def _errors(self, action: str, path: str, *, missing_is_bucket: bool = False) -> Iterator[None]:
        """Turn client exceptions into NotFound / one-line StoreError naming the object."""
        from google.api_core import exceptions as gexc
        from google.auth.exceptions import GoogleAuthError
        from google.cloud.storage.exceptions import DataCorruption, InvalidResponse

        where = f"gs://{self.bucket_name}/{self._root}{path}"
        try:
            yield
        except (NotFound, StoreError):
            raise
        except gexc.NotFound:
            if missing_is_bucket:
                raise StoreError(
                    f"failed {action} {where}: bucket gs://{self.bucket_name} not found"
                ) from None
            raise NotFound(f"no such object {where}") from None
        except gexc.Forbidden:
            raise StoreError(f"permission denied {action} {where}") from None
        except gexc.Unauthorized:
            raise StoreError(f"not authorised {action} {where}: check Google credentials") from None
        except gexc.GoogleAPICallError as exc:
            message = (exc.message or "").splitlines()[0][:200] if exc.message else type(exc).__name__
            raise StoreError(f"failed {action} {where}: HTTP {exc.code} {message}") from None
        except GoogleAuthError as exc:
            raise StoreError(f"not authorised {action} {where}: {str(exc).splitlines()[0][:200]}") from None
        except (OSError, DataCorruption, InvalidResponse) as exc:  # requests' errors are OSErrors
            text = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            raise StoreError(f"failed {action} {where}: {text}") from None

    @staticmethod
    def _info(rel: str, blob: Any) -> ObjectInfo:
        updated = blob.updated or dt.datetime.now(dt.UTC)
        generation = str(blob.generation) if blob.generation is not None else None
        return ObjectInfo(path=rel, size=int(blob.size or 0), updated=updated, generation=generation)

    # --- writes -------------------------------------------------------------------------------------------

    @staticmethod
    def _content_type(path: str) -> str:
        return mimetypes.guess_type(path)[0] or "application/octet-stream"

    def put_bytes(self, path: str, data: bytes) -> ObjectInfo:
        from google.cloud.storage.retry import DEFAULT_RETRY

        blob = self._blob(path)
        blob.chunk_size = self.upload_chunk_size
        with self._errors("writing", path, missing_is_bucket=True):
            # A whole-object replace is idempotent, so retrying it is safe.
            blob.upload_from_string(
                data, content_type=self._content_type(path), retry=DEFAULT_RETRY, timeout=self._timeout
            )
        return self._info(path, blob)

    def put_file(self, path: str, local_file: Path) -> ObjectInfo:
        """Single-shot upload up to the client's 8 MiB, else a resumable upload in ``upload_chunk_size`` chunks."""
        from google.cloud.storage.retry import DEFAULT_RETRY

        source = Path(local_file)
        if not source.is_file():
            raise NotFound(f"no such local file {source}")
        blob = self._blob(path)
        blob.chunk_size = self.upload_chunk_size
        with self._errors("writing", path, missing_is_bucket=True), open(source, "rb") as f:
            blob.upload_from_file(
                f,
                size=source.stat().st_size,
                content_type=self._content_type(path),
                retry=DEFAULT_RETRY,
                timeout=self._timeout,
            )
        return self._info(path, blob)

    def put_if_absent(self, path: str, data: bytes) -> bool:
        """``if_generation_match=0``; a retried request that lost its first response is recognised by a nonce.

        Keep ``data`` small: above 8 MiB the client switches to resumable uploads, where emulators do not
        enforce the precondition (GCS does).
        """
        from google.api_core.exceptions import PreconditionFailed
        from google.cloud.storage.retry import DEFAULT_RETRY_IF_GENERATION_SPECIFIED

        nonce = secrets.token_hex(16)
        blob = self._blob(path)
        blob.metadata = {_WRITER_KEY: nonce}
        with self._errors("writing", path, missing_is_bucket=True):
            try:
                blob.upload_from_string(
                    data,
                    content_type=self._content_type(path),
                    if_generation_match=0,
                    retry=DEFAULT_RETRY_IF_GENERATION_SPECIFIED,
                    timeout=self._timeout,
                )
                return True
            except PreconditionFailed:
                existing = self._get_bucket().get_blob(self._root + path, timeout=self._timeout)
                return existing is not None and (existing.metadata or {}).get(_WRITER_KEY) == nonce

    def stage(self, path: str, spool_dir: Path | None = None) -> Staged:
        """A spool file in ``spool_dir`` (or the system temp folder), uploaded on commit, removed either way."""
        check_path(path)
        folder = Path(spool_dir) if spool_dir else Path(tempfile.gettempdir())
        name = path.rsplit("/", 1)[-1]
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, temp_name = tempfile.mkstemp(prefix=f".{name}.tmp-", dir=folder)
        except OSError as exc:
            raise os_store_error(exc, "spooling", str(folder)) from exc
        os.close(fd)
        temp = Path(temp_name)

        def commit() -> ObjectInfo:
            info = self.put_file(path, temp)
            temp.unlink(missing_ok=True)
            return info

        return Staged(path, temp, commit, lambda: temp.unlink(missing_ok=True))

    def delete(self, path: str) -> None:
        from google.api_core.exceptions import NotFound as GcsNotFound
        from google.cloud.storage.retry import DEFAULT_RETRY

        blob = self._blob(path)
        with self._errors("deleting", path):
            try:
                blob.delete(retry=DEFAULT_RETRY, timeout=self._timeout)
            except GcsNotFound:
                pass

    def sweep_temp(self, older_than_s: float = 3600.0) -> list[str]:
        """Nothing to sweep: uploads are spooled locally and an object appears only when complete."""
        return []

    # --- reads --------------------------------------------------------------------------------------------

    def _fetch(self, path: str, start: int, length: int, generation: int | None = None) -> bytes:
        """Bytes [start, start+length) clipped to the object's end; one ranged GET."""
        from google.api_core.exceptions import RequestRangeNotSatisfiable

        blob = self._blob(path, generation)
        with self._errors("reading", path):
            try:
                data = blob.download_as_bytes(
                    start=start, end=start + length - 1, checksum=None, timeout=self._timeout
                )
            except RequestRangeNotSatisfiable:
                return b""
        self._read.add(len(data))
        return data

    def get_bytes(self, path: str) -> bytes:
        blob = self._blob(path)
        with self._errors("reading", path):
            data = blob.download_as_bytes(timeout=self._timeout)  # crc32c-checked
        self._read.add(len(data))
        return data

    def get_range(self, path: str, start: int, length: int) -> bytes:
        if start < 0 or length < 0:
            raise ValueError(f"get_range needs start >= 0 and length >= 0, got {start}, {length}")
        if length == 0:
            self.stat_or_raise(path)
            return b""
        return self._fetch(path, start, length)

    def get_tail(self, path: str, length: int) -> bytes:
        """A suffix-range GET: the footer of a file in one request without knowing its size."""
        from google.api_core.exceptions import RequestRangeNotSatisfiable

        if length < 0:
            raise ValueError(f"get_tail needs length >= 0, got {length}")
        if length == 0:
            self.stat_or_raise(path)
            return b""
        blob = self._blob(path)
        with self._errors("reading", path):
            try:
                data = blob.download_as_bytes(start=-length, checksum=None, timeout=self._timeout)
            except RequestRangeNotSatisfiable:  # an empty object
                return b""
        self._read.add(len(data))
        return data

    def open_read(self, path: str) -> BinaryIO:
        """A seekable reader pinned to the current generation; misses fetch ``read_chunk_size`` ranges."""
        info = self.stat_or_raise(path)
        generation = int(info.generation) if info.generation else None
        raw = _RangedRaw(self, path, info.size, generation)
        return io.BufferedReader(raw, buffer_size=self.read_chunk_size)  # type: ignore[return-value]

    def stat(self, path: str) -> ObjectInfo | None:
        from google.cloud.storage.retry import DEFAULT_RETRY

        name = self._root + check_path(path)
        with self._errors("reading", path):
            blob = self._get_bucket().get_blob(name, retry=DEFAULT_RETRY, timeout=self._timeout)
        return None if blob is None else self._info(path, blob)

    def stat_or_raise(self, path: str) -> ObjectInfo:
        info = self.stat(path)
        if info is None:
            raise NotFound(f"no such object {self.join(path)}")
        return info

    def exists(self, path: str) -> bool:
        return self.stat(path) is not None

    def list(self, prefix: str = "", recursive: bool = True) -> Iterator[ObjectInfo]:
        """Objects under ``prefix`` (a string prefix), sorted by path as GCS returns them, page by page."""
        from google.cloud.storage.retry import DEFAULT_RETRY

        check_prefix(prefix)
        bucket = self._get_bucket()
        with self._errors("listing", prefix):
            pages = bucket.client.list_blobs(
                bucket,
                prefix=self._root + prefix,
                delimiter=None if recursive else "/",
                page_size=1000,
                retry=DEFAULT_RETRY,
                timeout=self._timeout,
            )
        cut = len(self._root)
        iterator = iter(pages)
        while True:
            with self._errors("listing", prefix):
                blob = next(iterator, None)
            if blob is None:
                return
            rel = blob.name[cut:]
            if not rel or rel.endswith("/") or is_temp_name(rel):
                continue  # folder placeholders made by consoles, stray temp names
            yield self._info(rel, blob)

    # --- naming -------------------------------------------------------------------------------------------

    def local_path(self, path: str) -> Path | None:
        return None

    def join(self, path: str) -> str:
        return f"gs://{self.bucket_name}/{self._root}{check_path(path)}"
