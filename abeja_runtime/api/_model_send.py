"""A model file or directory sent to the Training API: streamed, checksum-verified, never twice.

The one model upload: :meth:`APIClient.create_training_model` with a path and
:func:`~abeja_runtime.artifacts.models.upload_model` both send through
:func:`send_model_path`. A file that is a valid zip goes as it is; anything else goes
in a stored zip produced while it is sent (its exact length known before the first
byte, no temporary copy). The server's SHA-256 is checked against ours, and after a
dropped connection the job's models are searched for ours before sending again.
"""

from __future__ import annotations

import logging
import os
import stat
import sys
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..archive import (
    StreamedZip,
    is_zip_archive,
    walk_tree,
)
from ..config import RUNTIME_DIR_NAME
from ..errors import (
    AbejaRuntimeError,
    APIConnectionError,
    InvalidDataFormat,
    ModelChecksumError,
)
from .multipart import FileSource, MultipartBody, SizedSource, StreamPart

if TYPE_CHECKING:  # pragma: no cover
    from .client import APIClient

__all__ = ["model_source", "send_model", "send_model_path"]

logger = logging.getLogger("abeja_runtime.models")


#: uploads sent again after an unknown outcome found no model on the server
_MAX_UNKNOWN_OUTCOME_RETRIES = 2


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
    # the spool (``.abeja-runtime/spool``) may live in the result dir that is uploaded
    entries = walk_tree(root, "model directory", exclude_names=_MODEL_EXCLUDED_DIRS)
    for path, _name in entries:
        _check_readable(path)
    return entries


def _write_zip(temp: Path, entries: list[tuple[Path, str]]) -> None:
    try:
        # level 1: weights barely compress, and higher levels cost many
        # times the upload time for a few percent
        with zipfile.ZipFile(
            temp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1
        ) as archive:
            for path, arcname in entries:
                archive.write(path, arcname)
    except OSError as exc:
        raise AbejaRuntimeError(
            f"cannot write the temporary model zip {str(temp)!r}: {exc.strerror or exc}"
        ) from exc


def _model_entries(path: str | os.PathLike[str]) -> tuple[Path, list[tuple[Path, str]] | None]:
    """The checked source path, and the entries to zip (``None``: a zip sent as it is).

    Raises:
        InvalidDataFormat: an empty, missing, special or unreadable path, or
            a directory that holds no files.
    """
    if not os.fspath(path):
        raise InvalidDataFormat("model path is empty")
    src = Path(os.fspath(path))
    try:
        st = src.stat()
    except FileNotFoundError:
        raise InvalidDataFormat(f"model path {str(src)!r} does not exist") from None
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python < 3.13)
        raise InvalidDataFormat(
            f"model path {str(src)!r}: {getattr(exc, 'strerror', None) or exc}"
        ) from None
    _check_special(src, st)
    if stat.S_ISDIR(st.st_mode):
        entries = _tree_files(src)
        if not entries:
            raise InvalidDataFormat(f"model directory {str(src)!r} holds no files")
        return src, entries
    _check_readable(src)
    if is_zip_archive(src):
        return src, None
    return src, [(src, src.name)]


@contextmanager
def model_source(path: str | os.PathLike[str], compress: bool) -> Iterator[SizedSource]:
    """The model as a zip to stream: the ``*.zip`` itself, a streamed stored zip or a deflated one.

    Only ``compress=True`` writes a temporary file (it is removed on exit,
    error or not): deflate needs the whole output to know its length.
    """
    src, entries = _model_entries(path)
    if entries is None:
        yield FileSource(src)
        return
    if not compress:
        yield StreamedZip(entries)
        return
    fd, name = tempfile.mkstemp(prefix="abeja-runtime-model-", suffix=".zip")
    os.close(fd)
    temp = Path(name)
    logger.info("model upload: compress=True, deflating %s into the temporary file %s", src, temp)
    try:
        _write_zip(temp, entries)
        yield FileSource(temp)
    finally:
        temp.unlink(missing_ok=True)


