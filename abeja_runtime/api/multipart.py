"""A ``multipart/form-data`` request body that streams files from disk.

Why this module exists instead of a library call:

* ``requests``' own ``files=`` reads every file into memory and builds the whole
  body as one ``bytes`` (``urllib3.encode_multipart_formdata``), so uploading a
  4 GiB model needs 4+ GiB of RAM inside a training container.
* ``requests-toolbelt``'s ``MultipartEncoder`` streams, but it is not one of our
  three core dependencies, and it copies every chunk through an intermediate
  ``BytesIO`` buffer (it is known to be slow, tens of MB/s, for large files).

What *is* taken from a library: each part's header block is rendered by
``urllib3.fields.RequestField`` and the boundary comes from
``urllib3.filepost.choose_boundary``, exactly as ``requests`` does it, so the
bytes on the wire are the same as the public package's (same quoting of names
and filenames, same ``Content-Disposition`` / ``Content-Type`` lines). What is
hand-written is only the framing (``--boundary``, CRLFs) and the chunked
reading, a few dozen lines.

The body knows its total length up front (so it goes out with a
``Content-Length``, not chunked encoding, which some proxies refuse), reads
files in chunks of ``chunk_size`` bytes, and can be iterated again from the
start, so the HTTP layer can retry an upload. Hooks let an uploader show
progress and take a SHA-256 of each file while it streams, without reading the
file a second time.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any, Protocol

from urllib3.fields import RequestField
from urllib3.filepost import choose_boundary

from ..config import IO_CHUNK_SIZE
from ..errors import InvalidDataFormat

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "BytesPart",
    "FilePart",
    "FileSource",
    "MultipartBody",
    "Part",
    "SizedSource",
    "StreamPart",
    "ensure_binary_readable",
]

#: bytes read from a file per chunk; large enough that per-chunk overhead is
#: negligible, small enough that memory stays flat
DEFAULT_CHUNK_SIZE = IO_CHUNK_SIZE

ProgressCallback = Callable[[int, int], None]


def ensure_binary_readable(fileobj: Any, what: str = "file") -> None:
    """Refuse anything that is not an open, readable, binary file object.

    Raises:
        InvalidDataFormat: ``fileobj`` has no ``read``, is closed, is opened
            for writing only, or is in text mode (it would yield ``str``).
    """
    if fileobj is None:
        raise InvalidDataFormat(f"{what} is None; give a path or a file opened with 'rb'")
    if not callable(getattr(fileobj, "read", None)):
        raise InvalidDataFormat(
            f"{what} must be a path or a binary file object opened with 'rb', "
            f"got {type(fileobj).__name__}"
        )
    if isinstance(fileobj, io.TextIOBase):
        raise InvalidDataFormat(f"{what} is opened in text mode; open it with 'rb'")
    if getattr(fileobj, "closed", False):
        raise InvalidDataFormat(f"{what} is closed")
    mode = getattr(fileobj, "mode", None)
    if isinstance(mode, str) and "b" not in mode:
        raise InvalidDataFormat(f"{what} is opened in text mode ({mode!r}); open it with 'rb'")
    readable = getattr(fileobj, "readable", None)
    if callable(readable):
        try:
            ok = readable()
        except ValueError as exc:  # closed file
            raise InvalidDataFormat(f"{what} cannot be read: {exc}") from None
        if not ok:
            raise InvalidDataFormat(f"{what} is not opened for reading; open it with 'rb'")
    try:
        probe = fileobj.read(0)
    except (OSError, ValueError) as exc:
        raise InvalidDataFormat(f"{what} cannot be read: {exc}") from None
    if not isinstance(probe, (bytes, bytearray, memoryview)):
        raise InvalidDataFormat(
            f"{what} yields {type(probe).__name__}, not bytes; open it with 'rb'"
        )


class Part:
    """One part of the body: a header block followed by a payload.

    Attributes:
        name: the form field name.
        filename: the ``filename`` of ``Content-Disposition`` (``None`` for a
            plain field).
        content_type: the part's ``Content-Type`` (``None`` to leave it out).
    """

    def __init__(self, name: str, filename: str | None, content_type: str | None) -> None:
        field = RequestField(name=name, data=b"", filename=filename)
        field.make_multipart(content_type=content_type)
        self.name = name
        self.filename = filename
        self.content_type = content_type
        self._headers = field.render_headers().encode("utf-8")

    @property
    def headers(self) -> bytes:
        """The rendered header block, ending with the blank line."""
        return self._headers

    @property
    def size(self) -> int:
        """Payload length in bytes."""
        raise NotImplementedError

    def chunks(self, chunk_size: int) -> Iterator[bytes]:
        """The payload, from its start, in pieces of at most ``chunk_size`` bytes."""
        raise NotImplementedError


class BytesPart(Part):
    """A part whose payload is already in memory (e.g. ``params.json``)."""

    def __init__(
        self,
        name: str,
        data: bytes | str,
        *,
        filename: str | None = None,
        content_type: str | None = None,
    ) -> None:
        super().__init__(name, filename, content_type)
        self.data = data.encode("utf-8") if isinstance(data, str) else bytes(data)

    @property
    def size(self) -> int:
        return len(self.data)

    def chunks(self, chunk_size: int) -> Iterator[bytes]:
        view = memoryview(self.data)
        for start in range(0, len(view), chunk_size):
            yield bytes(view[start : start + chunk_size])


class FilePart(Part):
    """A part streamed from a file on disk or from a seekable binary file object.

    A path is opened anew for every pass over the body (so a retry re-reads
    it); a file object is read from the position it had when the part was made,
    and put back there for every pass. Either way the size is fixed when the
    part is made, and a file that shrinks or grows while it streams fails the
    upload (:class:`InvalidDataFormat`) instead of sending a body that does not
    match its ``Content-Length``.

    Attributes:
        sha256: hex SHA-256 of the payload after a complete pass, when the part
            was made with ``sha256=True`` (``None`` until then).
    """

    def __init__(
        self,
        name: str,
        source: str | os.PathLike[str] | IO[bytes],
        *,
        filename: str | None = None,
        content_type: str | None = "application/octet-stream",
        sha256: bool = False,
    ) -> None:
        self._path: str | None = None
        self._fileobj: IO[bytes] | None = None
        self._start = 0
        if isinstance(source, (str, os.PathLike)):
            path = os.fspath(source)
            if not os.path.isfile(path):
                what = "is a directory" if os.path.isdir(path) else "does not exist"
                raise InvalidDataFormat(f"{name}: {path!r} {what}; give a readable file")
            if not os.access(path, os.R_OK):
                raise InvalidDataFormat(f"{name}: {path!r} is not readable")
            self._path = path
            self._size = os.path.getsize(path)
            if filename is None:
                filename = os.path.basename(path)
        else:
            ensure_binary_readable(source, name)
            seekable = getattr(source, "seekable", None)
            if not (callable(seekable) and seekable()):
                raise InvalidDataFormat(
                    f"{name}: the file object is not seekable; write it to a file first"
                )
            self._fileobj = source
            self._start = source.tell()
            end = source.seek(0, os.SEEK_END)
            source.seek(self._start)
            self._size = max(0, end - self._start)
        super().__init__(name, filename, content_type)
        self._want_sha256 = sha256
        self.sha256: str | None = None

    @property
    def size(self) -> int:
        return self._size

    def chunks(self, chunk_size: int) -> Iterator[bytes]:
        hasher = hashlib.sha256() if self._want_sha256 else None
        self.sha256 = None
        remaining = self._size
        if self._path is not None:
            fh: IO[bytes] = open(self._path, "rb")  # noqa: SIM115 - closed below
            close = True
        else:
            assert self._fileobj is not None
            fh = self._fileobj
            fh.seek(self._start)
            close = False
        try:
            while remaining > 0:
                chunk = fh.read(min(chunk_size, remaining))
                if not chunk:
                    raise InvalidDataFormat(
                        f"{self.name}: file shrank while uploading "
                        f"({self._size - remaining} of {self._size} bytes read)"
                    )
                remaining -= len(chunk)
                if hasher is not None:
                    hasher.update(chunk)
                yield bytes(chunk)
            if self._path is not None and fh.read(1):
                raise InvalidDataFormat(f"{self.name}: file grew while uploading")
        finally:
            if close:
                fh.close()
        if hasher is not None:
            self.sha256 = hasher.hexdigest()


class SizedSource(Protocol):
    """A payload of known length that can be produced again from its start."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[bytes]: ...


