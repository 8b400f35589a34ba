"""The API client's plumbing: its transport, retries and path builders.

:class:`~abeja_runtime.api.client.APIClient` adds one method per operation on top
(``_ops_definitions``, ``_ops_jobs``, ``_ops_models``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import TracebackType
from typing import IO, Any, TypeVar

from ..archive import StreamedZip
from ..config import (
    Credential,
    resolve_base_url,
    resolve_credential,
    resolve_max_retry_count,
    resolve_timeout,
)
from ..errors import (
    ConfigurationError,
)
from ._arguments import (
    _id,
    _segment,
)
from .multipart import MultipartBody, StreamPart
from .retry import RetryPolicy
from .transport import HttpTransport, Timeout

_C = TypeVar("_C", bound="_ClientBase")


class _ClientBase:
    """The client's plumbing: transport, retries, paths; the operations build on it."""

    def __init__(
        self,
        credential: Credential | Mapping[str, Any] | None = None,
        timeout: Timeout | None = None,
        max_retry_count: int | None = None,
        *,
        base_url: str | None = None,
        retry_policy: RetryPolicy | None = None,
    ) -> None:
        resolved_credential = resolve_credential(credential)
        resolved_url = resolve_base_url(base_url)
        if isinstance(timeout, tuple):
            if len(timeout) != 2:
                raise ConfigurationError(f"timeout pair must be (connect, read), got {timeout!r}")
            pair: Timeout = (resolve_timeout(timeout[0]), resolve_timeout(timeout[1]))
        else:
            pair = resolve_timeout(timeout)
        if retry_policy is None:
            policy = RetryPolicy(max_retries=resolve_max_retry_count(max_retry_count))
        elif max_retry_count is not None:
            policy = retry_policy.with_max_retries(resolve_max_retry_count(max_retry_count))
        else:
            policy = retry_policy
        self._transport = HttpTransport(
            resolved_url, resolved_credential, timeout=pair, retry=policy
        )

    # ------------------------------------------------------------------ plumbing

    @property
    def base_url(self) -> str:
        """The API root this client talks to."""
        return self._transport.base_url

    @property
    def credential(self) -> Credential | None:
        """The credential in use (its repr hides the secret)."""
        return self._transport.credential

    @property
    def timeout(self) -> tuple[float, float]:
        """``(connect, read)`` timeouts in seconds."""
        return self._transport.timeout

    @property
    def retry_policy(self) -> RetryPolicy:
        """The retry rules in use."""
        return self._transport.retry

    @property
    def max_retry_count(self) -> int:
        """Retries after the first try."""
        return self._transport.retry.max_retries

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: bytes | str | MultipartBody | None = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool = True,
        timeout: Timeout | None = None,
    ) -> dict[str, Any]:
        """Send any API call and return the JSON object it answers.

        The escape hatch for calls without a method here. ``path`` is relative
        to the base URL and must already be quoted, e.g.
        ``"/organizations/1/training/definitions/x/jobs/y/status"``.

        Args:
            method: HTTP method.
            path: path starting with ``/``.
            params: query parameters (``None`` values dropped).
            json: JSON body (strict: no NaN/Infinity).
            data: raw body or a streamed :class:`~abeja_runtime.api.multipart.MultipartBody`.
            headers: extra headers.
            idempotent: ``False`` for calls that create something, so they are
                retried only when the request surely never reached the server.
            timeout: per-call timeout (number or ``(connect, read)``).

        Raises:
            HttpError: an error status (``BadRequest``, ``NotFound``, ...).
            InvalidResponseError: a 2xx answer that is not a JSON object.
            APIConnectionError: the server could not be reached.
        """
        return self._transport.request(
            method,
            path,
            params=params,
            json=json,
            data=data,
            headers=headers,
            idempotent=idempotent,
            timeout=timeout,
        )

    def close(self) -> None:
        """Close pooled connections; the client cannot be used afterwards."""
        self._transport.close()

    def __enter__(self: _C) -> _C:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.base_url} auth={self._transport.auth_scheme}>"

    __str__ = __repr__

    # -------------------------------------------------------------------- paths

    @staticmethod
    def training_path(organization_id: Any, *segments: str) -> str:
        """``/organizations/{org}/training/{segments...}``, the id checked.

        The segments must already be checked (or quoted); :meth:`request` takes the result.
        """
        path = "/organizations/" + _id(organization_id, "organization_id") + "/training"
        return path + "".join("/" + s for s in segments)

    def definition_path(self, organization_id: Any, job_definition_name: Any, *rest: str) -> str:
        """``.../training/definitions/{name}/{rest...}``, the organization and name checked."""
        name = _segment(job_definition_name, "job_definition_name")
        return self.training_path(organization_id, "definitions", name, *rest)

    def job_path(
        self, organization_id: Any, job_definition_name: Any, training_job_id: Any, *rest: str
    ) -> str:
        """``.../definitions/{name}/jobs/{id}/{rest...}``, every identifier checked."""
        job_id = _id(training_job_id, "training_job_id")
        return self.definition_path(organization_id, job_definition_name, "jobs", job_id, *rest)

    def _post_archive(
        self,
        path: str,
        field: str,
        filename: str,
        source: str | IO[bytes] | StreamedZip,
        parameters: Any,
    ) -> dict[str, Any]:
        body = MultipartBody()
        if isinstance(source, StreamedZip):
            body.add_part(
                StreamPart(field, source, filename=filename, content_type="application/zip")
            )
        else:
            body.add_file(field, source, filename=filename, content_type="application/zip")
        body.add_bytes(
            "parameters",
            json.dumps(parameters, allow_nan=False).encode("utf-8"),
            filename="params.json",
            content_type="application/json",
        )
        return self.request("POST", path, data=body, idempotent=False)
