"""The ``abeja-runtime`` command.

Each subcommand lives in the module of its concern and exposes
``register(subparsers)``; this module only assembles them, so that a command's
heavy imports (werkzeug for the emulator, for example) happen when it runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ._version import __version__
from .errors import AbejaRuntimeError
from .exit_codes import EXIT_USAGE, exit_code_for_error

#: modules providing ``register(subparsers)``, in the order of ``--help``
COMMAND_MODULES: list[str] = [
    "abeja_runtime.runner",
    "abeja_runtime.commands",
    "abeja_runtime.emulator.cli",
    "abeja_runtime.sync_command",
]



def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="abeja-runtime",
        description="Run and inspect ABEJA Platform training jobs, locally or on the platform.",
    )
    parser.add_argument("--version", action="version", version=f"abeja-runtime {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse ``argv`` and run the chosen subcommand; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        print("abeja-runtime: interrupted", file=sys.stderr)
        return 130
    except AbejaRuntimeError as exc:  # a command's own error the command did not map
        print(f"abeja-runtime: error: {exc}", file=sys.stderr)
        return exit_code_for_error(exc)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