logger = logging.getLogger(__name__)

#: chunks sent before the first look at where the time goes: the socket
#: buffers (a few MiB on loopback) take the first ones without waiting
_HASH_PROBE_SKIP = 16
#: chunks per look
_HASH_PROBE_WINDOW = 16
#: looks in a row that must find the sender held back by its own core
_HASH_PROBE_STREAK = 2


def _thread_pays(hash_cpu_seconds: float, send_seconds: float) -> bool:
    """Whether hashing on a helper thread would speed up the upload, from one window.

    Inline, the sender's loop is produce + hash + hand to the socket. When the
    connection (or a server on the same cores) is the bottleneck, handing a
    chunk over includes waiting for room in the socket buffer, and a thread
    would only move the hash into that wait. A sender that hands its chunks
    over in less time than the hashing takes is held back by its own core
    (measured per MiB on loopback: 0.15-0.4 ms handed to a 10 Gbit/s sink,
    0.7-1 ms to the emulator, 0.55 ms of hashing). The hash is timed in CPU
    time, the hand-over in wall time: on a busy machine the hand-over is
    stretched by waiting for a core, which says there is no spare one for a
    thread either.
    """
    return send_seconds < hash_cpu_seconds


def _hashed(chunks: Iterable[bytes], done: Callable[[str], None]) -> Iterator[bytes]:
    """``chunks`` passed through with their SHA-256: inline, or on a helper thread when that pays.

    Why not always a thread: handing each chunk to another core costs about
    0.25 CPU s/GiB more than hashing it inline (1.38 against 1.10 s/GiB for a
    streamed zip; page faults of the queued chunks, wake-ups, the chunk read
    again on a cold core). A sender whose server is the bottleneck (a remote
    platform, or a local server on the same few cores, such as the
    emulator) gains nothing from the thread and its server loses that CPU.
    Why not always inline: SHA-256 takes about 0.55 s/GiB of one core, so
    read + CRC + hash + send on one core top out near 1 GB/s, under a 10 GbE
    link or loopback. So the chunks are hashed inline and timed, a window
    of 16 at a time (:func:`_thread_pays`); once two windows in a row show
    the sender is the bottleneck, the rest of the pass is hashed on a helper
    thread, which ``hashlib`` lets run beside the sends (it releases the GIL
    on large updates). It is one digest fed in order either way, so the
    result is the same. The thread's queue is bounded (a few chunks): memory
    stays flat. ``done(hexdigest)`` is called only after a complete pass.
    """
    digest = hashlib.sha256()
    pending: queue.Queue[bytes | None] | None = None
    worker: threading.Thread | None = None
    seen = streak = 0
    hash_seconds = send_seconds = 0.0
    complete = False
    clock, cpu_clock = time.perf_counter, time.thread_time
    try:
        for chunk in chunks:
            if pending is not None:
                pending.put(chunk)
                yield chunk
                continue
            started = cpu_clock()
            digest.update(chunk)
            hashed, handed = cpu_clock(), clock()
            yield chunk
            seen += 1
            if seen <= _HASH_PROBE_SKIP:
                continue
            hash_seconds += hashed - started
            send_seconds += clock() - handed
            if (seen - _HASH_PROBE_SKIP) % _HASH_PROBE_WINDOW:
                continue
            streak = streak + 1 if _thread_pays(hash_seconds, send_seconds) else 0
            if streak >= _HASH_PROBE_STREAK:
                logger.debug(
                    "upload: SHA-256 on a helper thread from chunk %d (per chunk: hash %.2f ms, "
                    "send %.2f ms)",
                    seen,
                    hash_seconds * 1e3 / _HASH_PROBE_WINDOW,
                    send_seconds * 1e3 / _HASH_PROBE_WINDOW,
                )
                queued: queue.Queue[bytes | None] = queue.Queue(8)

                def consume(queued: queue.Queue[bytes | None] = queued) -> None:
                    while (item := queued.get()) is not None:
                        digest.update(item)

                worker = threading.Thread(target=consume, name="upload-sha256", daemon=True)
                worker.start()
                pending = queued
            hash_seconds = send_seconds = 0.0
        complete = True
    finally:
        if pending is not None and worker is not None:
            pending.put(None)
            worker.join()
    if complete:
        done(digest.hexdigest())


