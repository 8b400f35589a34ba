"""Who this process is: the training job's identity, inputs and rank.

A training job on ABEJA Platform learns everything about itself from environment
variables (see SPEC.md, "Inside a running training job"). The public package reads
them one by one, deep inside whichever call needs them, so a missing variable shows
up as a request to ``/organizations/None/...`` long after the job started. Here they
are read once, validated together, and a problem is reported with *every* missing or
malformed variable at once, plus how to run the same code locally.

Rank detection lives here too, because "which process of a distributed run am I" is
part of the job's identity: only global rank 0 reports statistics. It is usable
without a job (:func:`rank_info`), so a local ``torchrun`` behaves the same.

Environment variables read (all set by the platform):

``ABEJA_ORGANIZATION_ID`` (13 digits), ``TRAINING_JOB_DEFINITION_NAME``,
``TRAINING_JOB_DEFINITION_VERSION`` (integer >= 1), ``TRAINING_JOB_ID`` (13 digits),
``PLATFORM_AUTH_TOKEN`` (or a user/datasource credential, see
:func:`abeja_runtime.config.resolve_credential`), ``ABEJA_API_URL`` (optional),
``ABEJA_TRAINING_RESULT_DIR`` (default ``.``), ``ABEJA_STORAGE_DIR_PATH`` (optional),
``HANDLER`` (optional, ``module:function``), ``DATASETS`` (JSON object, default
``{}``), ``CONTEXT`` (JSON object, default ``{}``).

Rank variables, first complete family wins: ``RANK``/``LOCAL_RANK``/``WORLD_SIZE``
(torchrun, accelerate, DeepSpeed), ``OMPI_COMM_WORLD_RANK``/``..._LOCAL_RANK``/
``..._SIZE`` (Open MPI, Horovod under mpirun), ``HOROVOD_RANK``/``HOROVOD_LOCAL_RANK``/
``HOROVOD_SIZE`` (horovodrun with gloo), ``PMI_RANK``/``MPI_LOCALRANKID``/``PMI_SIZE``
(MPICH, Intel MPI), ``SLURM_PROCID``/``SLURM_LOCALID``/``SLURM_NTASKS`` (srun).
With no global rank at all, an initialised ``torch.distributed`` decides, else a local
rank alone (``LOCAL_RANK`` set by itself) is taken as the rank, so that only local rank
0 reports instead of every process.

Values are checked by :mod:`abeja_runtime.validators` (ids, names, versions) and
:func:`abeja_runtime.config.check_api_url`, the same checks the client and the CLI use.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import (
    CREDENTIAL_ENV,
    ENV_API_URL,
    ENV_AUTH_TOKEN,
    ENV_CONTEXT,
    ENV_DATASETS,
    ENV_HANDLER,
    ENV_JOB_DEFINITION_NAME,
    ENV_JOB_DEFINITION_VERSION,
    ENV_ORGANIZATION_ID,
    ENV_RESULT_DIR,
    ENV_STORAGE_DIR,
    ENV_TRAINING_JOB_ID,
    Credential,
    resolve_base_url,
    resolve_credential,
)
from .errors import ConfigurationError, JobContextError
from .validators import HandlerError, check_id, check_name, check_version, parse_handler

if TYPE_CHECKING:  # pragma: no cover
    from .api.client import APIClient

__all__ = [
    "ENV_CONTEXT",
    "ENV_DATASETS",
    "ENV_HANDLER",
    "ENV_JOB_DEFINITION_NAME",
    "ENV_JOB_DEFINITION_VERSION",
    "ENV_ORGANIZATION_ID",
    "ENV_RESULT_DIR",
    "ENV_STORAGE_DIR",
    "ENV_TRAINING_JOB_ID",
    "RANK_ENV_FAMILIES",
    "REQUIRED_ENV",
    "JobContext",
    "RankInfo",
    "job_environment",
    "rank_info",
]

#: the variables without which there is no job to report to
REQUIRED_ENV = (
    ENV_ORGANIZATION_ID,
    ENV_JOB_DEFINITION_NAME,
    ENV_JOB_DEFINITION_VERSION,
    ENV_TRAINING_JOB_ID,
    ENV_AUTH_TOKEN,
)

#: (launcher, global rank, local rank, world size) variable names, in order of preference
RANK_ENV_FAMILIES: tuple[tuple[str, str, str, str], ...] = (
    ("torchrun", "RANK", "LOCAL_RANK", "WORLD_SIZE"),
    ("openmpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_SIZE"),
    ("horovod", "HOROVOD_RANK", "HOROVOD_LOCAL_RANK", "HOROVOD_SIZE"),
    ("mpich", "PMI_RANK", "MPI_LOCALRANKID", "PMI_SIZE"),
    ("slurm", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_NTASKS"),
)


_HOW_TO_RUN_LOCALLY = (
    "To run a handler locally, use `abeja-runtime run train:handler` (starts a local "
    "Training API emulator and sets these variables), or in Python "
    "`with abeja_runtime.Emulator() as emu: env = emu.create_job(...)`."
)


@dataclass(frozen=True)
class RankInfo:
    """This process's place in a distributed run.

    Attributes:
        rank: global rank (0 when not distributed).
        local_rank: rank on this node.
        world_size: number of processes in the run.
        launcher: which family of variables said so (``"torchrun"``, ``"openmpi"``,
            ``"horovod"``, ``"mpich"``, ``"slurm"``, ``"torch.distributed"``), or
            ``None`` for a single process.
    """

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    launcher: str | None = None

    @property
    def is_main(self) -> bool:
        """True for global rank 0, the only process that reports statistics."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        """True when more than one process takes part."""
        return self.world_size > 1


def _parse_rank(environ: Mapping[str, str]) -> tuple[RankInfo, dict[str, str]]:
    """Rank info from the first family whose global-rank variable is set, plus errors."""
    invalid: dict[str, str] = {}
    for launcher, rank_var, local_var, size_var in RANK_ENV_FAMILIES:
        raw_rank = environ.get(rank_var, "").strip()
        if not raw_rank:
            continue
        values: dict[str, int] = {}
        for name, default in ((rank_var, None), (local_var, -1), (size_var, -1)):
            raw = environ.get(name, "").strip()
            if not raw and default is not None:
                values[name] = default
                continue
            try:
                values[name] = int(raw)
            except ValueError:
                invalid[name] = f"must be an integer, got {raw!r}"
                continue
            if values[name] < 0:
                invalid[name] = f"must be >= 0, got {raw!r}"
        if invalid:
            return RankInfo(), invalid
        rank = values[rank_var]
        local = values[local_var] if values[local_var] >= 0 else rank
        size = values[size_var] if values[size_var] >= 0 else rank + 1
        if rank >= size:
            invalid[rank_var] = f"rank {rank} is not below the world size {size} ({size_var})"
            return RankInfo(), invalid
        return RankInfo(rank, local, size, launcher), invalid
    # an initialised process group knows the global rank; LOCAL_RANK alone is a fallback
    return _torch_distributed_rank() or _local_rank_only(environ, invalid) or RankInfo(), invalid


def _local_rank_only(environ: Mapping[str, str], invalid: dict[str, str]) -> RankInfo | None:
    """Rank info from a family's local-rank variable when its global one is not set.

    Some launchers (and hand-written multi-process scripts) set only ``LOCAL_RANK``.
    Without a global rank every process would take itself for rank 0 and post
    statistics; taking the local rank as the rank keeps one poster per node, and
    exactly one on the single node such runs use.
    """
    for launcher, _rank_var, local_var, size_var in RANK_ENV_FAMILIES:
        raw = environ.get(local_var, "").strip()
        if not raw:
            continue
        if not (raw.isascii() and raw.isdigit()):
            invalid[local_var] = f"must be an integer >= 0, got {raw!r}"
            return RankInfo()
        local = int(raw)
        raw_size = environ.get(size_var, "").strip()
        size = local + 1
        if raw_size.isascii() and raw_size.isdigit() and int(raw_size) > local:
            size = int(raw_size)
        return RankInfo(local, local, size, launcher)
    return None


def _torch_distributed_rank() -> RankInfo | None:
    """The rank from an initialised ``torch.distributed``, without importing torch.

    Covers ``torch.multiprocessing.spawn`` runs that call ``init_process_group`` with
    explicit ranks and set no environment variable.
    """
    dist = sys.modules.get("torch.distributed")
    if dist is None:
        return None
    try:
        if not (dist.is_available() and dist.is_initialized()):
            return None
        rank = int(dist.get_rank())
        size = int(dist.get_world_size())
    except Exception:  # a half-initialised process group must not break reporting
        return None
    return RankInfo(rank, rank, size, "torch.distributed")


def rank_info(environ: Mapping[str, str] | None = None) -> RankInfo:
    """This process's global rank, local rank and world size; works without a job.

    Args:
        environ: the environment to read (``os.environ`` by default).

    Raises:
        JobContextError: a rank variable is set but not a non-negative integer.
    """
    env = os.environ if environ is None else environ
    info, invalid = _parse_rank(env)
    if invalid:
        raise JobContextError(
            "malformed rank variables: "
            + "; ".join(f"{name} {why}" for name, why in invalid.items()),
            invalid=invalid,
        )
    return info


def _json_object(name: str, raw: str, invalid: dict[str, str]) -> dict[str, Any]:
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        # the position only: the value may hold user parameters that are not for logs
        invalid[name] = (
            f"must be a JSON object, but is not valid JSON ({exc.msg} at char {exc.pos})"
        )
        return {}
    if not isinstance(value, dict):
        invalid[name] = f"must be a JSON object, got a JSON {type(value).__name__}"
        return {}
    return value


@dataclass(frozen=True)
class JobContext:
    """The running training job's identity and inputs, read once from the environment.

    Build it with :meth:`from_env`. The credential's secret never appears in
    ``repr()`` (see :class:`abeja_runtime.config.Credential`).

    Attributes:
        organization_id: 13-digit organization id.
        job_definition_name: the training job definition's name.
        job_definition_version: the definition version this job runs.
        training_job_id: 13-digit training job id.
        api_url: Training API base URL, without a trailing slash.
        credential: the job's credential (normally its bearer token).
        result_dir: where the handler writes results (``ABEJA_TRAINING_RESULT_DIR``).
        storage_dir: cache/storage dir (``ABEJA_STORAGE_DIR_PATH``), if set.
        datasets: alias -> dataset id, from ``DATASETS``.
        context: the dict given to the handler: ``CONTEXT`` with ``context["datasets"]``
            filled from ``DATASETS``.
        handler: ``module:function`` from ``HANDLER``, if set.
        rank_info: this process's rank in a distributed run.
    """

    organization_id: str
    job_definition_name: str
    job_definition_version: int
    training_job_id: str
    api_url: str
    credential: Credential
    result_dir: Path = Path(".")
    storage_dir: Path | None = None
    datasets: dict[str, str] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)
    handler: str | None = None
    rank_info: RankInfo = field(default_factory=RankInfo)

    @property
    def rank(self) -> int:
        """Global rank (0 when not distributed)."""
        return self.rank_info.rank

    @property
    def local_rank(self) -> int:
        """Rank on this node."""
        return self.rank_info.local_rank

    @property
    def world_size(self) -> int:
        """Number of processes in the run."""
        return self.rank_info.world_size

    @property
    def is_main_process(self) -> bool:
        """True for global rank 0, the only process that reports statistics."""
        return self.rank_info.is_main

    @classmethod
    def is_available(cls, environ: Mapping[str, str] | None = None) -> bool:
        """True when :meth:`from_env` would succeed (this process runs inside a job)."""
        try:
            cls.from_env(environ)
        except ConfigurationError:
            return False
        return True

    @staticmethod
    def looks_like_job(environ: Mapping[str, str] | None = None) -> bool:
        """True when any job identity variable is set (so a failure is worth reporting)."""
        env = os.environ if environ is None else environ
        return any(env.get(name) for name in REQUIRED_ENV[:4])

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> JobContext:
        """Read and validate the job's environment.

        Args:
            environ: the environment to read (``os.environ`` by default).

        Raises:
            JobContextError: one or more variables are missing or malformed; the
                message names all of them and says how to run locally.
        """
        env = os.environ if environ is None else environ
        missing: list[str] = []
        invalid: dict[str, str] = {}

        def required(name: str) -> str:
            value = env.get(name, "").strip()
            if not value:
                missing.append(name)
            return value

        def check(name: str, validator: Callable[[Any, str], Any], value: str) -> Any:
            # the validators' messages start with the name; "malformed: NAME why"
            try:
                return validator(value, name) if value else None
            except ConfigurationError as exc:
                invalid[name] = str(exc).removeprefix(name).strip()
                return None

        organization_id = required(ENV_ORGANIZATION_ID)
        check(ENV_ORGANIZATION_ID, check_id, organization_id)
        # not stripped: a name with a newline or spaces around it is refused, not repaired
        job_definition_name = env.get(ENV_JOB_DEFINITION_NAME, "")
        if not job_definition_name.strip():
            missing.append(ENV_JOB_DEFINITION_NAME)
        else:
            check(ENV_JOB_DEFINITION_NAME, check_name, job_definition_name)
        raw_version = required(ENV_JOB_DEFINITION_VERSION)
        version = check(ENV_JOB_DEFINITION_VERSION, check_version, raw_version) or 0
        training_job_id = required(ENV_TRAINING_JOB_ID)
        check(ENV_TRAINING_JOB_ID, check_id, training_job_id)

        credential: Credential | None = None
        try:
            credential = resolve_credential(None, env)
        except ConfigurationError as exc:  # "NAME why": a blank or malformed credential
            name, _, why = str(exc).partition(" ")
            invalid[name if name in CREDENTIAL_ENV else ENV_AUTH_TOKEN] = why
        if credential is None and not invalid.keys() & set(CREDENTIAL_ENV):
            missing.append(ENV_AUTH_TOKEN)

        api_url = ""
        try:
            api_url = resolve_base_url(None, env)
        except ConfigurationError as exc:
            invalid[ENV_API_URL] = str(exc).removeprefix(ENV_API_URL).strip()

        handler = env.get(ENV_HANDLER, "").strip() or None
        if handler is not None:
            try:
                parse_handler(handler)
            except HandlerError as exc:
                invalid[ENV_HANDLER] = str(exc).removeprefix("HANDLER").strip()

        raw_datasets = _json_object(ENV_DATASETS, env.get(ENV_DATASETS, ""), invalid)
        datasets: dict[str, str] = {}
        for alias, dataset_id in raw_datasets.items():
            if isinstance(dataset_id, bool) or not isinstance(dataset_id, (str, int)):
                invalid[ENV_DATASETS] = (
                    f"must map aliases to dataset ids, but {alias!r} maps to a "
                    f"{type(dataset_id).__name__}"
                )
                break
            datasets[alias] = str(dataset_id)
        context = _json_object(ENV_CONTEXT, env.get(ENV_CONTEXT, ""), invalid)
        context["datasets"] = dict(datasets)

        ranks, rank_invalid = _parse_rank(env)
        invalid.update(rank_invalid)

        if missing or invalid:
            raise JobContextError(_describe(missing, invalid), missing=missing, invalid=invalid)
        assert credential is not None
        storage = env.get(ENV_STORAGE_DIR, "").strip()
        return cls(
            organization_id=organization_id,
            job_definition_name=job_definition_name,
            job_definition_version=version,
            training_job_id=training_job_id,
            api_url=api_url,
            credential=credential,
            result_dir=Path(env.get(ENV_RESULT_DIR, "").strip() or "."),
            storage_dir=Path(storage) if storage else None,
            datasets=datasets,
            context=context,
            handler=handler,
            rank_info=ranks,
        )

    def as_env(self) -> dict[str, str]:
        """The environment variables that make :meth:`from_env` return this context.

        Useful to start a subprocess of the same job. Contains the credential's secret:
        pass it to a process, never print it.
        """
        env = job_environment(
            organization_id=self.organization_id,
            job_definition_name=self.job_definition_name,
            job_definition_version=self.job_definition_version,
            training_job_id=self.training_job_id,
            api_url=self.api_url,
            handler=self.handler,
            datasets=self.datasets,
            context={k: v for k, v in self.context.items() if k != "datasets"},
            result_dir=self.result_dir,
            storage_dir=self.storage_dir,
        )
        env.update(self.credential.as_env())
        return env

    def create_client(
        self, *, timeout: float | None = None, max_retry_count: int | None = None
    ) -> APIClient:
        """An :class:`~abeja_runtime.api.client.APIClient` for this job's API and credential."""
        from .api.client import APIClient

        return APIClient(self.credential, timeout, max_retry_count, base_url=self.api_url)


