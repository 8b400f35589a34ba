"""Upload the job's final model and download models or results, safely.

Why a module of its own on top of :class:`~abeja_runtime.client.APIClient`:

* memory must not grow with the model: the zip is built in a temporary file
  and streamed by :class:`~abeja_runtime.multipart.MultipartBody` with a known
  Content-Length (never held in memory as the public package does);
* a network hiccup must not create two models: an upload whose outcome is
  unknown (the body may have reached the server) first looks for a model of
  the same job with the same SHA-256 before sending again;
* a downloaded archive comes from the network, so it is verified and
  extracted by :func:`~abeja_runtime.archive.safe_extract`, which refuses
  anything that could write outside ``dest``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import stat
import sys
import tempfile
import threading
import zipfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

from .archive import safe_extract, tree_files
from .client import ENV_JOB_DEFINITION_NAME, ENV_ORGANIZATION_ID, ENV_TRAINING_JOB_ID, APIClient
from .errors import (
    AbejaRuntimeError,
    APIConnectionError,
    InvalidDataFormat,
    JobContextError,
)
from .multipart import FilePart, MultipartBody
from .spool import RUNTIME_DIR_NAME

__all__ = [
    "ModelChecksumError",
    "download_model",
    "download_training_result",
    "upload_model",
]

logger = logging.getLogger(__name__)

_CHUNK = 1024 * 1024
#: uploads sent again after an unknown outcome found no model on the server
_MAX_UNKNOWN_OUTCOME_RETRIES = 2


class ModelChecksumError(AbejaRuntimeError):
    """The bytes the server stored (or sent back) differ from the ones we have."""


# --------------------------------------------------------------------- helpers


class _ThreadHashedFilePart(FilePart):
    """A file part whose SHA-256 is taken on a helper thread while the body streams.

    Why not ``FilePart(sha256=True)``: hashing in the sending thread serialises
    it with the socket writes, and SHA-256 (about 1 GB/s) is slower than a
    loopback or 10 GbE link, so the upload would run at hashing speed.
    ``hashlib`` releases the GIL on large updates, so a thread overlaps the
    two; the queue is bounded (a few chunks), so memory stays flat.
    """

    _QUEUE_CHUNKS = 8

    def chunks(self, chunk_size: int) -> Iterator[bytes]:
        digest = hashlib.sha256()
        pending: queue.Queue[bytes | None] = queue.Queue(self._QUEUE_CHUNKS)

        def consume() -> None:
            while (item := pending.get()) is not None:
                digest.update(item)

        worker = threading.Thread(target=consume, name="model-sha256", daemon=True)
        worker.start()
        self.sha256 = None
        complete = False
        try:
            for chunk in super().chunks(chunk_size):
                pending.put(chunk)
                yield chunk
            complete = True
        finally:
            pending.put(None)
            worker.join()
        if complete:
            self.sha256 = digest.hexdigest()


def _env(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise JobContextError(
            f"{name} is not set: give it as an argument or run inside a training job",
            missing=[name],
        )
    return value


def _sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _default_metrics() -> dict[str, Any] | None:
    """The default reporter's last document, without creating a reporter."""
    module = sys.modules.get("abeja_runtime.reporter")
    reporter = getattr(module, "_default", None) if module is not None else None
    if reporter is None:
        return None
    try:
        document = reporter.last_document
    except Exception:
        logger.debug("cannot read the last statistics document", exc_info=True)
        return None
    return dict(document) if document else None


def _check_special(path: Path, st: os.stat_result) -> None:
    mode = st.st_mode
    if stat.S_ISSOCK(mode):
        raise InvalidDataFormat(f"{str(path)!r} is a socket, not a model file or directory")
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        raise InvalidDataFormat(f"{str(path)!r} is a device, not a model file or directory")
    if stat.S_ISFIFO(mode):
        raise InvalidDataFormat(f"{str(path)!r} is a pipe, not a model file or directory")


def _check_readable(path: Path) -> None:
    try:
        with open(path, "rb") as fh:
            fh.read(0)
    except OSError as exc:
        raise InvalidDataFormat(f"{str(path)!r} cannot be read: {exc.strerror or exc}") from None


#: directories never zipped into a model: this library's own working files
_MODEL_EXCLUDED_DIRS = frozenset({RUNTIME_DIR_NAME})


def _tree_files(root: Path) -> list[tuple[Path, str]]:
    """``(file, name in the zip)`` for every file of the model directory (see ``tree_files``)."""

    def skipped(path: Path, why: str) -> None:
        logger.warning("model directory: skipping %s (%s)", path, why)

    # the spool (``.abeja-runtime/spool``) may live in the result dir that is uploaded
    entries = list(tree_files(root, exclude_names=_MODEL_EXCLUDED_DIRS, on_skip=skipped))
    for path, _name in entries:
        _check_readable(path)
    return entries


