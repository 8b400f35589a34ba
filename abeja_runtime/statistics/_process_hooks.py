"""Process-wide hooks of the reporters: exit, SIGTERM, fork, and one shutdown budget.

Why one module: these hooks belong to the process, not to a reporter. One SIGTERM
handler serves every reporter, whichever thread made it (a handler can only be
installed from the main thread, so ``import abeja_runtime`` installs it inside a
job, before any training thread runs); one exit hook flushes every reporter and
delivers an earlier process's leftovers even when this one never reported; and one
:data:`BUDGET` makes the flushes at SIGTERM, at exit and explicit ones share a single
deadline, so a stopped job is done well inside the platform's 25 s grace whatever the
script does with its own handlers.

The last line a stopping or exiting process logs says which of three it is (see
:func:`log_outcome`): all delivered; N snapshots kept in the spool at PATH, sent by
the next start of this job or ``abeja-runtime sync``; or N snapshots lost because the
disk refused them (and why).

This module is imported by ``import abeja_runtime``: it imports nothing heavy.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
import time
import weakref
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from ..config import (
    ENV_EXIT_TIMEOUT,
    ENV_HANDLE_SIGTERM,
    ENV_SIGTERM_TIMEOUT,
    ENV_TRAINING_JOB_ID,
    env_flag,
    env_float,
)
from ..errors import ConfigurationError

if TYPE_CHECKING:
    from .reporter import StatisticsReporter

__all__ = [
    "BUDGET",
    "DEFAULT_EXIT_TIMEOUT",
    "DEFAULT_SIGTERM_TIMEOUT",
    "ENV_EXIT_TIMEOUT",
    "ENV_HANDLE_SIGTERM",
    "ENV_SIGTERM_TIMEOUT",
    "ShutdownBudget",
    "at_import",
    "install_sigterm",
    "log_outcome",
    "register",
    "register_hooks",
    "unregister",
]

DEFAULT_EXIT_TIMEOUT = 10.0
DEFAULT_SIGTERM_TIMEOUT = 20.0
#: a flush made when the budget is spent still tries this long (one quick post)
_LAST_TRY = 0.25

logger = logging.getLogger("abeja_runtime.reporter")


class ShutdownBudget:
    """One deadline for every flush of a stopping process.

    The budget starts when the process starts stopping (:meth:`begin`: SIGTERM, or
    interpreter exit) and is never extended: a SIGTERM flush followed by the script's
    own ``sys.exit`` and the exit flush all end by the same deadline. An explicit
    flush that timed out counts too (:meth:`flush_failed`): the exit flush that
    follows gets what is left of that flush's time, not a fresh ``exit_timeout``,
    until something is delivered again (:meth:`delivered`).
    """

    def __init__(self) -> None:
        self._deadline: float | None = None
        self._failed_since: float | None = None

    @property
    def stopping(self) -> bool:
        """True once the process started stopping."""
        return self._deadline is not None

    def begin(self, seconds: float) -> float:
        """The process starts stopping: the shared deadline (set once, never later)."""
        now = time.monotonic()
        deadline = now + seconds
        if self._failed_since is not None:
            deadline = min(deadline, self._failed_since + seconds)
        if self._deadline is None or deadline < self._deadline:
            self._deadline = max(deadline, now)
        return self._deadline

    def deadline(self, wanted: float) -> float:
        """The deadline of a flush that wants to end by ``wanted`` (monotonic)."""
        if self._deadline is None:
            return wanted
        return min(wanted, max(self._deadline, time.monotonic() + _LAST_TRY))

    def flush_failed(self, started: float) -> None:
        """A flush that started at ``started`` ended with something undelivered."""
        if self._failed_since is None:
            self._failed_since = started

    def delivered(self) -> None:
        """The API took a post: the budget of a later exit flush is whole again."""
        if self._failed_since is not None and self._deadline is None:
            self._failed_since = None

    def reset(self) -> None:
        """Forget everything (a forked child starts afresh)."""
        self._deadline = None
        self._failed_since = None


BUDGET = ShutdownBudget()

_REPORTERS: weakref.WeakSet[StatisticsReporter] = weakref.WeakSet()
_registered = False
_prev_sigterm: Any = None
_sigterm_installed = False
_in_sigterm = False
_IN_FORKED_CHILD = False


def register(reporter: StatisticsReporter) -> None:
    """Let the process hooks flush ``reporter`` (at exit, on SIGTERM) and fork-reset it."""
    register_hooks()
    _REPORTERS.add(reporter)


def unregister(reporter: object) -> None:
    """``reporter`` was closed."""
    _REPORTERS.discard(reporter)  # type: ignore[arg-type]


def register_hooks() -> None:
    """Register the exit flush and the fork hook, once per process."""
    global _registered
    if _registered:
        return
    _registered = True
    atexit.register(_at_exit)
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_after_fork_in_child)


def in_forked_child() -> bool:
    """True in a child forked from a process that had loaded the reporter."""
    return _IN_FORKED_CHILD


def _after_fork_in_child() -> None:
    global _IN_FORKED_CHILD
    _IN_FORKED_CHILD = True
    BUDGET.reset()
    for reporter in list(_REPORTERS):
        reporter._after_fork_in_child()
    from . import _default_reporter

    _default_reporter._after_fork_in_child()


# ---------------------------------------------------------------------- SIGTERM


def install_sigterm() -> bool:
    """Install the process's SIGTERM flush (once; main thread only). True when installed.

    A handler installed from C (``getsignal`` gives None) cannot be chained: it is
    left alone, and only the exit flush runs.
    """
    global _prev_sigterm, _sigterm_installed
    if _sigterm_installed:
        return True
    if threading.current_thread() is not threading.main_thread():
        logger.debug("not on the main thread: the SIGTERM flush is not installed here")
        return False
    try:
        previous = signal.getsignal(signal.SIGTERM)
        if previous is None:
            logger.debug("SIGTERM has a handler installed from C: no SIGTERM flush")
            return False
        _prev_sigterm = previous
        signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError) as exc:  # embedded interpreters, odd platforms
        logger.debug("cannot install a SIGTERM handler: %s", exc)
        return False
    register_hooks()
    _sigterm_installed = True
    return True


def _sigterm_budget() -> float:
    try:
        return env_float(ENV_SIGTERM_TIMEOUT, DEFAULT_SIGTERM_TIMEOUT, minimum=0.0)
    except ConfigurationError:
        return DEFAULT_SIGTERM_TIMEOUT


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    """Flush every reporter within the budget, say what became of it, then chain."""
    global _in_sigterm
    if not _in_sigterm:
        _in_sigterm = True
        try:
            reporters = [r for r in list(_REPORTERS) if r.handle_sigterm and r.enabled]
            seconds = max([r.sigterm_timeout for r in reporters] or [_sigterm_budget()])
            BUDGET.begin(seconds)
            for reporter in reporters:
                try:
                    delivered = reporter.flush(reporter.sigterm_timeout)
                    reporter.final_line(
                        "SIGTERM:"
                        if delivered
                        else f"SIGTERM: statistics not fully delivered within {seconds:g} s;",
                        delivered,
                    )
                except Exception:  # pragma: no cover - never fail the stop
                    logger.exception("flushing statistics on SIGTERM failed")
        finally:
            _in_sigterm = False
    previous = _prev_sigterm
    if callable(previous):
        previous(signum, frame)
    elif previous == signal.SIG_IGN:
        return
    else:  # SIG_DFL (or unknown): die of SIGTERM as if we had never been here
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)


# ---------------------------------------------------------------------- exit


def _at_exit() -> None:
    """Bounded flush of every live reporter when the interpreter exits."""
    for reporter in list(_REPORTERS):
        if not (reporter.flush_at_exit and reporter.enabled):
            continue
        try:
            BUDGET.begin(reporter.exit_timeout)
            delivered = reporter.close(reporter.exit_timeout)
            reporter.final_line(
                "at exit:"
                if delivered
                else f"at exit: statistics not fully delivered within {reporter.exit_timeout:g} s;",
                delivered,
            )
        except Exception:  # pragma: no cover - never fail interpreter exit
            logger.exception("flushing statistics at exit failed")


def _deliver_leftovers_at_exit() -> None:
    """Exit hook of a job process that never reported: send an earlier one's leftovers."""
    if _IN_FORKED_CHILD:
        return
    from . import _default_reporter

    if _default_reporter._default is not None:
        return  # its reporter is flushed by _at_exit
    try:
        reporter = _default_reporter.get_reporter()
    except Exception:  # pragma: no cover - never fail interpreter exit
        logger.exception("cannot create the statistics reporter at exit")
        return
    if reporter.enabled and reporter.flush_at_exit and reporter not in _REPORTERS:
        register(reporter)
    if reporter.enabled:
        _at_exit()


