"""``abeja-runtime emulator``: run the Training API emulator in the foreground.

It prints the URL, organization id and credentials to use (a local
development server printing its own token to its operator's terminal is
its purpose; the token never goes into a log line) and keeps its state in
``--data-dir`` across restarts. werkzeug is imported only when the command
runs, so ``abeja-runtime --help`` works without the ``emulator`` extra.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import signal
import sys
import threading
from types import FrameType
from typing import Any

from ..errors import ConfigurationError

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    """Add the ``emulator`` subcommand to the CLI."""
    parser = subparsers.add_parser(
        "emulator",
        help="run the local Training API emulator",
        description=(
            "Serve the ABEJA Platform Training API on this machine, with state kept across "
            "restarts. Point a job or a client at it with the variables it prints."
        ),
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="loopback address to bind (default 127.0.0.1)"
    )
    parser.add_argument("--port", type=int, default=8765, help="TCP port (default 8765; 0: any)")
    state = parser.add_mutually_exclusive_group()
    state.add_argument(
        "--data-dir",
        default=None,
        help="where state and uploads live (default: $ABEJA_RUNTIME_EMULATOR_DIR, else "
        "$XDG_DATA_HOME/abeja-runtime/emulator, else ~/.local/share/abeja-runtime/emulator)",
    )
    state.add_argument(
        "--in-memory", action="store_true", help="keep nothing after the emulator stops"
    )
    parser.add_argument(
        "--quiet", action="store_true", help="do not log requests (method, path, status)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Start the emulator, print how to use it, serve until SIGINT/SIGTERM."""
    try:
        import werkzeug  # noqa: F401
    except ImportError:
        raise ConfigurationError(
            "the emulator needs werkzeug: pip install 'abeja-runtime[emulator]'"
        ) from None
    from ..emulator.server import Emulator

    data_dir: str | None = None
    if not args.in_memory:
        if args.data_dir:
            data_dir = args.data_dir
        else:
            from ..runner.api_target import default_emulator_dir

            data_dir = str(default_emulator_dir())
        _check_data_dir(data_dir, "--data-dir" if args.data_dir else "the data dir")
    emulator = Emulator(data_dir=data_dir, port=args.port, host=args.host)

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    logger = logging.getLogger("abeja_runtime.emulator")
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING if args.quiet else logging.INFO)
    logger.propagate = False

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            emulator.start()
        except OSError as exc:  # bind: in use, not allowed; the store: unreadable dir
            where = f"{args.host}:{args.port}" if exc.filename is None else str(exc.filename)
            raise ConfigurationError(
                f"the emulator cannot start: {exc.strerror or exc} ({where})"
                + (
                    "; pick another --port, or 0 for any free one"
                    if exc.errno == errno.EADDRINUSE
                    else ""
                )
            ) from None
        try:
            print(_banner(emulator), flush=True)
            while not stop.wait(0.5):
                pass
            print("abeja-runtime emulator: stopping", file=sys.stderr, flush=True)
        finally:
            emulator.stop()
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        logger.removeHandler(handler)
    return 0


def _check_data_dir(path: str, what: str) -> None:
    """Refuse a data dir that exists and is not a directory, before anything starts."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigurationError(f"{what} {path!r} exists and is not a directory")


def _banner(emu: Any) -> str:
    state = emu.data_dir or "in memory (discarded on exit)"
    return "\n".join(
        [
            f"ABEJA Training API emulator listening on {emu.url}",
            f"  dashboard:       {emu.dashboard_url}",
            "                   (this link logs a browser in: it holds the token)",
            f"  organization id: {emu.organization_id}",
            f"  state:           {state}",
            "",
            "Use it from a shell (bearer token):",
            f"  export ABEJA_API_URL={emu.url}",
            f"  export ABEJA_ORGANIZATION_ID={emu.organization_id}",
            f"  export PLATFORM_AUTH_TOKEN={emu.token}",
            "or as a user (basic auth):",
            f"  export ABEJA_PLATFORM_USER_ID={emu.user_id}",
            f"  export ABEJA_PLATFORM_PERSONAL_ACCESS_TOKEN={emu.personal_access_token}",
            "",
            "Press Ctrl+C to stop.",
        ]
    )
