"""abeja-runtime: the library a training job imports on ABEJA Platform.

It tells the job who it is (:class:`JobContext`), reports training statistics
without slowing the loop (:class:`StatisticsReporter`, :func:`report`), uploads
the final model (:func:`upload_model`), drives every Training API operation
(:class:`APIClient`) and runs all of it locally against an embedded emulator.

Names are loaded lazily (PEP 562) so that ``import abeja_runtime`` stays cheap
and never imports a framework, werkzeug or anything the job did not ask for.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import (
    AbejaRuntimeError,
    APIConnectionError,
    APITimeoutError,
    BadRequest,
    ConfigurationError,
    Conflict,
    Forbidden,
    HttpError,
    InternalServerError,
    InvalidDataFormat,
    InvalidResponseError,
    JobContextError,
    MethodNotAllowed,
    NotFound,
    StatisticsError,
    Unauthorized,
)

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from .api.client import APIClient
    from .artifacts.models import download_model, upload_model
    from .config import Credential
    from .emulator import Emulator
    from .job import JobContext
    from .statistics import Statistics
    from .statistics.reporter import StatisticsReporter, flush, get_reporter, report

# public name -> module that defines it, imported on first access
_LAZY: dict[str, str] = {
    "APIClient": "abeja_runtime.api.client",
    "Credential": "abeja_runtime.config",
    "Emulator": "abeja_runtime.emulator",
    "JobContext": "abeja_runtime.job",
    "Statistics": "abeja_runtime.statistics",
    "StatisticsReporter": "abeja_runtime.statistics.reporter",
    "flush": "abeja_runtime.statistics.reporter",
    "get_reporter": "abeja_runtime.statistics.reporter",
    "report": "abeja_runtime.statistics.reporter",
    "download_model": "abeja_runtime.artifacts.models",
    "upload_model": "abeja_runtime.artifacts.models",
}

__all__ = [
    "APIClient",
    "APIConnectionError",
    "APITimeoutError",
    "AbejaRuntimeError",
    "BadRequest",
    "ConfigurationError",
    "Conflict",
    "Credential",
    "Emulator",
    "Forbidden",
    "HttpError",
    "InternalServerError",
    "InvalidDataFormat",
    "InvalidResponseError",
    "JobContext",
    "JobContextError",
    "MethodNotAllowed",
    "NotFound",
    "Statistics",
    "StatisticsError",
    "StatisticsReporter",
    "Unauthorized",
    "__version__",
    "download_model",
    "flush",
    "get_reporter",
    "report",
    "upload_model",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'abeja_runtime' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


# Inside a training job: install the SIGTERM flush while this is the main thread (a
# reporter first used on a worker thread could not), and send what an earlier process
# of the job left in the spool at exit even if this one never reports. Cheap (a stat).
from .statistics import _process_hooks  # noqa: E402

_process_hooks.at_import()
