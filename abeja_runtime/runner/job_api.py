"""The job's API side during a run: its status, a watcher of its progress, the result.

Job status on the API: our emulators take ``POST .../jobs/{id}/status`` from a local
runner; an API that does not know that call (404/405) is told nothing beyond ``stop``
(standard operation 18) and the runner says so once.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import (
    AbejaRuntimeError,
    BadRequest,
    Conflict,
    MethodNotAllowed,
    NotFound,
)
from ..exit_codes import EXIT_OK
from .api_target import ApiTarget

if TYPE_CHECKING:  # pragma: no cover
    pass
from ..validators import HandlerSpec
from .console import _Console, _human_size, format_progress
from .source import SOURCE_EXCLUDED_DIRS, SOURCE_EXCLUDED_SUFFIXES, source_archive

__all__ = [
    "RunResult",
    "create_job",
    "deliver_spool_leftovers",
    "ensure_definition",
    "upload_version",
]


# --------------------------------------------------------------------------- the job


@dataclass
class RunResult:
    """What a run ended with.

    Attributes:
        job_definition_name: the definition the job belongs to.
        job_definition_version: the version uploaded for this run.
        training_job_id: the job's id.
        status: the job's final status: ``Complete``, ``Failed`` or ``Stopped``.
        status_message: why (the handler's exception, the signal, ...), or ``None``.
        returncode: the handler process's exit code (negative: killed by that signal).
        statistics: the job's final statistics on the API (``{}`` when none).
        model: the model dict, or ``None`` when none was uploaded.
        model_note: why no model was uploaded, or ``None``.
        result_dir: the directory the handler wrote its results into.
        exit_code: what ``abeja-runtime run`` exits with (see :mod:`abeja_runtime.exit_codes`).
        organization_id: the organization of the job.
        api_url: the API the job ran against.
        emulator_dir: the embedded emulator's data directory, when one was used.
    """

    job_definition_name: str
    job_definition_version: int
    training_job_id: str
    status: str
    status_message: str | None
    returncode: int | None
    statistics: dict[str, Any]
    model: dict[str, Any] | None
    model_note: str | None
    result_dir: Path
    exit_code: int
    organization_id: str
    api_url: str
    emulator_dir: Path | None = None
    stop_reason: str | None = field(default=None, repr=False)

    def as_dict(self) -> dict[str, Any]:
        """The outcome as JSON-ready values (what ``run --output-json`` writes)."""
        return {
            "job_definition_name": self.job_definition_name,
            "job_definition_version": self.job_definition_version,
            "training_job_id": self.training_job_id,
            "status": self.status,
            "status_message": self.status_message,
            "returncode": self.returncode,
            "statistics": self.statistics,
            "training_model_id": self.model_id,
            "model_note": self.model_note,
            "result_dir": str(self.result_dir),
            "exit_code": self.exit_code,
            "organization_id": self.organization_id,
            "api_url": self.api_url,
            "emulator_dir": str(self.emulator_dir) if self.emulator_dir else None,
        }

    @property
    def model_id(self) -> str | None:
        """The uploaded model's id, or ``None``."""
        if not self.model:
            return None
        value = self.model.get("training_model_id") or self.model.get("id")
        return str(value) if value is not None else None


class _JobWatcher(threading.Thread):
    """Polls the job on the API: progress for the console, and API stops."""

    def __init__(
        self,
        api: ApiTarget,
        name: str,
        job_id: str,
        interval: float,
        console: _Console,
    ) -> None:
        super().__init__(name="abeja-runtime-job-watcher", daemon=True)
        self.api = api
        self.job_name = name
        self.job_id = job_id
        self.interval = interval
        self.console = console
        self.done = threading.Event()
        self.stopped = threading.Event()
        self.latest: dict[str, Any] | None = None
        self.errors = 0

    def poll_once(self) -> None:
        try:
            job = self.api.client.get_training_job(
                self.api.organization_id, self.job_name, self.job_id
            )
        except AbejaRuntimeError as exc:
            self.errors += 1
            if self.errors == 1:
                self.console.note(f"cannot read the job's progress ({exc}); still trying")
            return
        self.latest = dict(job)
        statistics = job.get("statistics")
        if statistics:
            self.console.status(format_progress(statistics))
        if job.get("status") == "Stopped":
            self.stopped.set()

    def run(self) -> None:
        while not self.done.wait(self.interval):
            self.poll_once()


class _JobStatus:
    """Sets the job's status through the emulators' ``POST .../status`` call."""

    def __init__(self, api: ApiTarget, name: str, job_id: str, console: _Console) -> None:
        self.api = api
        self.name = name
        self.job_id = job_id
        self.console = console
        self.unsupported = False

    @property
    def _path(self) -> str:
        return self.api.client.job_path(self.api.organization_id, self.name, self.job_id, "status")

    def set(self, status: str, message: str | None = None) -> bool:
        """Move the job to ``status``; ``False`` (with a note) when the API refused."""
        if self.unsupported:
            return False
        body: dict[str, Any] = {"status": status}
        if message:
            body["status_message"] = message[:1000]
        try:
            self.api.client.request("POST", self._path, json=body, idempotent=True)
            return True
        except (NotFound, MethodNotAllowed) as exc:
            self.unsupported = True
            self.console.note(
                f"this API does not take job status from a local runner ({exc.status_code}); "
                "the job's status is left to the server",
                error=True,
            )
        except Conflict as exc:
            with contextlib.suppress(AbejaRuntimeError):
                job = self.api.client.get_training_job(
                    self.api.organization_id, self.name, self.job_id
                )
                if job.get("status") == status:
                    return True
            self.console.note(f"could not mark the job {status}: {exc}", error=True)
        return False

    def stop(self, message: str) -> None:
        """Mark the job Stopped: the status call when possible, else operation 18."""
        if self.set("Stopped", message):
            return
        with contextlib.suppress(Conflict):
            self.api.client.stop_training_job(self.api.organization_id, self.name, self.job_id)


def ensure_definition(api: ApiTarget, name: str, console: _Console) -> None:
    """Reuse the job definition ``name``, or create it."""
    client, org = api.client, api.organization_id
    try:
        client.get_training_job_definition(org, name, include_jobs=False)
        console.note(f"job definition {name!r} (reused)")
        return
    except NotFound:
        pass
    try:
        client.create_training_job_definition(org, name)
        console.note(f"job definition {name!r} (created)")
    except Conflict:  # created by someone else meanwhile
        console.note(f"job definition {name!r} (reused)")


def upload_version(
    api: ApiTarget,
    name: str,
    spec: HandlerSpec,
    source: Path,
    image: str | None,
    result_dir: Path | None,
    console: _Console,
) -> int:
    """Upload ``source`` (without the result dir and the excluded names) as a new version."""
    excluded = [result_dir] if result_dir is not None else []
    parameters: dict[str, Any] = {"handler": str(spec)}
    if image:
        parameters["image"] = image
    parameters["description"] = f"abeja-runtime run {spec} from {source}"
    archive, files, size = source_archive(
        source,
        exclude_dirs=excluded,
        exclude_names=SOURCE_EXCLUDED_DIRS,
        exclude_suffixes=SOURCE_EXCLUDED_SUFFIXES,
    )
    version = api.client.create_training_job_definition_version_native_api(
        api.organization_id, name, archive, parameters
    )
    number = int(version["job_definition_version"])
    console.note(f"version {number} uploaded from {source} ({files} files, {_human_size(size)})")
    return number


def create_job(
    api: ApiTarget,
    name: str,
    version: int,
    *,
    description: str,
    env: Mapping[str, str],
    datasets: Mapping[str, str],
    console: _Console,
) -> str:
    """Operation 15, asking for ``exec_env: local`` where the server takes it.

    ``exec_env`` is not a field of the platform's create-job body; our
    emulators accept it as an extension so that a local run is recorded as
    one. A server that refuses the field (400 naming it) gets the standard
    body: a 400 created nothing, so asking again cannot duplicate the job.
    """
    body: dict[str, Any] = {"description": description, "exec_env": "local"}
    if env:
        body["environment"] = dict(env)
    if datasets:
        body["datasets"] = dict(datasets)
    path = api.client.definition_path(api.organization_id, name, "versions", str(version), "jobs")
    try:
        job = api.client.request("POST", path, json=body, idempotent=False)
    except BadRequest as exc:
        if "exec_env" not in f"{exc.error_description} {exc.error_detail}":
            raise
        job = api.client.create_training_job(
            api.organization_id,
            name,
            version,
            datasets=dict(datasets) or None,
            environment=dict(env) or None,
            description=description,
        )
    job_id = str(job.get("training_job_id") or job.get("id"))
    console.note(f"job {job_id} created ({name} version {version})")
    return job_id


def deliver_spool_leftovers(
    api: ApiTarget,
    source: Path,
    job_id: str,
    env: Mapping[str, str],
    note: Callable[..., None],
) -> None:
    """Send what the handler left in its statistics spool, before the final status.

    A handler killed (SIGKILL, OOM) or whose exit flush ran out of time leaves its
    undelivered epoch ends on disk; the job's statistics must hold them before it is
    marked Complete/Failed/Stopped and before its model takes them as metrics.
    ``note(text, error=...)`` prints a line of the run's console.
    """
    from ..statistics.delivery import deliver_spool
    from ..statistics.spool import DATA_FILE_NAME, default_spool_dir, spool_enabled

    if not spool_enabled(env):
        return
    directory = default_spool_dir(job_id, env)
    if not directory.is_absolute():  # relative to the handler's working dir
        directory = source / directory
    if not (directory / DATA_FILE_NAME).exists():
        return
    lines: list[str] = []
    try:
        code = deliver_spool(
            directory,
            api.client,
            organization=api.organization_id,
            say=lines.append,
        )
    except AbejaRuntimeError as exc:
        note(f"statistics spool {directory} not delivered: {exc}", error=True)
        return
    sent = [line for line in lines if line.startswith("sent record")]
    if code != EXIT_OK:
        note(
            f"statistics spool {directory} not fully delivered: {lines[-1] if lines else ''}"
            " (send it later with: abeja-runtime sync --dir DIR)",
            error=True,
        )
    elif sent:
        note(f"delivered {len(sent)} statistics the handler left in its spool")
