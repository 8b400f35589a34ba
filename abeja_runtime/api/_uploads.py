"""What the client sends as a file: a model's data and a version's source files, zipped.

A path is streamed; a file object is spooled to a temporary file when it is not a zip
already (never held in memory).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any

from ..archive import walk_tree
from ..config import (
    IO_CHUNK_SIZE,
)
from ..errors import (
    InvalidDataFormat,
)
from .multipart import ensure_binary_readable


class _Upload:
    """A binary file to stream, plus the temporary file to delete afterwards."""

    def __init__(self, source: str | IO[bytes], temp: IO[bytes] | None = None) -> None:
        self.source = source
        self._temp = temp

    def close(self) -> None:
        if self._temp is not None:
            self._temp.close()
            self._temp = None


def _readable_path(value: Any, what: str) -> str:
    path: str = os.fsdecode(os.fspath(value))
    if not path:
        raise InvalidDataFormat(f"{what}: empty path")
    if not os.path.exists(path):
        raise InvalidDataFormat(f"{what}: {path!r} does not exist")
    if not os.path.isfile(path):
        raise InvalidDataFormat(f"{what}: {path!r} is not a regular file")
    try:
        with open(path, "rb") as fh:
            fh.read(0)
    except OSError as exc:
        raise InvalidDataFormat(f"{what}: {path!r} cannot be read: {exc.strerror or exc}") from None
    return path


def _spool(fileobj: IO[bytes]) -> IO[bytes]:
    """Copy a non-seekable stream into an anonymous temporary file, chunk by chunk."""
    temp: IO[bytes] = tempfile.TemporaryFile(suffix=".bin")  # noqa: SIM115 - owned by the caller
    shutil.copyfileobj(fileobj, temp, IO_CHUNK_SIZE)
    temp.seek(0)
    return temp


def _zip_fileobj(fileobj: IO[bytes], arcname: str, metadata_path: str | None) -> IO[bytes]:
    """A temporary zip holding ``fileobj``'s bytes as ``arcname``, written in chunks.

    When the object has a real path, its entry gets that file's time stamp and
    mode, as ``ZipFile.write`` (what the public package uses) would give it.
    """
    temp = tempfile.TemporaryFile(suffix=".zip")  # noqa: SIM115 - owned by the caller
    try:
        if metadata_path is not None:
            info = zipfile.ZipInfo.from_file(metadata_path, arcname)
        else:
            info = zipfile.ZipInfo(arcname, date_time=_now_zip_time())
            info.external_attr = 0o644 << 16
        start = fileobj.tell()
        info.file_size = fileobj.seek(0, os.SEEK_END) - start
        fileobj.seek(start)
        info.compress_type = zipfile.ZIP_DEFLATED
        with (
            zipfile.ZipFile(temp, "w", compression=zipfile.ZIP_DEFLATED) as archive,
            archive.open(info, "w") as dest,
        ):
            shutil.copyfileobj(fileobj, dest, IO_CHUNK_SIZE)
        temp.seek(0)
        return temp
    except BaseException:
        temp.close()
        raise


def _now_zip_time() -> tuple[int, int, int, int, int, int]:
    now = time.localtime()
    return (max(now.tm_year, 1980), now.tm_mon, now.tm_mday, now.tm_hour, now.tm_min, now.tm_sec)


def _prepare_model_data(model_data: Any) -> _Upload:
    """Model data as a zip to stream: a zip as it is, anything else wrapped in one.

    Raises:
        InvalidDataFormat: ``None``, a missing/unreadable path, a text-mode or
            closed file, or anything that is neither a path nor a file object.
    """
    what = "model_data"
    if model_data is None:
        raise InvalidDataFormat("model_data is necessary: give a path or a file opened with 'rb'")
    if isinstance(model_data, (bytes, bytearray, memoryview)):
        raise InvalidDataFormat(
            "model_data must be a path or a binary file object, not bytes; "
            "wrap the bytes in io.BytesIO"
        )
    if isinstance(model_data, (str, os.PathLike)):
        path = _readable_path(model_data, what)
        if zipfile.is_zipfile(path):
            return _Upload(path)
        zipped = _zip_sources([(path, Path(path).name)])
        return _Upload(zipped, zipped)
    ensure_binary_readable(model_data, what)
    fileobj: IO[bytes] = model_data
    owned: IO[bytes] | None = None
    seekable = getattr(fileobj, "seekable", None)
    if not (callable(seekable) and seekable()):
        owned = fileobj = _spool(model_data)
    try:
        # like the public package: the whole file, from its first byte
        fileobj.seek(0)
        if zipfile.is_zipfile(fileobj):
            fileobj.seek(0)
            upload, owned = _Upload(fileobj, owned), None
            return upload
        fileobj.seek(0)
        name = getattr(model_data, "name", None)
        real_path = name if isinstance(name, str) and os.path.isfile(name) else None
        arcname = Path(name).name if isinstance(name, str) and Path(name).name else "model_data"
        temp = _zip_fileobj(fileobj, arcname, real_path)
        return _Upload(temp, temp)
    finally:
        if owned is not None:
            owned.close()


def _iter_sources(filepaths: Any) -> list[tuple[str, str]]:
    """``(path on disk, name in the archive)`` for every file to put in a version's zip.

    A file goes in under its base name (as the public package does); a
    directory goes in with its contents under ``<dirname>/...`` (the public
    package would silently store an empty directory entry).
    """
    if isinstance(filepaths, (str, os.PathLike)):
        filepaths = [filepaths]
    if not isinstance(filepaths, Iterable) or isinstance(filepaths, (bytes, Mapping)):
        raise InvalidDataFormat(
            f"filepaths must be a list of paths, got {type(filepaths).__name__}"
        )
    entries: list[tuple[str, str]] = []
    for item in filepaths:
        if not isinstance(item, (str, os.PathLike)):
            raise InvalidDataFormat(f"filepaths: {item!r} is not a path")
        path = os.fspath(item)
        if os.path.isdir(path):
            root = Path(path)
            base = root.resolve().name
            # the one tree walker: link loops, links out of the tree and special
            # files skipped with one warning; in rglob's sorted order, as before
            found = walk_tree(root, "filepaths directory")
            for sub, name in sorted(found, key=lambda entry: entry[0].parts):
                entries.append((_readable_path(sub, "filepaths"), f"{base}/{name}"))
        else:
            entries.append((_readable_path(path, "filepaths"), Path(path).name))
    if not entries:
        raise InvalidDataFormat("filepaths is empty: give at least one file to run the job")
    seen: dict[str, str] = {}
    for path, arcname in entries:
        if arcname in seen:
            raise InvalidDataFormat(
                f"filepaths: {seen[arcname]!r} and {path!r} would both be stored as {arcname!r}"
            )
        seen[arcname] = path
    return entries


def _zip_sources(entries: list[tuple[str, str]]) -> IO[bytes]:
    temp = tempfile.TemporaryFile(suffix=".zip")  # noqa: SIM115 - owned by the caller
    try:
        with zipfile.ZipFile(temp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for path, arcname in entries:
                archive.write(path, arcname)
        temp.seek(0)
        return temp
    except BaseException:
        temp.close()
        raise
