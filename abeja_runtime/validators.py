"""The one check of each identifier the Training API takes: ids, names and versions.

The job context (environment variables), the client (arguments, before any
request), the runner and the CLI (options, before anything is created) all call
these, so a value is refused the same way wherever it comes from. Each raises
:class:`~abeja_runtime.errors.ConfigurationError` with a message that starts with
``what`` (the variable or argument name); the client turns that into its
:class:`~abeja_runtime.errors.BadRequest` so existing ``except`` blocks keep working.

The handler string (``HANDLER``, ``module:function``) is checked here too, statically
(:func:`parse_handler`): by the job context, the client and the runner, before the
runner's child imports it.

Durations and URLs live in :mod:`abeja_runtime.config` (``check_duration``,
``check_api_url``), next to the settings that use them.
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass
from typing import Any

from .config import CONTROL_CHARS
from .errors import ConfigurationError

__all__ = [
    "HandlerError",
    "HandlerSpec",
    "check_id",
    "check_name",
    "check_version",
    "parse_handler",
]

#: organization, job, model, dataset and user ids: 13 ASCII digits
_ID = re.compile(r"[0-9]{13}", re.ASCII)


def check_id(value: Any, what: str) -> str:
    """A platform id (13 decimal digits, as a string or an int); returns it as a string.

    Raises:
        ConfigurationError: anything else (``abc``, 5 or 19 digits, full-width digits).
    """
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ConfigurationError(f"{what} must be an id of 13 digits, got {value!r}")
    text = str(value)
    if not _ID.fullmatch(text):
        raise ConfigurationError(f"{what} must be an id of 13 digits, got {value!r}")
    return text


def check_name(value: Any, what: str) -> str:
    """A job definition (or other) name that is one safe URL path segment; returns it.

    Refused: empty or blank, ``.`` and ``..``, anything with ``/`` or ``\\`` (it would
    change the request path, or a file path built from it), leading or trailing
    spaces, and control characters such as a newline or a tab.

    Raises:
        ConfigurationError: naming ``what`` and the value.
    """
    if not isinstance(value, str):
        raise ConfigurationError(f"{what} must be a non-empty string, got {value!r}")
    if not value.strip():
        raise ConfigurationError(f"{what} must be a non-empty string, got {value!r}")
    if value in (".", ".."):
        raise ConfigurationError(f"{what} must not be {value!r} (it would change the path)")
    if "/" in value or "\\" in value:
        raise ConfigurationError(f"{what} must not contain '/' or '\\', got {value!r}")
    if CONTROL_CHARS.search(value):
        raise ConfigurationError(f"{what} must not contain control characters, got {value!r}")
    if value != value.strip():
        raise ConfigurationError(f"{what} must not start or end with spaces, got {value!r}")
    return value


def check_version(value: Any, what: str) -> int:
    """A job definition version: an integer >= 1 (or a string of ASCII digits).

    ``int("\\uff11")`` (a full-width one) is 1 in Python; such digits are still refused, because the
    server would see a different string than the one in the job's environment.

    Raises:
        ConfigurationError: naming ``what`` and the value.
    """
    if isinstance(value, bool):
        raise ConfigurationError(f"{what} must be an integer >= 1, got {value!r}")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.isascii() and value.isdigit():
        number = int(value)
    else:
        raise ConfigurationError(f"{what} must be an integer >= 1, got {value!r}")
    if number < 1:
        raise ConfigurationError(f"{what} must be an integer >= 1, got {value!r}")
    return number


# ------------------------------------------------------------------- handler

_EXAMPLE = "'module:function', e.g. 'train:handler' for handler() in train.py"


class HandlerError(ConfigurationError):
    """``HANDLER`` cannot be turned into a callable (or the job input is malformed).

    Raised before anything runs, so the message must say what to change.
    """


@dataclass(frozen=True)
class HandlerSpec:
    """A parsed ``HANDLER`` value.

    Attributes:
        module: dotted module name, resolved from the source directory.
        function: name of the callable inside the module.
    """

    module: str
    function: str

    def __str__(self) -> str:
        return f"{self.module}:{self.function}"


def _is_identifier(name: str) -> bool:
    return name.isidentifier() and not keyword.iskeyword(name)


def parse_handler(value: str | None) -> HandlerSpec:
    """Split and validate ``module:function`` without importing anything.

    This is the cheap, static half of the validation; the parent runs it in its
    own process before it starts the ``--check`` child.

    Raises:
        HandlerError: empty, no colon, more than one colon, or a part that is not
            a Python (dotted) name; the message shows the expected form.
    """
    if value is None or not str(value).strip():
        raise HandlerError(f"HANDLER is empty: expected {_EXAMPLE}")
    text = str(value).strip()
    colons = text.count(":")
    if colons == 0:
        hint = ""
        if text.endswith(".py") or "/" in text:
            stem = text.rsplit("/", 1)[-1].removesuffix(".py") or "train"
            hint = f" (did you mean '{stem}:handler'?)"
        raise HandlerError(f"HANDLER {text!r} has no colon: expected {_EXAMPLE}{hint}")
    if colons > 1:
        raise HandlerError(
            f"HANDLER {text!r} has {colons} colons: expected exactly one, as in {_EXAMPLE}"
        )
    module, function = (part.strip() for part in text.split(":"))
    if not module:
        raise HandlerError(f"HANDLER {text!r} has no module before the colon: expected {_EXAMPLE}")
    if not function:
        raise HandlerError(f"HANDLER {text!r} has no function after the colon: expected {_EXAMPLE}")
    if module.endswith(".py") or "/" in module or "\\" in module:
        stem = module.replace("\\", "/").rsplit("/", 1)[-1].removesuffix(".py")
        raise HandlerError(
            f"HANDLER {text!r}: {module!r} is a file path, not a module name; "
            f"use the module name, e.g. '{stem}:{function}', and --source for its directory"
        )
    if not all(_is_identifier(part) for part in module.split(".")):
        raise HandlerError(f"HANDLER {text!r}: {module!r} is not a Python module name")
    if not _is_identifier(function):
        raise HandlerError(f"HANDLER {text!r}: {function!r} is not a Python function name")
    return HandlerSpec(module, function)
