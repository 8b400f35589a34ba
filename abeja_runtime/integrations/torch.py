"""A plain PyTorch loop reports its job's statistics in two lines.

Example::

    from .torch import epoch_end, track

    for epoch in range(num_epochs):
        steps = track(train_loader, epoch=epoch, num_epochs=num_epochs)
        for x, y in steps:
            loss = loss_fn(model(x), y)
            ...
            steps.log(loss=loss)            # optional: a CUDA tensor is fine
        epoch_end(epoch, num_epochs=num_epochs,
                  train={"loss": train_loss, "accuracy": train_acc},
                  validation={"loss": val_loss, "accuracy": val_acc})

:func:`track` wraps the batch iterable: after each step it reads the clock, and at most
once per ``progress_interval`` it reports the progress (from ``len(loader)``) and the
latest values given to :meth:`StepTracker.log`. :func:`epoch_end` reports a
must-deliver epoch-end snapshot. ``epoch`` is the loop's 0-based index, as
``range(num_epochs)`` gives it; the statistics carry the 1-based number (the epoch in
progress, or completed at its end), so the last document has ``epoch == num_epochs`` and
``progress_percentage == 1.0``.

Why the values are never read here: ``loss.item()`` (or ``float(loss)``) waits for the GPU
to finish the step, which costs a large share of throughput on a fast model. Tensors are
handed to the reporter as they are (detached, not copied to the host); its sender thread
reads them when a snapshot is posted. Do not change a logged tensor in place afterwards.

This module does not import torch (it works with any iterable and any scalar values), and
on processes other than global rank 0 it does nothing but iterate. Nothing here raises
into the loop: a value that cannot be sent is left out and logged once.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from ..statistics.reporter import StatisticsReporter
from ._common import TRAIN, VALIDATION, SafeReporter, fraction_done

__all__ = ["StepTracker", "epoch_end", "track"]

T = TypeVar("T")


class StepTracker(Generic[T]):
    """An iterable over an epoch's batches that reports progress as the loop advances.

    Made by :func:`track`; iterate it once, like the loader it wraps.

    Attributes:
        epoch: the loop's 0-based epoch index.
        num_epochs: the total number of epochs, if known.
        total: the number of steps in this epoch, if known (``len(iterable)``).
        step: steps completed so far in this epoch.
        stage: the stage that :meth:`log` values go to (default ``"train"``).
    """

    def __init__(
        self,
        iterable: Iterable[T],
        *,
        epoch: int,
        num_epochs: int | None = None,
        total: int | None = None,
        reporter: StatisticsReporter | None = None,
        progress_interval: float | None = None,
        stage: str = TRAIN,
    ) -> None:
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be the loop's 0-based index, got {epoch!r}")
        self._iterable = iterable
        self.epoch = epoch
        self.num_epochs = num_epochs
        if total is None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except TypeError:
                total = None
        self.total = total
        self.stage = stage
        self.step = 0
        self._metrics: dict[str, Any] = {}
        self._out = SafeReporter(reporter, progress_interval=progress_interval)
        self._out.start()

    def __len__(self) -> int:
        if self.total is None:
            raise TypeError("the wrapped iterable has no len(); pass total= to track()")
        return self.total

    @property
    def active(self) -> bool:
        """False on processes that do not report (ranks other than 0)."""
        return self._out.active

    def log(self, **metrics: Any) -> None:
        """Record the latest step-level values of :attr:`stage` (reported when due).

        Costs a dict update: nothing is read, converted or sent here. Tensors (CUDA too)
        are welcome.
        """
        if self._out.active:
            self._metrics.update(metrics)

    def __iter__(self) -> Iterator[T]:
        out = self._out
        if not out.active:
            yield from self._iterable
            return
        for item in self._iterable:
            yield item
            self.step += 1
            if out.progress_due():
                self._report()

    def _report(self) -> None:
        out = self._out
        done = self.epoch + (min(1.0, self.step / self.total) if self.total else 0.0)
        stages = out.stages({self.stage: self._metrics}) if self._metrics else None
        out.report(
            epoch=self.epoch + 1,
            num_epochs=self.num_epochs,
            progress=fraction_done(done, self.num_epochs) if self.total else None,
            stages=stages,
        )


def track(
    iterable: Iterable[T],
    *,
    epoch: int,
    num_epochs: int | None = None,
    total: int | None = None,
    reporter: StatisticsReporter | None = None,
    progress_interval: float | None = None,
    stage: str = TRAIN,
) -> StepTracker[T]:
    """Wrap an epoch's batch iterable so that the loop reports its progress.

    Args:
        iterable: the batches (a ``DataLoader``, any iterable).
        epoch: the loop's 0-based epoch index.
        num_epochs: the total number of epochs (for ``progress_percentage``).
        total: steps in the epoch, when ``len(iterable)`` does not tell.
        reporter: the reporter (default: the process-wide one).
        progress_interval: seconds between reports at most (default: 1 s, or the
            reporter's ``min_interval`` when smaller).
        stage: where :meth:`StepTracker.log` values go.

    Raises:
        ValueError: ``epoch`` is not an integer >= 0 (a programming error, raised at once).
    """
    return StepTracker(
        iterable,
        epoch=epoch,
        num_epochs=num_epochs,
        total=total,
        reporter=reporter,
        progress_interval=progress_interval,
        stage=stage,
    )


def epoch_end(
    epoch: int,
    *,
    num_epochs: int | None = None,
    train: Mapping[str, Any] | None = None,
    validation: Mapping[str, Any] | None = None,
    reporter: StatisticsReporter | None = None,
    **values: Any,
) -> None:
    """Report the end of an epoch: a must-deliver snapshot, posted in order.

    Stages merge into the job's document as with :func:`abeja_runtime.report`: a metric
    not given keeps its last value. Values may be tensors (read later, on the reporter's
    thread), numbers, NaN.

    Args:
        epoch: the loop's 0-based epoch index (reported as ``epoch + 1``).
        num_epochs: the total number of epochs (``progress_percentage`` follows).
        train: the train stage's metrics.
        validation: the validation stage's metrics.
        reporter: the reporter (default: the process-wide one).
        **values: other stages (dict values) and top-level values.
    """
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise ValueError(f"epoch must be the loop's 0-based index, got {epoch!r}")
    out = SafeReporter(reporter)
    if not out.start():
        return
    raw: dict[str, Mapping[str, Any]] = {}
    extra: dict[str, Any] = {}
    if train:
        raw[TRAIN] = train
    if validation:
        raw[VALIDATION] = validation
    for key, value in values.items():
        if isinstance(value, Mapping):
            raw[key] = value
        else:
            extra[key] = value
    out.report(
        epoch=epoch + 1,
        num_epochs=num_epochs,
        progress=fraction_done(epoch + 1, num_epochs),
        stages=out.stages(raw),
        extra=out.extras(extra),
        epoch_end=True,
    )
