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
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigurationError

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_MAX_RETRY_COUNT",
    "DEFAULT_TIMEOUT",
    "ENV_API_URL",
    "ENV_AUTH_TOKEN",
    "ENV_CONNECTION_TIMEOUT",
    "ENV_DATASOURCE_ID",
    "ENV_DATASOURCE_SECRET",
    "ENV_MAX_RETRY_COUNT",
    "ENV_USER_ID",
    "ENV_USER_TOKEN",
    "Credential",
    "env_flag",
    "env_float",
    "env_int",
    "resolve_base_url",
    "resolve_credential",
    "resolve_max_retry_count",
    "resolve_timeout",
]

ENV_API_URL = "ABEJA_API_URL"
ENV_AUTH_TOKEN = "PLATFORM_AUTH_TOKEN"
ENV_USER_ID = "ABEJA_PLATFORM_USER_ID"
ENV_USER_TOKEN = "ABEJA_PLATFORM_PERSONAL_ACCESS_TOKEN"
ENV_DATASOURCE_ID = "ABEJA_PLATFORM_DATASOURCE_ID"
ENV_DATASOURCE_SECRET = "ABEJA_PLATFORM_DATASOURCE_SECRET"
ENV_CONNECTION_TIMEOUT = "ABEJA_SDK_CONNECTION_TIMEOUT"
ENV_MAX_RETRY_COUNT = "ABEJA_SDK_MAX_RETRY_COUNT"

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
        if not self.secret:
            raise ConfigurationError("credential secret is empty")
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
    if env.get(ENV_AUTH_TOKEN):
        return Credential.bearer(env[ENV_AUTH_TOKEN])
    if env.get(ENV_USER_ID) and env.get(ENV_USER_TOKEN):
        return Credential.user(env[ENV_USER_ID], env[ENV_USER_TOKEN])
    if env.get(ENV_DATASOURCE_ID) and env.get(ENV_DATASOURCE_SECRET):
        return Credential.datasource(env[ENV_DATASOURCE_ID], env[ENV_DATASOURCE_SECRET])
    return None


def resolve_base_url(base_url: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    """The API base URL without a trailing slash.

    Raises:
        ConfigurationError: the URL is not http(s).
    """
    env = os.environ if environ is None else environ
    url = base_url or env.get(ENV_API_URL) or DEFAULT_BASE_URL
    source = "base_url" if base_url else (ENV_API_URL if env.get(ENV_API_URL) else "default")
    if not url.startswith(("http://", "https://")):
        raise ConfigurationError(
            f"{source}: API URL must start with http:// or https://, got {url!r}"
        )
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
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ConfigurationError(f"timeout must be a positive number, got {timeout!r}")
        return float(timeout)
    value = env_float(ENV_CONNECTION_TIMEOUT, DEFAULT_TIMEOUT, environ, minimum=0.0)
    if value <= 0:
        raise ConfigurationError(f"{ENV_CONNECTION_TIMEOUT} must be > 0, got {value!r}")
    return value


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