class StreamPart(Part):
    """A part whose payload is produced while it is sent (e.g. a :class:`StreamedZip`).

    The source knows its length up front and yields its bytes from the start
    on every pass, so the body keeps an exact ``Content-Length`` and can be
    sent again on a retry.

    Attributes:
        sha256: hex SHA-256 of the payload after a complete pass, when made
            with ``sha256=True`` (``None`` until then, and again while a new
            pass runs). Taken inline, or on a helper thread when the
            sender is the bottleneck (see ``_hashed``).
    """

    def __init__(
        self,
        name: str,
        source: SizedSource,
        *,
        filename: str | None = None,
        content_type: str | None = "application/octet-stream",
        sha256: bool = False,
    ) -> None:
        super().__init__(name, filename, content_type)
        self.source = source
        self._want_sha256 = sha256
        self.sha256: str | None = None

    @property
    def size(self) -> int:
        return len(self.source)

    def chunks(self, chunk_size: int) -> Iterator[bytes]:
        self.sha256 = None
        if not self._want_sha256:
            yield from self.source
            return

        def done(hexdigest: str) -> None:
            self.sha256 = hexdigest

        yield from _hashed(self.source, done)

    def compute_sha256(self) -> str:
        """The payload's SHA-256 from a pass of its own (nothing is sent)."""
        digest = hashlib.sha256()
        for chunk in self.source:
            digest.update(chunk)
        return digest.hexdigest()


