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

import json
import os
from collections.abc import Mapping
from types import TracebackType
from typing import IO, Any, overload

from ..archive import StreamedZip
from ..config import (
    ENV_JOB_DEFINITION_NAME,
    ENV_ORGANIZATION_ID,
    ENV_TRAINING_JOB_ID,
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
    _datasets,
    _env_identity,
    _filter_archived,
    _id,
    _invalid,
    _is_statistics,
    _json_value,
    _opt_bool,
    _opt_count,
    _opt_mapping,
    _opt_str,
    _segment,
    _statistics_dict,
    _version,
    validate_instance_type,
)
from ._uploads import _iter_sources, _prepare_model_data, _readable_path, _spool, _zip_sources
from .multipart import MultipartBody, StreamPart, ensure_binary_readable
from .retry import RetryPolicy
from .transport import HttpTransport, Timeout

__all__ = [
    "ENV_JOB_DEFINITION_NAME",
    "ENV_ORGANIZATION_ID",
    "ENV_TRAINING_JOB_ID",
    "APIClient",
    "validate_instance_type",
]


class APIClient:
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

    def __enter__(self) -> APIClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<APIClient {self.base_url} auth={self._transport.auth_scheme}>"

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

    # --------------------------------------------------------------- definitions

    def create_training_job_definition(
        self, organization_id: str, job_definition_name: str
    ) -> dict[str, Any]:
        """Create a job definition. ``POST /organizations/{org}/training/definitions/``.

        Not retried unless the request surely never reached the server.
        """
        _segment(job_definition_name, "job_definition_name")
        path = self.training_path(organization_id, "definitions") + "/"
        return self.request("POST", path, json={"name": job_definition_name}, idempotent=False)

    def archive_training_job_definition(
        self, organization_id: str, job_definition_name: str
    ) -> dict[str, Any]:
        """Archive a job definition. ``POST .../definitions/{name}/archive``."""
        path = self.definition_path(organization_id, job_definition_name, "archive")
        return self.request("POST", path, json={})

    def unarchive_training_job_definition(
        self, organization_id: str, job_definition_name: str
    ) -> dict[str, Any]:
        """Unarchive a job definition. ``POST .../definitions/{name}/unarchive``."""
        path = self.definition_path(organization_id, job_definition_name, "unarchive")
        return self.request("POST", path, json={})

    def get_training_job_definitions(
        self,
        organization_id: str,
        filter_archived: bool | None = None,
        offset: int | None = None,
        limit: int | None = None,
    ) -> dict[str, Any]:
        """List job definitions. ``GET .../definitions/`` with optional paging."""
        params = _filter_archived(filter_archived)
        offset = _opt_count(offset, "offset")
        limit = _opt_count(limit, "limit")
        if offset is not None:
            params["offset"] = offset
        if limit is not None:
            params["limit"] = limit
        path = self.training_path(organization_id, "definitions") + "/"
        return self.request("GET", path, params=params or None)

    def get_training_job_definition(
        self,
        organization_id: str,
        job_definition_name: str,
        include_jobs: bool | None = None,
    ) -> dict[str, Any]:
        """Get a job definition. ``GET .../definitions/{name}`` (``include_jobs=true|false``).

        Pass ``include_jobs=False`` for definitions with many jobs: the server
        includes them by default, which is slow.
        """
        flag = _opt_bool(include_jobs, "include_jobs")
        params = None if flag is None else {"include_jobs": "true" if flag else "false"}
        path = self.definition_path(organization_id, job_definition_name)
        return self.request("GET", path, params=params)

    def delete_training_job_definition(
        self, organization_id: str, job_definition_name: str
    ) -> dict[str, Any]:
        """Delete a job definition. ``DELETE .../definitions/{name}``."""
        path = self.definition_path(organization_id, job_definition_name)
        return self.request("DELETE", path)

    # ------------------------------------------------------------------ versions

    def create_training_job_definition_version_native_api(
        self,
        organization_id: str,
        job_definition_name: str,
        source_code: IO[bytes] | str | os.PathLike[str] | StreamedZip,
        parameters: Mapping[str, Any],
    ) -> dict[str, Any]:
        """Create a version from an archive. ``POST .../definitions/{name}/versions``.

        Args:
            organization_id: the organization.
            job_definition_name: the definition.
            source_code: a zip or tar.gz archive, as a binary file object
                (sent from its current position) or a path; streamed. Or an
                :class:`~abeja_runtime.archive.StreamedZip`, produced while it
                is sent (no temporary file).
            parameters: ``handler`` and optionally ``image``, ``environment``,
                ``description`` (sent as the ``params.json`` part).

        Raises:
            InvalidDataFormat: ``source_code`` is not a readable binary file.
        """
        path = self.definition_path(organization_id, job_definition_name, "versions")
        if _opt_mapping(parameters, "parameters") is None:
            raise _invalid("parameters must be a dict with at least 'handler'")
        params_json = _json_value(parameters, "parameters")
        spooled: IO[bytes] | None = None
        source: str | IO[bytes] | StreamedZip
        if isinstance(source_code, StreamedZip):
            source = source_code  # produced while it is sent (the runner's and CLI's sources)
        elif isinstance(source_code, (str, os.PathLike)):
            source = _readable_path(source_code, "source_code")
        else:
            ensure_binary_readable(source_code, "source_code")
            source = source_code
            seekable = getattr(source_code, "seekable", None)
            if not (callable(seekable) and seekable()):
                spooled = source = _spool(source_code)
        try:
            return self._post_archive(path, "source_code", "source_code.zip", source, params_json)
        finally:
            if spooled is not None:
                spooled.close()

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

    def create_training_job_definition_version(
        self,
        organization_id: str,
        job_definition_name: str,
        filepaths: list[str],
        handler: str,
        image: str | None = None,
        environment: dict[str, Any] | None = None,
        description: str | None = None,
    ) -> dict[str, Any]:
        """Zip ``filepaths`` and create a version from it (streamed from a temp file).

        Each file is stored under its base name; a directory is stored with its
        contents under its own name. ``handler`` is ``module:function``.
        ``image``, ``environment`` and ``description`` are sent only when given
        (and not empty), as the public package does.

        Raises:
            InvalidDataFormat: a path is missing or unreadable, the list is
                empty, or two files would get the same name in the archive.
            BadRequest: ``handler`` is not ``module:function``.
        """
        path = self.definition_path(organization_id, job_definition_name, "versions")
        if not isinstance(handler, str) or handler.count(":") != 1 or "" in handler.split(":"):
            raise _invalid(f"handler must be 'module:function', got {handler!r}")
        _opt_str(image, "image")
        _opt_mapping(environment, "environment")
        _opt_str(description, "description")
        parameters: dict[str, Any] = {"handler": handler}
        if image:
            parameters["image"] = image
        if environment:
            parameters["environment"] = environment
        if description:
            parameters["description"] = description
        params_json = _json_value(parameters, "parameters")
        entries = _iter_sources(filepaths)
        archive = _zip_sources(entries)
        try:
            return self._post_archive(path, "source_code", "source_code.zip", archive, params_json)
        finally:
            archive.close()

    def get_training_job_definition_versions(
        self,
        organization_id: str,
        job_definition_name: str,
        filter_archived: bool | None = None,
    ) -> dict[str, Any]:
        """List a definition's versions. ``GET .../definitions/{name}/versions``."""
        params = _filter_archived(filter_archived)
        path = self.definition_path(organization_id, job_definition_name, "versions")
        return self.request("GET", path, params=params or None)

    def get_training_job_definition_version(
        self, organization_id: str, job_definition_name: str, version_id: int
    ) -> dict[str, Any]:
        """Get a version. ``GET .../definitions/{name}/versions/{version_id}``."""
        path = self.definition_path(
            organization_id, job_definition_name, "versions", _version(version_id)
        )
        return self.request("GET", path)

    def patch_training_job_definition_version(
        self,
        organization_id: str,
        job_definition_name: str,
        version_id: int,
        description: str,
    ) -> dict[str, Any]:
        """Update a version's description. ``PATCH .../versions/{version_id}``."""
        path = self.definition_path(
            organization_id, job_definition_name, "versions", _version(version_id)
        )
        _opt_str(description, "description")
        return self.request("PATCH", path, json={"description": description})

    def archive_training_job_definition_version(
        self, organization_id: str, job_definition_name: str, version_id: int
    ) -> dict[str, Any]:
        """Archive a version. ``POST .../versions/{version_id}/archive``."""
        path = self.definition_path(
            organization_id, job_definition_name, "versions", _version(version_id), "archive"
        )
        return self.request("POST", path)

    def unarchive_training_job_definition_version(
        self, organization_id: str, job_definition_name: str, version_id: int
    ) -> dict[str, Any]:
        """Unarchive a version. ``POST .../versions/{version_id}/unarchive``."""
        path = self.definition_path(
            organization_id, job_definition_name, "versions", _version(version_id), "unarchive"
        )
        return self.request("POST", path)

    def delete_training_job_definition_version(
        self, organization_id: str, job_definition_name: str, version_id: int
    ) -> dict[str, Any]:
        """Delete a version. ``DELETE .../versions/{version_id}``."""
        path = self.definition_path(
            organization_id, job_definition_name, "versions", _version(version_id)
        )
        return self.request("DELETE", path)

    # ---------------------------------------------------------------------- jobs

    def create_training_job(
        self,
        organization_id: str,
        job_definition_name: str,
        version_id: int,
        user_parameters: dict[str, Any] | None = None,
        datasets: dict[str, Any] | None = None,
        instance_type: str | None = None,
        environment: dict[str, Any] | None = None,
        description: str | None = None,
        export_log: bool | None = None,
    ) -> dict[str, Any]:
        """Start a training job. ``POST .../versions/{version_id}/jobs``.

        Only the arguments given are sent. ``user_parameters`` is the
        deprecated spelling of ``environment`` and is sent under that key.
        Not retried unless the request surely never reached the server.

        Raises:
            BadRequest: ``instance_type`` is not ``cpu-N``, ``gpu-N`` or
                ``gpu:<class>-N`` (status 400, before any request).
        """
        path = self.definition_path(
            organization_id, job_definition_name, "versions", _version(version_id), "jobs"
        )
        data: dict[str, Any] = {}
        env = _opt_mapping(environment, "environment")
        user_env = _opt_mapping(user_parameters, "user_parameters")
        if env is not None:
            data["environment"] = env
        elif user_env is not None:
            data["environment"] = user_env
        dataset_map = _opt_mapping(datasets, "datasets")
        if dataset_map is not None:
            data["datasets"] = _datasets(dataset_map)
        if instance_type is not None:
            data["instance_type"] = validate_instance_type(instance_type)
        if _opt_str(description, "description") is not None:
            data["description"] = description
        if _opt_bool(export_log, "export_log") is not None:
            data["export_log"] = export_log
        return self.request("POST", path, json=_json_value(data, "request"), idempotent=False)

    def get_training_jobs(
        self,
        organization_id: str,
        job_definition_name: str,
        limit: int | None = None,
        offset: int | None = None,
        filter_archived: bool | None = None,
    ) -> dict[str, Any]:
        """List jobs (``{entries, limit, offset, total}``; the server's default limit is 10)."""
        params = _filter_archived(filter_archived)
        limit = _opt_count(limit, "limit")
        offset = _opt_count(offset, "offset")
        if limit is not None:
            params["limit"] = limit
        if offset is not None:
            params["offset"] = offset
        path = self.definition_path(organization_id, job_definition_name, "jobs")
        return self.request("GET", path, params=params or None)

    def get_training_job(
        self, organization_id: str, job_definition_name: str, training_job_id: str
    ) -> dict[str, Any]:
        """Get a job. ``GET .../definitions/{name}/jobs/{training_job_id}``."""
        return self.request(
            "GET", self.job_path(organization_id, job_definition_name, training_job_id)
        )

    def stop_training_job(
        self, organization_id: str, job_definition_name: str, training_job_id: str
    ) -> dict[str, Any]:
        """Stop a job. ``POST .../jobs/{training_job_id}/stop``."""
        path = self.job_path(organization_id, job_definition_name, training_job_id, "stop")
        return self.request("POST", path)

    def archive_training_job(
        self, organization_id: str, job_definition_name: str, training_job_id: str
    ) -> dict[str, Any]:
        """Archive a job. ``POST .../jobs/{training_job_id}/archive``."""
        path = self.job_path(organization_id, job_definition_name, training_job_id, "archive")
        return self.request("POST", path, json={})

    def unarchive_training_job(
        self, organization_id: str, job_definition_name: str, training_job_id: str
    ) -> dict[str, Any]:
        """Unarchive a job. ``POST .../jobs/{training_job_id}/unarchive``."""
        path = self.job_path(organization_id, job_definition_name, training_job_id, "unarchive")
        return self.request("POST", path, json={})

    def get_training_result(
        self, organization_id: str, job_definition_name: str, training_job_id: str
    ) -> dict[str, Any]:
        """Get a job's result (``{"artifacts": {"complete": {"uri"}}}``)."""
        path = self.job_path(organization_id, job_definition_name, training_job_id, "result")
        return self.request("GET", path)

    @overload
    def update_statistics(self, organization_id: Any) -> dict[str, Any]: ...

    @overload
    def update_statistics(
        self,
        organization_id: str,
        job_definition_name: str,
        training_job_id: str,
        statistics: Any,
    ) -> dict[str, Any]: ...

    @overload
    def update_statistics(self, *, statistics: Any) -> dict[str, Any]: ...

    def update_statistics(
        self,
        organization_id: Any = None,
        job_definition_name: str | None = None,
        training_job_id: str | None = None,
        statistics: Any = None,
    ) -> dict[str, Any]:
        """Replace a job's statistics. ``POST .../jobs/{training_job_id}/statistics``.

        Two spellings:

        * ``update_statistics(organization_id, job_definition_name, training_job_id, statistics)``
        * ``update_statistics(statistics)`` (or ``statistics=...``) inside a
          job: the ids come from ``ABEJA_ORGANIZATION_ID``,
          ``TRAINING_JOB_DEFINITION_NAME`` and ``TRAINING_JOB_ID``.

        ``statistics`` is a dict or any object with ``get_statistics()`` (such
        as :class:`~abeja_runtime.statistics.Statistics`); it is sent as strict
        JSON ``{"statistics": ...}``: zeros kept, numpy/torch scalars
        converted, NaN/Infinity as ``"NaN"``/``"Infinity"``.

        Raises:
            StatisticsError: a value cannot be sent (with its path, e.g.
                ``statistics.stages.train.loss``).
            JobContextError: the short form outside a training job.
        """
        if (
            statistics is None
            and job_definition_name is None
            and training_job_id is None
            and _is_statistics(organization_id)
        ):
            statistics, organization_id = organization_id, None
        if organization_id is None and job_definition_name is None and training_job_id is None:
            organization_id, job_definition_name, training_job_id = _env_identity(
                ENV_ORGANIZATION_ID, ENV_JOB_DEFINITION_NAME, ENV_TRAINING_JOB_ID
            )
        body = {"statistics": _statistics_dict(statistics)}
        path = self.job_path(organization_id, job_definition_name, training_job_id, "statistics")
        return self.request("POST", path, json=body)

    # -------------------------------------------------------------------- models

    def get_training_models(
        self,
        organization_id: str,
        job_definition_name: str,
        filter_archived: bool | None = None,
    ) -> dict[str, Any]:
        """List a definition's models (``{"entries": [...]}``)."""
        params = _filter_archived(filter_archived)
        path = self.definition_path(organization_id, job_definition_name, "models")
        return self.request("GET", path, params=params or None)

    def list_models(
        self,
        organization_id: str | None = None,
        job_definition_name: str | None = None,
        filter_archived: bool | None = None,
    ) -> dict[str, Any]:
        """The seed's spelling of :meth:`get_training_models`.

        Inside a training job the ids may be left out: they come from
        ``ABEJA_ORGANIZATION_ID`` and ``TRAINING_JOB_DEFINITION_NAME``.
        """
        if organization_id is None:
            (organization_id,) = _env_identity(ENV_ORGANIZATION_ID)
        if job_definition_name is None:
            (job_definition_name,) = _env_identity(ENV_JOB_DEFINITION_NAME)
        return self.get_training_models(organization_id, job_definition_name, filter_archived)

    def create_training_model(
        self,
        organization_id: str,
        job_definition_name: str,
        model_data: IO[bytes] | str | os.PathLike[str],
        parameters: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Upload a model. ``POST .../definitions/{name}/models`` (multipart, streamed).

        Args:
            organization_id: the organization.
            job_definition_name: the definition.
            model_data: a path or a binary file object (read from its first
                byte). A path goes as :func:`~abeja_runtime.artifacts.models.upload_model`
                sends it: a valid ``*.zip`` as it is, any other file in a
                stored zip produced while it is sent (no temporary copy), its
                SHA-256 checked against the server's and never sent twice
                after a dropped connection. A file object is sent as the
                public package sends it: a zip as it is, anything else wrapped
                in a deflated zip (in a temporary file, never in memory).
            parameters: ``training_job_id``, ``description``,
                ``user_parameters``, ``metrics`` (all optional).

        Raises:
            InvalidDataFormat: ``model_data`` is ``None``, a text-mode or closed
                file, or a missing/unreadable path (before any request).
        """
        path = self.definition_path(organization_id, job_definition_name, "models")
        params_json = _json_value(dict(_opt_mapping(parameters, "parameters") or {}), "parameters")
        if isinstance(model_data, (str, os.PathLike)):
            # a path: the streamed stored zip of upload_model, its checksum and duplicate guard
            from ..artifacts.models import send_model_path

            _readable_path(model_data, "model_data")
            return send_model_path(
                self, organization_id, job_definition_name, model_data, params_json
            )
        upload = _prepare_model_data(model_data)
        try:
            return self._post_archive(
                path, "model_data", "model_data.zip", upload.source, params_json
            )
        finally:
            upload.close()

    def _model(
        self, organization_id: Any, job_definition_name: Any, model_id: Any, *rest: str
    ) -> str:
        model = _id(model_id, "model_id")
        return self.definition_path(organization_id, job_definition_name, "models", model, *rest)

    def get_training_model(
        self, organization_id: str, job_definition_name: str, model_id: str
    ) -> dict[str, Any]:
        """Get a model. ``GET .../definitions/{name}/models/{model_id}``."""
        return self.request("GET", self._model(organization_id, job_definition_name, model_id))

    def patch_training_model(
        self,
        organization_id: str,
        job_definition_name: str,
        model_id: str,
        description: str,
    ) -> dict[str, Any]:
        """Update a model's description. ``PATCH .../models/{model_id}``."""
        path = self._model(organization_id, job_definition_name, model_id)
        _opt_str(description, "description")
        return self.request("PATCH", path, json={"description": description})

    def download_training_model(
        self, organization_id: str, job_definition_name: str, model_id: str
    ) -> dict[str, Any]:
        """Get a presigned ``download_uri`` for a model (fetch it without auth)."""
        path = self._model(organization_id, job_definition_name, model_id, "download")
        return self.request("GET", path)

    def archive_training_model(
        self, organization_id: str, job_definition_name: str, model_id: str
    ) -> dict[str, Any]:
        """Archive a model. ``POST .../models/{model_id}/archive``."""
        path = self._model(organization_id, job_definition_name, model_id, "archive")
        return self.request("POST", path)

    def unarchive_training_model(
        self, organization_id: str, job_definition_name: str, model_id: str
    ) -> dict[str, Any]:
        """Unarchive a model. ``POST .../models/{model_id}/unarchive``."""
        path = self._model(organization_id, job_definition_name, model_id, "unarchive")
        return self.request("POST", path)
