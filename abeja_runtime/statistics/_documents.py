"""Statistics documents as the reporter and the spool handle them: snapshots, copies, JSON.

One home for what both the reporter and the spool do to a document (the spool must not
import the reporter): the :class:`Snapshot` record, copies that later merges cannot
change, tensor freezing for must-deliver snapshots, the lenient conversion to JSON
values used on the sender thread, and the key paths used to repair a document after a
refusal the statistics rules did not foresee.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from ..errors import StatisticsError
from ..jsonsafe import is_tensor_like, to_json_safe

__all__ = [
    "Snapshot",
    "convert_document",
    "copy_document",
    "drop_paths",
    "freeze_tensors",
    "key_paths",
    "warn_once",
]

logger = logging.getLogger("abeja_runtime.reporter")


class Snapshot(NamedTuple):
    """One complete statistics document as it stood after a ``report()`` call.

    The document is the snapshot's own copy (reports merge into the reporter's current
    document, never into a snapshot), so the sender reads it without a lock. Values are
    as reported (tensors not read yet).

    Attributes:
        seq: position in this reporter's report order (1, 2, ...); 0 for a record of
            the spool that another process (or an earlier one) wrote.
        document: the merged statistics document.
        epoch_end: True for a must-deliver snapshot.
        created: wall-clock time (``time.time()``) of the report or of the copy.
        barrier: the spool position this snapshot waits for: it is posted only once
            the spool's records up to ``barrier`` were delivered (0: none), so that it
            never reaches the server before an older record of the job.
    """

    seq: int
    document: dict[str, Any]
    epoch_end: bool
    created: float
    barrier: int = 0


def warn_once(
    seen: set[str], key: str, message: str, *args: Any, log: logging.Logger = logger
) -> None:
    """Log at WARNING the first time ``key`` is seen, at DEBUG after that (no log floods).

    The one such helper: the integrations pass their own logger (``log``).
    """
    if key in seen:
        log.debug(message, *args)
    else:
        seen.add(key)
        log.warning(message, *args)


def copy_document(document: Mapping[str, Any]) -> dict[str, Any]:
    """A copy that later in-place merges cannot change: the top level and each stage.

    Other values are never modified in place after a report (they are replaced), so
    sharing them is safe.
    """
    copy = dict(document)
    stages = copy.get("stages")
    if type(stages) is dict:
        copy["stages"] = {name: dict(stage) for name, stage in stages.items()}
    return copy


def freeze_tensors(value: Any) -> Any:
    """Copy mutable tensors/arrays in a must-deliver document (no device sync).

    An epoch-end snapshot is kept until sent, and the values of *that* epoch matter,
    so each tensor is cloned (an asynchronous device copy) at report time.
    """
    if isinstance(value, dict):
        return {key: freeze_tensors(item) for key, item in value.items()}
    if isinstance(value, list):
        return [freeze_tensors(item) for item in value]
    if is_tensor_like(value):
        clone = getattr(value, "clone", None)
        if callable(clone):
            return clone()
        copy = getattr(value, "copy", None)
        if callable(copy):
            return copy()
    return value


def convert_document(document: Mapping[str, Any], warned: set[str]) -> dict[str, Any]:
    """The document as JSON values; a value that fails to convert is left out and logged.

    Values passed the call-site rules, so this almost never drops anything; but a
    tensor on a failed device must not stop every later post.
    """
    try:
        converted: dict[str, Any] = to_json_safe(document)
        return converted
    except StatisticsError:
        pass
    out: dict[str, Any] = {}
    for key, value in document.items():
        if key == "stages" and isinstance(value, Mapping):
            stages: dict[str, Any] = {}
            for name, stage in value.items():
                converted_stage: dict[str, Any] = {}
                for metric, item in stage.items():
                    path = f"stages.{name}.{metric}"
                    with contextlib.suppress(StatisticsError):
                        converted_stage[metric] = to_json_safe(item, path)
                        continue
                    warn_once(
                        warned, path, "statistics value %s could not be converted; left out", path
                    )
                stages[name] = converted_stage
            out[key] = stages
            continue
        try:
            out[key] = to_json_safe(value, key)
        except StatisticsError:
            warn_once(warned, key, "statistics value %s could not be converted; left out", key)
    return out


def key_paths(document: Mapping[str, Any]) -> set[str]:
    """The document's keys as paths: ``epoch``, ``stages.train.loss``, ``stages.eval``."""
    paths: set[str] = set()
    for key, value in document.items():
        if key == "stages" and isinstance(value, Mapping):
            for name, stage in value.items():
                paths.add(f"stages.{name}")
                if isinstance(stage, Mapping):
                    paths.update(f"stages.{name}.{metric}" for metric in stage)
        else:
            paths.add(str(key))
    return paths


def drop_paths(document: dict[str, Any], paths: Iterable[str]) -> list[str]:
    """Remove ``paths`` (from :func:`key_paths`) from ``document`` in place; what was removed.

    A stage path removes the whole stage; a metric path one metric.
    """
    removed: list[str] = []
    stages = document.get("stages")
    for path in sorted(paths):
        if path.startswith("stages.") and isinstance(stages, dict):
            rest = path[len("stages.") :]
            if rest in stages:
                del stages[rest]
                removed.append(path)
                continue
            name, _, metric = rest.rpartition(".")
            stage = stages.get(name)
            if isinstance(stage, dict) and metric in stage:
                del stage[metric]
                removed.append(path)
        elif path in document and path != "stages":
            del document[path]
            removed.append(path)
    return removed
