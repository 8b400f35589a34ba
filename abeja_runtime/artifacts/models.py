"""Upload the job's final model and download models or results, safely.

Why a module of its own on top of :class:`~abeja_runtime.api.client.APIClient`:

* the upload runs at link speed, with memory flat and no temporary copy: a
  directory or a single model file becomes a *stored* zip produced while the
  request body is sent (:class:`~abeja_runtime.archive.StreamedZip`), with an
  exact Content-Length known before the first byte; ``compress=True`` is the
  opt-in for slow links (deflated into a temporary file first);
* a file is sent as the archive itself only when it is named ``*.zip`` and is
  a valid zip: ``.pt``, ``.npz`` and ``.keras`` files are zips by content, and
  must come back by their name, not as their internals;
* a network hiccup must not create two models: an upload whose outcome is
  unknown (the body may have reached the server) first looks for a model of
  the same job with the same SHA-256 before sending again (the zip is
  re-streamed from its start, byte for byte the same);
* metrics and user parameters are converted as statistics are (numpy/torch
  scalars, NaN as ``"NaN"``), or refused naming the key, before anything is sent;
* a downloaded archive comes from the network, so it is verified
  (:mod:`abeja_runtime.artifacts.downloads`) and extracted by
  :func:`~abeja_runtime.archive.safe_extract`, which refuses anything that
  could write outside ``dest`` or expand past its limits.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from ..api._model_send import model_source, send_model
from ..api.client import (
    ENV_JOB_DEFINITION_NAME,
    ENV_ORGANIZATION_ID,
    ENV_TRAINING_JOB_ID,
    APIClient,
)
from ..archive import (
    DEFAULT_MAX_ENTRIES,
    DEFAULT_MAX_RATIO,
    DEFAULT_MAX_TOTAL_BYTES,
    safe_extract,
)
from ..errors import (
    InvalidDataFormat,
    JobContextError,
    StatisticsError,
)
from ..jsonsafe import to_json_safe
from .downloads import ModelChecksumError, fetch_verified

__all__ = [
    "ModelChecksumError",
    "download_model",
    "download_training_result",
    "upload_model",
]

logger = logging.getLogger("abeja_runtime.models")


# --------------------------------------------------------------------- helpers


def _env(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise JobContextError(
            f"{name} is not set: give it as an argument or run inside a training job",
            missing=[name],
        )
    return value


def _default_metrics() -> dict[str, Any] | None:
    """The default reporter's last document, without creating a reporter."""
    from ..statistics import default_last_document

    try:
        return default_last_document()
    except Exception:
        logger.debug("cannot read the last statistics document", exc_info=True)
        return None


def _json_mapping(value: Any, what: str) -> dict[str, Any]:
    """``value`` as strict JSON the way statistics are sent, or an error naming the key."""
    if not isinstance(value, Mapping):
        raise InvalidDataFormat(f"{what} must be a dict, got {type(value).__name__}")
    try:
        converted = to_json_safe(dict(value), what)
    except StatisticsError as exc:
        raise InvalidDataFormat(str(exc)) from None
    assert isinstance(converted, dict)
    return converted


# ---------------------------------------------------------------------- upload


def upload_model(
    path: str | os.PathLike[str],
    *,
    description: str | None = None,
    user_parameters: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    training_job_id: str | None = None,
    job_definition_name: str | None = None,
    progress: bool | None = None,
    compress: bool = False,
    client: APIClient | None = None,
    organization_id: str | None = None,
) -> dict[str, Any]:
    """Upload a file or a directory as the job's model, streamed and without duplicates.

    Args:
        path: a ``*.zip`` that is a valid zip (sent as it is), another file
            (wrapped in a zip, so it comes back by its name: ``model.pt``
            stays ``model.pt``) or a directory (zipped with its relative
            layout; symlink loops, links out of the tree and special files
            are skipped with one warning naming them).
        description: the model's description.
        user_parameters: free-form parameters stored with the model
            (numpy/torch scalars converted, NaN sent as ``"NaN"``).
        metrics: the model's metrics, converted the same way; the default
            reporter's last statistics document when ``None`` and one was reported.
        training_job_id: ``TRAINING_JOB_ID`` when ``None``.
        job_definition_name: ``TRAINING_JOB_DEFINITION_NAME`` when ``None``.
        progress: ``True``: a tqdm bar (a log line per 10% and a warning when
            tqdm is missing); ``None``: a bar on a terminal, log lines
            otherwise; ``False``: nothing.
        compress: deflate the members (level 1) instead of storing them: for
            slow links and compressible content only; it writes a temporary
            zip first (as large as the compressed model) in the temp directory.
        client: the API client (one from the environment when ``None``).
        organization_id: ``ABEJA_ORGANIZATION_ID`` when ``None``.

    Returns:
        the model dict the server answered.

    Raises:
        InvalidDataFormat: missing, empty, unreadable or special path, or a
            metric/parameter that is not JSON (no request sent).
        ModelChecksumError: the server stored bytes with another SHA-256.
        HttpError: the server refused the upload (e.g. too large).
        APIConnectionError: the server stayed unreachable.
    """
    org = organization_id or _env(ENV_ORGANIZATION_ID)
    name = job_definition_name or _env(ENV_JOB_DEFINITION_NAME)
    job_id = training_job_id or os.environ.get(ENV_TRAINING_JOB_ID, "").strip() or None
    if metrics is None:
        metrics = _default_metrics()
    parameters: dict[str, Any] = {}
    if job_id is not None:
        parameters["training_job_id"] = job_id
    if description is not None:
        if not isinstance(description, str):
            raise InvalidDataFormat(f"description must be a str, got {type(description).__name__}")
        parameters["description"] = description
    if user_parameters is not None:
        parameters["user_parameters"] = _json_mapping(user_parameters, "user_parameters")
    if metrics:
        parameters["metrics"] = _json_mapping(metrics, "metrics")
    with model_source(path, compress) as source:
        own_client = client is None
        api = client if client is not None else APIClient()
        try:
            return send_model(api, org, name, source, parameters, progress)
        finally:
            if own_client:
                api.close()