def job_spool_with_leftovers(environ: Any = None) -> Path | None:
    """The spool of the job in the environment when it holds undelivered records."""
    env = os.environ if environ is None else environ
    job_id = env.get(ENV_TRAINING_JOB_ID, "").strip()
    if not job_id:
        return None
    from .spool import default_spool_dir, has_leftovers, spool_enabled

    try:
        if not spool_enabled(env):
            return None
    except ConfigurationError:
        return None
    directory = default_spool_dir(job_id, env)
    return directory if has_leftovers(directory) else None


def at_import() -> None:
    """Run by ``import abeja_runtime``: inside a job, hooks that must not wait.

    Installs the SIGTERM flush now (while on the main thread, so that it works
    whichever thread reports first), and, when an earlier process of this job left
    records in the spool, an exit hook that sends them even if this process never
    reports. Outside a job it does nothing. Never raises.
    """
    try:
        if not os.environ.get(ENV_TRAINING_JOB_ID, "").strip():
            return
        try:
            handle = env_flag(ENV_HANDLE_SIGTERM, True)
        except ConfigurationError:
            handle = False  # the reporter names the variable when it is made
        if handle:
            install_sigterm()
        if job_spool_with_leftovers() is not None:
            atexit.register(_deliver_leftovers_at_exit)
    except Exception:  # pragma: no cover - an import must never fail for this
        logger.debug("abeja_runtime import hooks failed", exc_info=True)


# ---------------------------------------------------------------------- the last line


def log_outcome(
    when: str,
    delivered: bool,
    *,
    kept: int,
    spool_dir: Path | None,
    lost: int,
    disk_error: str | None,
    description: str,
) -> None:
    """Log the last line: all delivered, kept in the spool (and how to send it), or lost."""
    if lost:
        why = (
            f"the disk refused them ({disk_error})"
            if disk_error
            else "no spool keeps them (ABEJA_RUNTIME_SPOOL is off or this is not a job)"
        )
        logger.warning("%s statistics: %d snapshot(s) lost because %s", when, lost, why)
    if kept:
        logger.warning(
            "%s statistics: %d snapshot(s) kept in the spool at %s; they are sent by the next "
            "start of this job or by `abeja-runtime sync --dir %s`",
            when,
            kept,
            spool_dir,
            spool_dir,
        )
    if not lost and not kept:
        if delivered:
            logger.info("%s statistics: all delivered to %s", when, description)
        else:
            logger.warning("%s the latest statistics were not delivered to %s", when, description)
