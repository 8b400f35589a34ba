"""Multipart uploads parsed as a stream, straight to files in the blob store.

werkzeug's :class:`~werkzeug.formparser.FormDataParser` reads the request
body in 64 KiB pieces and writes each file part into whatever file object
the ``stream_factory`` returns; here that is a :class:`HashingFile` in the
store's ``blobs/tmp`` directory, which counts and SHA-256-hashes the bytes as
they pass. A 2 GiB model therefore costs one buffer of memory, is hashed
without a second read, and lands on the same file system as its final place
so that storing it is a rename. Text parts are capped at
:data:`~abeja_runtime.emulator.validation.MAX_JSON_BYTES`.

Why a wrapper instead of werkzeug's default factory: the default spools
small parts in memory and large ones to the system temp dir (another file
system, maybe a RAM disk), and neither gives the digest.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from types import TracebackType
from typing import IO, Any, cast

from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.formparser import FormDataParser
from werkzeug.wrappers import Request

from .store import Blob, Store
from .validation import MAX_JSON_BYTES, bad_request, parse_json

__all__ = ["HashingFile", "MultipartUpload"]

#: At most this many parts per upload (the API uses two).
MAX_PARTS = 16


class HashingFile:
    """A file being written that keeps its size and SHA-256 up to date.

    It offers what werkzeug's parser and :class:`~werkzeug.datastructures.FileStorage`
    use (``write``, ``seek``, ``read``, ``close``...) and forwards the rest.
    """

    def __init__(self, path: Path, handle: IO[bytes]) -> None:
        self.path = path
        self._handle = handle
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._hash.update(data)
        self.size += len(data)
        return self._handle.write(data)

    def read(self, size: int = -1) -> bytes:
        return self._handle.read(size)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._handle.seek(offset, whence)

    def tell(self) -> int:
        return self._handle.tell()

    def flush(self) -> None:
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()

    @property
    def closed(self) -> bool:
        return self._handle.closed

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)

    def blob(self) -> Blob:
        """The finished file as a :class:`Blob` (closes the handle)."""
        self._handle.close()
        return Blob(self.path, self.size, self._hash.hexdigest())


class MultipartUpload:
    """One parsed ``multipart/form-data`` request; a context manager that deletes leftovers.

    Every file part is written to its own tmp file. Whatever the store did
    not move into place (because the request was refused, or a part is not a
    blob) is deleted on exit, so a refused upload stores nothing.

    Args:
        request: the werkzeug request, body not yet read.
        store: where the tmp files go.
        allowed: part name -> ``True`` for a file (blob) part, ``False`` for a
            JSON part (given as a file or a plain field).
    """

    def __init__(self, request: Request, store: Store, allowed: dict[str, bool]) -> None:
        self._created: list[HashingFile] = []
        self._store = store
        mimetype = request.mimetype
        if mimetype != "multipart/form-data":
            bad_request(
                f"this operation takes a multipart/form-data upload, got content type "
                f"{mimetype or '(none)'!r}"
            )
        parser = FormDataParser(
            stream_factory=self._stream_factory,
            max_form_memory_size=MAX_JSON_BYTES,
            max_form_parts=MAX_PARTS,
            silent=False,
        )
        try:
            _, form, files = parser.parse_from_environ(request.environ)
        except RequestEntityTooLarge:
            self.close()
            bad_request(
                f"the upload has a text part over {MAX_JSON_BYTES} bytes or more than "
                f"{MAX_PARTS} parts"
            )
        except ValueError as exc:
            self.close()
            bad_request(f"the multipart body is malformed or incomplete: {exc}")
        except BaseException:
            self.close()
            raise
        self._form = form
        self._files = files
        names = list(form.keys()) + list(files.keys())
        unknown = sorted({n for n in names if n not in allowed})
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if unknown or duplicated:
            self.close()
            if unknown:
                bad_request(
                    f"unknown form part(s) {', '.join(map(repr, unknown))}; allowed: "
                    f"{', '.join(sorted(allowed))}"
                )
            bad_request(f"form part(s) {', '.join(map(repr, duplicated))} sent more than once")
        for name, is_file in allowed.items():
            if is_file and name in form:
                self.close()
                bad_request(f"form part {name!r} must be a file part (with a filename)")

    def _stream_factory(
        self,
        total_content_length: int | None,
        content_type: str | None,
        filename: str | None,
        content_length: int | None = None,
    ) -> IO[bytes]:
        path, handle = self._store.new_tmp_file()
        container = HashingFile(path, handle)
        self._created.append(container)
        return cast(IO[bytes], container)

    def take_file(self, name: str) -> Blob | None:
        """The blob of file part ``name``, or ``None`` if absent; the store may move it."""
        storage = self._files.get(name)
        if storage is None:
            return None
        return cast(HashingFile, storage.stream).blob()

    def json_part(self, name: str) -> Any:
        """Part ``name`` parsed as strict JSON (a file part or a text field), or ``None``."""
        if name in self._form:
            return parse_json(self._form[name].encode(), what=f"form part {name!r}")
        storage = self._files.get(name)
        if storage is None:
            return None
        data = storage.stream.read(MAX_JSON_BYTES + 1)
        return parse_json(data, what=f"form part {name!r}")

    def close(self) -> None:
        """Delete every tmp file still in ``blobs/tmp`` (idempotent).

        A blob the store accepted was renamed away, so only refused or unused
        parts are still there to delete.
        """
        for container in self._created:
            container.close()
            container.path.unlink(missing_ok=True)
        self._created.clear()

    def __enter__(self) -> MultipartUpload:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
