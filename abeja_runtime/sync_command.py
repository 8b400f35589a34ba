"""``abeja-runtime sync [--dir DIR]``: send a statistics spool by hand.

A job that ended while the API was unreachable (or was killed and never restarted)
leaves its undelivered epoch ends in its spool (:mod:`abeja_runtime.spool`). This
command posts them, oldest first, to the job each record names, then removes the
spool. It becomes the spool's sender first, so it never races a live process of the
job (if one is sending, it says so and exits 1).

Which API: the same choice as every command (:mod:`abeja_runtime.api_target`):
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
import sys
from pathlib import Path
from typing import Any

from .errors import AbejaRuntimeError, ConfigurationError, HttpError
from .exit_codes import EXIT_FAILURE, EXIT_OK, exit_code_for_error

__all__ = ["register", "sync_spool"]

#: refusals that concern one record only: skip it, go on with the next
_SKIP_STATUSES = frozenset({400, 422})


def _say(text: str) -> None:
    print(text, flush=True)


def _describe(document: dict[str, Any]) -> str:
    parts = []
    for key in ("epoch", "num_epochs", "progress_percentage"):
        if key in document:
            parts.append(f"{key}={document[key]}")
    return " ".join(parts) or "statistics"


def sync_spool(directory: Path, *, organization: str | None = None) -> int:
    """Send every record of the spool in ``directory``; returns the exit code.

    Raises:
        ConfigurationError: no usable API configuration (see :func:`open_target`).
    """
    from .api_target import open_target
    from .spool import DATA_FILE_NAME, Spool, SpoolBusyError

    if not (directory / DATA_FILE_NAME).exists():
        raise ConfigurationError(f"no statistics spool in {directory}")
    spool = Spool(directory)
    try:
        try:
            records = spool.pending()
        except SpoolBusyError as exc:
            print(f"abeja-runtime sync: {exc} (a process of the job is running?)", file=sys.stderr)
            return EXIT_FAILURE
        if spool.damaged:
            _say(f"skipped {spool.damaged} damaged record(s) (see the warnings above)")
        if not records:
            spool.remove()
            _say(f"nothing to send; removed {directory}")
            return EXIT_OK
        org = organization or next((r.job.get("organization_id") for r in records if r.job), None)
        sent = skipped = 0
        with open_target(
            org, announce=lambda line: print(line, file=sys.stderr), brief=True
        ) as target:
            client = target.client
            for record in records:
                job = record.job or {}
                name = job.get("job_definition_name") or os.environ.get(
                    "TRAINING_JOB_DEFINITION_NAME", ""
                )
                job_id = job.get("training_job_id") or os.environ.get("TRAINING_JOB_ID", "")
                if not name or not job_id:
                    raise ConfigurationError(
                        f"record {record.seq} names no job; set TRAINING_JOB_DEFINITION_NAME "
                        "and TRAINING_JOB_ID"
                    )
                label = f"record {record.seq} ({_describe(record.document)}) to job {job_id}"
                try:
                    client.update_statistics(
                        job.get("organization_id") or target.organization_id,
                        name,
                        job_id,
                        record.document,
                    )
                except HttpError as exc:
                    if exc.status_code in _SKIP_STATUSES:
                        skipped += 1
                        _say(f"skipped {label}: refused ({exc})")
                        spool.acknowledge_seq(record.seq)
                        continue
                    _say(f"stopped at {label}: {exc}; {len(records) - sent - skipped} left")
                    return exit_code_for_error(exc)
                except AbejaRuntimeError as exc:
                    _say(f"stopped at {label}: {exc}; {len(records) - sent - skipped} left")
                    return exit_code_for_error(exc)
                spool.acknowledge_seq(record.seq)
                sent += 1
                _say(f"sent {label}")
        spool.remove()
        _say(f"sent {sent}, skipped {skipped}; removed {directory}")
        return EXIT_OK
    finally:
        spool.close()


def _run(args: argparse.Namespace) -> int:
    from .spool import default_spool_dir

    if args.dir:
        directory = Path(args.dir)
    else:
        job_id = os.environ.get("TRAINING_JOB_ID", "").strip()
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


def register(subparsers: Any) -> None:
    """Add ``sync`` to the ``abeja-runtime`` command."""
    parser = subparsers.add_parser(
        "sync",
        help="send a job's leftover statistics spool to the Training API",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    parser.add_argument(
        "--dir",
        help="the spool directory (default: the spool of the job in the environment)",
    )
    parser.add_argument("--organization", help="organization id (default: the one in the records)")
    parser.set_defaults(func=_run)
