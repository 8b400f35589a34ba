"""Turn statistics values into strict JSON, or fail clearly at the call site.

The public package hands values straight to ``json.dumps``: numpy and torch
scalars raise deep inside ``requests``, and NaN/Infinity become the invalid
JSON tokens ``NaN``/``Infinity`` that the server refuses. Here every value is
converted once, with a path in the error message (``stages.train.loss``), and
non-finite floats become the strings ``"NaN"``, ``"Infinity"`` and
``"-Infinity"`` as the platform's tracking code sends them.

Framework values are recognised by duck typing (``.item()`` on a 0-d array or
tensor, ``.tolist()``), so nothing here imports numpy or torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .errors import StatisticsError

__all__ = ["is_tensor_like", "to_json_safe"]

_MAX_DEPTH = 32


def _float(value: float) -> float | str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def is_tensor_like(value: Any) -> bool:
    """True for numpy/torch/jax scalars and arrays (anything with ``.item()`` and a shape)."""
    return hasattr(value, "item") and (hasattr(value, "shape") or hasattr(value, "dtype"))


def _scalar(value: Any, path: str) -> Any:
    """A 0-d / one-element array or tensor as a Python number (or bool)."""
    shape = getattr(value, "shape", ())
    try:
        size = 1
        for dim in shape:
            size *= int(dim)
    except TypeError:
        size = 1
    if size != 1:
        raise StatisticsError(
            f"{path}: expected a scalar, got an array/tensor of shape {tuple(shape)}; "
            "reduce it first (e.g. .mean())"
        )
    # torch tensors that require grad must be detached before .item() is cheap/allowed
    detach = getattr(value, "detach", None)
    if callable(detach):
        value = detach()
    try:
        return value.item()
    except Exception as exc:  # a framework's own error, re-raised with the path
        raise StatisticsError(
            f"{path}: cannot convert {type(value).__name__} to a number: {exc}"
        ) from exc


def to_json_safe(value: Any, path: str = "statistics", _depth: int = 0) -> Any:
    """A copy of ``value`` made only of JSON types, with non-finite floats as strings.

    Args:
        value: a number, string, bool, ``None``, numpy/torch scalar or 0-d
            array/tensor, or a dict/list/tuple of those.
        path: where ``value`` sits, used in error messages.

    Raises:
        StatisticsError: a value of another type, a non-string key, or nesting
            deeper than 32 levels (a cycle).
    """
    if _depth > _MAX_DEPTH:
        raise StatisticsError(f"{path}: nested too deeply (a reference cycle?)")
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return _float(float(value))
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise StatisticsError(f"{path}: keys must be strings, got {key!r}")
            out[key] = to_json_safe(item, f"{path}.{key}", _depth + 1)
        return out
    if isinstance(value, (list, tuple)):
        return [to_json_safe(item, f"{path}[{i}]", _depth + 1) for i, item in enumerate(value)]
    if is_tensor_like(value):
        return to_json_safe(_scalar(value, path), path, _depth + 1)
    raise StatisticsError(
        f"{path}: {type(value).__name__} is not a JSON value; use a number, string, bool, "
        "None, a numpy/torch scalar, or a dict/list of those"
    )
