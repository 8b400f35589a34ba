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
* a value that can never be sent (an object, a 10-element array) is a
  :class:`~abeja_runtime.errors.StatisticsError` at the line that passed it.

Two levels of checking, on purpose. :func:`check_value` is the *call-site* check: it
looks only at types and shapes, so it costs nanoseconds and never touches a tensor's
data, which matters because reading a CUDA tensor (``.item()``) waits for the GPU and
would stall the training loop. The conversion to numbers (:func:`to_json_safe`) runs
later, on the reporter's sender thread, or when :meth:`Statistics.get_statistics` is
called explicitly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from .errors import StatisticsError
from .jsonsafe import is_tensor_like, to_json_safe

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

_MAX_DEPTH = 32
_PLAIN = (str, int, float)


def _shape_size(value: Any) -> int | None:
    shape = getattr(value, "shape", ())
    try:
        size = 1
        for dim in shape:
            size *= int(dim)
    except TypeError:
        return None
    return size


def check_value(value: Any, path: str, _depth: int = 0) -> Any:
    """Check that ``value`` can be sent, without reading tensor data; return what to keep.

    Plain values are returned as they are, dicts and lists as shallow copies (so later
    mutation by the caller does not change what was reported), and tensors that
    require grad are detached (so a reported loss does not keep its autograd graph
    alive until it is sent). Nothing here synchronises a GPU.

    Args:
        value: the value to check.
        path: where it sits (``stages.train.loss``), for the error message.

    Raises:
        StatisticsError: the value is of a type that can never be sent, or an
            array/tensor with more than one element.
    """
    kind = type(value)
    if kind is float or kind is int or kind is str or kind is bool or value is None:
        return value
    if isinstance(value, _PLAIN):  # subclasses: numpy float64, IntEnum, str enums
        return value
    if _depth > _MAX_DEPTH:
        raise StatisticsError(f"{path}: nested too deeply (a reference cycle?)")
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise StatisticsError(f"{path}: keys must be strings, got {key!r}")
            out[key] = check_value(item, f"{path}.{key}", _depth + 1)
        return out
    if isinstance(value, (list, tuple)):
        return [check_value(item, f"{path}[{i}]", _depth + 1) for i, item in enumerate(value)]
    if is_tensor_like(value):
        size = _shape_size(value)
        if size is not None and size != 1:
            raise StatisticsError(
                f"{path}: expected a scalar, got an array/tensor of shape "
                f"{tuple(getattr(value, 'shape', ()))}; reduce it first (e.g. .mean())"
            )
        if getattr(value, "requires_grad", False):
            value = value.detach()
        return value
    raise StatisticsError(
        f"{path}: {type(value).__name__} is not a JSON value; use a number, string, bool, "
        "None, a numpy/torch scalar, or a dict/list of those"
    )


def _number(value: Any, path: str) -> float | int:
    """A real number now (epoch/progress are needed as numbers at once, not later)."""
    if is_tensor_like(value):
        check_value(value, path)
        value = to_json_safe(value, path)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise StatisticsError(f"{path}: must be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise StatisticsError(f"{path}: must be a finite number, got {value!r}")
    return int(value) if isinstance(value, int) else float(value)


def check_epoch(value: Any, path: str) -> int | None:
    """``epoch``/``num_epochs``: ``None`` or a whole number >= 0, returned as an ``int``.

    ``3.0`` and numpy integers are accepted as 3; a fractional epoch (``1.5``, as some
    trainers count) is refused here rather than by the server later: report fractional
    progress with ``progress_percentage``.

    Raises:
        StatisticsError: not a whole number >= 0.
    """
    if value is None:
        return None
    number = _number(value, path)
    if isinstance(number, float):
        if not number.is_integer():
            raise StatisticsError(
                f"{path}: must be a whole number, got {number!r} (round it, and report "
                "fractional progress as progress_percentage)"
            )
        number = int(number)
    if number < 0:
        raise StatisticsError(f"{path}: must be >= 0, got {number!r}")
    return number


def check_progress(value: Any, path: str = "progress_percentage") -> float | int | None:
    """``progress_percentage``: ``None`` or a fraction in [0, 1].

    Raises:
        StatisticsError: not a number, or outside [0, 1] (e.g. 50 meant as 50 %).
    """
    if value is None:
        return None
    number = _number(value, path)
    if not 0 <= number <= 1:
        raise StatisticsError(
            f"{path}: must be a fraction in [0, 1] (0.5 for 50 %), got {number!r}"
        )
    return number


_TOP_CHECKS: dict[str, Callable[[Any, str], float | int | None]] = {
    "epoch": check_epoch,
    "num_epochs": check_epoch,
    "progress_percentage": check_progress,
}


def check_document(document: Mapping[str, Any], path: str = "statistics") -> dict[str, Any]:
    """Call-site check of a whole statistics document (``get_statistics()`` shape).

    Returns a copy with the same structure: ``epoch``/``num_epochs``/
    ``progress_percentage`` validated as numbers, ``stages`` a dict of dicts, every
    other value checked by :func:`check_value`. ``None`` top-level fields are dropped.

    Raises:
        StatisticsError: the document has a malformed part.
    """
    if not isinstance(document, Mapping):
        raise StatisticsError(f"{path}: must be a dict, got {type(document).__name__}")
    out: dict[str, Any] = {}
    for key, value in document.items():
        if not isinstance(key, str):
            raise StatisticsError(f"{path}: keys must be strings, got {key!r}")
        check = _TOP_CHECKS.get(key)
        if check is not None:
            number = check(value, f"{path}.{key}")
            if number is not None:
                out[key] = number
        elif key == "stages":
            if value is None:
                continue
            if not isinstance(value, Mapping):
                raise StatisticsError(
                    f"{path}.stages: must be a dict of stage name -> dict, "
                    f"got {type(value).__name__}"
                )
            stages: dict[str, dict[str, Any]] = {}
            for name, stage in value.items():
                if not isinstance(name, str):
                    raise StatisticsError(f"{path}.stages: names must be strings, got {name!r}")
                if not isinstance(stage, Mapping):
                    raise StatisticsError(
                        f"{path}.stages.{name}: must be a dict, got {type(stage).__name__}"
                    )
                stages[name] = check_value(stage, f"{path}.stages.{name}")
            out["stages"] = stages
        else:
            out[key] = check_value(value, f"{path}.{key}")
    return out


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
        if not isinstance(name, str) or not name:
            raise StatisticsError(f"stage name must be a non-empty string, got {name!r}")
        if accuracy is None and loss is None and not other:
            raise StatisticsError(f"stage {name!r}: give at least one metric")
        path = f"stages.{name}"
        stat: STATISTICS = {
            key: check_value(value, f"{path}.{key}") for key, value in other.items()
        }
        if accuracy is not None:
            stat["accuracy"] = check_value(accuracy, f"{path}.accuracy")
        if loss is not None:
            stat["loss"] = check_value(loss, f"{path}.loss")
        self.stages[name] = stat

    def raw_document(self) -> dict[str, Any]:
        """The document with values as given (tensors not read yet), call-site checked.

        This is what :class:`~abeja_runtime.reporter.StatisticsReporter` takes, so that
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
