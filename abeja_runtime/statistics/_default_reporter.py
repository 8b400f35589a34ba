"""The process-wide reporter behind ``abeja_runtime.report()``/``flush()``/``close()``.

Created on first use from the environment, never raising into the training loop: a
malformed environment variable is logged (naming the variable) and the defaults are
used. In a forked child or a DataLoader worker it is a disabled reporter, so that
workers neither post nor deadlock on a lock held at fork time.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..config import ENV_TRAINING_JOB_ID, env_flag
from ..errors import ConfigurationError
from . import _process_hooks

if TYPE_CHECKING:
    from . import Statistics
    from .reporter import StatisticsReporter
    from .sysmetrics import SystemMetrics

__all__ = ["close", "flush", "get_reporter", "report", "set_reporter"]

logger = logging.getLogger("abeja_runtime.reporter")

_default: StatisticsReporter | None = None
_default_lock = threading.Lock()
_FORKED = False


def _after_fork_in_child() -> None:
    global _default_lock, _FORKED
    _FORKED = True
    _default_lock = threading.Lock()


def _torch_dataloader_worker() -> bool:
    data = sys.modules.get("torch.utils.data")
    info = getattr(data, "get_worker_info", None)
    try:
        return callable(info) and info() is not None
    except Exception:
        return False


def _quiet_settings() -> dict[str, Any]:
    from .reporter import (
        DEFAULT_EXIT_TIMEOUT,
        DEFAULT_MIN_INTERVAL,
        DEFAULT_REQUEST_TIMEOUT,
        DEFAULT_SIGTERM_TIMEOUT,
    )

    return {
        "min_interval": DEFAULT_MIN_INTERVAL,
        "exit_timeout": DEFAULT_EXIT_TIMEOUT,
        "sigterm_timeout": DEFAULT_SIGTERM_TIMEOUT,
        "request_timeout": DEFAULT_REQUEST_TIMEOUT,
    }


def _spool_setting() -> bool | None:
    """``spool=`` for the fallback reporter: the variable, or its default when malformed."""
    from .spool import spool_enabled

    try:
        spool_enabled()
    except ConfigurationError:
        return bool(os.environ.get(ENV_TRAINING_JOB_ID, "").strip()) or None
    return None


def _disabled_reporter(reason: str) -> StatisticsReporter:
    """A reporter that ignores reports, made without side effects (no file, no handler)."""
    from .reporter import StatisticsReporter
    from .sinks import MemorySink

    reporter = StatisticsReporter(
        sink=MemorySink(), handle_sigterm=False, flush_at_exit=False, **_quiet_settings()
    )
    reporter._disable(reason)
    return reporter


def _in_job() -> bool:
    """Whether this process runs as a training job (system metrics are on there)."""
    from ..job import JobContext

    return JobContext.looks_like_job()


def _system_metrics(wanted: bool) -> SystemMetrics | bool:
    """``system_metrics=`` for the default reporter; a malformed interval keeps them on.

    Metrics are extra: a bad ``ABEJA_RUNTIME_SYSTEM_METRICS_INTERVAL`` is one ERROR line
    naming the variable and the default interval, never a reporter without statistics.
    """
    if not wanted:
        return False
    from .sysmetrics import DEFAULT_INTERVAL, SystemMetrics

    try:
        return SystemMetrics()
    except ConfigurationError as exc:
        logger.error("%s; system metrics are sampled every %g s", exc, DEFAULT_INTERVAL)
        return SystemMetrics(interval=DEFAULT_INTERVAL)


def _create_default() -> StatisticsReporter:
    """The default reporter; never raises (it is made inside the training loop)."""
    from ..config import ENV_SYSTEM_METRICS
    from .reporter import StatisticsReporter

    if _FORKED or _process_hooks.in_forked_child():
        return _disabled_reporter("forked child process: the parent process posts statistics")
    if _torch_dataloader_worker():
        return _disabled_reporter("DataLoader worker: the training process posts statistics")
    try:
        try:
            return StatisticsReporter(
                system_metrics=_system_metrics(env_flag(ENV_SYSTEM_METRICS, _in_job())),
                handle_sigterm=env_flag(_process_hooks.ENV_HANDLE_SIGTERM, True),
            )
        except ConfigurationError as exc:
            logger.error("%s; the statistics reporter uses its default settings", exc)
            return StatisticsReporter(**_quiet_settings(), spool=_spool_setting())
    except Exception as exc:  # pragma: no cover - a bug must not reach the training loop
        logger.exception("cannot create the statistics reporter; statistics are not sent")
        return _disabled_reporter(f"could not be created: {exc}")


def get_reporter() -> StatisticsReporter:
    """The process-wide reporter, created on first use from the environment.

    Inside a training job it posts to the job's statistics; outside one it writes a
    JSON-lines file in the result dir (one log line says where). In a forked child or
    a DataLoader worker it is disabled.
    """
    global _default
    reporter = _default
    if reporter is not None:
        return reporter
    with _default_lock:
        if _default is None:
            _default = _create_default()
        return _default


def default_last_document() -> dict[str, Any] | None:
    """The process-wide reporter's last document; None when there is no such reporter.

    Never creates the reporter: :func:`~abeja_runtime.artifacts.models.upload_model`
    takes this as the model's metrics when the job reported statistics.
    """
    reporter = _default
    if reporter is None:
        return None
    document = reporter.last_document
    return dict(document) if document else None


def set_reporter(reporter: StatisticsReporter | None) -> StatisticsReporter | None:
    """Make ``reporter`` the process-wide one (None: create anew on next use).

    Returns the previous one, which is not closed.
    """
    global _default
    with _default_lock:
        previous, _default = _default, reporter
    return previous


if TYPE_CHECKING:  # the typed signature, for type checkers and IDEs

    def report(
        statistics: Statistics | Mapping[str, Any] | None = None,
        *,
        epoch: int | None = None,
        num_epochs: int | None = None,
        progress: float | None = None,
        epoch_end: bool = False,
        **values: Any,
    ) -> None:
        """Report statistics through the process-wide reporter."""

else:

    def report(statistics=None, **values):
        """Report statistics through the process-wide reporter (see ``StatisticsReporter.report``).

        Takes the same arguments as :meth:`StatisticsReporter.report`. They are passed
        on as one mapping rather than named one by one: this call sits in the training
        loop's hot path, and re-binding each keyword cost a quarter of its time.

        Raises:
            StatisticsError: for a value the platform refuses. Nothing else is raised.
        """
        reporter = _default
        if reporter is None:
            reporter = get_reporter()
        reporter.report(statistics, **values)


def flush(timeout: float | None = None) -> bool:
    """Flush the process-wide reporter (see ``StatisticsReporter.flush``).

    With no reporter yet, True, unless an earlier process of this job left records in
    the spool: then the reporter is made and they are sent now.
    """
    reporter = _default
    if reporter is None:
        if _process_hooks.job_spool_with_leftovers() is None:
            return True
        reporter = get_reporter()
    return reporter.flush(timeout)


def close(timeout: float | None = None) -> bool:
    """Close the process-wide reporter (flushing it); the next report makes a new one."""
    reporter = set_reporter(None)
    return True if reporter is None else reporter.close(timeout)
