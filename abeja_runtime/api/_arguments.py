"""The client's argument checks: every id, name, version and option, refused before any request.

A refused argument is a :class:`~abeja_runtime.errors.BadRequest` with status 400, as
the server would answer it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import quote

from ..errors import (
    BadRequest,
    ConfigurationError,
    JobContextError,
    StatisticsError,
)
from ..jsonsafe import to_json_safe
from ..statistics_rules import check_document, check_wire_document
from ..validators import check_id, check_name, check_version

_T = TypeVar("_T")

# cpu-N, gpu-N, gpu:<class>-N (N a positive number such as 1, 4 or 0.25)
_INSTANCE_TYPE = re.compile(r"^(?:cpu|gpu|gpu:[a-z][a-z0-9]*)-(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)$")


def _invalid(message: str) -> BadRequest:
    """The error for an argument refused before any request (status 400, like the server)."""
    return BadRequest("invalid_argument", message, status_code=400)


def validate_instance_type(instance_type: str) -> str:
    """Check an instance type (``cpu-N``, ``gpu-N`` or ``gpu:<class>-N``) and return it.

    Raises:
        BadRequest: any other form (status 400), before a request is made.
    """
    if not isinstance(instance_type, str) or not _INSTANCE_TYPE.match(instance_type):
        raise _invalid(
            f"{instance_type!r} is an invalid instance_type "
            "(expected cpu-N, gpu-N or gpu:<class>-N, e.g. 'cpu-1', 'gpu:b-1')"
        )
    if float(instance_type.rsplit("-", 1)[1]) <= 0:
        raise _invalid(f"{instance_type!r} is an invalid instance_type (size must be > 0)")
    return instance_type


def _checked(check: Callable[[Any, str], _T], value: Any, what: str) -> _T:
    """``check(value, what)`` with its ConfigurationError raised as a local BadRequest."""
    try:
        return check(value, what)
    except ConfigurationError as exc:
        raise _invalid(str(exc)) from None


def _segment(value: Any, what: str) -> str:
    """A name as one path segment, percent-quoted (see :func:`~.validators.check_name`)."""
    return quote(_checked(check_name, value, what), safe="")


def _id(value: Any, what: str) -> str:
    """An id as a path segment: 13 decimal digits, refused before any request otherwise."""
    return _checked(check_id, value, what)


def _version(value: Any) -> str:
    """A job definition version id: a positive integer (or a string of ASCII digits)."""
    return str(_checked(check_version, value, "version_id"))


def _datasets(datasets: Mapping[str, Any]) -> dict[str, str]:
    """Alias -> dataset id, each id checked (a job created with a bad id cannot start)."""
    return {
        _checked(check_name, str(alias), "dataset alias"): _id(dataset_id, f"datasets.{alias}")
        for alias, dataset_id in datasets.items()
    }


def _opt_bool(value: Any, what: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise _invalid(f"{what} must be True, False or None, got {value!r}")


def _opt_count(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(f"{what} must be an integer >= 0, got {value!r}")
    if value < 0:
        raise _invalid(f"{what} must be >= 0, got {value!r}")
    return value


def _opt_mapping(value: Any, what: str) -> Mapping[str, Any] | None:
    if value is None or isinstance(value, Mapping):
        return value
    raise _invalid(f"{what} must be a dict, got {type(value).__name__}")


def _opt_str(value: Any, what: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise _invalid(f"{what} must be a string, got {type(value).__name__}")


def _filter_archived(value: Any) -> dict[str, Any]:
    flag = _opt_bool(value, "filter_archived")
    if flag is None:
        return {}
    # The wire value the servers read (the seed's prose has it the other way round).
    return {"filter_archived": "exclude_archived" if flag else "include_archived"}


def _json_value(value: Any, what: str) -> Any:
    """``value`` as strict-JSON-ready data (numpy scalars, NaN handled), or BadRequest."""
    try:
        return to_json_safe(value, what)
    except StatisticsError as exc:
        raise _invalid(str(exc)) from None


def _env_identity(*names: str) -> list[str]:
    values = [os.environ.get(name, "").strip() for name in names]
    missing = [name for name, value in zip(names, values, strict=True) if not value]
    if missing:
        raise JobContextError(
            "not running inside a training job: " + ", ".join(missing) + " not set "
            "(pass the ids explicitly outside a job)",
            missing=missing,
        )
    return values


def _is_statistics(value: Any) -> bool:
    return isinstance(value, Mapping) or callable(getattr(value, "get_statistics", None))


def _statistics_dict(statistics: Any) -> Any:
    if statistics is None:
        raise StatisticsError("statistics is None; give a dict or a Statistics object")
    getter = getattr(statistics, "get_statistics", None)
    if callable(getter):
        statistics = getter()
    if not isinstance(statistics, Mapping):
        raise StatisticsError(
            "statistics must be a dict or an object with get_statistics(), got "
            f"{type(statistics).__name__}"
        )
    # the same rules as report() and the server: refused here, before any request
    return check_wire_document(to_json_safe(check_document(statistics), "statistics"))
