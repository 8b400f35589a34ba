"""Post a statistics spool to the Training API: what ``sync`` and ``run`` share.

A spool (:mod:`abeja_runtime.statistics.spool`) holds the epoch ends a job could not
deliver. :func:`deliver_spool` posts them, oldest first, to the job each record names,
with the client's retries; a record the server refuses as malformed (400/422) is
skipped (reported, and acknowledged so it is not sent again); any other failure stops
with the records from that one on still spooled, and the exit code of
:mod:`abeja_runtime.exit_codes`. The spool is removed once every record is done.
``abeja-runtime sync`` (:mod:`abeja_runtime.cli.sync`) sends a spool by hand;
``abeja-runtime run`` sends what its handler left before the job's final status.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import ENV_JOB_DEFINITION_NAME, ENV_TRAINING_JOB_ID
from ..errors import AbejaRuntimeError, ConfigurationError, HttpError
from ..exit_codes import EXIT_FAILURE, EXIT_OK, exit_code_for_error

__all__ = ["deliver_records", "deliver_spool", "open_pending"]


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


def open_pending(
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


def deliver_records(
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
        name = job.get("job_definition_name") or os.environ.get(ENV_JOB_DEFINITION_NAME, "")
        job_id = job.get("training_job_id") or os.environ.get(ENV_TRAINING_JOB_ID, "")
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
    spool, records = open_pending(directory, say, say)
    if spool is None:
        say(f"nothing to send: no statistics spool in {directory}")
        return EXIT_OK
    try:
        if records is None:
            return EXIT_FAILURE
        return deliver_records(spool, records, client, organization, say)
    finally:
        spool.close()
