"""The statistics wing: the document a job reports, and the reporter that delivers it.

``document`` holds :class:`Statistics` (one epoch's document, checked by the rules in
:mod:`abeja_runtime.statistics_rules`); ``reporter`` the non-blocking
:class:`StatisticsReporter` and its module-level :func:`report`, whose rooms are the
``_``-prefixed modules here; ``spool`` the on-disk journal of must-deliver epoch ends;
``delivery`` posting a spool (what ``abeja-runtime sync`` and ``run`` share); ``sinks``
and ``sysmetrics`` the other ends. This wing imports only the core and ``api`` (see
``CONTRIBUTING.md``). Names load lazily: ``import abeja_runtime`` imports this package
(for its process hooks) and must stay as cheap as before.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from ._default_reporter import default_last_document
    from .document import (
        STAGES,
        STATISTICS,
        Statistics,
        check_document,
        check_epoch,
        check_progress,
        check_value,
    )
    from .reporter import StatisticsReporter, flush, get_reporter, report

_LAZY: dict[str, str] = {
    **dict.fromkeys(
        (
            "STAGES",
            "STATISTICS",
            "Statistics",
            "check_document",
            "check_epoch",
            "check_progress",
            "check_value",
        ),
        "abeja_runtime.statistics.document",
    ),
    "default_last_document": "abeja_runtime.statistics._default_reporter",
    "StatisticsReporter": "abeja_runtime.statistics.reporter",
    "flush": "abeja_runtime.statistics.reporter",
    "get_reporter": "abeja_runtime.statistics.reporter",
    "report": "abeja_runtime.statistics.reporter",
}

__all__ = [
    "STAGES",
    "STATISTICS",
    "Statistics",
    "StatisticsReporter",
    "check_document",
    "check_epoch",
    "check_progress",
    "check_value",
    "default_last_document",
    "flush",
    "get_reporter",
    "report",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
