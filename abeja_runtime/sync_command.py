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
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import AbejaRuntimeError, ConfigurationError, HttpError
from .exit_codes import EXIT_FAILURE, EXIT_OK, exit_code_for_error

__all__ = ["deliver_spool", "register", "sync_spool"]

#: refusals that concern one record only: skip it, go on with the next
_SKIP_STATUSES = frozenset({400, 422})


def _say(text: str) -> None:
    print(text, flush=True)


def _complain(text: str) -> None:
    print(f"abeja-runtime sync: {text}", file=sys.stderr, flush=True)


def _describe(document: dict[str, Any]) -> str:
    parts = []
    for key in ("epoch", "num_epochs", "progress_percentage"):
        if key in document:
            parts.append(f"{key}={document[key]}")
    return " ".join(parts) or "statistics"


def _open_pending(
    directory: Path, say: Callable[[str], None], complain: Callable[[str], None]
) -> tuple[Any, list[Any] | None]:
    """The spool in ``directory`` (as its sender) and its records; None when busy.

    No spool there (never made, or removed by a sync that sent everything): no spool
    object and no records, which is "nothing to send", not an error.
    """
    from .spool import DATA_FILE_NAME, Spool, SpoolBusyError

    if not (directory / DATA_FILE_NAME).exists():
        return None, []  # never made, or removed by a sync that sent everything
    spool = Spool(directory)
    try:
        records = spool.pending()
    except SpoolBusyError as exc:
        complain(f"{exc} (a process of the job is running?)")
        return spool, None
    except BaseException:
        spool.close()
        raise
    if spool.damaged:
        say(f"skipped {spool.damaged} damaged record(s) (see the warnings above)")
    return spool, records


def _deliver(
    spool: Any,
    records: list[Any],
    client: Any,
    organization: str | None,
    say: Callable[[str], None],
) -> int:
    """Post ``records`` in order, acknowledging each; remove the spool when all are done."""
    sent = skipped = 0
    for record in records:
        job = record.job or {}
        name = job.get("job_definition_name") or os.environ.get("TRAINING_JOB_DEFINITION_NAME", "")
        job_id = job.get("training_job_id") or os.environ.get("TRAINING_JOB_ID", "")
        org = job.get("organization_id") or organization
        if not name or not job_id or not org:
            raise ConfigurationError(
                f"record {record.seq} names no job; set TRAINING_JOB_DEFINITION_NAME "
                "and TRAINING_JOB_ID (and --organization)"
            )
        label = f"record {record.seq} ({_describe(record.document)}) to job {job_id}"
        try:
            client.update_statistics(org, name, job_id, record.document)
        except HttpError as exc:
            if exc.status_code in _SKIP_STATUSES:
                skipped += 1
                say(f"skipped {label}: refused ({exc})")
                spool.acknowledge_seq(record.seq)
                continue
            say(f"stopped at {label}: {exc}; {len(records) - sent - skipped} left")
            return exit_code_for_error(exc)
        except AbejaRuntimeError as exc:
            say(f"stopped at {label}: {exc}; {len(records) - sent - skipped} left")
            return exit_code_for_error(exc)
        spool.acknowledge_seq(record.seq)
        sent += 1
        say(f"sent {label}")
    spool.remove()
    say(f"sent {sent}, skipped {skipped}; removed {spool.directory}")
    return EXIT_OK


def deliver_spool(
    directory: Path,
    client: Any,
    *,
    organization: str | None = None,
    say: Callable[[str], None] = _say,
) -> int:
    """Post every record of the spool in ``directory`` with ``client``; the exit code.

    The spool is removed once every record was delivered (or refused as malformed);
    no spool in ``directory`` is nothing to send (exit 0).
    ``abeja-runtime run`` calls this after its handler ended, so that what a killed
    handler left is delivered before the job gets its final status.

    Raises:
        ConfigurationError: a record names no job and the environment does not either.
    """
    spool, records = _open_pending(directory, say, say)
    if spool is None:
        say(f"nothing to send: no statistics spool in {directory}")
        return EXIT_OK
    try:
        if records is None:
            return EXIT_FAILURE
        return _deliver(spool, records, client, organization, say)
    finally:
        spool.close()


def sync_spool(directory: Path, *, organization: str | None = None) -> int:
    """Send every record of the spool in ``directory``; returns the exit code.

    Raises:
        ConfigurationError: no usable API configuration (see :func:`open_target`).
    """
    from .api_target import open_target

    spool, records = _open_pending(directory, _say, _complain)
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
            return _deliver(spool, records, target.client, org or target.organization_id, _say)
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
