"""The call-site side of ``report()``: the statistics rules applied to one call, and the merge.

The hot path of :meth:`StatisticsReporter.report <abeja_runtime.statistics.reporter.StatisticsReporter.report>`
checks plain values by exact type itself; everything else comes here: each value
through :mod:`abeja_runtime.statistics_rules`, then the whole-document rules
(``epoch <= num_epochs``, the size bound) on a merged *copy*, which replaces the
document only when it passed, so that a refused call leaves the document as it was.
:class:`CheckedReporting` (a base class of the reporter) holds those calls and the
epoch-end path: merge, copy, store in the spool, in report order.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from ..errors import StatisticsError
from ..statistics_rules import (
    MAX_DOCUMENT_BYTES,
    check_document,
    check_epoch,
    check_epoch_order,
    check_progress,
    check_stage,
    check_value,
    size_bound,
)
from . import Statistics
from ._documents import copy_document, warn_once
from ._reporter_delivery import DeliverySide

__all__ = [
    "CheckedReporting",
    "check_call",
    "document_of",
    "merge_into",
    "merged_document",
]

#: keyword names with a meaning of their own, handled by the full check
_RESERVED = frozenset({"stages", "progress_percentage"})
#: the hot path takes strings and key names up to this length, ints within 63 bits
_SHORT = 64
_INT_LIMIT = 1 << 63
#: what one plain value (key <= 64 chars, value <= 64 chars) adds to the document's
#: JSON size at most; the hot path keeps a running bound with it and sends the call
#: through the full check (which measures the whole document) when it nears 1 MiB
_ITEM_BOUND = 6 * _SHORT * 2 + 16
_BOUND_LIMIT = MAX_DOCUMENT_BYTES - 64 * _ITEM_BOUND

Checked = tuple[dict[str, Any] | None, int | None, int | None, float | None, dict[str, Any]]


def merge_into(
    doc: dict[str, Any],
    epoch: int | None,
    num_epochs: int | None,
    progress: float | None,
    values: Mapping[str, Any],
    removes: bool,
) -> None:
    """Merge checked values into ``doc`` in place (a dict value is a stage)."""
    if epoch is not None:
        doc["epoch"] = epoch
    if num_epochs is not None:
        doc["num_epochs"] = num_epochs
    if progress is not None:
        doc["progress_percentage"] = progress
    stages: dict[str, Any] | None = None
    for key, value in values.items():
        if type(value) is dict:
            if stages is None:
                stages = doc.get("stages")
                if stages is None:
                    stages = doc["stages"] = {}
            stage = stages.get(key)
            if stage is None:
                stage = stages[key] = {}
            if removes:
                for metric, item in value.items():
                    if item is None:
                        stage.pop(metric, None)
                    else:
                        stage[metric] = item
                if not stage:  # every metric removed: no stage, not "validated, nothing"
                    del stages[key]
            else:
                stage.update(value)
        elif value is None:
            doc.pop(key, None)
        else:
            doc[key] = value


def check_call(
    statistics: Statistics | Mapping[str, Any] | None,
    epoch: Any,
    num_epochs: Any,
    progress: Any,
    values: Mapping[str, Any],
) -> Checked:
    """Each value of one ``report()`` call through the rules: (base, epoch, ..., updates).

    Raises:
        StatisticsError: a value the platform refuses.
    """
    base = None if statistics is None else document_of(statistics)
    epoch = check_epoch(epoch, "epoch")
    num_epochs = check_epoch(num_epochs, "num_epochs")
    progress = check_progress(progress, "progress")
    updates: dict[str, Any] = {}
    for key, value in values.items():
        if key == "stages":  # report(stages={"train": {...}}) as in a document
            if not isinstance(value, Mapping):
                raise StatisticsError("stages: must map stage names to dicts of metrics")
            for name, stage in value.items():
                updates[name] = check_stage(name, stage, "stages")
        elif key == "progress_percentage":
            progress = check_progress(value, key)
        elif isinstance(value, Mapping):
            updates[key] = check_stage(key, value, "stages")
        elif isinstance(value, Statistics):
            raise StatisticsError(f"{key}: a Statistics is a whole document: report(statistics)")
        else:
            updates[key] = check_value(value, key)
    return base, epoch, num_epochs, progress, updates


def merged_document(
    doc: dict[str, Any],
    base: dict[str, Any] | None,
    epoch: int | None,
    num_epochs: int | None,
    progress: float | None,
    updates: dict[str, Any],
) -> tuple[dict[str, Any], int]:
    """``doc`` (or ``base``) with the checked updates, and its size bound; ``doc`` unchanged.

    Raises:
        StatisticsError: the merged document breaks a whole-document rule.
    """
    candidate = base if base is not None else copy_document(doc)
    merge_into(candidate, epoch, num_epochs, progress, updates, True)
    check_epoch_order(candidate.get("epoch"), candidate.get("num_epochs"), "statistics")
    bound = size_bound({"statistics": candidate})
    if bound > MAX_DOCUMENT_BYTES:
        raise StatisticsError(
            f"statistics: the document would be up to {bound:,} bytes, over the limit of "
            f"{MAX_DOCUMENT_BYTES:,} bytes; report fewer or shorter values (a histogram "
            "or a long text belongs in a file of the result dir)"
        )
    return candidate, bound


def document_of(statistics: Statistics | Mapping[str, Any]) -> dict[str, Any]:
    """A whole document given to ``report()``, checked (it replaces the current one)."""
    if isinstance(statistics, Statistics):
        return check_document(statistics.raw_document())
    if isinstance(statistics, Mapping):
        return check_document(statistics)
    raise StatisticsError(
        "report() takes a Statistics or a statistics dict as its first argument, got "
        f"{type(statistics).__name__}; pass values as keywords (train={{'loss': ...}})"
    )


class CheckedReporting(DeliverySide):
    """The reporter's calls that go through the full check, and its epoch ends.

    A base class of :class:`~abeja_runtime.statistics.reporter.StatisticsReporter`,
    whose ``report()`` keeps only the hot path of plain values by exact type.
    """

    strict: bool
    _bound: int
    _good_stages: set[str]
    _lock: threading.RLock

    def _report_checked(
        self,
        statistics: Statistics | Mapping[str, Any] | None,
        epoch: Any,
        num_epochs: Any,
        progress: Any,
        epoch_end: bool,
        values: dict[str, Any],
    ) -> None:
        """The full check of the statistics rules, then the merge (never half of it)."""
        try:
            base, epoch, num_epochs, progress, updates = check_call(
                statistics, epoch, num_epochs, progress, values
            )
            if epoch_end:
                self._report_must(base, epoch, num_epochs, progress, updates, True, -1)
            else:
                with self._lock:
                    self._apply_checked(base, epoch, num_epochs, progress, updates)
                    state = self._state
                    state.step_seq = state.seq + 1
                    state.seq = state.step_seq
        except Exception as exc:
            error = exc
            if not isinstance(exc, StatisticsError):  # an odd object failed its own check
                error = StatisticsError(f"cannot check a reported value: {exc!r}")
            if self.strict:
                raise error  # noqa: B904 - the original stays attached as __context__
            warn_once(self._warned, str(error), "ignored a report: %s", error)
            return
        for name, value in updates.items():
            if type(value) is dict:
                self._good_stages.add(name)
        if self._sender.idle:
            self._sender.wakeup.set()

    def _apply_checked(
        self,
        base: dict[str, Any] | None,
        epoch: int | None,
        num_epochs: int | None,
        progress: float | None,
        updates: dict[str, Any],
    ) -> None:
        """Swap in the merged document once it passed the whole-document rules (lock held)."""
        state = self._state
        state.doc, self._bound = merged_document(
            state.doc, base, epoch, num_epochs, progress, updates
        )

    def _report_must(
        self,
        base: dict[str, Any] | None,
        epoch: int | None,
        num_epochs: int | None,
        progress: float | None,
        values: Mapping[str, Any],
        removes: bool,
        items: int,
    ) -> None:
        """An epoch end: merge, copy, write to the spool (or memory), in seq order."""
        state = self._state
        with self._must_lock:
            with self._lock:
                if items < 0:
                    self._apply_checked(base, epoch, num_epochs, progress, dict(values))
                else:
                    merge_into(state.doc, epoch, num_epochs, progress, values, removes)
                    self._bound += items * _ITEM_BOUND + 64
                state.must_seq = state.seq + 1  # must_seq first: see DeliveryState
                state.seq += 1
                snapshot = state.begin_must()
            assert snapshot is not None
            self._store(snapshot)
        self._sender.wakeup.set()
