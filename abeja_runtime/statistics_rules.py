"""The one set of rules a statistics document must follow to be accepted.

Every place that builds or receives a statistics document checks it here and nowhere
else: :class:`~abeja_runtime.statistics.Statistics`, ``report()`` (the reporter),
:meth:`APIClient.update_statistics <abeja_runtime.api.client.APIClient.update_statistics>`
and the emulator's ``update_statistics`` endpoint. Why one module: when the client
accepts a value that the server refuses, the refusal comes back on a background thread
long after the line that made it, and (because reports merge into one document) every
later snapshot carries the bad value and is refused too. A rule written once cannot
drift between the two sides.

The rules (the document is what ``Statistics.get_statistics()`` returns):

* the document is an object with string keys, nested at most 32 levels;
* ``epoch`` and ``num_epochs`` are ``null`` or whole numbers >= 0, and
  ``epoch <= num_epochs`` when both are present;
* ``progress_percentage`` is ``null`` or a number in [0, 1];
* ``stages`` is ``null`` or an object of stage name -> object; a stage name is a
  non-empty string of at most 255 characters without control characters;
* a stage's ``loss`` and ``accuracy`` (:data:`METRIC_KEYS`) are ``null``, numbers
  (not booleans), or the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``;
* any other value is any JSON value; integers are at most :data:`MAX_INT_BITS` bits
  (beyond the range of a double, a JSON reader cannot hold them; Python itself refuses
  to write integers of over 4,300 digits);
* the request body ``{"statistics": <document>}``, encoded as the client sends it, is
  at most :data:`MAX_DOCUMENT_BYTES`.

Two forms of the same rules:

* the *Python form* (:func:`check_value`, :func:`check_metric`, :func:`check_stage`,
  :func:`check_document`) runs at the call site. It looks at types, shapes and dtypes
  only and never reads a tensor's data, because reading a CUDA tensor waits for the GPU
  and would stall the training loop; sizes are bounded by :func:`size_bound` without
  converting anything;
* the *wire form* (:func:`check_wire_document`) runs on the converted JSON document,
  exactly as the server sees it: in the client before a post, and in the emulator.

Every function raises :class:`~abeja_runtime.errors.StatisticsError` with the path of
the offending value (``stages.train.accuracy``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from .errors import StatisticsError
from .jsonsafe import is_tensor_like, to_json_safe

__all__ = [
    "MAX_DEPTH",
    "MAX_DOCUMENT_BYTES",
    "MAX_INT_BITS",
    "MAX_STAGE_NAME_CHARS",
    "METRIC_KEYS",
    "NON_FINITE_STRINGS",
    "body_size",
    "check_document",
    "check_epoch",
    "check_epoch_order",
    "check_metric",
    "check_progress",
    "check_stage",
    "check_stage_name",
    "check_value",
    "check_wire_document",
    "progress_fraction",
    "size_bound",
]

#: Largest request body ``{"statistics": ...}`` accepted, in bytes (as encoded by the client).
MAX_DOCUMENT_BYTES = 1024 * 1024
#: Per-stage keys whose value must be a number (or null, or a non-finite string).
METRIC_KEYS = frozenset({"loss", "accuracy"})
#: How non-finite floats travel (strict JSON has no NaN/Infinity).
NON_FINITE_STRINGS = frozenset({"NaN", "Infinity", "-Infinity"})
#: Deepest nesting of containers accepted (deeper is almost always a reference cycle).
MAX_DEPTH = 32
#: Largest integer magnitude, in bits: a double's range (about 1.8e308).
MAX_INT_BITS = 1024
#: Longest stage name.
MAX_STAGE_NAME_CHARS = 255

#: JSON size bound of one converted tensor element: the longest float repr is 24 characters.
_TENSOR_BOUND = 24
_TOP_NUMBERS = ("epoch", "num_epochs", "progress_percentage")


def _shape_size(value: Any) -> int | None:
    shape = getattr(value, "shape", ())
    try:
        size = 1
        for dim in shape:
            size *= int(dim)
    except TypeError:
        return None
    return size


def _dtype_kind(value: Any) -> str:
    """``b`` (bool), ``i`` (integer), ``f`` (float), ``c`` (complex) or ``?``, without reading data.

    numpy dtypes carry ``kind``; torch dtypes do not, but their names are stable
    (``torch.bool``, ``torch.int64``, ``torch.float32``, ``torch.complex64``).
    """
    dtype = getattr(value, "dtype", None)
    if dtype is None:
        return "?"
    kind = getattr(dtype, "kind", None)
    if isinstance(kind, str):
        return {"u": "i"}.get(kind, kind)
    name = str(dtype).rsplit(".", 1)[-1]
    if name == "bool":
        return "b"
    if name.startswith(("int", "uint", "long", "short")):
        return "i"
    if name.startswith(("float", "bfloat", "half", "double")):
        return "f"
    if name.startswith(("complex", "cfloat", "cdouble")):
        return "c"
    return "?"


def _check_int(value: int, path: str) -> int:
    if value.bit_length() > MAX_INT_BITS:
        raise StatisticsError(
            f"{path}: an integer of {value.bit_length()} bits is too large for a JSON number "
            f"(at most {MAX_INT_BITS} bits, about 1.8e308); send it as a float or a string"
        )
    return value


def _check_tensor(value: Any, path: str) -> Any:
    size = _shape_size(value)
    if size is not None and size != 1:
        raise StatisticsError(
            f"{path}: expected a scalar, got an array/tensor of shape "
            f"{tuple(getattr(value, 'shape', ()))}; reduce it first (e.g. .mean())"
        )
    kind = _dtype_kind(value)
    if kind not in ("b", "i", "f", "?"):
        raise StatisticsError(
            f"{path}: a {getattr(value, 'dtype', '?')} value is not a JSON number; "
            "send a real number"
        )
    if getattr(value, "requires_grad", False):
        value = value.detach()
    return value


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
        StatisticsError: a type that can never be sent, an array/tensor with more than
            one element or of a non-numeric dtype, an integer JSON cannot carry, or
            nesting deeper than :data:`MAX_DEPTH`.
    """
    kind = type(value)
    if kind is float or kind is str or kind is bool or value is None:
        return value
    if kind is int:
        return _check_int(value, path)
    if isinstance(value, (str, float)):  # subclasses: numpy float64, str enums
        return value
    if isinstance(value, int):  # bool subclasses are bools; IntEnum, numpy-free ints
        return value if isinstance(value, bool) else _check_int(value, path)
    if _depth >= MAX_DEPTH:
        raise StatisticsError(f"{path}: nested deeper than {MAX_DEPTH} levels (a reference cycle?)")
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
        return _check_tensor(value, path)
    raise StatisticsError(
        f"{path}: {type(value).__name__} is not a JSON value; use a number, string, bool, "
        "None, a numpy/torch scalar, or a dict/list of those"
    )


