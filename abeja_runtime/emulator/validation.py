"""Checks on everything a request brings in, each failing as a 400 that says what is wrong.

The emulator refuses what the platform would refuse and, deliberately, a bit
more (unknown fields, wrong types, NaN tokens): a job that passes here sends
well-formed requests to the platform too, and a client bug shows up on a
laptop instead of as a silent drop in the cloud. Every function raises
:class:`~abeja_runtime.errors.BadRequest` before anything is stored.

Names are checked after percent-decoding each path segment, so ``..``,
``a%2Fb`` or control characters never reach a query or a file path (blob
files are named after numeric ids only, never after names).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import unquote, urlsplit

from ..errors import BadRequest, StatisticsError
from ..statistics_rules import MAX_DOCUMENT_BYTES, check_wire_document

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

__all__ = [
    "JOB_STATUSES",
    "MAX_DESCRIPTION_CHARS",
    "MAX_JSON_BYTES",
    "MAX_LIMIT",
    "MAX_STATISTICS_BYTES",
    "bad_request",
    "check_datasets",
    "check_definition_name",
    "check_description",
    "check_environment",
    "check_exec_env",
    "check_fields",
    "check_handler",
    "check_id",
    "check_image",
    "check_instance_type",
    "check_statistics",
    "check_version_number",
    "parse_bool_query",
    "parse_filter_archived",
    "parse_json",
    "parse_paging",
    "split_path",
]

#: Largest JSON request body (and largest ``parameters`` part of an upload).
MAX_JSON_BYTES = 1024 * 1024
#: Largest statistics request body. A job's statistics are a handful of
#: numbers per stage; a megabyte is far above any real document and small
#: enough that 64 jobs posting 10 times a second cannot exhaust the store.
MAX_STATISTICS_BYTES = MAX_DOCUMENT_BYTES
#: Largest ``limit`` accepted by paged lists.
MAX_LIMIT = 1000
#: Longest description accepted.
MAX_DESCRIPTION_CHARS = 10_000
MAX_NAME_CHARS = 255
MAX_ENVIRONMENT_KEYS = 256

JOB_STATUSES = ("Pending", "Active", "Stopped", "Complete", "Failed")
EXEC_ENVS = ("cloud", "edge", "local", "none")

_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
_ID_RE = re.compile(r"[0-9]{13}")
_VERSION_RE = re.compile(r"[1-9][0-9]{0,9}")
_HANDLER_RE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*", re.ASCII)
_ENV_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ALIAS_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_INSTANCE_TYPE_RE = re.compile(r"(cpu|gpu)(:[a-d])?-(\d+(\.\d+)?)")
_IMAGE_PART_RE = re.compile(r"[^\s\x00-\x1f\x7f]+")


def bad_request(description: str, detail: Any = None) -> NoReturn:
    """Raise the 400 every check uses."""
    raise BadRequest("bad_request", description, detail, 400)


def _printable(value: str) -> str:
    """A short, escaped rendering of untrusted text for error messages."""
    shown = value if len(value) <= 80 else value[:77] + "..."
    return json.dumps(shown)


def check_definition_name(name: Any, *, what: str = "job definition name") -> str:
    """A job definition name: 1-255 of ``A-Z a-z 0-9 . _ -``, not starting with ``.`` or ``-``.

    Why so narrow: the name is a path segment of every URL, so anything that
    could be read as a path (``/``, ``..``), a control character or white
    space is refused rather than escaped.
    """
    if not isinstance(name, str):
        bad_request(f"{what} must be a string, got {type(name).__name__}")
    if not name:
        bad_request(f"{what} must not be empty")
    if len(name) > MAX_NAME_CHARS:
        bad_request(f"{what} is longer than {MAX_NAME_CHARS} characters")
    if not _NAME_RE.fullmatch(name):
        bad_request(
            f"invalid {what} {_printable(name)}: use 1-{MAX_NAME_CHARS} characters of "
            "A-Z a-z 0-9 . _ - (not starting with '.' or '-'); slashes, '..', white space "
            "and control characters are refused"
        )
    return name


def check_id(value: str, what: str) -> str:
    """A 13-digit id taken from a path segment or a body."""
    if not isinstance(value, str) or not _ID_RE.fullmatch(value):
        shown = _printable(value) if isinstance(value, str) else type(value).__name__
        bad_request(f"invalid {what} {shown}: ids are 13-digit decimal strings")
    return value


def check_version_number(value: str) -> int:
    """A version number from the path: a positive decimal integer."""
    if not _VERSION_RE.fullmatch(value):
        bad_request(
            f"invalid job definition version {_printable(value)}: versions are positive integers"
        )
    return int(value)


def parse_json(body: bytes, *, limit: int = MAX_JSON_BYTES, what: str = "request body") -> Any:
    """Strict JSON: UTF-8, no NaN/Infinity tokens, at most ``limit`` bytes.

    ``json.loads`` accepts ``NaN`` and ``Infinity`` by default; they are not
    JSON and the platform refuses them, so they are refused here too (the
    strings ``"NaN"``/``"Infinity"`` are fine).
    """
    if len(body) > limit:
        bad_request(f"{what} is larger than the limit of {limit} bytes")

    def no_constants(token: str) -> NoReturn:
        bad_request(
            f"{what} is not valid JSON: {token} is not a JSON value "
            '(send non-finite numbers as the strings "NaN", "Infinity" or "-Infinity")'
        )

    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        bad_request(f"{what} is not UTF-8")
    try:
        return json.loads(text, parse_constant=no_constants)
    except json.JSONDecodeError as exc:
        bad_request(f"{what} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")
    except RecursionError:
        bad_request(f"{what} is nested too deeply")


def check_fields(
    body: Any,
    *,
    allowed: Collection[str],
    required: Collection[str] = (),
    what: str = "request body",
) -> dict[str, Any]:
    """``body`` is a JSON object with only ``allowed`` keys and every ``required`` key."""
    if not isinstance(body, dict):
        bad_request(f"{what} must be a JSON object, got {_json_type(body)}")
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        bad_request(
            f"{what} has unknown field(s) {', '.join(map(_printable, unknown))}; "
            f"allowed: {', '.join(sorted(allowed)) or '(none)'}"
        )
    missing = [key for key in required if key not in body]
    if missing:
        bad_request(f"{what} is missing required field(s) {', '.join(missing)}")
    return body


def _json_type(value: Any) -> str:
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


def check_description(value: Any, what: str = "description") -> str | None:
    """A description: a string (up to 10 000 characters) or null."""
    if value is None:
        return None
    if not isinstance(value, str):
        bad_request(f"{what} must be a string or null, got {_json_type(value)}")
    if len(value) > MAX_DESCRIPTION_CHARS:
        bad_request(f"{what} is longer than {MAX_DESCRIPTION_CHARS} characters")
    return value


def check_handler(value: Any) -> str:
    """A handler ``module:function`` with exactly one colon, as the runner imports it."""
    if not isinstance(value, str):
        bad_request(f"handler must be a string, got {_json_type(value)}")
    if not _HANDLER_RE.fullmatch(value):
        bad_request(
            f"invalid handler {_printable(value)}: expected 'module:function' with exactly one "
            "colon, e.g. 'train:handler' or 'pkg.train:main'"
        )
    return value


def check_image(value: Any) -> str:
    """A container image ``[host/]repository/name[:tag]``, as the public package parses it."""
    if not isinstance(value, str):
        bad_request(f"image must be a string, got {_json_type(value)}")
    parts = value.split("/")
    if len(parts) not in (2, 3) or not all(_IMAGE_PART_RE.fullmatch(p) for p in parts):
        bad_request(
            f"invalid image {_printable(value)}: expected '[host/]repository/name[:tag]', "
            "e.g. 'abeja-inc/all-cpu:19.10'"
        )
    return value


def check_environment(value: Any, what: str = "environment") -> dict[str, Any]:
    """Environment variables for a job: names as in a shell, scalar values.

    Values may be strings, numbers or booleans (the public package's examples
    use numbers); the job sees them as strings. Nested values and null are
    refused because no environment variable can hold them.
    """
    if value is None:
        return {}
    if not isinstance(value, dict):
        bad_request(f"{what} must be an object, got {_json_type(value)}")
    if len(value) > MAX_ENVIRONMENT_KEYS:
        bad_request(f"{what} has more than {MAX_ENVIRONMENT_KEYS} keys")
    for key, item in value.items():
        if not _ENV_KEY_RE.fullmatch(key):
            bad_request(
                f"{what} key {_printable(key)} is not a valid environment variable name "
                "(letters, digits and '_', not starting with a digit)"
            )
        if isinstance(item, float) and not math.isfinite(item):  # pragma: no cover - parse_json
            bad_request(f"{what}.{key} must be finite")
        if not isinstance(item, (str, int, float)):  # bool is an int
            bad_request(f"{what}.{key} must be a string, number or boolean, got {_json_type(item)}")
        if isinstance(item, str) and "\x00" in item:
            bad_request(f"{what}.{key} contains a NUL character")
    return dict(value)


def check_datasets(value: Any) -> dict[str, str]:
    """Datasets: alias -> 13-digit dataset id."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        bad_request(f"datasets must be an object of alias -> dataset id, got {_json_type(value)}")
    for alias, dataset_id in value.items():
        if not _ALIAS_RE.fullmatch(alias):
            bad_request(
                f"dataset alias {_printable(alias)} is invalid: use A-Z a-z 0-9 . _ - "
                "(not starting with '.' or '-')"
            )
        if not isinstance(dataset_id, str) or not _ID_RE.fullmatch(dataset_id):
            bad_request(f"datasets.{alias} must be a 13-digit dataset id string")
    return dict(value)


