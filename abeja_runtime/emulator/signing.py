"""Expiring signed download URLs, the emulator's stand-in for presigned storage URLs.

The platform answers ``download_training_model`` and ``get_training_result``
with presigned URLs that are fetched without the API credential. The
emulator serves those downloads itself: the URL carries an expiry time and
an HMAC-SHA256 over the method, path and expiry, keyed with a secret that
the emulator generates once and keeps with its state (so URLs stay valid
across a restart until they expire). A changed path, expiry or signature is
refused with 403, as a storage service refuses a tampered presigned URL.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections.abc import Callable, Mapping
from urllib.parse import urlencode

from ..errors import Forbidden

__all__ = ["BLOB_PREFIX", "DEFAULT_TTL_SECONDS", "UrlSigner"]

#: the path under which the emulator serves model blobs, at signed URLs (the API's
#: download links and the dashboard's both point there)
BLOB_PREFIX = "/_emulator/blobs/models/"

#: How long a signed URL stays valid, like a typical presigned URL.
DEFAULT_TTL_SECONDS = 3600.0


class UrlSigner:
    """Signs and verifies ``?expires=<unix seconds>&signature=<hex>`` query strings.

    Args:
        key: the secret HMAC key.
        ttl: seconds a new URL stays valid.
        clock: the time source (``time.time``), replaceable for tests.
    """

    def __init__(
        self,
        key: bytes,
        ttl: float = DEFAULT_TTL_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not ttl > 0:
            raise ValueError(f"signed URL ttl must be > 0 seconds, got {ttl!r}")
        self._key = key
        self._ttl = ttl
        self._clock = clock

    def __repr__(self) -> str:
        return f"UrlSigner(ttl={self._ttl!r}, key='***')"

    def _digest(self, path: str, expires: int) -> str:
        message = f"GET\n{path}\n{expires}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def sign(self, base_url: str, path: str) -> str:
        """The full signed URL for ``path`` under ``base_url``."""
        expires = math.ceil(self._clock() + self._ttl)
        query = urlencode({"expires": expires, "signature": self._digest(path, expires)})
        return f"{base_url.rstrip('/')}{path}?{query}"

    def verify(self, path: str, args: Mapping[str, str]) -> None:
        """Accept a signed request for ``path`` or raise :class:`Forbidden` saying why."""
        raw_expires = args.get("expires", "")
        signature = args.get("signature", "")
        if not raw_expires.isdigit() or not signature:
            raise Forbidden(
                "forbidden",
                "this download URL is not signed; get a fresh one from the API",
                None,
                403,
            )
        expires = int(raw_expires)
        if not hmac.compare_digest(self._digest(path, expires), signature):
            raise Forbidden("forbidden", "the download URL's signature does not match", None, 403)
        if self._clock() > expires:
            raise Forbidden(
                "forbidden", "the download URL has expired; get a fresh one from the API", None, 403
            )