def _metric_error(path: str, value: Any) -> StatisticsError:
    shown = repr(value) if isinstance(value, (str, bool)) else type(value).__name__
    return StatisticsError(
        f"{path}: must be a number (or None, 'NaN', 'Infinity', '-Infinity'), got {shown}; "
        "the platform refuses anything else here (report a formatted value such as '51%' "
        "under another key)"
    )


def check_metric(value: Any, path: str) -> Any:
    """A stage's ``loss`` or ``accuracy``: a number, ``None`` or a non-finite string.

    Booleans (``True``, ``np.bool_``, a bool tensor), other strings, lists and dicts
    are refused: the platform refuses them for these two keys.

    Raises:
        StatisticsError: anything else.
    """
    kind = type(value)
    if kind is float or value is None:
        return value
    if kind is int:
        return _check_int(value, path)
    if isinstance(value, bool):
        raise _metric_error(path, value)
    if isinstance(value, str):
        if value in NON_FINITE_STRINGS:
            return str(value)
        raise _metric_error(path, value)
    if isinstance(value, float):
        return value
    if isinstance(value, int):
        return _check_int(value, path)
    if is_tensor_like(value):
        if _dtype_kind(value) == "b":
            raise StatisticsError(f"{path}: must be a number, got a boolean {type(value).__name__}")
        return _check_tensor(value, path)
    raise _metric_error(path, value)


def check_stage_name(name: Any, path: str = "stages") -> str:
    """A stage name: a non-empty string of at most 255 characters, no control characters.

    Raises:
        StatisticsError: anything else.
    """
    if not isinstance(name, str):
        raise StatisticsError(f"{path}: stage names must be strings, got {name!r}")
    if not name:
        raise StatisticsError(f"{path}: a stage name must not be empty")
    if len(name) > MAX_STAGE_NAME_CHARS:
        raise StatisticsError(
            f"{path}: stage name {name[:40]!r}... is longer than {MAX_STAGE_NAME_CHARS} characters"
        )
    if not name.isprintable():
        raise StatisticsError(f"{path}: stage name {name!r} contains control characters")
    return name


