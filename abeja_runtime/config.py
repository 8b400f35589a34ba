"""Settings and credentials, resolved when an object is made (never at import).

Order everywhere: explicit argument, then the environment, then the default.
A malformed environment value is a :class:`ConfigurationError` naming the
variable, instead of the public package's behaviour of passing the raw string
on to ``requests`` and failing deep inside it.

The credential object keeps its secret out of ``str()``/``repr()`` so that it
can sit inside clients, reporters and exceptions without leaking into logs.
"""

from __future__ import annotations

import base64
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigurationError

__all__ = [
    "CONTROL_CHARS",
    "CREDENTIAL_ENV",
    "DEFAULT_BASE_URL",
    "DEFAULT_MAX_RETRY_COUNT",
    "DEFAULT_TIMEOUT",
    "ENV_API_URL",
    "ENV_AUTH_TOKEN",
    "ENV_CHECK_TIMEOUT",
    "ENV_CONNECTION_TIMEOUT",
    "ENV_CONTEXT",
    "ENV_DATASETS",
    "ENV_DATASOURCE_ID",
    "ENV_DATASOURCE_SECRET",
    "ENV_EMULATOR_DIR",
    "ENV_EXIT_TIMEOUT",
    "ENV_HANDLER",
    "ENV_HANDLE_SIGTERM",
    "ENV_JOB_DEFINITION_NAME",
    "ENV_JOB_DEFINITION_VERSION",
    "ENV_MAX_RETRY_COUNT",
    "ENV_ORGANIZATION_ID",
    "ENV_OUTCOME_FILE",
    "ENV_POLL_INTERVAL",
    "ENV_REPORT_INTERVAL",
    "ENV_REPORT_TIMEOUT",
    "ENV_RESULT_DIR",
    "ENV_SIGTERM_TIMEOUT",
    "ENV_SPOOL",
    "ENV_SPOOL_DIR",
    "ENV_STATISTICS_FILE",
    "ENV_STOP_GRACE",
    "ENV_STORAGE_DIR",
    "ENV_SYSTEM_METRICS",
    "ENV_SYSTEM_METRICS_INTERVAL",
    "ENV_TRAINING_JOB_ID",
    "ENV_USER_ID",
    "ENV_USER_TOKEN",
    "IO_CHUNK_SIZE",
    "RUNTIME_DIR_NAME",
    "Credential",
    "check_api_url",
    "check_duration",
    "env_flag",
    "env_float",
    "env_int",
    "resolve_base_url",
    "resolve_credential",
    "resolve_max_retry_count",
    "resolve_timeout",
]

# The names of the environment variables, in one place: every module imports them
# from here, and the README's table is checked against them (tests/test_bad_input_cli.py).

# -- set by the platform in a training job (read by abeja_runtime.job)
ENV_API_URL = "ABEJA_API_URL"
ENV_AUTH_TOKEN = "PLATFORM_AUTH_TOKEN"
ENV_ORGANIZATION_ID = "ABEJA_ORGANIZATION_ID"
ENV_JOB_DEFINITION_NAME = "TRAINING_JOB_DEFINITION_NAME"
ENV_JOB_DEFINITION_VERSION = "TRAINING_JOB_DEFINITION_VERSION"
ENV_TRAINING_JOB_ID = "TRAINING_JOB_ID"
ENV_RESULT_DIR = "ABEJA_TRAINING_RESULT_DIR"
ENV_STORAGE_DIR = "ABEJA_STORAGE_DIR_PATH"
ENV_HANDLER = "HANDLER"
ENV_DATASETS = "DATASETS"
ENV_CONTEXT = "CONTEXT"
# -- other credentials (a user's or a datasource's), as the public package reads them
ENV_USER_ID = "ABEJA_PLATFORM_USER_ID"
ENV_USER_TOKEN = "ABEJA_PLATFORM_PERSONAL_ACCESS_TOKEN"
ENV_DATASOURCE_ID = "ABEJA_PLATFORM_DATASOURCE_ID"
ENV_DATASOURCE_SECRET = "ABEJA_PLATFORM_DATASOURCE_SECRET"
# -- the client
ENV_CONNECTION_TIMEOUT = "ABEJA_SDK_CONNECTION_TIMEOUT"
ENV_MAX_RETRY_COUNT = "ABEJA_SDK_MAX_RETRY_COUNT"
# -- the runner and the embedded emulator
ENV_EMULATOR_DIR = "ABEJA_RUNTIME_EMULATOR_DIR"
ENV_STOP_GRACE = "ABEJA_RUNTIME_STOP_GRACE"
ENV_POLL_INTERVAL = "ABEJA_RUNTIME_POLL_INTERVAL"
ENV_CHECK_TIMEOUT = "ABEJA_RUNTIME_CHECK_TIMEOUT"
ENV_OUTCOME_FILE = "ABEJA_RUNTIME_OUTCOME_FILE"

