"""The artifacts wing: a job's model, up and down.

``models`` uploads a trained model (streamed, checksum-verified, never twice) and
downloads one or a job's result; ``downloads`` fetches and verifies an archive. The one
zip writer and tree walk they use is :mod:`abeja_runtime.archive` (core, because the API
client zips source code with it too). This wing imports only the core and ``api`` (see
``CONTRIBUTING.md``). Names load lazily.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .models import (
        download_model,
        download_training_result,
        upload_model,
    )

_LAZY: dict[str, str] = {
    "download_model": "abeja_runtime.artifacts.models",
    "download_training_result": "abeja_runtime.artifacts.models",
    "upload_model": "abeja_runtime.artifacts.models",
}

__all__ = ["download_model", "download_training_result", "upload_model"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