def check_stage(name: Any, metrics: Any, path: str = "stages") -> dict[str, Any]:
    """One stage: its name, and its metrics as a checked shallow copy.

    Raises:
        StatisticsError: a bad name, metrics that are not a dict, or a bad metric.
    """
    check_stage_name(name, path)
    where = f"{path}.{name}"
    if not isinstance(metrics, Mapping):
        raise StatisticsError(f"{where}: must be a dict of metrics, got {type(metrics).__name__}")
    out: dict[str, Any] = {}
    for key, item in metrics.items():
        if not isinstance(key, str):
            raise StatisticsError(f"{where}: keys must be strings, got {key!r}")
        if key in METRIC_KEYS:
            out[key] = check_metric(item, f"{where}.{key}")
        else:
            out[key] = check_value(item, f"{where}.{key}", 1)
    return out


def _number(value: Any, path: str) -> float | int:
    """A real number now (epoch/progress are needed as numbers at once, not later)."""
    if is_tensor_like(value):
        if _dtype_kind(value) == "b":
            raise StatisticsError(f"{path}: must be a number, got a boolean")
        _check_tensor(value, path)
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
    return _check_int(number, path)


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


def check_epoch_order(epoch: int | None, num_epochs: int | None, path: str = "statistics") -> None:
    """``epoch`` may not exceed ``num_epochs`` (both already checked by :func:`check_epoch`).

    Raises:
        StatisticsError: ``epoch > num_epochs``.
    """
    if epoch is not None and num_epochs is not None and epoch > num_epochs:
        raise StatisticsError(
            f"{path}: epoch {epoch} is greater than num_epochs {num_epochs}; epochs count "
            f"from 0 or 1 up to num_epochs"
        )


