"""PyTorch Lightning: ``Trainer(callbacks=[StatisticsCallback()])`` reports the job's statistics.

Works with both packages Lightning ships as:

* :class:`StatisticsCallback` subclasses ``lightning.pytorch.Callback`` (or, when only the
  older package is installed, ``pytorch_lightning.Callback``);
* ``PytorchLightningStatisticsCallback`` (made on first access) subclasses
  ``pytorch_lightning.Callback``, for a ``pytorch_lightning.Trainer`` when both are
  installed.

What is reported, from ``trainer.callback_metrics`` (what ``self.log`` produced):

* at each epoch end, a must-deliver snapshot: ``val_*``, ``val/*``, ``valid_*`` and
  ``validation_*`` metrics in the ``validation`` stage and the others in the ``train``
  stage, the prefix removed (``train_loss`` -> ``train.loss``); a metric logged with
  ``on_step=True, on_epoch=True`` is reported once, with its epoch value (its ``*_step``
  and ``*_epoch`` forks are left out). Validation metrics appear only for epochs that ran
  validation, so a stale value is never shown as this epoch's;
* during an epoch, throttled progress (from ``num_training_batches``) with the step's
  ``loss``, and the validation stage when a validation run ends mid-epoch.

Why the epoch-end snapshot is taken at the *next* epoch's start (or at train end) rather
than in ``on_train_epoch_end``: Lightning calls callbacks' ``on_train_epoch_end`` before
the LightningModule's, so metrics the module logs there (a common place for epoch-level
metrics) are not in ``callback_metrics`` yet. The next hook sees them all, microseconds
later.

Only global rank zero (``trainer.is_global_zero``) reports. ``on_train_end`` and
``on_exception`` flush, so what was reported is on the platform when ``fit`` returns or
fails. Nothing the metrics contain can break training: odd values are left out and logged
once. Tensors (CUDA too) are passed to the reporter unread.
"""

from __future__ import annotations

import importlib
import logging
import math
from collections.abc import Mapping
from typing import Any

try:
    import lightning.pytorch as _pl
except ImportError:  # pragma: no cover - depends on what is installed
    try:
        import pytorch_lightning as _pl  # type: ignore[no-redef]
    except ImportError as exc:
        raise ImportError(
            "abeja_runtime.integrations.lightning needs PyTorch Lightning "
            "(pip install lightning, or pytorch-lightning)"
        ) from exc

from ..jsonsafe import is_tensor_like
from ..statistics.reporter import StatisticsReporter
from ._common import TRAIN, VALIDATION, SafeReporter, fraction_done, split_metrics

# PytorchLightningStatisticsCallback is made on first access (module __getattr__), so that
# importing this module does not import a second Lightning package
__all__ = ["StatisticsCallback", "StatisticsCallbackLogic", "epoch_metrics"]

logger = logging.getLogger("abeja_runtime.integrations")

_PREFIXES = (
    ("train_", TRAIN),
    ("train/", TRAIN),
    ("val_", VALIDATION),
    ("val/", VALIDATION),
    ("valid_", VALIDATION),
    ("valid/", VALIDATION),
    ("validation_", VALIDATION),
    ("validation/", VALIDATION),
)
#: metrics of trainer.test()/validate() runs before fit: not part of this training
_IGNORED_PREFIXES = ("test_", "test/")