def job_environment(
    *,
    organization_id: str,
    job_definition_name: str,
    job_definition_version: int | str,
    training_job_id: str,
    api_url: str,
    handler: str | None = None,
    datasets: Mapping[str, str] | None = None,
    context: Mapping[str, Any] | None = None,
    result_dir: str | os.PathLike[str] | None = None,
    storage_dir: str | os.PathLike[str] | None = None,
) -> dict[str, str]:
    """The variables the platform sets inside a training job, but the credential.

    The one place they are built: :meth:`JobContext.as_env`, the runner's child
    process and the emulator's :meth:`~abeja_runtime.emulator.Emulator.job_environment`
    all use it. ``HANDLER`` and the two directories are left out when ``None``.
    """
    env = {
        ENV_ORGANIZATION_ID: organization_id,
        ENV_JOB_DEFINITION_NAME: job_definition_name,
        ENV_JOB_DEFINITION_VERSION: str(job_definition_version),
        ENV_TRAINING_JOB_ID: training_job_id,
        ENV_API_URL: api_url,
        ENV_DATASETS: json.dumps(dict(datasets or {}), separators=(",", ":")),
        ENV_CONTEXT: json.dumps(dict(context or {}), separators=(",", ":")),
    }
    if handler is not None:
        env[ENV_HANDLER] = handler
    if result_dir is not None:
        env[ENV_RESULT_DIR] = str(result_dir)
    if storage_dir is not None:
        env[ENV_STORAGE_DIR] = str(storage_dir)
    return env


def _describe(missing: list[str], invalid: Mapping[str, str]) -> str:
    lines = ["not running inside an ABEJA Platform training job, or its environment is incomplete:"]
    if missing:
        lines.append("  missing: " + ", ".join(missing))
    for name, why in invalid.items():
        lines.append(f"  malformed: {name} {why}")
    lines.append(_HOW_TO_RUN_LOCALLY)
    return "\n".join(lines)