def size_bound(value: Any) -> int:
    """An upper bound of the JSON size of a checked value, in bytes, reading no tensor data.

    Bounds the encoding the client uses (``json.dumps`` defaults: ``", "``/``": "``
    separators, non-ASCII escaped); a tensor counts as its longest rendering.
    """
    kind = type(value)
    if kind is float:
        return _TENSOR_BOUND
    if kind is str:
        return len(json.dumps(value))
    if value is None or kind is bool:
        return 5
    if kind is int:
        return int(value.bit_length()) * 30103 // 100000 + 3
    if isinstance(value, Mapping):
        return 2 + sum(size_bound(str(k)) + 4 + size_bound(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return 2 + sum(size_bound(v) + 2 for v in value)
    if isinstance(value, str):
        return len(json.dumps(str(value)))
    if isinstance(value, int):
        return size_bound(int(value))
    return _TENSOR_BOUND


def _too_large(size: int, path: str, *, exact: bool) -> StatisticsError:
    what = "is" if exact else "would be up to"
    return StatisticsError(
        f"{path}: the statistics document {what} {size:,} bytes, over the limit of "
        f"{MAX_DOCUMENT_BYTES:,} bytes; report fewer or shorter values (a histogram or a "
        "long text belongs in a file of the result dir)"
    )


def check_document(document: Any, path: str = "statistics") -> dict[str, Any]:
    """Call-site check of a whole statistics document (``get_statistics()`` shape).

    Returns a copy with the same structure: ``epoch``/``num_epochs``/
    ``progress_percentage`` validated as numbers, ``stages`` a dict of checked stages,
    every other value checked by :func:`check_value`. ``None`` top-level fields are
    dropped. The size is bounded by :func:`size_bound` (tensors are not read).

    Raises:
        StatisticsError: any rule of this module is broken.
    """
    if not isinstance(document, Mapping):
        raise StatisticsError(f"{path}: must be a dict, got {type(document).__name__}")
    out: dict[str, Any] = {}
    for key, value in document.items():
        if not isinstance(key, str):
            raise StatisticsError(f"{path}: keys must be strings, got {key!r}")
        if key == "progress_percentage":
            progress = check_progress(value, f"{path}.{key}")
            if progress is not None:
                out[key] = progress
        elif key in ("epoch", "num_epochs"):
            number = check_epoch(value, f"{path}.{key}")
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
            out["stages"] = {
                name: check_stage(name, stage, f"{path}.stages") for name, stage in value.items()
            }
        else:
            out[key] = check_value(value, f"{path}.{key}", 1)
    check_epoch_order(out.get("epoch"), out.get("num_epochs"), path)
    bound = size_bound({"statistics": out})
    if bound > MAX_DOCUMENT_BYTES:
        raise _too_large(bound, path, exact=False)
    return out


def body_size(document: Mapping[str, Any]) -> int:
    """The exact size of the body ``{"statistics": document}`` as the client encodes it.

    Raises:
        StatisticsError: the document holds something JSON cannot encode.
    """
    try:
        return len(json.dumps({"statistics": document}, allow_nan=False).encode("utf-8"))
    except (TypeError, ValueError) as exc:
        raise StatisticsError(f"statistics: cannot be encoded as JSON: {exc}") from exc


def _wire_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _check_wire_value(value: Any, path: str, depth: int) -> None:
    if value is None or isinstance(value, (bool, str)):
        return
    if isinstance(value, int):
        _check_int(value, path)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise StatisticsError(
                f'{path}: {value!r} is not JSON; send "NaN", "Infinity" or "-Infinity"'
            )
    elif isinstance(value, (dict, list)):
        if depth >= MAX_DEPTH:
            raise StatisticsError(f"{path}: nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise StatisticsError(f"{path}: keys must be strings, got {key!r}")
                _check_wire_value(item, f"{path}.{key}", depth + 1)
        else:
            for i, item in enumerate(value):
                _check_wire_value(item, f"{path}[{i}]", depth + 1)
    else:
        raise StatisticsError(f"{path}: {type(value).__name__} is not a JSON value")


def _wire_int(document: Mapping[str, Any], key: str, path: str) -> int | None:
    value = document.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise StatisticsError(f"{path}.{key}: must be an integer or null, got {_wire_type(value)}")
    if value < 0:
        raise StatisticsError(f"{path}.{key}: must be >= 0, got {value}")
    return _check_int(value, f"{path}.{key}")


def check_wire_document(document: Any, path: str = "statistics") -> dict[str, Any]:
    """Check a converted (JSON-form) document exactly as the server sees it.

    Used by the client before a post and by the emulator on what it receives, so both
    refuse the same documents for the same reasons.

    Returns:
        ``document`` itself.

    Raises:
        StatisticsError: any rule of this module is broken (the message names the path).
    """
    if not isinstance(document, dict):
        raise StatisticsError(f"{path}: must be a JSON object, got {_wire_type(document)}")
    epoch = _wire_int(document, "epoch", path)
    num_epochs = _wire_int(document, "num_epochs", path)
    check_epoch_order(epoch, num_epochs, path)
    progress = document.get("progress_percentage")
    if progress is not None:
        if isinstance(progress, bool) or not isinstance(progress, (int, float)):
            raise StatisticsError(
                f"{path}.progress_percentage: must be a number or null, got {_wire_type(progress)}"
            )
        if not 0 <= progress <= 1:
            raise StatisticsError(
                f"{path}.progress_percentage: must be a fraction in [0, 1], got {progress}"
            )
    stages = document.get("stages")
    if stages is not None:
        if not isinstance(stages, dict):
            raise StatisticsError(f"{path}.stages: must be an object, got {_wire_type(stages)}")
        for name, stage in stages.items():
            check_stage_name(name, f"{path}.stages")
            where = f"{path}.stages.{name}"
            if not isinstance(stage, dict):
                raise StatisticsError(f"{where}: must be an object, got {_wire_type(stage)}")
            for key in METRIC_KEYS:
                value = stage.get(key)
                if value is None or (isinstance(value, str) and value in NON_FINITE_STRINGS):
                    continue
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise StatisticsError(
                        f'{where}.{key}: must be a number, null or one of "NaN", '
                        f'"Infinity", "-Infinity", got {_wire_type(value)}'
                    )
    for key, value in document.items():
        if not isinstance(key, str):
            raise StatisticsError(f"{path}: keys must be strings, got {key!r}")
        if key not in _TOP_NUMBERS:
            _check_wire_value(value, f"{path}.{key}", 1)
    size = body_size(document)
    if size > MAX_DOCUMENT_BYTES:
        raise _too_large(size, path, exact=True)
    return document


def progress_fraction(statistics: Mapping[str, Any] | None) -> float | None:
    """A statistics document's progress in [0, 1]: ``progress_percentage``, else epochs.

    A job that reports only epochs (once an epoch is common) still gets a full bar when
    it is done; ``None`` when neither is there.
    """
    if not statistics:
        return None

    def number(value: Any) -> float | None:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return float(value) if ok and math.isfinite(value) else None

    fraction = number(statistics.get("progress_percentage"))
    if fraction is None:
        epoch, total = number(statistics.get("epoch")), number(statistics.get("num_epochs"))
        if epoch is None or total is None or total <= 0:
            return None
        fraction = epoch / total
    return min(1.0, max(0.0, fraction))
