"""The Training API's model operations."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import IO, TYPE_CHECKING, Any, cast

from ..config import (
    ENV_JOB_DEFINITION_NAME,
    ENV_ORGANIZATION_ID,
)
from ._arguments import (
    _env_identity,
    _filter_archived,
    _id,
    _json_value,
    _opt_mapping,
    _opt_str,
)
from ._client_base import _ClientBase
from ._model_send import send_model_path

if TYPE_CHECKING:  # pragma: no cover
    from .client import APIClient
from ._uploads import _prepare_model_data, _readable_path


class _ModelOperations(_ClientBase):
    """Trained models."""

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
            _readable_path(model_data, "model_data")
            return send_model_path(
                cast("APIClient", self),
                organization_id,
                job_definition_name,
                model_data,
                params_json,
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