def check_instance_type(value: Any) -> str:
    """``cpu-N``, ``gpu-N`` or ``{cpu|gpu}:<a-d>-N`` (N may be fractional, e.g. ``cpu-0.25``)."""
    if not isinstance(value, str):
        bad_request(f"instance_type must be a string, got {_json_type(value)}")
    match = _INSTANCE_TYPE_RE.fullmatch(value)
    if not match or float(match.group(3)) <= 0:
        bad_request(
            f"invalid instance_type {_printable(value)}: expected 'cpu-N', 'gpu-N' or "
            "'gpu:<a-d>-N', e.g. 'cpu-1' or 'gpu:b-4'"
        )
    return value


def check_exec_env(value: Any) -> str:
    """One of ``cloud``, ``edge``, ``local``, ``none``."""
    if value not in EXEC_ENVS:
        bad_request(f"exec_env must be one of {', '.join(EXEC_ENVS)}, got {value!r}")
    return str(value)


def check_statistics(body: Any) -> dict[str, Any]:
    """The body of ``update_statistics``: ``{"statistics": {...}}``.

    The document is checked by :func:`abeja_runtime.statistics_rules.check_wire_document`,
    the same rules the client applies before it posts (one set of rules, so a document
    the client lets through is never refused here, and the other way round).

    Returns:
        The statistics document (the inner object).
    """
    check_fields(body, allowed=("statistics",), required=("statistics",))
    try:
        return check_wire_document(body["statistics"])
    except StatisticsError as exc:
        bad_request(str(exc))


