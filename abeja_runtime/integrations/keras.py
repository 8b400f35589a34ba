"""Keras 3: ``model.fit(..., callbacks=[StatisticsCallback()])`` reports the job's statistics.

At every epoch end the callback reports everything Keras logged for that epoch: metrics
named ``val_*`` go to the ``validation`` stage without the prefix, the others to the
``train`` stage, whatever their names (``accuracy``, ``acc``,
``sparse_categorical_accuracy``, custom ones); ``learning_rate`` (added by the learning
rate callbacks) is a top-level value. ``epoch`` is 1-based (epochs completed),
``num_epochs`` is ``fit``'s ``epochs`` and ``progress_percentage`` follows. Between epoch
ends, throttled batch-level reports keep the progress (and the running train metrics)
moving. ``on_train_end`` flushes, so the last epoch is on the platform when ``fit``
returns.

Why these choices: the stages of an epoch-end document are exactly that epoch's logs
(a metric missing this epoch, such as validation on an epoch ``validation_freq`` skips,
is removed rather than shown stale), so the job's statistics follow ``History`` epoch by
epoch. Nothing the logs contain (no validation data, ``None``, NaN, a per-class array)
can break ``fit``: odd values are left out and logged once.

The callback is marked ``async_safe`` (the reporter is thread-safe), so Keras may keep
dispatching batch callbacks off the training thread.

This module imports Keras; Keras must have a backend it can load (for example
``KERAS_BACKEND=torch``).
"""

from __future__ import annotations

import logging
from typing import Any

try:
    import keras
except ImportError as exc:  # pragma: no cover - depends on what is installed
    raise ImportError(
        "abeja_runtime.integrations.keras needs Keras 3 (pip install keras, and a backend "
        "such as torch with KERAS_BACKEND=torch)"
    ) from exc

from ..statistics.reporter import StatisticsReporter
from ._common import TRAIN, VALIDATION, SafeReporter, fraction_done, split_metrics

__all__ = ["StatisticsCallback"]

logger = logging.getLogger("abeja_runtime.integrations")

_PREFIXES = (("val_", VALIDATION),)
#: values Keras puts in the logs that describe the run, not a stage's metrics
_TOP_LEVEL = ("learning_rate", "lr")


class StatisticsCallback(keras.callbacks.Callback):  # type: ignore[misc]
    """Reports ``fit``'s epoch logs (and throttled batch progress) as job statistics.

    Args:
        reporter: the reporter to use; default: the process-wide one
            (:func:`abeja_runtime.get_reporter`, from the job's environment).
        batch_progress: also report progress (and the running train metrics) during an
            epoch, at most once per ``progress_interval``.
        progress_interval: seconds between batch-level reports at most (default: 1 s,
            or the reporter's ``min_interval`` when smaller).
        accuracy_alias: also report a stage's single accuracy-like metric
            (``acc``, ``sparse_categorical_accuracy``) as ``accuracy``, the name the
            platform charts.
        flush_timeout: seconds ``on_train_end`` waits for delivery at most (default: the
            reporter's ``exit_timeout``); ``0`` does not wait.
    """

    #: Keras may run batch hooks on a worker thread: the reporter is thread-safe
    async_safe = True

    def __init__(
        self,
        reporter: StatisticsReporter | None = None,
        *,
        batch_progress: bool = True,
        progress_interval: float | None = None,
        accuracy_alias: bool = True,
        flush_timeout: float | None = None,
    ) -> None:
        super().__init__()
        self._out = SafeReporter(
            reporter, progress_interval=progress_interval, accuracy_alias=accuracy_alias
        )
        self.batch_progress = batch_progress
        self.flush_timeout = flush_timeout
        self._epoch = 0
        self._num_epochs: int | None = None
        self._steps: int | None = None

    # Keras calls these with the logs already turned into Python floats.

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        if not self._out.start():
            return
        params = self.params or {}
        self._num_epochs = _positive_int(params.get("epochs"))
        self._steps = _positive_int(params.get("steps"))

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        out = self._out
        if not (out.active and self.batch_progress) or not out.progress_due():
            return
        epoch = self._epoch
        fraction = None
        if self._steps:
            fraction = fraction_done(epoch + min(1.0, (batch + 1) / self._steps), self._num_epochs)
        stages: dict[str, Any] = {}
        if logs:
            raw, _ = split_metrics(logs, prefixes=_PREFIXES, ignore=_TOP_LEVEL)
            stages = out.stages({TRAIN: raw.get(TRAIN, {})}) if TRAIN in raw else {}
        out.report(epoch=epoch + 1, num_epochs=self._num_epochs, progress=fraction, stages=stages)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        out = self._out
        if not out.active:
            return
        try:
            raw, extra = split_metrics(logs or {}, prefixes=_PREFIXES, top_level=_TOP_LEVEL)
            stages = out.stages(raw)
            extras = out.extras(extra)
        except Exception as exc:  # odd logs must never break fit()
            logger.warning("epoch %d statistics not reported: %s", epoch + 1, exc)
            return
        out.report(
            epoch=epoch + 1,
            num_epochs=self._num_epochs,
            progress=fraction_done(epoch + 1, self._num_epochs),
            stages=stages,
            extra=extras,
            epoch_end=True,
            replace_stages=True,
        )

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self._out.flush(self.flush_timeout, "at the end of fit()")


def _positive_int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return None
    return value