# -------------------------------------------------------------------- download


def _download_and_extract(
    url: str,
    dest: str | os.PathLike[str],
    expected_sha256: str | Collection[str] | None,
    timeout: Any,
    what: str,
    limits: dict[str, Any],
) -> Path:
    """Fetch the archive into a hidden file inside ``dest``, verify, extract, remove it.

    The archive is kept inside ``dest`` (not the system temp directory), so
    nothing is written outside ``dest``, and on the volume it is meant for.
    """
    target = Path(dest)
    target.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=target, prefix=".abeja-runtime-download-", suffix=".zip")
    os.close(fd)
    temp = Path(name)
    try:
        fetch_verified(url, temp, expected_sha256=expected_sha256, timeout=timeout, what=what)
        safe_extract(temp, target, **limits)
    finally:
        temp.unlink(missing_ok=True)
    return target


def download_model(
    model_id: str,
    dest: str | os.PathLike[str],
    *,
    job_definition_name: str | None = None,
    client: APIClient | None = None,
    organization_id: str | None = None,
    max_entries: int = DEFAULT_MAX_ENTRIES,
    max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
    max_ratio: float = DEFAULT_MAX_RATIO,
) -> Path:
    """Download a model and extract it into ``dest``, verified and without path traversal.

    Args:
        model_id: the model.
        dest: the directory to extract into (created if missing).
        job_definition_name: ``TRAINING_JOB_DEFINITION_NAME`` when ``None``.
        client: the API client (one from the environment when ``None``).
        organization_id: ``ABEJA_ORGANIZATION_ID`` when ``None``.
        max_entries: most archive entries extracted (100 000 by default).
        max_total_bytes: most bytes the archive may expand to (1 TiB by default).
        max_ratio: most the archive may expand relative to its size, once
            past 1 MiB (200 by default; a stored model is about 1).

    Returns:
        ``dest`` as a :class:`~pathlib.Path`.

    Raises:
        ModelChecksumError: the bytes differ from the model's recorded SHA-256.
        InvalidDataFormat: the archive has an entry that would land outside
            ``dest`` or clash with a directory, or is over a limit (nothing
            is extracted then).
    """
    org = organization_id or _env(ENV_ORGANIZATION_ID)
    name = job_definition_name or _env(ENV_JOB_DEFINITION_NAME)
    limits = {
        "max_entries": max_entries,
        "max_total_bytes": max_total_bytes,
        "max_ratio": max_ratio,
    }
    api = client if client is not None else APIClient()
    try:
        model = api.get_training_model(org, name, model_id)
        uri = api.download_training_model(org, name, model_id)["download_uri"]
        expected = model.get("sha256")
        return _download_and_extract(
            uri,
            dest,
            expected if isinstance(expected, str) else None,
            api.timeout,
            f"model {model_id}",
            limits,
        )
    finally:
        if client is None:
            api.close()


def job_model_checksums(api: APIClient, org: str, name: str, training_job_id: str) -> set[str]:
    """The SHA-256 of every model the job uploaded: one of them is its result."""
    listing = api.get_training_models(org, name)
    return {
        entry["sha256"]
        for entry in listing.get("entries") or []
        if isinstance(entry, dict)
        and entry.get("training_job_id") == training_job_id
        and isinstance(entry.get("sha256"), str)
    }


def download_training_result(
    training_job_id: str,
    dest: str | os.PathLike[str],
    *,
    job_definition_name: str | None = None,
    client: APIClient | None = None,
    organization_id: str | None = None,
    max_entries: int = DEFAULT_MAX_ENTRIES,
    max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
    max_ratio: float = DEFAULT_MAX_RATIO,
) -> Path:
    """Download a training job's result (its latest model) and extract it into ``dest``.

    The result carries no checksum of its own; its bytes are checked against
    the SHA-256 of the models the job uploaded (when the server lists any).
    The limits are those of :func:`download_model`.

    Returns:
        ``dest`` as a :class:`~pathlib.Path`.

    Raises:
        ModelChecksumError: the bytes match none of the job's models.
        InvalidDataFormat: as :func:`download_model`.
    """
    org = organization_id or _env(ENV_ORGANIZATION_ID)
    name = job_definition_name or _env(ENV_JOB_DEFINITION_NAME)
    limits = {
        "max_entries": max_entries,
        "max_total_bytes": max_total_bytes,
        "max_ratio": max_ratio,
    }
    api = client if client is not None else APIClient()
    try:
        result = api.get_training_result(org, name, training_job_id)
        uri = result["artifacts"]["complete"]["uri"]
        expected = job_model_checksums(api, org, name, training_job_id)
        return _download_and_extract(
            uri, dest, expected, api.timeout, f"result of job {training_job_id}", limits
        )
    finally:
        if client is None:
            api.close()