class FileSource:
    """A file on disk as a :class:`SizedSource` (its size fixed when made)."""

    def __init__(self, path: str | os.PathLike[str], chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        self.path = os.fspath(path)
        self._size = os.path.getsize(self.path)
        self.chunk_size = chunk_size

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[bytes]:
        remaining = self._size
        with open(self.path, "rb") as fh:
            while remaining > 0:
                chunk = fh.read(min(self.chunk_size, remaining))
                if not chunk:
                    raise InvalidDataFormat(
                        f"{self.path!r} shrank while uploading "
                        f"({self._size - remaining} of {self._size} bytes read)"
                    )
                remaining -= len(chunk)
                yield chunk
            if fh.read(1):
                raise InvalidDataFormat(f"{self.path!r} grew while uploading")


class MultipartBody:
    """A ``multipart/form-data`` body with a known length, produced in chunks.

    Pass it as ``data=`` with :attr:`content_type` and :attr:`content_length`
    as headers (the HTTP transport does this). Iterating it yields the body from
    the first byte each time, which is what makes retrying an upload possible.

    Example:
        >>> body = MultipartBody()
        >>> _ = body.add_file("model_data", "model.zip", content_type="application/zip")
        >>> _ = body.add_bytes("parameters", b"{}", filename="params.json",
        ...                    content_type="application/json")

    Args:
        boundary: the boundary string (random, as ``requests`` makes it, by default).
        chunk_size: bytes per file read.
        on_progress: called as ``on_progress(sent, total)`` as each chunk is
            handed to the connection; ``sent`` starts again from 0 when the body
            is sent again (a retry).
    """

    def __init__(
        self,
        *,
        boundary: str | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be > 0, got {chunk_size!r}")
        self.boundary = boundary or choose_boundary()
        self.chunk_size = chunk_size
        self.on_progress = on_progress
        self.parts: list[Part] = []

    def add_part(self, part: Part) -> Part:
        """Append a part made elsewhere; returns it."""
        self.parts.append(part)
        return part

    def add_bytes(
        self,
        name: str,
        data: bytes | str,
        *,
        filename: str | None = None,
        content_type: str | None = None,
    ) -> BytesPart:
        """Append an in-memory part (a form field, or a small file such as JSON)."""
        part = BytesPart(name, data, filename=filename, content_type=content_type)
        self.parts.append(part)
        return part

    def add_file(
        self,
        name: str,
        source: str | os.PathLike[str] | IO[bytes],
        *,
        filename: str | None = None,
        content_type: str | None = "application/octet-stream",
        sha256: bool = False,
    ) -> FilePart:
        """Append a part streamed from a path or a seekable binary file object.

        Args:
            name: form field name.
            source: a path, or a binary file object (read from its current position).
            filename: the filename to announce (a path's base name by default).
            content_type: the part's ``Content-Type``.
            sha256: take the SHA-256 of the payload while it streams
                (read it from the returned part's ``sha256`` afterwards).

        Raises:
            InvalidDataFormat: the path is missing or unreadable, or the file
                object is not a readable, seekable binary file.
        """
        part = FilePart(name, source, filename=filename, content_type=content_type, sha256=sha256)
        self.parts.append(part)
        return part

    @property
    def content_type(self) -> str:
        """The request's ``Content-Type`` header value."""
        return f"multipart/form-data; boundary={self.boundary}"

    def _delimiter(self) -> bytes:
        return f"--{self.boundary}\r\n".encode("latin-1")

    def _closing(self) -> bytes:
        return f"--{self.boundary}--\r\n".encode("latin-1")

    @property
    def content_length(self) -> int:
        """Total body length in bytes (the ``Content-Length``)."""
        per_part = len(self._delimiter()) + 2  # delimiter line + CRLF after the payload
        total = sum(per_part + len(part.headers) + part.size for part in self.parts)
        return total + len(self._closing())

    def __len__(self) -> int:
        # requests reads the length through len() (super_len) and then sends
        # the body with a Content-Length instead of chunked encoding.
        return self.content_length

    def __iter__(self) -> Iterator[bytes]:
        total = self.content_length
        sent = 0
        progress = self.on_progress

        def emit(chunk: bytes) -> bytes:
            nonlocal sent
            sent += len(chunk)
            if progress is not None:
                progress(sent, total)
            return chunk

        delimiter = self._delimiter()
        for part in self.parts:
            yield emit(delimiter + part.headers)
            for chunk in part.chunks(self.chunk_size):
                yield emit(chunk)
            yield emit(b"\r\n")
        yield emit(self._closing())

    def to_bytes(self) -> bytes:
        """The whole body in memory (for tests and small bodies only)."""
        return b"".join(self)

    def __repr__(self) -> str:
        names = ", ".join(part.name for part in self.parts)
        return f"<MultipartBody [{names}] {self.content_length} bytes>"
