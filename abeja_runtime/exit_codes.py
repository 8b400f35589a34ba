"""Exit codes of the ``abeja-runtime`` commands, and the one place errors map to them.

Scripts branch on these, so they are part of the interface (the README lists them):

====  ===========================================================================
code  meaning
====  ===========================================================================
0     success; for ``run``: the job is Complete (and its model uploaded or skipped)
1     failure: an API error not listed below (5xx, an unreadable answer), a file
      that cannot be read or written; for ``run``: the job Failed, or its model
      could not be uploaded
2     usage: bad arguments (refused before anything is created, or answered 400
      by the API), an invalid ``HANDLER``, missing or bad configuration or
      environment, a port or directory that cannot be used, model data that
      cannot be uploaded
3     not found (404): no such definition, version, job or model
4     not authorized (401/403): credential missing, wrong or not allowed
5     conflict (409): exists already, or the resource's state forbids it
      (e.g. deleting a definition that still has versions)
6     the API could not be reached (connection refused, DNS, timeout)
7     ``run``: the job was stopped through the API
130   interrupted by SIGINT (Ctrl-C); for ``run``: the job is Stopped
141   the output pipe was closed before everything was written (``| head``)
143   ``run``: terminated by SIGTERM; the job is Stopped
====  ===========================================================================
"""

from __future__ import annotations

import signal

from .errors import (
    APIConnectionError,
    BadRequest,
    ConfigurationError,
    Conflict,
    Forbidden,
    InvalidDataFormat,
    NotFound,
    Unauthorized,
)

__all__ = [
    "EXIT_BROKEN_PIPE",
    "EXIT_CONFLICT",
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_JOB_STOPPED",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_UNAUTHORIZED",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "exit_code_for_error",
    "exit_code_for_signal",
]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_UNAUTHORIZED = 4
EXIT_CONFLICT = 5
EXIT_UNREACHABLE = 6
EXIT_JOB_STOPPED = 7
EXIT_INTERRUPTED = 128 + signal.SIGINT
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE


def exit_code_for_error(exc: BaseException) -> int:
    """The exit code a command returns when it ends with ``exc``."""
    if isinstance(exc, NotFound):
        return EXIT_NOT_FOUND
    if isinstance(exc, (Unauthorized, Forbidden)):
        return EXIT_UNAUTHORIZED
    if isinstance(exc, Conflict):
        return EXIT_CONFLICT
    if isinstance(exc, APIConnectionError):
        return EXIT_UNREACHABLE
    # A 400 is the API saying the arguments are wrong, as the client's own checks
    # (which raise BadRequest before sending) say it: both are usage errors.
    if isinstance(exc, (ConfigurationError, InvalidDataFormat, BadRequest)):
        return EXIT_USAGE
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, BrokenPipeError):
        return EXIT_BROKEN_PIPE
    return EXIT_FAILURE


def exit_code_for_signal(signum: int) -> int:
    """``128 + signum``, the shell's convention (130 for SIGINT, 143 for SIGTERM)."""
    return 128 + int(signal.Signals(signum))
