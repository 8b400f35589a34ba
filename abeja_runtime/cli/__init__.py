"""The ``abeja-runtime`` command line: the top wing, which may import every other.

``_main`` assembles the subcommands (:func:`main`, the console script); each
subcommand's module exposes ``register(subparsers)``: ``run`` (the runner),
``commands`` (the control commands), ``sync`` and ``emulator``.
"""

from __future__ import annotations

from ._main import main

__all__ = ["main"]