def epoch_metrics(callback_metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The epoch-level view of ``trainer.callback_metrics``.

    ``self.log(name, on_step=True, on_epoch=True)`` leaves ``name`` (the epoch value at
    an epoch end), ``name_step`` and ``name_epoch``: keep ``name`` only.
    """
    out: dict[str, Any] = {}
    for name, value in callback_metrics.items():
        if not isinstance(name, str) or name.startswith(_IGNORED_PREFIXES):
            continue
        for suffix in ("_step", "_epoch"):
            if name.endswith(suffix) and name[: -len(suffix)] in callback_metrics:
                break
        else:
            out[name] = value
    return out


class StatisticsCallbackLogic:
    """The callback's behaviour, independent of which Lightning package's ``Callback`` it is.

    Args:
        reporter: the reporter to use; default: the process-wide one
            (:func:`abeja_runtime.get_reporter`).
        batch_progress: report progress (and the step's loss) during an epoch, at most
            once per ``progress_interval``.
        progress_interval: seconds between step-level reports at most (default: 1 s, or
            the reporter's ``min_interval`` when smaller).
        accuracy_alias: also report a stage's single accuracy-like metric (``acc``) as
            ``accuracy``, the name the platform charts.
        flush_timeout: seconds ``on_train_end``/``on_exception`` wait for delivery at most
            (default: the reporter's ``exit_timeout``).
    """

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
        self._num_epochs: int | None = None
        self._batches: float | None = None
        self._pending: int | None = None
        self._validated: set[int] = set()

    # ---------------------------------------------------------------- Lightning hooks

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._pending = None
        self._validated = set()
        if not self._out.start(main_process=bool(getattr(trainer, "is_global_zero", True))):
            return
        max_epochs = getattr(trainer, "max_epochs", None)
        self._num_epochs = max_epochs if isinstance(max_epochs, int) and max_epochs > 0 else None

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        if not self._out.active:
            return
        self._emit_pending(trainer)
        batches = getattr(trainer, "num_training_batches", None)
        ok = isinstance(batches, (int, float)) and batches > 0 and math.isfinite(batches)
        self._batches = float(batches) if ok and batches is not None else None

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        out = self._out
        if not (out.active and self.batch_progress) or not out.progress_due():
            return
        epoch = int(trainer.current_epoch)
        progress = None
        if self._batches:
            progress = fraction_done(
                epoch + min(1.0, (batch_idx + 1) / self._batches), self._num_epochs
            )
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        stages = out.stages({TRAIN: {"loss": loss}}) if is_tensor_like(loss) else None
        out.report(epoch=epoch + 1, num_epochs=self._num_epochs, progress=progress, stages=stages)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        out = self._out
        if not out.active or getattr(trainer, "sanity_checking", False):
            return
        epoch = int(trainer.current_epoch)
        self._validated.add(epoch)
        if self._pending is not None:  # validation after an epoch end: settle that first
            self._emit_pending(trainer)
        try:
            raw, _ = split_metrics(epoch_metrics(trainer.callback_metrics), prefixes=_PREFIXES)
            stages = out.stages({VALIDATION: raw[VALIDATION]}) if VALIDATION in raw else None
        except Exception as exc:  # odd metrics must never break training
            logger.warning("validation statistics not reported: %s", exc)
            return
        if stages:
            out.report(epoch=epoch + 1, num_epochs=self._num_epochs, stages=stages)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if self._out.active:
            self._pending = int(trainer.current_epoch)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        if not self._out.active:
            return
        self._emit_pending(trainer)
        self._out.flush(self.flush_timeout, "at the end of training")

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        if not self._out.active:
            return
        self._emit_pending(trainer)
        self._out.flush(self.flush_timeout, "after the training failed")

    # ---------------------------------------------------------------- internals

    def _emit_pending(self, trainer: Any) -> None:
        """Report the epoch that ended, now that every hook of its end has run."""
        epoch, self._pending = self._pending, None
        if epoch is None:
            return
        out = self._out
        try:
            raw, _ = split_metrics(epoch_metrics(trainer.callback_metrics), prefixes=_PREFIXES)
            if epoch not in self._validated:
                raw.pop(VALIDATION, None)
            stages = out.stages(raw)
        except Exception as exc:  # odd metrics must never break training
            logger.warning("epoch %d statistics not reported: %s", epoch + 1, exc)
            return
        out.report(
            epoch=epoch + 1,
            num_epochs=self._num_epochs,
            progress=fraction_done(epoch + 1, self._num_epochs),
            stages=stages,
            epoch_end=True,
            replace_stages=True,
        )


class StatisticsCallback(StatisticsCallbackLogic, _pl.Callback):  # type: ignore[misc]
    __doc__ = (
        "Reports a Lightning training's statistics (``lightning.pytorch``, or "
        "``pytorch_lightning`` when only that is installed).\n\n"
        + (StatisticsCallbackLogic.__doc__ or "").split("\n\n", 1)[1]
    )


_made: dict[str, type] = {}


def __getattr__(name: str) -> Any:
    if name == "PytorchLightningStatisticsCallback":
        made = _made.get(name)
        if made is None:
            base = importlib.import_module("pytorch_lightning").Callback
            if base is _pl.Callback:
                made = StatisticsCallback
            else:
                made = type(name, (StatisticsCallbackLogic, base), {"__module__": __name__})
            _made[name] = made
        return made
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
