"""``APIClient``: every Training API operation, call-compatible with ``abeja.training.APIClient``.

Same method names, positional order and keyword names as the public
``abeja-sdk`` 2.3.x client (and the seed document), the same method, path,
query, JSON body and multipart parts on the wire, and the response ``dict``
returned as it came. What differs is underneath and around it:

* Arguments are checked before anything is sent: an empty or ``None`` id or
  name, a name that would change the path (``/``, ``.``, ``..``), a negative
  ``limit``/``offset``, a version id that is not an integer or an unknown
  instance type raises :class:`~abeja_runtime.errors.BadRequest` (status 400,
  ``error="invalid_argument"``) without a request; every path segment is
  percent-quoted, so a name with spaces reaches the right resource.
* Unreadable upload data raises :class:`~abeja_runtime.errors.InvalidDataFormat`
  before a request. A model path goes through :mod:`abeja_runtime.artifacts.models`' one
  sender (a stored zip produced while it is sent, SHA-256 checked, never sent
  twice); source file lists and file objects are zipped as the public package
  zips them (byte for byte) into temporary files; all are streamed from disk,
  so memory does not grow with their size.
* Statistics are sent as strict JSON (numpy/torch scalars converted, NaN and
  Infinity as strings, zeros kept) and ``update_statistics(statistics)`` takes
  the job's identity from its environment, as the seed's example does.
* The transport (:mod:`abeja_runtime.api.transport`) keeps one pooled connection per
  client, retries only what is safe (:mod:`abeja_runtime.api.retry`) and keeps the
  token out of every message.
"""

from __future__ import annotations

from ..config import (
    ENV_JOB_DEFINITION_NAME,
    ENV_ORGANIZATION_ID,
    ENV_TRAINING_JOB_ID,
)
from ._arguments import (
    validate_instance_type,
)
from ._ops_definitions import _DefinitionOperations
from ._ops_jobs import _JobOperations
from ._ops_models import _ModelOperations

__all__ = [
    "ENV_JOB_DEFINITION_NAME",
    "ENV_ORGANIZATION_ID",
    "ENV_TRAINING_JOB_ID",
    "APIClient",
    "validate_instance_type",
]


class APIClient(_DefinitionOperations, _JobOperations, _ModelOperations):
    """A low-level client for the Training API: one method per operation.

    Example:
        >>> from abeja_runtime import APIClient
        >>> with APIClient() as client:  # doctest: +SKIP
        ...     job = client.get_training_job("1102940376065", "mnist", "1443722127663")

    Args:
        credential: a :class:`~abeja_runtime.config.Credential`, or the public
            package's dict (``{"auth_token": ...}``, ``{"user_id", "personal_access_token"}``,
            ``{"datasource_id", "datasource_secret"}``); from the environment when ``None``.
        timeout: seconds for connect and for read (or a ``(connect, read)`` pair);
            ``ABEJA_SDK_CONNECTION_TIMEOUT`` or 30 when ``None``.
        max_retry_count: retries after the first try; ``0`` disables retries;
            ``ABEJA_SDK_MAX_RETRY_COUNT`` or 5 when ``None``.
        base_url: the API root; ``ABEJA_API_URL`` or ``https://api.abeja.io`` when ``None``.
        retry_policy: backoff and retry rules (its ``max_retries`` is replaced by
            ``max_retry_count`` when that is given).

    Raises:
        ConfigurationError: a malformed argument or environment variable.
    """
