"""The Training API client wing: every operation, and the transport under them.

``client`` holds :class:`APIClient` (the 29 operations); ``transport`` the HTTP
session, timeouts and the status-to-exception map; ``retry`` the one retry policy;
``multipart`` the streamed request bodies. This wing imports only the core modules
(see ``CONTRIBUTING.md``). Names load lazily, so that importing one module of the
wing (the reporter imports ``retry``) does not import ``requests``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .client import APIClient
    from .retry import RetryPolicy
    from .transport import HttpTransport, Timeout

_LAZY: dict[str, str] = {
    "APIClient": "abeja_runtime.api.client",
    "HttpTransport": "abeja_runtime.api.transport",
    "RetryPolicy": "abeja_runtime.api.retry",
    "Timeout": "abeja_runtime.api.transport",
}

__all__ = ["APIClient", "HttpTransport", "RetryPolicy", "Timeout"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