def parse_filter_archived(args: Mapping[str, str]) -> bool | None:
    """``filter_archived`` as the wire has it.

    ``exclude_archived`` -> ``True`` (hide archived), ``include_archived`` ->
    ``False`` (show all); absent -> ``None`` (show all).
    """
    raw = args.get("filter_archived")
    if raw is None:
        return None
    if raw == "exclude_archived":
        return True
    if raw == "include_archived":
        return False
    bad_request(
        f"filter_archived must be 'exclude_archived' or 'include_archived', got {_printable(raw)}"
    )


def parse_bool_query(args: Mapping[str, str], name: str, default: bool) -> bool:
    """A ``true``/``false`` query parameter."""
    raw = args.get(name)
    if raw is None:
        return default
    lowered = raw.lower()
    if lowered == "true":
        return True
    if lowered == "false":
        return False
    bad_request(f"{name} must be 'true' or 'false', got {_printable(raw)}")


def _query_int(args: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = args.get(name)
    if raw is None:
        return default
    if not re.fullmatch(r"[0-9]{1,10}", raw):
        bad_request(f"{name} must be a non-negative integer, got {_printable(raw)}")
    value = int(raw)
    if not low <= value <= high:
        bad_request(f"{name} must be between {low} and {high}, got {value}")
    return value


def parse_paging(args: Mapping[str, str], *, default_limit: int = 10) -> tuple[int, int]:
    """``(offset, limit)`` from the query; the server's default limit is 10."""
    offset = _query_int(args, "offset", 0, 0, 10**9)
    limit = _query_int(args, "limit", default_limit, 1, MAX_LIMIT)
    return offset, limit


def split_path(environ: WSGIEnvironment) -> list[str]:
    """The request path as percent-decoded segments, from the raw URI when available.

    Raises:
        BadRequest: a segment is not valid UTF-8 once decoded.
    """
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw:
        path = urlsplit(raw).path if "://" in raw.split("?", 1)[0] else raw.split("?", 1)[0]
        parts = path.split("/")
        try:  # WSGI strings carry the raw bytes as latin-1
            segments = [
                unquote(p.encode("latin-1").decode("utf-8"), errors="strict") for p in parts
            ]
        except UnicodeDecodeError:
            bad_request("the request path is not valid UTF-8")
    else:  # another WSGI server: PATH_INFO is decoded already
        segments = (
            environ.get("PATH_INFO", "").encode("latin-1").decode("utf-8", "replace").split("/")
        )
    if segments and segments[0] == "":
        segments = segments[1:]
    if segments and segments[-1] == "":  # one trailing slash is accepted everywhere
        segments = segments[:-1]
    return segments
