"""Which Training API a command talks to: the platform's, or the embedded emulator.

Every shell command (``run`` and the control commands) makes the same choice, so it
is made here once:

* platform credentials in the environment (``PLATFORM_AUTH_TOKEN``, or
  ``ABEJA_PLATFORM_USER_ID`` + ``ABEJA_PLATFORM_PERSONAL_ACCESS_TOKEN``, or the
  datasource pair): talk to ``ABEJA_API_URL`` (default ``https://api.abeja.io``) for
  the organization ``--organization`` / ``ABEJA_ORGANIZATION_ID``;
* no credentials and no ``ABEJA_API_URL``: start the embedded emulator in this
  process, with its state under a per-user data directory
  (``ABEJA_RUNTIME_EMULATOR_DIR``, else ``$XDG_DATA_HOME/abeja-runtime/emulator``,
  else ``~/.local/share/abeja-runtime/emulator``), so that the jobs and models of
  one ``abeja-runtime run`` are still there for ``abeja-runtime jobs list`` later;
* ``ABEJA_API_URL`` without credentials: refused, because silently starting an
  emulator when the user pointed at a server would hide their mistake.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import (
    CREDENTIAL_ENV,
    ENV_API_URL,
    ENV_AUTH_TOKEN,
    ENV_EMULATOR_DIR,
    ENV_ORGANIZATION_ID,
    ENV_USER_ID,
    ENV_USER_TOKEN,
    resolve_base_url,
    resolve_credential,
)
from ..errors import ConfigurationError

if TYPE_CHECKING:  # pragma: no cover
    from ..api.client import APIClient

__all__ = [
    "CREDENTIAL_ENV_NAMES",
    "ENV_EMULATOR_DIR",
    "ENV_ORGANIZATION_ID",
    "ApiTarget",
    "default_emulator_dir",
    "open_target",
]

#: every variable that can carry a platform credential (the name this module always used)
CREDENTIAL_ENV_NAMES = CREDENTIAL_ENV


def default_emulator_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where the embedded emulator keeps its state for this user.

    ``ABEJA_RUNTIME_EMULATOR_DIR``, else ``$XDG_DATA_HOME/abeja-runtime/emulator``,
    else ``~/.local/share/abeja-runtime/emulator``.
    """
    env = os.environ if environ is None else environ
    if env.get(ENV_EMULATOR_DIR):
        return Path(env[ENV_EMULATOR_DIR]).expanduser()
    base = env.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "abeja-runtime" / "emulator"


@dataclass
class ApiTarget:
    """An API to talk to and everything a job started against it needs.

    Attributes:
        client: the :class:`~abeja_runtime.api.client.APIClient` for the runner's calls.
        organization_id: the organization the commands act in.
        url: the API base URL (also given to the job as ``ABEJA_API_URL``).
        job_env: the credential variables a job process gets (``PLATFORM_AUTH_TOKEN``
            for a bearer token; the user or datasource pair otherwise).
        emulator: the emulator behind this API when it is one of ours, else ``None``.
        emulator_dir: the embedded emulator's data directory, else ``None``.
        owns_emulator: whether :meth:`close` stops ``emulator`` (it was started for
            this target).
    """

    client: APIClient
    organization_id: str
    url: str
    job_env: dict[str, str] = field(repr=False)
    emulator: Any = None
    emulator_dir: Path | None = None
    owns_emulator: bool = False

    @classmethod
    def from_emulator(cls, emulator: Any) -> ApiTarget:
        """A target for a running :class:`~abeja_runtime.emulator.Emulator` the caller owns."""
        return cls(
            client=emulator.client(),
            organization_id=str(emulator.organization_id),
            url=str(emulator.url),
            job_env={ENV_AUTH_TOKEN: str(emulator.token)},
            emulator=emulator,
        )

    @property
    def is_emulator(self) -> bool:
        """Whether the API is one of our emulators (which take job status updates)."""
        return self.emulator is not None

    def close(self) -> None:
        """Stop the embedded emulator, if this target started it."""
        if self.owns_emulator and self.emulator is not None:
            emulator, self.emulator = self.emulator, None
            emulator.stop()


