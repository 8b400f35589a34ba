"""Hugging Face Transformers: ``Trainer(..., callbacks=[StatisticsCallback()])``.

What the Trainer logs becomes the job's statistics:

* training logs (``loss``, ``grad_norm``, custom values) go to the ``train`` stage,
  ``learning_rate`` is a top-level value;
* evaluation logs (``eval_loss``, ``eval_accuracy``, ``eval_runtime``, ...) go to the
  ``validation`` stage without the ``eval_`` prefix (``test_*`` to a ``test`` stage);
* the end-of-training summary (``train_runtime``, ``train_loss``, ``total_flos``, ...)
  is reported as top-level values, after the last epoch;
* each epoch end is a must-deliver snapshot with ``epoch`` (1-based, epochs completed),
  ``num_epochs`` and ``progress_percentage``; between them, throttled step-level reports
  keep the progress (``global_step / max_steps``) moving.

Why an epoch's snapshot is sent at the next epoch's start (or at the summary, or at
train end) rather than in ``on_epoch_end``: the Trainer calls ``on_epoch_end`` *before* it
logs and evaluates for that epoch (``logging_strategy``/``eval_strategy="epoch"``), so the
epoch's own loss and evaluation would otherwise land in the next epoch's document. The logs
that arrive in between are merged into the pending epoch end.

Only the world's process zero (``state.is_world_process_zero``) reports. ``on_train_end``
flushes. Nothing the logs contain can break training: odd values are left out and logged
once.
"""

from __future__ import annotations

import logging
import math
from typing import Any

try:
    from transformers import TrainerCallback
except ImportError as exc:  # pragma: no cover - depends on what is installed
    raise ImportError(
        "abeja_runtime.integrations.transformers needs Hugging Face Transformers "
        "(pip install transformers accelerate)"
    ) from exc

from ..statistics.reporter import StatisticsReporter
from ._common import VALIDATION, SafeReporter, fraction_done, split_metrics

__all__ = ["StatisticsCallback", "split_log"]

logger = logging.getLogger("abeja_runtime.integrations")

_PREFIXES = (("eval_", VALIDATION), ("test_", "test"))
_TOP_LEVEL = ("learning_rate",)
#: the Trainer's own bookkeeping in a log: epoch/step are reported from the state
_IGNORED = ("epoch", "step")
#: a log holding this key is the end-of-training summary
_SUMMARY_KEY = "train_runtime"


def split_log(logs: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """One Trainer log as ``(stages, top-level values)``.

    The end-of-training summary goes to the top level whole (its ``train_loss`` is the
    mean over the run, not an epoch's, so it must not replace ``train.loss``).
    """
    if _SUMMARY_KEY in logs:
        return {}, {k: v for k, v in logs.items() if k not in _IGNORED}
    return split_metrics(logs, prefixes=_PREFIXES, top_level=_TOP_LEVEL, ignore=_IGNORED)


class StatisticsCallback(TrainerCallback):  # type: ignore[misc]
    """Reports a Hugging Face Trainer's logs as the job's statistics.

    Args:
        reporter: the reporter to use; default: the process-wide one
            (:func:`abeja_runtime.get_reporter`).
        step_progress: report progress during an epoch, at most once per
            ``progress_interval``.
        progress_interval: seconds between step-level reports at most (default: 1 s, or
            the reporter's ``min_interval`` when smaller).
        accuracy_alias: also report a stage's single accuracy-like metric as
            ``accuracy``, the name the platform charts.
        flush_timeout: seconds ``on_train_end`` waits for delivery at most (default: the
            reporter's ``exit_timeout``).
    """

    def __init__(
        self,
        reporter: StatisticsReporter | None = None,
        *,
        step_progress: bool = True,
        progress_interval: float | None = None,
        accuracy_alias: bool = True,
        flush_timeout: float | None = None,
    ) -> None:
        self._out = SafeReporter(
            reporter, progress_interval=progress_interval, accuracy_alias=accuracy_alias
        )
        self.step_progress = step_progress
        self.flush_timeout = flush_timeout
        self._num_epochs: int | None = None
        #: the epoch that ended and waits for its logs: (epoch, stages, top-level values)
        self._pending: tuple[int, dict[str, dict[str, Any]], dict[str, Any]] | None = None

    # ---------------------------------------------------------------- Trainer hooks

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._pending = None
        if not self._out.start(main_process=bool(getattr(state, "is_world_process_zero", True))):
            return
        epochs = getattr(state, "num_train_epochs", 0) or getattr(args, "num_train_epochs", 0)
        try:
            self._num_epochs = max(1, math.ceil(float(epochs))) if epochs else None
        except (TypeError, ValueError):
            self._num_epochs = None

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._out.active:
            self._emit_pending()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        out = self._out
        if not (out.active and self.step_progress) or not out.progress_due():
            return
        out.report(
            epoch=self._epoch_in_progress(state),
            num_epochs=self._num_epochs,
            progress=fraction_done(state.global_step, getattr(state, "max_steps", None)),
        )

    def on_log(
        self,
        args: Any,
        state: Any,
        control: Any,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        out = self._out
        if not out.active or not logs:
            return
        try:
            summary = _SUMMARY_KEY in logs
            stages, extra = split_log(logs)
        except Exception as exc:  # odd logs must never break training
            logger.warning("Trainer log not reported: %s", exc)
            return
        if summary:
            self._emit_pending()
        elif self._pending is not None:
            _epoch, pending_stages, pending_extra = self._pending
            for name, metrics in stages.items():
                pending_stages.setdefault(name, {}).update(metrics)
            pending_extra.update(extra)
            return
        out.report(
            epoch=None if summary else self._epoch_in_progress(state),
            num_epochs=self._num_epochs,
            stages=out.stages(stages),
            extra=out.extras(extra),
        )

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not self._out.active:
            return
        self._emit_pending()  # an epoch with no on_epoch_begin in between (never, but safe)
        epoch = getattr(state, "epoch", None)
        number = round(epoch) if isinstance(epoch, (int, float)) and math.isfinite(epoch) else 0
        self._pending = (max(1, number), {}, {})

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not self._out.active:
            return
        self._emit_pending()
        self._out.flush(self.flush_timeout, "at the end of training")

    # ---------------------------------------------------------------- internals

    def _epoch_in_progress(self, state: Any) -> int | None:
        """The 1-based epoch in progress: the Trainer's fractional epoch rounded up."""
        epoch = getattr(state, "epoch", None)
        if not isinstance(epoch, (int, float)) or not math.isfinite(epoch):
            return None
        number = max(1, math.ceil(epoch))
        return min(number, self._num_epochs) if self._num_epochs else number

    def _emit_pending(self) -> None:
        pending, self._pending = self._pending, None
        if pending is None:
            return
        epoch, stages, extra = pending
        out = self._out
        out.report(
            epoch=epoch,
            num_epochs=self._num_epochs,
            progress=fraction_done(epoch, self._num_epochs),
            stages=out.stages(stages),
            extra=out.extras(extra),
            epoch_end=True,
        )
