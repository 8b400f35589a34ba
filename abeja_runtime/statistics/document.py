"""Training statistics as the Training API takes them, without the public package's defects.

:class:`Statistics` is a drop-in for ``abeja.training.statistics.Statistics`` (same
constructor, ``STAGE_TRAIN``/``STAGE_VALIDATION``, ``add_stage``, ``get_statistics``,
``from_response`` and attribute names). What changes, and why:

* zeros are kept: the public class tests values for truthiness, so ``epoch=0`` and
  ``loss=0.0`` silently vanish from the job's statistics;
* ``progress_percentage`` must be a fraction in [0, 1] (the API's unit), checked when
  set rather than shown wrong on the dashboard;
* numpy/torch scalars and 0-d tensors become plain numbers, and NaN/Infinity become the
  strings ``"NaN"``/``"Infinity"``/``"-Infinity"`` (the public class produces invalid
  JSON or a ``TypeError`` deep inside ``requests``);
* a value the platform would refuse (an object, a 10-element array, ``"51%"`` as an
  accuracy, ``epoch`` past ``num_epochs``, a document over 1 MiB) is a
  :class:`~abeja_runtime.errors.StatisticsError` at the line that passed it. The rules
  live in :mod:`abeja_runtime.statistics_rules`, shared with the reporter, the client
  and the emulator; ``check_value``/``check_document``/``check_epoch``/``check_progress``
  are re-exported here for existing imports.

The call-site checks look only at types, shapes and dtypes, never at a tensor's data:
reading a CUDA tensor (``.item()``) waits for the GPU and would stall the training loop.
The conversion to numbers (:func:`to_json_safe`) runs later, on the reporter's sender
thread, or when :meth:`Statistics.get_statistics` is called explicitly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import StatisticsError
from ..jsonsafe import to_json_safe
from ..statistics_rules import (
    METRIC_KEYS,
    check_document,
    check_epoch,
    check_epoch_order,
    check_metric,
    check_progress,
    check_stage_name,
    check_value,
)

__all__ = [
    "STAGES",
    "STATISTICS",
    "Statistics",
    "check_document",
    "check_epoch",
    "check_progress",
    "check_value",
]

STATISTICS = dict[str, Any]
STAGES = dict[str, STATISTICS]


class Statistics:
    """One statistics document: epoch, progress, per-stage metrics and extra values.

    Example::

        statistics = Statistics(num_epochs=10, epoch=0, progress_percentage=0.0)
        statistics.add_stage(Statistics.STAGE_TRAIN, accuracy=0.9, loss=0.0)
        statistics.get_statistics()
        # {'num_epochs': 10, 'epoch': 0, 'progress_percentage': 0.0,
        #  'stages': {'train': {'accuracy': 0.9, 'loss': 0.0}}}

    Attributes:
        num_epochs: total number of epochs, or ``None``.
        epoch: current epoch, or ``None``.
        progress_percentage: progress as a fraction in [0, 1], or ``None``.
        other_information: extra top-level values (the constructor's ``**other``).
        stages: stage name -> metrics.
    """

    STAGE_TRAIN = "train"
    STAGE_VALIDATION = "validation"

    def __init__(
        self,
        num_epochs: int | None = None,
        epoch: int | None = None,
        progress_percentage: float | None = None,
        **other: Any,
    ) -> None:
        """Build a document.

        Args:
            num_epochs: total number of epochs (a number >= 0).
            epoch: current epoch (a number >= 0; ``0`` is kept).
            progress_percentage: fraction of the training done, in [0, 1].
            **other: extra top-level values (numbers, strings, numpy/torch scalars...).

        Raises:
            StatisticsError: a value is out of range or can never be sent.
        """
        self.num_epochs = num_epochs
        self.epoch = epoch
        self.progress_percentage = progress_percentage
        check_epoch_order(self._epoch, self._num_epochs)
        self.other_information: dict[str, Any] = {
            key: check_value(value, f"statistics.{key}") for key, value in other.items()
        }
        self.stages: STAGES = {}

    # Validated attributes: the public class lets users assign them directly.
    @property
    def num_epochs(self) -> int | None:
        return self._num_epochs

    @num_epochs.setter
    def num_epochs(self, value: Any) -> None:
        self._num_epochs = check_epoch(value, "num_epochs")

    @property
    def epoch(self) -> int | None:
        return self._epoch

    @epoch.setter
    def epoch(self, value: Any) -> None:
        self._epoch = check_epoch(value, "epoch")

    @property
    def progress_percentage(self) -> float | int | None:
        return self._progress_percentage

    @progress_percentage.setter
    def progress_percentage(self, value: Any) -> None:
        self._progress_percentage = check_progress(value)

    @classmethod
    def from_response(cls, response: Mapping[str, Any] | None) -> Statistics | None:
        """A :class:`Statistics` from a job's ``statistics`` field (``None`` stays ``None``).

        Unlike the public package, the response dict is not modified.
        """
        if response is None:
            return None
        data = dict(response)
        stages = data.pop("stages", None) or {}
        statistics = cls(**data)
        for name, values in stages.items():
            statistics.add_stage(name, **values)
        return statistics

    def add_stage(
        self,
        name: str,
        accuracy: float | None = None,
        loss: float | None = None,
        **other: Any,
    ) -> None:
        """Set the metrics of one stage, replacing what that stage had.

        Args:
            name: stage name; :attr:`STAGE_TRAIN` and :attr:`STAGE_VALIDATION` are the
                usual ones, any string is allowed.
            accuracy: the stage's accuracy (``0`` is kept; ``None`` leaves it out).
            loss: the stage's loss (``0.0`` is kept; ``None`` leaves it out).
            **other: further metrics.

        Raises:
            StatisticsError: no metric at all, or a value that can never be sent.
        """
        check_stage_name(name)
        if accuracy is None and loss is None and not other:
            raise StatisticsError(f"stage {name!r}: give at least one metric")
        path = f"stages.{name}"
        stat: STATISTICS = {
            key: (check_metric if key in METRIC_KEYS else check_value)(value, f"{path}.{key}")
            for key, value in other.items()
        }
        if accuracy is not None:
            stat["accuracy"] = check_metric(accuracy, f"{path}.accuracy")
        if loss is not None:
            stat["loss"] = check_metric(loss, f"{path}.loss")
        self.stages[name] = stat

    def raw_document(self) -> dict[str, Any]:
        """The document with values as given (tensors not read yet), call-site checked.

        This is what :class:`~abeja_runtime.statistics.reporter.StatisticsReporter` takes, so that
        reporting a :class:`Statistics` holding CUDA tensors does not wait for the GPU.

        Raises:
            StatisticsError: something assigned directly to an attribute can never be sent.
        """
        document: dict[str, Any] = dict(self.other_information)
        if self._num_epochs is not None:
            document["num_epochs"] = self._num_epochs
        if self._epoch is not None:
            document["epoch"] = self._epoch
        if self._progress_percentage is not None:
            document["progress_percentage"] = self._progress_percentage
        if self.stages:
            document["stages"] = self.stages
        return check_document(document)

    def get_statistics(self) -> dict[str, Any]:
        """The document as the API takes it: plain JSON values only.

        Reads tensor values (``.item()``), so on a GPU it waits for the device; the
        reporter calls it on its own thread for that reason.

        Raises:
            StatisticsError: a value cannot be converted.
        """
        converted: dict[str, Any] = to_json_safe(self.raw_document())
        return converted

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Statistics):
            return NotImplemented
        return self.get_statistics() == other.get_statistics()

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"Statistics({self.raw_document()!r})"