# -- the statistics reporter, its spool and its process hooks
ENV_REPORT_INTERVAL = "ABEJA_RUNTIME_REPORT_INTERVAL"
ENV_REPORT_TIMEOUT = "ABEJA_RUNTIME_REPORT_TIMEOUT"
ENV_SYSTEM_METRICS = "ABEJA_RUNTIME_SYSTEM_METRICS"
ENV_SYSTEM_METRICS_INTERVAL = "ABEJA_RUNTIME_SYSTEM_METRICS_INTERVAL"
ENV_STATISTICS_FILE = "ABEJA_RUNTIME_STATISTICS_FILE"
ENV_SPOOL = "ABEJA_RUNTIME_SPOOL"
ENV_SPOOL_DIR = "ABEJA_RUNTIME_SPOOL_DIR"
ENV_EXIT_TIMEOUT = "ABEJA_RUNTIME_EXIT_TIMEOUT"
ENV_SIGTERM_TIMEOUT = "ABEJA_RUNTIME_SIGTERM_TIMEOUT"
ENV_HANDLE_SIGTERM = "ABEJA_RUNTIME_HANDLE_SIGTERM"

#: the one read/write size of every copy, upload and download stream (1 MiB)
IO_CHUNK_SIZE = 1024 * 1024

#: the directory the runtime keeps its own files in, under a job's storage or result dir
#: (the statistics spool); never part of an uploaded model
RUNTIME_DIR_NAME = ".abeja-runtime"

#: every variable that can carry a platform credential
CREDENTIAL_ENV = (
    ENV_AUTH_TOKEN,
    ENV_USER_ID,
    ENV_USER_TOKEN,
    ENV_DATASOURCE_ID,
    ENV_DATASOURCE_SECRET,
)

#: control characters (C0, DEL, C1): never part of a token, name or URL
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f]")

DEFAULT_BASE_URL = "https://api.abeja.io"
DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_RETRY_COUNT = 5


@dataclass(frozen=True)
class Credential:
    """One way of authenticating, with the secret kept out of reprs.

    Attributes:
        scheme: ``"bearer"`` (job/auth token) or ``"basic"`` (user or datasource).
        username: the basic-auth user (``user-<id>`` / ``datasource-<id>``), or
            ``None`` for a bearer token.
        secret: the token or password. Never printed.
    """

    scheme: str
    username: str | None
    secret: str = field(repr=False)

    def __post_init__(self) -> None:
        if self.scheme not in ("bearer", "basic"):
            raise ConfigurationError(f"unknown credential scheme {self.scheme!r}")
        # A blank or whitespace-padded secret is a shell quoting mistake: sent as it
        # is, it only shows up later as a 401 (the value itself is never echoed).
        if not isinstance(self.secret, str) or not self.secret.strip():
            raise ConfigurationError("credential secret is empty or blank")
        if self.secret != self.secret.strip() or CONTROL_CHARS.search(self.secret):
            raise ConfigurationError(
                "credential secret has leading/trailing spaces or control characters"
            )
        if self.scheme == "basic" and not self.username:
            raise ConfigurationError("basic credential needs a user name")

    @classmethod
    def bearer(cls, token: str) -> Credential:
        """A bearer token, as a training job gets in ``PLATFORM_AUTH_TOKEN``."""
        return cls("bearer", None, token)

    @classmethod
    def user(cls, user_id: str, personal_access_token: str) -> Credential:
        """A user's personal access token (basic auth ``user-<id>:<token>``)."""
        user_id = str(user_id)
        if not user_id.startswith("user-"):
            user_id = f"user-{user_id}"
        return cls("basic", user_id, personal_access_token)

    @classmethod
    def datasource(cls, datasource_id: str, secret: str) -> Credential:
        """A datasource credential (basic auth ``datasource-<id>:<secret>``)."""
        datasource_id = str(datasource_id)
        if not datasource_id.startswith("datasource-"):
            datasource_id = f"datasource-{datasource_id}"
        return cls("basic", datasource_id, secret)

    @property
    def authorization(self) -> str:
        """The value of the ``Authorization`` header."""
        if self.scheme == "bearer":
            return f"Bearer {self.secret}"
        raw = f"{self.username}:{self.secret}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")

    def __repr__(self) -> str:
        who = f", username={self.username!r}" if self.username else ""
        return f"Credential(scheme={self.scheme!r}{who}, secret='***')"

    __str__ = __repr__

    def as_env(self) -> dict[str, str]:
        """The environment variables that make :func:`resolve_credential` return this."""
        if self.scheme == "bearer":
            return {ENV_AUTH_TOKEN: self.secret}
        assert self.username is not None
        if self.username.startswith("datasource-"):
            return {
                ENV_DATASOURCE_ID: self.username[len("datasource-") :],
                ENV_DATASOURCE_SECRET: self.secret,
            }
        return {ENV_USER_ID: self.username[len("user-") :], ENV_USER_TOKEN: self.secret}


