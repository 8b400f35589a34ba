"""The Training API's job definition and version operations."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import IO, Any

from ..archive import StreamedZip
from ..validators import HandlerError, parse_handler
from ._arguments import (
    _filter_archived,
    _invalid,
    _json_value,
    _opt_bool,
    _opt_count,
    _opt_mapping,
    _opt_str,
    _segment,
    _version,
)
from ._client_base import _ClientBase
from ._uploads import _iter_sources, _readable_path, _spool, _zip_sources
from .multipart import ensure_binary_readable


class _DefinitionOperations(_ClientBase):
    """Operations 1-14: job definitions and their versions."""

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
        if not isinstance(handler, str):
            raise _invalid(f"handler must be 'module:function', got {handler!r}")
        try:
            parse_handler(handler)
        except HandlerError as exc:
            raise _invalid(f"handler: {exc}") from None
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
