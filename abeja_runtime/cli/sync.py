"""``abeja-runtime sync [--dir DIR]``: send a statistics spool by hand.

A job that ended while the API was unreachable (or was killed and never restarted)
leaves its undelivered epoch ends in its spool (:mod:`abeja_runtime.statistics.spool`). This
command posts them, oldest first, to the job each record names, then removes the
spool. It becomes the spool's sender first, so it never races a live process of the
job (if one is sending, it says so and exits 1).

Which API: the same choice as every command (:mod:`abeja_runtime.runner.api_target`):
platform credentials in the environment select ``ABEJA_API_URL``; without them the
embedded emulator on the per-user data dir answers (a local run's leftovers).
Without ``--dir`` the spool is the one of the job in the environment
(``TRAINING_JOB_ID`` under ``ABEJA_RUNTIME_SPOOL_DIR``, or the storage/result dir).

Delivery: each post uses the client's retries (backoff, ``Retry-After``). A record
the server refuses as malformed (400/422) is skipped (reported, and acknowledged so it
is not sent again); any other failure stops the command with the records from that
one on still spooled, and the exit code of :mod:`abeja_runtime.exit_codes`.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Any

from ..config import ENV_TRAINING_JOB_ID
from ..errors import AbejaRuntimeError, ConfigurationError
from ..exit_codes import EXIT_FAILURE, EXIT_OK, exit_code_for_error
from ..statistics.delivery import deliver_records, open_pending

__all__ = ["register", "sync_spool"]


def _say(text: str) -> None:
    print(text, flush=True)


def _complain(text: str) -> None:
    print(f"abeja-runtime sync: {text}", file=sys.stderr, flush=True)


def sync_spool(directory: Path, *, organization: str | None = None) -> int:
    """Send every record of the spool in ``directory``; returns the exit code.

    Raises:
        ConfigurationError: no usable API configuration (see :func:`open_target`).
    """
    from ..runner.api_target import open_target

    spool, records = open_pending(directory, _say, _complain)
    if spool is None:
        _say(f"nothing to send: no statistics spool in {directory}")
        return EXIT_OK
    try:
        if records is None:
            return EXIT_FAILURE
        if not records:
            spool.remove()
            _say(f"nothing to send; removed {directory}")
            return EXIT_OK
        org = organization or next((r.job.get("organization_id") for r in records if r.job), None)
        with open_target(
            org, announce=lambda line: print(line, file=sys.stderr), brief=True
        ) as target:
            return deliver_records(
                spool, records, target.client, org or target.organization_id, _say
            )
    finally:
        spool.close()


def _run(args: argparse.Namespace) -> int:
    from ..statistics.spool import default_spool_dir

    if args.dir:
        directory = Path(args.dir)
    else:
        job_id = os.environ.get(ENV_TRAINING_JOB_ID, "").strip()
        if not job_id:
            raise ConfigurationError(
                "no spool given: pass --dir DIR, or set TRAINING_JOB_ID (and "
                "ABEJA_RUNTIME_SPOOL_DIR or the storage/result dir) to name the job's spool"
            )
        directory = default_spool_dir(job_id)
    try:
        return sync_spool(directory, organization=args.organization)
    except AbejaRuntimeError as exc:
        print(f"abeja-runtime sync: error: {exc}", file=sys.stderr)
        return exit_code_for_error(exc)


def _plain(text: str) -> str:
    """Docstring text without Sphinx markup (``:mod:`x``` and double backquotes) for --help."""
    text = re.sub(r":[a-z]+:`~?([^`<]*?)(?: <[^>]*>)?`", r"\1", text)
    return text.replace("``", "")


def register(subparsers: Any) -> None:
    """Add ``sync`` to the ``abeja-runtime`` command."""
    parser = subparsers.add_parser(
        "sync",
        help="send a job's leftover statistics spool to the Training API",
        description=_plain(__doc__.split("\n\n")[1]) if __doc__ else None,
    )
    parser.add_argument(
        "--dir",
        help="the spool directory (default: the spool of the job in the environment)",
    )
    parser.add_argument("--organization", help="organization id (default: the one in the records)")
    parser.set_defaults(func=_run)