def resolve_credential(
    credential: Credential | Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Credential | None:
    """The credential to use: the argument, else the environment, else ``None``.

    Args:
        credential: a :class:`Credential`, or a dict as the public package takes
            it (``{"auth_token": ...}``, ``{"user_id": ..., "personal_access_token": ...}``
            or ``{"datasource_id": ..., "datasource_secret": ...}``).
        environ: the environment to read (``os.environ`` by default).

    Raises:
        ConfigurationError: the dict has none of the known key sets.
    """
    if isinstance(credential, Credential):
        return credential
    if credential is not None:
        if not isinstance(credential, Mapping):
            raise ConfigurationError(
                "credential must be a Credential or a dict with 'auth_token', "
                "'user_id'+'personal_access_token' or 'datasource_id'+'datasource_secret'"
            )
        if credential.get("auth_token"):
            return Credential.bearer(str(credential["auth_token"]))
        if credential.get("user_id") and credential.get("personal_access_token"):
            return Credential.user(
                str(credential["user_id"]), str(credential["personal_access_token"])
            )
        if credential.get("datasource_id") and credential.get("datasource_secret"):
            return Credential.datasource(
                str(credential["datasource_id"]), str(credential["datasource_secret"])
            )
        raise ConfigurationError(
            "credential dict needs 'auth_token', 'user_id'+'personal_access_token' "
            "or 'datasource_id'+'datasource_secret' (got keys: "
            + ", ".join(sorted(str(k) for k in credential))
            + ")"
        )
    env = os.environ if environ is None else environ
    for name in (ENV_AUTH_TOKEN, ENV_USER_TOKEN, ENV_DATASOURCE_SECRET):
        value = env.get(name)
        if value and not value.strip():
            raise ConfigurationError(f"{name} is set but blank")
    try:
        if env.get(ENV_AUTH_TOKEN):
            return Credential.bearer(env[ENV_AUTH_TOKEN])
        if env.get(ENV_USER_ID) and env.get(ENV_USER_TOKEN):
            return Credential.user(env[ENV_USER_ID], env[ENV_USER_TOKEN])
        if env.get(ENV_DATASOURCE_ID) and env.get(ENV_DATASOURCE_SECRET):
            return Credential.datasource(env[ENV_DATASOURCE_ID], env[ENV_DATASOURCE_SECRET])
    except ConfigurationError as exc:  # messages never hold the secret itself
        name = (
            ENV_AUTH_TOKEN
            if env.get(ENV_AUTH_TOKEN)
            else (ENV_USER_TOKEN if env.get(ENV_USER_TOKEN) else ENV_DATASOURCE_SECRET)
        )
        raise ConfigurationError(f"{name} is malformed: {exc}") from None
    return None


def _mask_userinfo(url: str) -> str:
    """``url`` with any ``user:password@`` part masked, safe to print."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority, slash, tail = rest.partition("/")
    if "@" in authority:
        authority = "***@" + authority.rsplit("@", 1)[1]
    return f"{scheme}{sep}{authority}{slash}{tail}"


def check_api_url(url: str, what: str) -> str:
    """The one check of an API base URL; returns it without a trailing slash.

    An ``http(s)`` URL with a host, a valid port, and nothing a base URL cannot
    carry: a query or fragment would be cut off by the paths appended to it, and
    a ``user:password@`` part would be printed with every connection error.

    Args:
        url: the URL.
        what: where it came from, for the message (``ABEJA_API_URL``, ``base_url``).

    Raises:
        ConfigurationError: naming ``what``; the password of a URL is never echoed.
    """
    shown = repr(_mask_userinfo(url)) if isinstance(url, str) else repr(type(url).__name__)
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ConfigurationError(f"{what} must start with http:// or https://, got {shown}")
    if CONTROL_CHARS.search(url) or any(c.isspace() for c in url):
        raise ConfigurationError(f"{what} must not contain spaces or control characters")
    parts = urlsplit(url)
    if "@" in parts.netloc:
        raise ConfigurationError(
            f"{what} must not contain a user name or password, got {shown} "
            "(give credentials in PLATFORM_AUTH_TOKEN or the user/datasource variables)"
        )
    if not parts.hostname:
        raise ConfigurationError(f"{what} has no host, got {shown}")
    try:
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        raise ConfigurationError(f"{what} has an invalid port, got {shown}") from None
    if parts.netloc.endswith(":"):
        raise ConfigurationError(f"{what} has an empty port, got {shown}")
    if parts.query or parts.fragment or url.rstrip("/").endswith(("?", "#")):
        raise ConfigurationError(f"{what} must not have a query or fragment, got {shown}")
    return url.rstrip("/")


_TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
_FALSE_WORDS = frozenset({"0", "false", "no", "off"})


def env_flag(name: str, default: bool, environ: Mapping[str, str] | None = None) -> bool:
    """An on/off variable: ``1/0/true/false/yes/no/on/off`` in any case, blanks ignored.

    The one parser of on/off variables in the package, so that every variable accepts
    the same words and a typo (``enabled``, ``disable``) is an error instead of silently
    meaning "off" for one variable and "on" for another.

    Args:
        name: the variable's name.
        default: the value when the variable is unset or empty.
        environ: the environment to read (default: ``os.environ``).

    Raises:
        ConfigurationError: any other value; the message names the variable.
    """
    env = os.environ if environ is None else environ
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE_WORDS:
        return True
    if raw in _FALSE_WORDS:
        return False
    raise ConfigurationError(
        f"{name} must be one of 1/0, true/false, yes/no, on/off, got {env.get(name)!r}"
    )


def resolve_base_url(base_url: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    """The API base URL without a trailing slash: argument, ``ABEJA_API_URL``, default.

    Raises:
        ConfigurationError: the URL fails :func:`check_api_url`.
    """
    env = os.environ if environ is None else environ
    if base_url:
        return check_api_url(base_url, "base_url")
    if env.get(ENV_API_URL):
        return check_api_url(env[ENV_API_URL].strip(), ENV_API_URL)
    return DEFAULT_BASE_URL


def check_duration(value: Any, what: str, *, minimum: float = 0.0, positive: bool = False) -> float:
    """The one check of a number of seconds (timeouts, grace periods, intervals).

    Args:
        value: the number (an ``int`` or ``float``; not a bool).
        what: the argument or variable, for the message.
        minimum: the smallest value allowed.
        positive: refuse ``minimum`` itself too (for timeouts, where 0 means "never").

    Raises:
        ConfigurationError: not a finite number, or below the bound.
    """
    bound = f"> {minimum:g}" if positive else f">= {minimum:g}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"{what} must be a number of seconds {bound}, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or number < minimum or (positive and number == minimum):
        raise ConfigurationError(
            f"{what} must be a finite number of seconds {bound}, got {value!r}"
        )
    return number


def env_float(
    name: str,
    default: float,
    environ: Mapping[str, str] | None = None,
    *,
    minimum: float | None = None,
) -> float:
    """A float from the environment, or ``default`` when unset or empty.

    Raises:
        ConfigurationError: the value is not a finite number or is below ``minimum``.
    """
    env = os.environ if environ is None else environ
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number, got {raw!r}") from None
    if not math.isfinite(value) or (minimum is not None and value < minimum):
        bound = f" >= {minimum}" if minimum is not None else ""
        raise ConfigurationError(f"{name} must be a finite number{bound}, got {raw!r}")
    return value


def env_int(
    name: str,
    default: int,
    environ: Mapping[str, str] | None = None,
    *,
    minimum: int | None = None,
) -> int:
    """An integer from the environment, or ``default`` when unset or empty.

    Raises:
        ConfigurationError: the value is not an integer or is below ``minimum``.
    """
    env = os.environ if environ is None else environ
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ConfigurationError(f"{name} must be an integer >= {minimum}, got {raw!r}")
    return value


def resolve_timeout(
    timeout: float | None = None, environ: Mapping[str, str] | None = None
) -> float:
    """Seconds for connect and for read: argument, ``ABEJA_SDK_CONNECTION_TIMEOUT``, 30."""
    if timeout is not None:
        return check_duration(timeout, "timeout", positive=True)
    value = env_float(ENV_CONNECTION_TIMEOUT, DEFAULT_TIMEOUT, environ, minimum=0.0)
    return check_duration(value, ENV_CONNECTION_TIMEOUT, positive=True)


def resolve_max_retry_count(
    max_retry_count: int | None = None, environ: Mapping[str, str] | None = None
) -> int:
    """Retries after the first try: argument, ``ABEJA_SDK_MAX_RETRY_COUNT``, 5."""
    if max_retry_count is not None:
        if isinstance(max_retry_count, bool) or not isinstance(max_retry_count, int):
            raise ConfigurationError(
                f"max_retry_count must be an integer >= 0, got {max_retry_count!r}"
            )
        if max_retry_count < 0:
            raise ConfigurationError(f"max_retry_count must be >= 0, got {max_retry_count!r}")
        return max_retry_count
    return env_int(ENV_MAX_RETRY_COUNT, DEFAULT_MAX_RETRY_COUNT, environ, minimum=0)
