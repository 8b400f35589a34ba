"""A local Training API emulator: run and test training code with no platform account.

``with Emulator() as emu:`` serves every operation of the Training API (see
``SPEC.md``) on 127.0.0.1 with the platform's semantics, keeps its state in
SQLite (in memory, or under ``data_dir`` across restarts) and uploaded files
on disk. ``abeja-runtime emulator`` runs the same server in the foreground.
It needs the ``emulator`` extra (``pip install 'abeja-runtime[emulator]'``,
for werkzeug); importing this package does not import werkzeug.

Semantics, where the platform leaves a choice:

- Ids are random 13-digit strings; times are ISO-8601 UTC with microseconds
  and ``Z``. Definition names are unique per organization (409), 1-255 of
  ``A-Z a-z 0-9 . _ -`` not starting with ``.`` or ``-``. Versions are
  numbered from 1 per definition and numbers are never reused.
- ``filter_archived=exclude_archived`` hides archived entries,
  ``include_archived`` or no parameter shows all. ``limit`` (1-1000, server
  default 10) and ``offset`` page definitions and jobs, with ``total``.
  Definitions, versions and models are listed in creation order, jobs newest
  first. ``include_jobs`` defaults to true, as on the platform.
- Archive/unarchive are idempotent flags. Deleting a definition is refused
  (409) while it has versions or models, deleting a version while it has
  jobs. New jobs are refused (409) on an archived definition or version.
- Jobs start ``Pending``. Stop (operation 18) works only from ``Pending`` or
  ``Active`` (409 otherwise) and gives ``Stopped``.
- ``update_statistics`` replaces the job's ``statistics`` and appends the
  document to its history (:meth:`Emulator.statistics_history`), in any job
  status. The document follows :mod:`abeja_runtime.statistics_rules`, the
  rules the client checks before posting (body at most 1 MiB, integer
  ``epoch <= num_epochs``, ``progress_percentage`` in [0, 1], non-empty stage
  names, stage ``accuracy``/``loss`` numbers or ``"NaN"``/``"Infinity"``/
  ``"-Infinity"``); bare NaN tokens are not JSON and are refused.
- Models are stored with their byte ``size`` and ``sha256`` (hex), returned
  as two extra fields of the model object. ``exec_env`` of a model is its
  job's, or ``none`` without a job.
- ``download_training_model`` returns ``{"download_uri"}`` and
  ``get_training_result`` returns ``{"artifacts": {"complete": {"uri"}}}``:
  URLs served by the emulator itself under ``/_emulator/blobs/models/<id>``,
  signed with HMAC-SHA256 and valid for an hour (``signed_url_ttl``); they
  need no credential, and an expired or altered one is a 403. A job's result
  is the latest model uploaded with its ``training_job_id`` (404 with a clear
  message while there is none).
- Requests are checked strictly: non-JSON bodies, wrong types, unknown body
  fields or query parameters, names with slashes, ``..`` or control
  characters are a 400 with a clear ``error_description``, and nothing is
  stored. Unknown paths are 404, a known path with another method 405.
- Auth: ``Authorization: Bearer <token>`` or basic ``user-<id>:<personal
  access token>``; 401 without or with a wrong credential, 403 for another
  organization's path. Uploads (versions, models) are parsed as a stream
  straight to files, so a 2 GiB model is never held in memory.

Runner extension (not a platform operation; lets a local runner drive a job
over HTTP, also against an emulator in another process)::

    POST /organizations/{org}/training/definitions/{name}/jobs/{id}/status
    {"status": "Active" | "Complete" | "Failed" | "Stopped", "status_message"?: str}

Legal transitions only: ``Pending`` -> ``Active`` | ``Failed`` | ``Stopped``,
``Active`` -> ``Complete`` | ``Failed`` | ``Stopped``; anything else is a
409. ``Active`` sets ``start_time``; the others set ``completion_time``. The
response is the job. ``create_training_job`` also takes an ``exec_env`` field
(``cloud``, ``edge``, ``local``, ``none``; default ``cloud``) so that a local
run is recorded as ``local``. ``GET /_emulator/health`` (no credential) answers
``{"status": "ok"}``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .server import Emulator

__all__ = ["Emulator"]


def __getattr__(name: str) -> Any:
    # werkzeug is imported only when the server is asked for, so that the CLI
    # (and `import abeja_runtime`) work without the emulator extra
    if name == "Emulator":
        from .server import Emulator

        return Emulator
    raise AttributeError(f"module 'abeja_runtime.emulator' has no attribute {name!r}")
