"""The source directory as a job definition version's zip, and the result dir as a model."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ..archive import StreamedZip, walk_tree
from .api_target import ApiTarget

if TYPE_CHECKING:  # pragma: no cover
    pass

__all__ = [
    "SOURCE_EXCLUDED_DIRS",
    "SOURCE_EXCLUDED_SUFFIXES",
    "source_archive",
    "upload_result_dir_as_model",
    "zip_directory",
]


#: directory names never uploaded with the source code
SOURCE_EXCLUDED_DIRS = frozenset(
    {
        ".venv",
        "venv",
        ".git",
        ".hg",
        ".svn",
        "__pycache__",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        ".ipynb_checkpoints",
        ".abeja-runtime",
    }
)
SOURCE_EXCLUDED_SUFFIXES = (".pyc", ".pyo")

# --------------------------------------------------------------------------- zips


def source_archive(
    root: Path,
    *,
    exclude_dirs: Iterable[Path] = (),
    exclude_names: frozenset[str] = frozenset(),
    exclude_suffixes: tuple[str, ...] = (),
) -> tuple[StreamedZip, int, int]:
    """``root``'s files as a streamed zip, with paths relative to ``root``.

    The one zip writer of the package (:class:`~abeja_runtime.archive.StreamedZip`):
    produced while the request body is sent, so nothing is written to disk and
    memory does not grow with the files. Symbolic links are followed only when
    they point inside ``root`` (a link to a dataset elsewhere must not drag it
    into the upload, a link loop must not hang us); what is skipped is named
    in one warning.

    Returns:
        (the archive, number of files, total bytes of the files).
    """
    root = root.resolve()
    entries = walk_tree(
        root,
        "source directory",
        exclude_dirs=exclude_dirs,
        exclude_names=exclude_names,
        exclude_suffixes=exclude_suffixes,
    )
    total = sum(path.stat().st_size for path, _name in entries)
    return StreamedZip(entries), len(entries), total


def zip_directory(
    root: Path,
    fileobj: IO[bytes],
    *,
    exclude_dirs: Iterable[Path] = (),
    exclude_names: frozenset[str] = frozenset(),
    exclude_suffixes: tuple[str, ...] = (),
) -> tuple[int, int]:
    """Write :func:`source_archive` of ``root`` to ``fileobj`` (for callers that need a file).

    Returns:
        (number of files, total uncompressed bytes).
    """
    archive, count, total = source_archive(
        root,
        exclude_dirs=exclude_dirs,
        exclude_names=exclude_names,
        exclude_suffixes=exclude_suffixes,
    )
    for chunk in archive:
        fileobj.write(chunk)
    return count, total


def _directory_is_empty(path: Path) -> bool:
    return not path.is_dir() or not any(p.is_file() for p in path.rglob("*"))


def upload_result_dir_as_model(
    api: ApiTarget,
    job_definition_name: str,
    training_job_id: str,
    result_dir: Path,
    *,
    metrics: Mapping[str, Any] | None,
    description: str | None,
) -> dict[str, Any]:
    """Upload ``result_dir`` as the job's model; the ONE place a run creates a model.

    Through :func:`abeja_runtime.artifacts.models.upload_model` (a stored zip produced while it is sent,
    SHA-256 checked, no duplicate after a dropped connection): operation 24 with
    ``training_job_id``, ``description`` and the final statistics as ``metrics``, less
    the ``"system"`` metrics (the machine's load says nothing of the model).
    Kept in one function so that a run creates models in one place only.

    Returns:
        the model dict from the API.
    """
    from ..artifacts.models import upload_model  # streamed, checksum-verified, duplicate-safe
    from ..statistics.sysmetrics import SYSTEM_METRICS_KEY

    return upload_model(
        result_dir,
        description=description or None,
        metrics={k: v for k, v in (metrics or {}).items() if k != SYSTEM_METRICS_KEY},
        training_job_id=training_job_id,
        job_definition_name=job_definition_name,
        organization_id=api.organization_id,
        client=api.client,
        progress=False,
    )
