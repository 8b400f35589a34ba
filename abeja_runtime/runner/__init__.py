"""The runner wing: ``abeja-runtime run``, a training job on this machine.

``run`` orchestrates one run (:func:`run_handler`); ``child`` is the process that
imports and calls the handler (``python -m abeja_runtime.runner.child``); ``api_target``
chooses the Training API a command talks to (the platform's, or the embedded emulator).
This wing may import every wing but ``cli`` (see ``CONTRIBUTING.md``). Names load
lazily, so that the child process imports nothing of the parent's side.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .run import run_handler

_LAZY: dict[str, str] = {"run_handler": "abeja_runtime.runner.run"}

__all__ = ["run_handler"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