def _new_temp_zip() -> Path:
    fd, name = tempfile.mkstemp(prefix="abeja-runtime-model-", suffix=".zip")
    os.close(fd)
    return Path(name)


def _write_zip(temp: Path, entries: list[tuple[Path, str]]) -> None:
    try:
        # level 1: weights barely compress, and higher levels cost many
        # times the upload time for a few percent (as the runner's zips)
        with zipfile.ZipFile(
            temp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1
        ) as archive:
            for path, arcname in entries:
                archive.write(path, arcname)
    except OSError as exc:
        raise AbejaRuntimeError(
            f"cannot write the temporary model zip {str(temp)!r}: {exc.strerror or exc}"
        ) from exc


@contextmanager
def _model_zip(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A zip of ``path`` on disk; a temporary one is removed on exit, error or not."""
    src = Path(os.fspath(path))
    if not str(path):
        raise InvalidDataFormat("model path is empty")
    try:
        st = src.stat()
    except FileNotFoundError:
        raise InvalidDataFormat(f"model path {str(src)!r} does not exist") from None
    except OSError as exc:
        raise InvalidDataFormat(f"model path {str(src)!r}: {exc.strerror or exc}") from None
    _check_special(src, st)
    temp: Path | None = None
    try:
        if stat.S_ISDIR(st.st_mode):
            entries = _tree_files(src)
            if not entries:
                raise InvalidDataFormat(f"model directory {str(src)!r} holds no files")
            temp = _new_temp_zip()
            _write_zip(temp, entries)
            yield temp
            return
        _check_readable(src)
        if zipfile.is_zipfile(src):
            yield src
            return
        temp = _new_temp_zip()
        _write_zip(temp, [(src, src.name)])
        yield temp
    finally:
        if temp is not None:
            temp.unlink(missing_ok=True)


def _progress_callback(
    progress: bool | None, total: int
) -> tuple[Callable[[int, int], None] | None, Any]:
    """A tqdm bar when asked for or on a terminal; ``(None, None)`` otherwise or without tqdm."""
    if progress is None:
        isatty = getattr(sys.stderr, "isatty", None)
        progress = bool(callable(isatty) and isatty())
    if not progress:
        return None, None
    try:
        from tqdm import tqdm  # the 'progress' extra
    except ImportError:
        return None, None
    bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="model upload")
    state = {"last": 0}

    def update(sent: int, _total: int) -> None:
        if sent < state["last"]:  # a retry starts again from 0
            bar.reset(total=total)
            state["last"] = 0
        bar.update(sent - state["last"])
        state["last"] = sent

    return update, bar


def _find_same_model(
    client: APIClient, org: str, name: str, training_job_id: str | None, sha256: str
) -> dict[str, Any] | None:
    listing = client.get_training_models(org, name)
    for entry in listing.get("entries") or []:
        if not isinstance(entry, dict) or entry.get("sha256") != sha256:
            continue
        if training_job_id is not None and entry.get("training_job_id") != training_job_id:
            continue  # the same bytes uploaded by another job are not our upload
        return entry
    return None


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
    client: APIClient | None = None,
    organization_id: str | None = None,
) -> dict[str, Any]:
    """Upload a file or a directory as the job's model, streamed and without duplicates.

    Args:
        path: a zip (sent as it is), another file (wrapped in a zip) or a
            directory (zipped with its relative layout; symlinks out of the
            tree are skipped).
        description: the model's description.
        user_parameters: free-form parameters stored with the model.
        metrics: the model's metrics; the default reporter's last statistics
            document when ``None`` and one was reported.
        training_job_id: ``TRAINING_JOB_ID`` when ``None``.
        job_definition_name: ``TRAINING_JOB_DEFINITION_NAME`` when ``None``.
        progress: show a tqdm bar; ``None`` shows one only on a terminal.
        client: the API client (one from the environment when ``None``).
        organization_id: ``ABEJA_ORGANIZATION_ID`` when ``None``.

    Returns:
        the model dict the server answered.

    Raises:
        InvalidDataFormat: missing, empty, unreadable or special path (no request sent).
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
        parameters["description"] = description
    if user_parameters is not None:
        parameters["user_parameters"] = dict(user_parameters)
    if metrics:
        parameters["metrics"] = dict(metrics)
    with _model_zip(path) as zip_path:
        own_client = client is None
        api = client if client is not None else APIClient()
        try:
            return _upload_zip(api, org, name, job_id, zip_path, parameters, progress)
        finally:
            if own_client:
                api.close()


def _upload_zip(
    client: APIClient,
    org: str,
    name: str,
    job_id: str | None,
    zip_path: Path,
    parameters: dict[str, Any],
    progress: bool | None,
) -> dict[str, Any]:
    body = MultipartBody()
    part = _ThreadHashedFilePart(
        "model_data", zip_path, filename="model_data.zip", content_type="application/zip"
    )
    body.add_part(part)
    body.add_bytes(
        "parameters", _json(parameters), filename="params.json", content_type="application/json"
    )
    callback, bar = _progress_callback(progress, body.content_length)
    body.on_progress = callback
    api_path = client._definition(org, name, "models")
    known_sha: str | None = None
    try:
        for attempt in range(_MAX_UNKNOWN_OUTCOME_RETRIES + 1):
            try:
                model = client.request("POST", api_path, data=body, idempotent=False)
            except APIConnectionError as exc:
                if not exc.sent or attempt >= _MAX_UNKNOWN_OUTCOME_RETRIES:
                    raise
                known_sha = known_sha or part.sha256 or _sha256_file(zip_path)
                found = _find_same_model(client, org, name, job_id, known_sha)
                if found is not None:
                    logger.info("model upload: outcome unknown, found the uploaded model")
                    return dict(found)
                logger.warning("model upload: outcome unknown, no such model; sending again")
                continue
            local = part.sha256 or known_sha or _sha256_file(zip_path)
            remote = model.get("sha256")
            if isinstance(remote, str) and remote and remote.lower() != local:
                raise ModelChecksumError(
                    f"model {model.get('training_model_id')}: the server stored sha256 "
                    f"{remote}, the uploaded file has {local}"
                )
            return model
        raise AssertionError("unreachable")  # pragma: no cover
    finally:
        if bar is not None:
            bar.close()


def _json(value: Any) -> bytes:
    import json

    return json.dumps(value, allow_nan=False).encode("utf-8")


# -------------------------------------------------------------------- download


def _fetch(url: str, dest_file: Path, timeout: Any) -> str:
    """Stream ``url`` (a signed URL: no credential sent) to ``dest_file``; its SHA-256."""
    digest = hashlib.sha256()
    with requests.get(url, stream=True, timeout=timeout) as response:
        if response.status_code != 200:
            raise AbejaRuntimeError(
                f"model download failed: HTTP {response.status_code} from the signed URL"
            )
        with open(dest_file, "wb") as out:
            for chunk in response.iter_content(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
    return digest.hexdigest()


def _download_and_extract(
    url: str, dest: str | os.PathLike[str], expected_sha256: str | None, timeout: Any
) -> Path:
    target = Path(dest)
    target.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="abeja-runtime-download-", suffix=".zip")
    os.close(fd)
    temp = Path(name)
    try:
        got = _fetch(url, temp, timeout)
        if expected_sha256 and got != expected_sha256.lower():
            raise ModelChecksumError(
                f"downloaded model has sha256 {got}, the server recorded {expected_sha256}"
            )
        safe_extract(temp, target)
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
) -> Path:
    """Download a model and extract it into ``dest``, verified and without path traversal.

    Returns:
        ``dest`` as a :class:`~pathlib.Path`.

    Raises:
        ModelChecksumError: the bytes differ from the model's recorded SHA-256.
        InvalidDataFormat: the archive has an entry that would land outside ``dest``.
    """
    org = organization_id or _env(ENV_ORGANIZATION_ID)
    name = job_definition_name or _env(ENV_JOB_DEFINITION_NAME)
    api = client if client is not None else APIClient()
    try:
        model = api.get_training_model(org, name, model_id)
        uri = api.download_training_model(org, name, model_id)["download_uri"]
        expected = model.get("sha256")
        return _download_and_extract(
            uri, dest, expected if isinstance(expected, str) else None, api.timeout
        )
    finally:
        if client is None:
            api.close()


def download_training_result(
    training_job_id: str,
    dest: str | os.PathLike[str],
    *,
    job_definition_name: str | None = None,
    client: APIClient | None = None,
    organization_id: str | None = None,
) -> Path:
    """Download a training job's result (its latest model) and extract it into ``dest``.

    Returns:
        ``dest`` as a :class:`~pathlib.Path`.
    """
    org = organization_id or _env(ENV_ORGANIZATION_ID)
    name = job_definition_name or _env(ENV_JOB_DEFINITION_NAME)
    api = client if client is not None else APIClient()
    try:
        result = api.get_training_result(org, name, training_job_id)
        uri = result["artifacts"]["complete"]["uri"]
        return _download_and_extract(uri, dest, None, api.timeout)
    finally:
        if client is None:
            api.close()