def _start_emulator(
    data_dir: Path, announce: Callable[[str], None] | None, brief: bool
) -> tuple[Any, APIClient]:
    try:
        from ..emulator import Emulator
    except ImportError as exc:  # werkzeug is an extra
        raise ConfigurationError(
            "no platform credentials in the environment and the embedded emulator cannot "
            f"start ({exc}); install it with: pip install 'abeja-runtime[emulator]', or set "
            f"{ENV_API_URL} and {ENV_AUTH_TOKEN} (or a user/datasource credential)"
        ) from None
    data_dir.mkdir(parents=True, exist_ok=True)
    emulator = Emulator(data_dir=str(data_dir), port=0)
    try:
        emulator.start()
    except ConfigurationError as exc:
        if "in use" not in str(exc):
            raise
        # One emulator per data dir: a run in progress holds it. Say how to share.
        raise ConfigurationError(
            f"the embedded emulator's data dir {data_dir} is in use by another process "
            "(an abeja-runtime run in progress?); wait for it, set "
            f"{ENV_EMULATOR_DIR} to another dir, or share one server: start "
            f"'abeja-runtime emulator --data-dir {data_dir}' and set the {ENV_API_URL}, "
            f"{ENV_AUTH_TOKEN} and {ENV_ORGANIZATION_ID} it prints"
        ) from None
    if announce is not None:
        if brief:
            announce(f"using the embedded emulator (state in {data_dir})")
        else:
            announce(
                f"no platform credentials in the environment: using the embedded emulator at "
                f"{emulator.url} (state in {data_dir}; organization {emulator.organization_id})"
            )
    return emulator, emulator.client()


@contextmanager
def open_target(
    organization: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    announce: Callable[[str], None] | None = None,
    brief: bool = False,
) -> Iterator[ApiTarget]:
    """The API to use, as a context manager that stops an embedded emulator at exit.

    Args:
        organization: ``--organization``; defaults to ``ABEJA_ORGANIZATION_ID``
            (or the embedded emulator's organization).
        environ: environment to read (``os.environ`` by default).
        announce: called with one human line when the embedded emulator starts.
        brief: make that line short (for commands that run often).

    Raises:
        ConfigurationError: ``ABEJA_API_URL`` without credentials, credentials
            without an organization, an organization that is not the embedded
            emulator's, or no emulator extra installed.
    """
    env = os.environ if environ is None else environ
    credential = resolve_credential(None, env)
    if credential is None:
        if env.get(ENV_API_URL):
            raise ConfigurationError(
                f"{ENV_API_URL} is set but no credential is: set {ENV_AUTH_TOKEN}, or "
                f"{ENV_USER_ID} and {ENV_USER_TOKEN}, or unset {ENV_API_URL} to use the "
                "embedded emulator"
            )
        data_dir = default_emulator_dir(env)
        emulator, client = _start_emulator(data_dir, announce, brief)
        target = ApiTarget(
            client=client,
            organization_id=str(emulator.organization_id),
            url=str(emulator.url),
            job_env={ENV_AUTH_TOKEN: str(emulator.token)},
            emulator=emulator,
            emulator_dir=data_dir,
            owns_emulator=True,
        )
        try:
            if organization and organization != target.organization_id:
                raise ConfigurationError(
                    f"organization {organization!r} is not the embedded emulator's "
                    f"({target.organization_id}); set platform credentials to use another API"
                )
            yield target
        finally:
            target.close()
        return
    organization = organization or env.get(ENV_ORGANIZATION_ID)
    if not organization:
        raise ConfigurationError(
            f"no organization: pass --organization or set {ENV_ORGANIZATION_ID}"
        )
    from ..api.client import APIClient

    url = resolve_base_url(None, env)
    client = APIClient(credential=credential, base_url=url)
    yield ApiTarget(
        client=client,
        organization_id=organization,
        url=url,
        job_env=credential.as_env(),
    )
