"""Every exception the library raises, under one base class.

The HTTP error names and attributes match the public ``abeja-sdk`` package
(``HttpError`` with ``error``, ``error_description``, ``error_detail``,
``status_code`` and ``url``; ``BadRequest`` ... ``InternalServerError``;
``InvalidDataFormat``) so that code written against it keeps catching the same
things. Connection and timeout failures get classes of our own, because the
public package leaks raw ``requests`` exceptions for those.

Why one module: the client, the reporter, the emulator's error mapping and the
CLI all need the same classes and the same "is this worth retrying" facts, so
they are decided here once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "APIConnectionError",
    "APITimeoutError",
    "AbejaRuntimeError",
    "BadRequest",
    "ConfigurationError",
    "Conflict",
    "Error",
    "Forbidden",
    "HttpError",
    "InternalServerError",
    "InvalidDataFormat",
    "InvalidResponseError",
    "JobContextError",
    "MethodNotAllowed",
    "ModelChecksumError",
    "NotFound",
    "StatisticsError",
    "Unauthorized",
    "error_for_status",
]


class AbejaRuntimeError(Exception):
    """Base class of every error raised by abeja_runtime."""


#: Alias kept for code written against ``abeja.exceptions.Error``.
Error = AbejaRuntimeError


class ConfigurationError(AbejaRuntimeError, ValueError):
    """A setting (argument or environment variable) is missing or malformed."""


class JobContextError(ConfigurationError):
    """The training job's environment is incomplete or malformed.

    Attributes:
        missing: names of the variables that are not set.
        invalid: variable name -> why its value was refused.
    """

    def __init__(
        self,
        message: str,
        *,
        missing: list[str] | None = None,
        invalid: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.missing: list[str] = list(missing or [])
        self.invalid: dict[str, str] = dict(invalid or {})


class ModelChecksumError(AbejaRuntimeError):
    """The bytes the server stored (or sent back) differ from the ones we have."""


class StatisticsError(AbejaRuntimeError, ValueError):
    """A statistics value cannot be sent (not a number/string, out of range, ...)."""


class InvalidDataFormat(AbejaRuntimeError, ValueError):
    """Data given for upload is not a readable binary file (or path to one)."""


class HttpError(AbejaRuntimeError):
    """The server answered with an error status.

    Attributes mirror the public package so existing ``except`` blocks work.

    Attributes:
        error: short machine-readable error code from the server's JSON body.
        error_description: human readable explanation from the server.
        error_detail: optional structured detail from the server.
        status_code: the HTTP status code.
        url: the request URL (never contains credentials).
        retry_after: seconds from a ``Retry-After`` header, if the server sent one.
    """

    def __init__(
        self,
        error: str,
        error_description: str,
        error_detail: Any = None,
        status_code: int | None = None,
        url: str | None = None,
        *,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(error, error_description)
        self.error = error
        self.error_description = error_description
        self.error_detail = error_detail
        self.status_code = status_code
        self.url = url
        self.retry_after = retry_after

    def __str__(self) -> str:
        text = f"{self.error}: {self.error_description}"
        if self.status_code is not None and self.url:
            text += f" ({self.status_code} from {self.url})"
        if self.error_detail:
            text += f", {self.error_detail}"
        return text

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self}>"

    def _asdict(self) -> dict[str, Any]:
        """The error as the public package's ``_asdict`` returns it."""
        data: dict[str, Any] = {"error": self.error, "error_description": self.error_description}
        if self.error_detail:
            data["error_detail"] = self.error_detail
        if self.status_code:
            data["status_code"] = self.status_code
        if self.url:
            data["url"] = self.url
        return data


class BadRequest(HttpError):
    """400: the request was refused as malformed (or refused locally before sending)."""


class Unauthorized(HttpError):
    """401: the credential is missing or wrong."""


class Forbidden(HttpError):
    """403: the credential may not do this."""


class NotFound(HttpError):
    """404: no such resource."""


class MethodNotAllowed(HttpError):
    """405: the path exists but not with this method."""


class Conflict(HttpError):
    """409: the resource exists already or is in a state that forbids this."""


class InternalServerError(HttpError):
    """500: the server failed."""


class InvalidResponseError(HttpError):
    """The server answered, but its body is not the JSON the API promises."""


class APIConnectionError(AbejaRuntimeError):
    """The server could not be reached, or the connection broke mid-request.

    Attributes:
        url: the request URL.
        sent: ``False`` when the request surely never reached the server
            (e.g. connection refused, DNS failure), so a retry cannot duplicate
            anything; ``True`` when it may have been received.
    """

    def __init__(self, message: str, *, url: str | None = None, sent: bool = True) -> None:
        super().__init__(message)
        self.url = url
        self.sent = sent


class APITimeoutError(APIConnectionError):
    """The connect or read timeout ran out."""


_STATUS_CLASSES: dict[int, type[HttpError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    409: Conflict,
    500: InternalServerError,
}


def error_for_status(status_code: int) -> type[HttpError]:
    """The exception class the API maps ``status_code`` to (``HttpError`` otherwise)."""
    return _STATUS_CLASSES.get(status_code, HttpError)
