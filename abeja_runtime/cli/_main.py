"""The ``abeja-runtime`` command.

Each subcommand lives in the module of its concern and exposes
``register(subparsers)``; this module only assembles them, so that a command's
heavy imports (werkzeug for the emulator, for example) happen when it runs.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from .._version import __version__
from ..errors import AbejaRuntimeError
from ..exit_codes import EXIT_BROKEN_PIPE, EXIT_INTERRUPTED, EXIT_USAGE, exit_code_for_error

#: modules providing ``register(subparsers)``, in the order of ``--help``
COMMAND_MODULES: list[str] = [
    "abeja_runtime.cli.run",
    "abeja_runtime.cli.commands",
    "abeja_runtime.cli.emulator",
    "abeja_runtime.cli.sync",
]


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr and exit code 2.

    argparse prints the whole usage block before the error; a script reading
    stderr (and a person in a long log) wants the one line that says what is
    wrong, as every other error of the command is. Subparsers inherit the class.
    """

    def error(self, message: str) -> NoReturn:
        """Print ``<prog>: error: <message> (see <prog> --help)`` and exit 2."""
        text = " ".join(message.split())
        self.exit(EXIT_USAGE, f"{self.prog}: error: {text} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every registered subcommand."""
    parser = OneLineParser(
        prog="abeja-runtime",
        description="Run and inspect ABEJA Platform training jobs, locally or on the platform.",
    )
    parser.add_argument("--version", action="version", version=f"abeja-runtime {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def _error_line(exc: BaseException) -> str:
    """One line for ``exc``: what failed, without a traceback."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}"
    return " ".join(str(exc).split()) or type(exc).__name__


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout already closed or not a real file
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse ``argv`` and run the chosen subcommand; returns the exit code.

    The one place a command's failure becomes its exit code and its one line on
    stderr (:func:`~abeja_runtime.exit_codes.exit_code_for_error`): the library's
    own errors, an ``OSError`` (a port in use, a path that cannot be a directory)
    and a closed output pipe (``abeja-runtime jobs list X --json | head -0``) end
    the same way instead of with a traceback.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        code = int(func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, while we can still say so
        return code
    except KeyboardInterrupt:
        print("abeja-runtime: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        print("abeja-runtime: output closed before it was all written", file=sys.stderr)
        return EXIT_BROKEN_PIPE
    except (AbejaRuntimeError, OSError) as exc:  # a command's error the command did not map
        if isinstance(exc, OSError) and exc.errno == errno.EPIPE:
            _silence_stdout()
            print("abeja-runtime: output closed before it was all written", file=sys.stderr)
            return EXIT_BROKEN_PIPE
        print(f"abeja-runtime: error: {_error_line(exc)}", file=sys.stderr)
        return exit_code_for_error(exc)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
