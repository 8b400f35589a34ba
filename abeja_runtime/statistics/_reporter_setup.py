"""How a :class:`~abeja_runtime.statistics.reporter.StatisticsReporter` is set up from its arguments and env.

Where documents go (the job's API, else a JSON-lines file), whether the job's spool is
on and where, and the timeouts: decided once, when a reporter is made, so that a
malformed setting is an error at that line (naming the variable), never later.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

from ..config import ENV_STATISTICS_FILE, env_float
from ..errors import ConfigurationError
from ..job import ENV_RESULT_DIR, JobContext
from .sinks import DEFAULT_STATISTICS_FILE_NAME, APISink, JSONLinesSink, StatisticsSink
from .spool import Spool, default_spool_dir, spool_enabled

__all__ = ["ENV_STATISTICS_FILE", "default_sink", "default_spool", "positive"]


logger = logging.getLogger("abeja_runtime.reporter")


def positive(name: str, value: float | None, env_name: str, default: float) -> float:
    """``value`` checked (>= 0, finite), or the variable ``env_name`` when None."""
    if value is None:
        return env_float(env_name, default, minimum=0.0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ConfigurationError(f"{name} must be a number >= 0, got {value!r}")
    if not math.isfinite(value):
        raise ConfigurationError(f"{name} must be finite, got {value!r}")
    return float(value)


def default_spool(
    sink: StatisticsSink,
    spool: bool | None,
    spool_dir: str | os.PathLike[str] | None,
    context: JobContext | None,
) -> Spool | None:
    """The on-disk spool: on by default when reporting to a job's API.

    Nothing touches the disk here: a spool that cannot be written later is logged
    once and reporting goes on from memory.
    """
    if context is None and isinstance(sink, APISink):
        context = sink.context
    if spool is None:
        spool = spool_dir is not None or (context is not None and spool_enabled())
    if not spool:
        return None
    if spool_dir is None and context is None:
        raise ConfigurationError(
            "spool=True needs spool_dir outside a training job (no job id to name it)"
        )
    job = None
    if context is not None:
        job = {
            "organization_id": context.organization_id,
            "job_definition_name": context.job_definition_name,
            "training_job_id": context.training_job_id,
        }
    directory = (
        Path(spool_dir) if spool_dir is not None else default_spool_dir(context.training_job_id)  # type: ignore[union-attr]
    )
    return Spool(directory, job=job)


def default_sink(context: JobContext | None, request_timeout: float) -> StatisticsSink:
    if context is not None:
        return APISink(context, timeout=request_timeout)
    problem = ""
    try:
        return APISink(JobContext.from_env(), timeout=request_timeout)
    except ConfigurationError as exc:
        if JobContext.looks_like_job():
            problem = f"{exc}\n"
    file_name = os.environ.get(ENV_STATISTICS_FILE, "").strip()
    if file_name:
        path = Path(file_name)
    else:
        path = Path(os.environ.get(ENV_RESULT_DIR, "").strip() or ".")
        path = path / DEFAULT_STATISTICS_FILE_NAME
    file_sink = JSONLinesSink(path)
    if problem:
        logger.warning("%sstatistics are written to %s instead", problem, file_sink.path)
    else:
        logger.warning(
            "not running in an ABEJA Platform training job (TRAINING_JOB_ID is not set): "
            "statistics are written to %s",
            file_sink.path,
        )
    return file_sink
