"""The Training API's job operations, and statistics."""

from __future__ import annotations

from typing import Any, overload

from ..config import (
    ENV_JOB_DEFINITION_NAME,
    ENV_ORGANIZATION_ID,
    ENV_TRAINING_JOB_ID,
)
from ._arguments import (
    _datasets,
    _env_identity,
    _filter_archived,
    _is_statistics,
    _json_value,
    _opt_bool,
    _opt_count,
    _opt_mapping,
    _opt_str,
    _statistics_dict,
    _version,
    validate_instance_type,
)
from ._client_base import _ClientBase


class _JobOperations(_ClientBase):
    """Training jobs, their results and their statistics."""

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
