"""The one verified downloader: a signed URL streamed to a file, its SHA-256 checked.

Why one module: ``download_model``, ``download_training_result`` and the CLI's
``models download`` / ``jobs result --output`` all fetch a presigned URL. Each
had its own loop with different guarantees (one checked no checksum, one left
a truncated file under the final name). Here the bytes go to a hidden
temporary file beside the destination (the same volume, never the system temp
directory), the length is checked against ``Content-Length``, the SHA-256
against what the server recorded, and only then is the file renamed into place.
A signed URL carries its own authorisation, so no credential is sent with it.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Collection
from pathlib import Path
from typing import Any

import requests

from ..config import IO_CHUNK_SIZE
from ..errors import APIConnectionError, HttpError, ModelChecksumError

__all__ = ["ModelChecksumError", "fetch_verified"]

#: (connect, read) seconds when the caller gives none
DEFAULT_TIMEOUT = (30.0, 300.0)


def _expected_set(expected: str | Collection[str] | None) -> set[str]:
    if expected is None:
        return set()
    if isinstance(expected, str):
        return {expected.lower()} if expected else set()
    return {e.lower() for e in expected if isinstance(e, str) and e}


def fetch_verified(
    url: str,
    dest: str | os.PathLike[str],
    *,
    expected_sha256: str | Collection[str] | None = None,
    timeout: Any = None,
    what: str = "download",
) -> tuple[Path, int, str]:
    """Stream ``url`` to ``dest``, verified, renamed into place only when complete.

    Args:
        url: a presigned URL (fetched without credentials).
        dest: the file to create or replace.
        expected_sha256: the hex SHA-256 the server recorded, or several
            acceptable ones; ``None`` or empty checks the length only.
        timeout: ``(connect, read)`` seconds (:data:`DEFAULT_TIMEOUT` when ``None``).
        what: names the download in errors (``"model 123"``).

    Returns:
        ``(dest, size, sha256 hex)``.

    Raises:
        HttpError: the URL answered an error status.
        APIConnectionError: the connection failed or the body was cut short.
        ModelChecksumError: the bytes differ from the recorded SHA-256.
        Nothing is left under ``dest`` nor beside it on any error.
    """
    target = Path(dest)
    target.parent.mkdir(parents=True, exist_ok=True)
    expected = _expected_set(expected_sha256)
    digest = hashlib.sha256()
    size = 0
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    temp = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with requests.get(
                    url,
                    stream=True,
                    timeout=timeout or DEFAULT_TIMEOUT,
                    # the bytes as stored: their length and SHA-256 are what is checked
                    headers={"Accept-Encoding": "identity"},
                ) as response:
                    if response.status_code >= 400 or response.status_code < 200:
                        raise HttpError(
                            "download_failed",
                            f"{what}: the download URL answered {response.status_code}",
                            status_code=response.status_code,
                        )
                    announced = response.headers.get("Content-Length")
                    for chunk in response.iter_content(IO_CHUNK_SIZE):
                        digest.update(chunk)
                        out.write(chunk)
                        size += len(chunk)
            except requests.RequestException as exc:
                raise APIConnectionError(
                    f"{what} failed: {type(exc).__name__}", sent=True
                ) from None
        if announced is not None and announced.isdigit() and int(announced) != size:
            raise APIConnectionError(
                f"{what} cut short: {size} of {announced} bytes received", sent=True
            )
        got = digest.hexdigest()
        if expected and got not in expected:
            raise ModelChecksumError(
                f"{what}: downloaded bytes have sha256 {got}, the server recorded "
                f"{' or '.join(sorted(expected))}"
            )
        temp.replace(target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return target, size, got
