"""Reading a Tardis ``.csv.gz`` once: hash and count the compressed bytes, inflate, cut into whole-line chunks.

Chunks end on a line break, so each one parses on its own and line numbers stay exact. Inflating uses isal
(several times faster than zlib) when it is installed. A cut-off or corrupt gzip is a ``SourceError`` that the
caller may retry by downloading again.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import queue
import threading
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import pyarrow as pa

from mdth_engine.core.errors import MdthError

try:  # isal inflates 2-3x faster than zlib; gzip is the fallback where it is missing
    from isal import igzip as _gzip_module
    from isal import isal_zlib as _isal_zlib

    _INFLATE_ERRORS: tuple[type[BaseException], ...] = (EOFError, OSError, zlib.error, _isal_zlib.error)
except ImportError:  # pragma: no cover - isal is a dependency, this only guards odd installs
    _gzip_module = gzip  # type: ignore[assignment]
    _INFLATE_ERRORS = (EOFError, OSError, zlib.error)

T = TypeVar("T")


class SourceError(MdthError):
    """The source file is unusable (truncated or corrupt gzip, wrong header); ``retryable`` = download again."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclasses.dataclass(frozen=True, slots=True)
class Chunk:
    """Whole lines of the decompressed CSV: ``head + body[:end]``, ending with a line break.

    ``head`` is the start of the first line carried over from the previous block (it holds no line break);
    keeping the two apart saves copying every block twice. Lines are not counted here: a clean chunk's line
    count is its row count (see convert.py), only a chunk that goes line by line counts them itself.
    """

    head: bytes
    body: bytes
    end: int

    @property
    def data(self) -> bytes:
        """The chunk as one bytes object (a copy; for the slow path and tests)."""
        return self.head + self.body[: self.end]

    def arrow(self) -> pa.Buffer:
        """The chunk copied once into Arrow-owned memory (see ``arrow_buffer`` for why not a view)."""
        size = len(self.head) + self.end
        buffer = pa.allocate_buffer(size)
        view = memoryview(buffer).cast("B")
        view[: len(self.head)] = self.head
        view[len(self.head) :] = memoryview(self.body)[: self.end]
        return buffer

    def lines_starting_with(self, prefix: bytes) -> int:
        """How many lines start with ``prefix`` (a C-speed substring count, no copy of the body)."""
        first = (self.head + self.body[: len(prefix)]).startswith(prefix) if self.head else None
        if first is None:
            first = self.body.startswith(prefix)
        # every line but the first starts right after a line break inside ``body`` (``head`` has none)
        return int(first) + self.body.count(b"\n" + prefix, 0, self.end)


@dataclasses.dataclass(slots=True)
class SourceStats:
    """Filled in while reading: the header line, and the compressed size and SHA-256 once the end is reached."""

    header: bytes | None = None
    source_bytes: int = 0
    sha256: str = ""


class _HashingFile:
    """A read-only file wrapper that hashes and counts every compressed byte the inflater pulls through it."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.sha = hashlib.sha256()
        self.nbytes = 0

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self.sha.update(data)
        self.nbytes += len(data)
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:
        count = self._raw.readinto(buffer)  # type: ignore[attr-defined]
        if count:
            self.sha.update(memoryview(buffer)[:count])
            self.nbytes += count
        return count or 0

    def drain(self) -> None:
        """Hash whatever the inflater did not need (e.g. padding after the last gzip member)."""
        while self.read(1 << 20):
            pass

    def readable(self) -> bool:
        return True

    def close(self) -> None:  # the caller closes the raw file
        pass


def read_chunks(src: Path, stats: SourceStats, block_size: int) -> Iterator[Chunk]:
    """Yield newline-aligned chunks of about ``block_size`` decompressed bytes (after the header line)."""
    with open(src, "rb") as raw:
        hashing = _HashingFile(raw)
        reader = _gzip_module.GzipFile(fileobj=hashing, mode="rb")  # type: ignore[arg-type]
        rest = b""  # the start of a line whose end is in the next block
        header_pending = True
        while True:
            data = _inflate(reader, block_size, src)
            if not data:
                break
            if header_pending:
                data = rest + data
                rest = b""
                cut = data.find(b"\n")
                if cut < 0:  # header longer than a block (or a header-only file without a newline)
                    rest = data
                    continue
                stats.header = data[:cut]
                data = data[cut + 1 :]
                header_pending = False
            cut = data.rfind(b"\n")
            if cut < 0:  # one line longer than a block: keep collecting
                rest += data
                continue
            yield Chunk(rest, data, cut + 1)
            rest = data[cut + 1 :]
        if header_pending:
            stats.header = rest if rest else None
        elif rest:  # last line without a line break
            yield Chunk(rest, b"\n", 1)
        hashing.drain()
        stats.source_bytes = hashing.nbytes
        stats.sha256 = hashing.sha.hexdigest()


def _inflate(reader: Any, size: int, src: Path) -> bytes:
    try:
        return reader.read(size)
    except _INFLATE_ERRORS as exc:
        kind = "truncated" if isinstance(exc, EOFError) else "corrupt"
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SourceError(f"{src}: {kind} gzip ({detail}); download it again", retryable=True) from None


def arrow_buffer(data: bytes) -> pa.Buffer:
    """The chunk in Arrow-owned memory.

    pyarrow's reader threads may drop the last reference to their input after ``read_csv`` returns; for a
    buffer wrapping a Python object that needs the GIL, which aborts the process if it happens while the
    interpreter shuts down. A memcpy of the chunk is cheap insurance.
    """
    buffer = pa.allocate_buffer(len(data))
    memoryview(buffer).cast("B")[:] = data
    return buffer


def string_array(values: list[str]) -> pa.StringArray:
    """A small string array built without ``pa.array``, whose first call imports pandas (~0.2 s) if present."""
    encoded = [v.encode() for v in values]
    offsets = [0]
    for item in encoded:
        offsets.append(offsets[-1] + len(item))
    offset_bytes = b"".join(o.to_bytes(4, "little", signed=True) for o in offsets)
    return pa.StringArray.from_buffers(
        len(values), arrow_buffer(offset_bytes), arrow_buffer(b"".join(encoded))
    )


def file_sha256(src: Path) -> tuple[int, str]:
    """Size and SHA-256 of a file, for callers that need them without converting."""
    sha = hashlib.sha256()
    size = 0
    with open(src, "rb") as raw:
        while data := raw.read(4 << 20):
            sha.update(data)
            size += len(data)
    return size, sha.hexdigest()


_DONE = object()


class _Failure:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def threaded(make: Callable[[], Iterator[T]], depth: int = 2, name: str = "mdth-convert") -> Iterator[T]:
    """Run the iterator ``make()`` in a thread, ``depth`` items ahead; its errors re-raise in the consumer.

    Closing the returned generator (or an error in the consumer) stops the thread and closes its iterator.
    """
    items: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        iterator = make()
        try:
            for item in iterator:
                if not put(item):
                    break
            else:
                put(_DONE)
        except BaseException as exc:
            put(_Failure(exc))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=run, name=name, daemon=True)
    worker.start()
    try:
        while True:
            item = items.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item
    finally:
        stop.set()
        worker.join()
