"""What a run is given, checked before anything is created.

The handler string (form here, import in the child: :func:`check_handler`), ``--env``
and ``--dataset`` assignments, the job definition's default name, the result and
storage directories, and the variables a handler is told (which ``--env`` may not
override).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import (
    ENV_API_URL,
    ENV_CHECK_TIMEOUT,
    ENV_CONTEXT,
    ENV_DATASETS,
    ENV_HANDLER,
    ENV_JOB_DEFINITION_NAME,
    ENV_JOB_DEFINITION_VERSION,
    ENV_OUTCOME_FILE,
    ENV_RESULT_DIR,
    ENV_STORAGE_DIR,
    ENV_TRAINING_JOB_ID,
    env_float,
)
from ..errors import (
    ConfigurationError,
)
from ..validators import HandlerError, HandlerSpec, check_id, check_name, parse_handler
from .api_target import CREDENTIAL_ENV_NAMES, ENV_ORGANIZATION_ID

if TYPE_CHECKING:  # pragma: no cover
    pass
from .process import _child_pythonpath

__all__ = [
    "DEFAULT_CHECK_TIMEOUT",
    "DEFAULT_GRACE_PERIOD",
    "DEFAULT_POLL_INTERVAL",
    "JOB_ENV_NAMES",
    "RESERVED_ENV_NAMES",
    "check_handler",
    "default_definition_name",
    "parse_assignments",
]


#: the platform's grace period between SIGTERM and SIGKILL
DEFAULT_GRACE_PERIOD = 25.0
DEFAULT_POLL_INTERVAL = 1.0
DEFAULT_CHECK_TIMEOUT = 300.0

#: what a job's handler is told; ``--env`` may not override these
JOB_ENV_NAMES = (
    ENV_ORGANIZATION_ID,
    ENV_JOB_DEFINITION_NAME,
    ENV_JOB_DEFINITION_VERSION,
    ENV_TRAINING_JOB_ID,
    ENV_API_URL,
    ENV_RESULT_DIR,
    ENV_STORAGE_DIR,
    ENV_HANDLER,
    ENV_DATASETS,
    ENV_CONTEXT,
    "PYTHONUNBUFFERED",
)
RESERVED_ENV_NAMES = frozenset((*JOB_ENV_NAMES, *CREDENTIAL_ENV_NAMES, ENV_OUTCOME_FILE))

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DEFINITION_NAME_BAD = re.compile(r"[^A-Za-z0-9_-]+")


# --------------------------------------------------------------------------- inputs


def parse_assignments(values: Iterable[str] | None, what: str) -> dict[str, str]:
    """``["K=V", ...]`` as a dict, refusing malformed or repeated keys.

    Args:
        values: the raw ``KEY=VALUE`` strings (the value may contain ``=``).
        what: the option's name for messages (``--env``, ``--dataset``).

    Raises:
        ConfigurationError: no ``=``, an empty key, or a key given twice.
    """
    result: dict[str, str] = {}
    for raw in values or ():
        key, sep, value = raw.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigurationError(f"{what} {raw!r}: expected KEY=VALUE")
        if key in result:
            raise ConfigurationError(f"{what} {key!r} given twice")
        result[key] = value
    return result


def _validate_env(env: Mapping[str, str]) -> dict[str, str]:
    clean: dict[str, str] = {}
    for key, value in env.items():
        if not _ENV_NAME.match(key):
            raise ConfigurationError(f"--env {key!r}: not a valid environment variable name")
        if key in RESERVED_ENV_NAMES:
            raise ConfigurationError(
                f"--env {key!r}: the runner sets this variable for the job itself"
            )
        clean[key] = str(value)
    return clean


def _validate_datasets(datasets: Mapping[str, str]) -> dict[str, str]:
    """Alias -> dataset id, checked before anything is created on the API."""
    clean: dict[str, str] = {}
    for alias, dataset_id in datasets.items():
        if not alias or not str(dataset_id).strip():
            raise ConfigurationError(f"--dataset {alias}={dataset_id}: expected ALIAS=DATASET_ID")
        what = f"--dataset {alias}"
        clean[check_name(str(alias), what)] = check_id(str(dataset_id).strip(), what)
    return clean


def _prepare_result_dir(path: Path) -> None:
    """Create the result dir now: one that cannot exist is refused before any upload."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(
            f"result dir {str(path)!r} cannot be created: {exc.strerror or exc}"
        ) from None


def default_definition_name(source: Path) -> str:
    """The job definition a run uses when none is named: the source directory's name."""
    name = _DEFINITION_NAME_BAD.sub("-", source.resolve().name).strip("-")
    return name or "default"


def check_handler(
    handler: str,
    source: str | os.PathLike[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> HandlerSpec:
    """Validate ``HANDLER`` before any job is created.

    Two steps. The form (exactly one colon, Python names) is checked here,
    statically. Whether the module imports from ``source`` and has a callable
    of that name is checked by ``python -m abeja_runtime.runner.child --check``
    in a child process from ``source``, because only importing tells the truth
    (handlers are often assigned, re-exported or decorated, which static parsing
    misses) and importing the user's module in the runner itself would run its
    top-level code (a framework import, a GPU initialisation) in our process and
    resolve it against our ``sys.path`` rather than the job's. The price is one
    import of the module more than the job itself makes.

    Raises:
        HandlerError: with one clear line: the form, module not found, the import
            failing, function missing or not callable.
        ConfigurationError: ``source`` is not a directory.
    """
    spec = parse_handler(handler)
    directory = Path(source)
    if not directory.is_dir():
        raise ConfigurationError(f"--source {str(source)!r} is not a directory")
    child_env = dict(os.environ if env is None else env)
    child_env[ENV_HANDLER] = str(spec)
    child_env["PYTHONPATH"] = _child_pythonpath(child_env.get("PYTHONPATH"))
    child_env.pop(ENV_OUTCOME_FILE, None)
    limit = (
        timeout
        if timeout is not None
        else env_float(ENV_CHECK_TIMEOUT, DEFAULT_CHECK_TIMEOUT, minimum=1.0)
    )
    try:
        done = subprocess.run(
            [sys.executable, "-m", "abeja_runtime.runner.child", "--check"],
            cwd=str(directory),
            env=child_env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=limit,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise HandlerError(
            f"HANDLER '{spec}': importing module {spec.module!r} took more than {limit:g} s "
            f"(set {ENV_CHECK_TIMEOUT} to wait longer)"
        ) from None
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        message = next(
            (line for line in reversed(lines) if line.startswith("abeja-runtime: ")),
            lines[-1] if lines else f"handler check exited with code {done.returncode}",
        )
        raise HandlerError(message.removeprefix("abeja-runtime: "))
    return spec


def _default_storage_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "abeja-runtime" / "storage"