class _Progress:
    """One progress display over the whole body: a tqdm bar, or a log line per 10%.

    A retry starts the body again from 0, and the display with it.
    """

    def __init__(self, total: int, use_tqdm: bool) -> None:
        self.total = total
        self.bar: Any = None
        self._last = 0
        self._logged_tenth = 0
        if use_tqdm:
            from tqdm import tqdm  # the 'progress' extra

            self.bar = tqdm(
                total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="model upload"
            )

    def __call__(self, sent: int, _total: int) -> None:
        if self.bar is not None:
            if sent < self._last:
                self.bar.reset(total=self.total)
                self._last = 0
            self.bar.update(sent - self._last)
            self._last = sent
            return
        if sent < self._last:
            self._logged_tenth = 0
        self._last = sent
        tenth = sent * 10 // max(self.total, 1)
        if tenth > self._logged_tenth:
            self._logged_tenth = tenth
            logger.info("model upload: %d%% (%d of %d bytes)", tenth * 10, sent, self.total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _progress(progress: bool | None, total: int) -> _Progress | None:
    """A tqdm bar when asked for (or on a terminal) and installed, else log lines; or none.

    ``progress=True`` without tqdm warns once and falls back to a log line
    per 10%; ``None`` shows a bar on a terminal and logs lines otherwise.
    """
    if progress is False:
        return None
    try:
        import tqdm  # noqa: F401 - the 'progress' extra
    except ImportError:
        if progress:
            logger.warning(
                "progress=True but tqdm is not installed (pip install 'abeja-runtime[progress]'); "
                "logging the upload's progress every 10%% instead"
            )
        return _Progress(total, use_tqdm=False)
    isatty = getattr(sys.stderr, "isatty", None)
    on_terminal = bool(callable(isatty) and isatty())
    return _Progress(total, use_tqdm=bool(progress) or on_terminal)


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


def send_model(
    client: APIClient,
    org: str,
    name: str,
    source: SizedSource,
    parameters: Mapping[str, Any],
    progress: bool | None = False,
) -> dict[str, Any]:
    """POST ``source`` (a zip) as a model: checksum-verified, never twice.

    The one sender behind :func:`upload_model`, ``APIClient.create_training_model``
    with a path, the CLI and the runner. ``parameters`` must already be JSON.

    Raises:
        ModelChecksumError: the server stored bytes with another SHA-256.
        HttpError: the server refused the upload.
        APIConnectionError: the server stayed unreachable.
    """
    job_id = parameters.get("training_job_id")
    body = MultipartBody()
    part = StreamPart(
        "model_data",
        source,
        filename="model_data.zip",
        content_type="application/zip",
        sha256=True,
    )
    body.add_part(part)
    body.add_bytes(
        "parameters", _json(parameters), filename="params.json", content_type="application/json"
    )
    display = _progress(progress, body.content_length)
    body.on_progress = display
    api_path = client.definition_path(org, name, "models")
    known_sha: str | None = None
    try:
        for attempt in range(_MAX_UNKNOWN_OUTCOME_RETRIES + 1):
            try:
                model = client.request("POST", api_path, data=body, idempotent=False)
            except APIConnectionError as exc:
                if not exc.sent or attempt >= _MAX_UNKNOWN_OUTCOME_RETRIES:
                    raise
                known_sha = known_sha or part.sha256 or part.compute_sha256()
                found = _find_same_model(
                    client, org, name, job_id if isinstance(job_id, str) else None, known_sha
                )
                if found is not None:
                    logger.info("model upload: outcome unknown, found the uploaded model")
                    return dict(found)
                logger.warning("model upload: outcome unknown, no such model; sending again")
                continue
            local = part.sha256 or known_sha or part.compute_sha256()
            remote = model.get("sha256")
            if isinstance(remote, str) and remote and remote.lower() != local:
                raise ModelChecksumError(
                    f"model {model.get('training_model_id')}: the server stored sha256 "
                    f"{remote}, the uploaded file has {local}"
                )
            return model
        raise AssertionError("unreachable")  # pragma: no cover
    finally:
        if display is not None:
            display.close()


def send_model_path(
    client: APIClient,
    org: str,
    name: str,
    path: str | os.PathLike[str],
    parameters: Mapping[str, Any],
    progress: bool | None = False,
) -> dict[str, Any]:
    """:func:`send_model` of a file or directory on disk (streamed, stored zip)."""
    with model_source(path, compress=False) as source:
        return send_model(client, org, name, source, parameters, progress)


def _json(value: Any) -> bytes:
    import json

    return json.dumps(value, allow_nan=False).encode("utf-8")
