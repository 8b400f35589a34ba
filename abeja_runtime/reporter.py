"""Report training statistics from the loop without ever slowing it down.

``report()`` only records: it checks the values' *types* (never their data), merges
them into the job's current statistics document in place, and returns, in about a
microsecond. One background *sender* thread does everything else: when a post is due it
copies the document (under the same lock, for about a microsecond), converts the values
(this is where a CUDA tensor is read, so the training thread never waits for the GPU),
posts, retries and throttles. The training thread never encodes JSON, never does I/O
and never waits on the network; the lock it takes is never held across I/O.

Example::

    import abeja_runtime

    for epoch in range(num_epochs):
        for step, batch in enumerate(loader):
            loss = train_step(batch)  # a CUDA tensor is fine: it is read later
            abeja_runtime.report(
                epoch=epoch,
                num_epochs=num_epochs,
                progress=(epoch * len(loader) + step + 1) / (num_epochs * len(loader)),
                train={"loss": loss},
            )
        abeja_runtime.report(validation={"loss": val_loss, "accuracy": val_acc}, epoch_end=True)

Delivery rules:

* **Step-level** snapshots (the default) are throttled to one post per
  ``min_interval``; a newer one replaces an older one that is still waiting (latest
  wins, counted as *coalesced*), so memory stays flat however often ``report()`` is
  called and however long the API is down.
* **Epoch-end** snapshots (``report(..., epoch_end=True)``) are never coalesced: each
  is posted, in order, as soon as the API takes it (they do not wait for
  ``min_interval``, or a fast run would fall ever further behind). They queue while
  the API is down, up to ``max_pending_epoch_ends`` (then the oldest is dropped and
  counted); a durable on-disk spool can be plugged in through ``journal``.
* The server never receives an older snapshot after a newer one: a step snapshot that
  an epoch-end snapshot overtook is dropped, not sent late.
* Failures: 429 and 5xx answers, timeouts and refused connections are retried with
  exponential backoff and the server's ``Retry-After``; other 4xx answers are
  permanent: logged once with the server's message, the snapshot dropped, later ones
  still tried. Nothing is ever raised into the training loop, except
  :class:`~abeja_runtime.errors.StatisticsError` for a value that can never be sent
  (``strict=True``, the default, so that a typo shows at the line that made it; with
  ``strict=False`` such a report is logged once and ignored).
* :meth:`StatisticsReporter.flush` sends what is waiting at once and waits (bounded);
  it also runs at interpreter exit and on SIGTERM (within the platform's 25 s grace
  period, then the previous handler runs, or the process ends with SIGTERM's default).

Process rules: only global rank 0 of a distributed run posts (other ranks' ``report()``
is a cheap no-op); in a forked child (a DataLoader worker) every reporter that existed
before the fork is disabled, and the process-wide default one stays disabled, so that
workers neither post nor deadlock on a lock held at fork time.

Durability: inside a job, must-deliver snapshots (epoch ends, and the latest step
document when ``flush()`` runs, at exit or on SIGTERM) are also written to an on-disk
spool (:mod:`abeja_runtime.spool`) before ``report()``/``flush()`` returns, and removed
once the server took them. The write encodes the document to JSON on the training
thread, which reads tensor values (a CUDA sync) at epoch ends only; step reports never
touch the spool. A restarted process of the same job sends what is left first, in
order, retried like any epoch end; several processes of one job share the spool and
exactly one of them sends; ``abeja-runtime sync`` sends a leftover spool by hand. A
:class:`SnapshotJournal` (``journal=``) sees each must-deliver snapshot before
``report()`` returns (``record``), after the server took it (``acknowledge``), and may
hand back what an earlier process left (``replay``: posted first, kept until
delivered); a :class:`RoutingJournal` (the spool) also decides the order of the job's
records across processes.

Outside a training job nothing fails: snapshots go to a JSON-lines file in the result
dir and one log line says where.

Environment variables (read when a reporter is created):

``ABEJA_RUNTIME_REPORT_INTERVAL``
    ``min_interval`` in seconds, default 5.
``ABEJA_RUNTIME_EXIT_TIMEOUT``
    seconds the flush at interpreter exit (and ``flush()`` without a timeout) may
    take, default 10.
``ABEJA_RUNTIME_SIGTERM_TIMEOUT``
    seconds the flush on SIGTERM may take, default 20 (the platform kills 25 s after
    SIGTERM).
``ABEJA_RUNTIME_REPORT_TIMEOUT``
    connect/read timeout of one post, seconds, default 10.
``ABEJA_RUNTIME_SYSTEM_METRICS``
    ``1``/``true`` adds CPU/memory/GPU metrics to the default reporter's documents.
``ABEJA_RUNTIME_STATISTICS_FILE``
    outside a job, the JSON-lines file (default ``<result dir>/statistics.jsonl``).
``ABEJA_RUNTIME_HANDLE_SIGTERM``
    ``0``/``false`` stops the default reporter from installing its SIGTERM handler
    (for a program that must die at once on SIGTERM even inside a long C call, or that
    manages signals itself and calls ``flush()``); default on.
``ABEJA_RUNTIME_SPOOL``
    ``0``/``false`` turns the on-disk spool off (default on when reporting to a job).
``ABEJA_RUNTIME_SPOOL_DIR``
    root of the spools, one directory per job id (default
    ``<ABEJA_STORAGE_DIR_PATH, else ABEJA_TRAINING_RESULT_DIR, else .>/.abeja-runtime/spool``).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import math
import os
import signal
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import FrameType
from typing import Any, NamedTuple, Protocol, runtime_checkable

from .config import env_float
from .errors import APIConnectionError, ConfigurationError, HttpError, StatisticsError
from .job import ENV_RESULT_DIR, JobContext, rank_info
from .jsonsafe import is_tensor_like, to_json_safe
from .retry import RetryPolicy
from .sinks import (
    DEFAULT_STATISTICS_FILE_NAME,
    APISink,
    JSONLinesSink,
    MemorySink,
    StatisticsSink,
)
from .statistics import Statistics, check_document, check_epoch, check_progress, check_value
from .sysmetrics import SYSTEM_METRICS_KEY, SystemMetrics

__all__ = [
    "DEFAULT_EXIT_TIMEOUT",
    "DEFAULT_MAX_PENDING_EPOCH_ENDS",
    "DEFAULT_MIN_INTERVAL",
    "DEFAULT_REQUEST_TIMEOUT",
    "DEFAULT_SIGTERM_TIMEOUT",
    "ENV_EXIT_TIMEOUT",
    "ENV_HANDLE_SIGTERM",
    "ENV_REPORT_INTERVAL",
    "ENV_REPORT_TIMEOUT",
    "ENV_SIGTERM_TIMEOUT",
    "ENV_STATISTICS_FILE",
    "ENV_SYSTEM_METRICS",
    "JournalRoute",
    "RoutingJournal",
    "Snapshot",
    "SnapshotJournal",
    "StatisticsReporter",
    "close",
    "flush",
    "get_reporter",
    "report",
    "set_reporter",
]

ENV_REPORT_INTERVAL = "ABEJA_RUNTIME_REPORT_INTERVAL"
ENV_EXIT_TIMEOUT = "ABEJA_RUNTIME_EXIT_TIMEOUT"
ENV_SIGTERM_TIMEOUT = "ABEJA_RUNTIME_SIGTERM_TIMEOUT"
ENV_REPORT_TIMEOUT = "ABEJA_RUNTIME_REPORT_TIMEOUT"
ENV_SYSTEM_METRICS = "ABEJA_RUNTIME_SYSTEM_METRICS"
ENV_HANDLE_SIGTERM = "ABEJA_RUNTIME_HANDLE_SIGTERM"
ENV_STATISTICS_FILE = "ABEJA_RUNTIME_STATISTICS_FILE"

DEFAULT_MIN_INTERVAL = 5.0
DEFAULT_EXIT_TIMEOUT = 10.0
DEFAULT_SIGTERM_TIMEOUT = 20.0
DEFAULT_REQUEST_TIMEOUT = 10.0
DEFAULT_MAX_PENDING_EPOCH_ENDS = 10_000

#: Backoff and Retry-After rules shared with the client (abeja_runtime.retry). The
#: reporter retries for as long as the process lives (each try is one small post, and
#: newer snapshots replace what is retried), so: no retry count, a 30 s backoff ceiling
#: (an outage's end is noticed within 30 s), a server's Retry-After honoured up to 5 min.
_RETRY = RetryPolicy(max_retries=0, backoff_max=30.0, retry_after_max=300.0)
#: also retried for statistics (a post replaces the document, so a repeat is harmless):
#: 408 Request Timeout, and 500 a few times (it may be an outage, or a bug this very
#: snapshot triggers, which must not block every later snapshot)
_EXTRA_STATUSES = frozenset({408, 500})
_MAX_500_TRIES = 5
#: how long the idle sender sleeps before looking again (it is woken when work arrives)
_IDLE_WAIT = 5.0
#: how often a sender with a shared spool looks for records of other processes, and a
#: process that is not the spool's sender for its records' delivery (one fstat/pread)
_SPOOL_POLL = 0.2
#: how long the sender waits for the report lock before trying again later (it is held
#: for microseconds, unless a signal handler interrupted report() on the main thread)
_LOCK_WAIT = 0.05

logger = logging.getLogger(__name__)

#: values the hot path accepts without a closer look (checked by exact type)
_PLAIN_TYPES = frozenset({float, int, str, bool, type(None)})
#: keyword names with a meaning of their own, handled by the full check
_RESERVED = frozenset({"stages", "progress_percentage"})


class Snapshot(NamedTuple):
    """One complete statistics document as it stood after a ``report()`` call.

    The document is the snapshot's own copy (reports merge into the reporter's current
    document, never into a snapshot), so the sender reads it without a lock. Values are
    as reported (tensors not read yet).

    Attributes:
        seq: position in this reporter's report order (1, 2, ...).
        document: the merged statistics document.
        epoch_end: True for a must-deliver (epoch-end) snapshot.
        created: wall-clock time (``time.time()``) of the report for an epoch-end
            snapshot; of the sender taking it for a step snapshot (not worth a clock
            read on the hot path).
    """

    seq: int
    document: dict[str, Any]
    epoch_end: bool
    created: float


class SnapshotJournal(Protocol):
    """Durable storage for must-deliver snapshots (the on-disk spool plugs in here).

    Contract: :meth:`record` runs on the reporting thread before ``report()`` returns,
    for epoch-end snapshots only, so it must be cheap (an append, no fsync) and must
    not read tensor values. :meth:`acknowledge` runs on the sender thread once the
    server accepted the snapshot or refused it for good. :meth:`replay` runs once on the
    sender thread before anything else is sent; what it returns is posted first, in
    order.
    """

    def record(self, snapshot: Snapshot) -> None: ...

    def acknowledge(self, snapshot: Snapshot) -> None: ...

    def replay(self) -> Iterable[dict[str, Any]]: ...


class JournalRoute(NamedTuple):
    """What a :class:`RoutingJournal` tells the sender to do next about epoch ends.

    Attributes:
        action: ``"post_head"``: post the reporter's oldest epoch-end snapshot, then
            ``acknowledge`` it; ``"post_record"``: post ``document`` (another process's
            record, or one an earlier process left) first, then ``acknowledge_record(key)``;
            ``"settled"``: another process delivered the oldest snapshot; ``"wait"``:
            another process is the sender and has not delivered it yet (ask again
            shortly); ``"none"``: nothing to send.
        document: the JSON-safe document for ``post_record``.
        key: what to pass to ``acknowledge_record``.
        created: wall-clock time of that record's report.
    """

    action: str
    document: dict[str, Any] | None = None
    key: Any = None
    created: float = 0.0


@runtime_checkable
class RoutingJournal(Protocol):
    """A journal shared by several processes, with one sender (the on-disk spool).

    Besides :class:`SnapshotJournal`'s ``record``/``acknowledge``, the sender thread asks
    :meth:`route` before each epoch-end post, so that records of every process of the
    job go out in the journal's order, exactly one process sending at a time.
    """

    def record(self, snapshot: Snapshot) -> None: ...

    def acknowledge(self, snapshot: Snapshot) -> None: ...

    def acknowledge_record(self, key: Any) -> None: ...

    def route(self, head: Snapshot | None) -> JournalRoute: ...

    def sync(self) -> None: ...

    def close(self) -> None: ...


class _Wakeup:
    """A binary semaphore whose :meth:`set` never blocks.

    ``threading.Event.set()`` takes a lock; called from a signal handler that
    interrupted the same thread inside ``Event.set()``, it would deadlock. A plain
    ``Lock`` used as "unlocked = signalled" can be released from any thread or handler
    without waiting, and costs about 100 ns.
    """

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()

    def set(self) -> None:
        with contextlib.suppress(RuntimeError):  # already signalled
            self._lock.release()

    def wait(self, timeout: float) -> bool:
        """Sleep until signalled or ``timeout`` seconds; True when signalled (consumes it)."""
        return self._lock.acquire(timeout=max(0.0, min(timeout, threading.TIMEOUT_MAX)))


def _env_flag(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    return raw in ("1", "true", "yes", "on")


def _positive(name: str, value: float | None, env_name: str, default: float) -> float:
    if value is None:
        return env_float(env_name, default, minimum=0.0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ConfigurationError(f"{name} must be a number >= 0, got {value!r}")
    if not math.isfinite(value):
        raise ConfigurationError(f"{name} must be finite, got {value!r}")
    return float(value)


def _freeze_tensors(value: Any) -> Any:
    """Copy mutable tensors/arrays in a must-deliver document (no device sync).

    A step-level snapshot may see a tensor the loop later changes in place; for an
    epoch-end snapshot, which is kept until sent, the values of *that* epoch matter,
    so each tensor is cloned (an asynchronous device copy) at report time.
    """
    if isinstance(value, dict):
        return {key: _freeze_tensors(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_freeze_tensors(item) for item in value]
    if is_tensor_like(value):
        clone = getattr(value, "clone", None)
        if callable(clone):
            return clone()
        copy = getattr(value, "copy", None)
        if callable(copy):
            return copy()
    return value


def _copy_document(document: dict[str, Any]) -> dict[str, Any]:
    """A copy that later in-place merges cannot change: the top level and each stage.

    Other values are never modified in place after a report (they are replaced), so
    sharing them is safe.
    """
    copy = dict(document)
    stages = copy.get("stages")
    if type(stages) is dict:
        copy["stages"] = {name: dict(stage) for name, stage in stages.items()}
    return copy


def _convert(document: Mapping[str, Any], warned: set[str]) -> dict[str, Any]:
    """The document as JSON values; a value that fails to convert is left out and logged.

    Values passed the call-site type check, so this almost never drops anything; but a
    tensor on a failed device must not stop every later post.
    """
    try:
        converted: dict[str, Any] = to_json_safe(document)
        return converted
    except StatisticsError:
        pass
    out: dict[str, Any] = {}
    for key, value in document.items():
        if key == "stages" and isinstance(value, Mapping):
            stages: dict[str, Any] = {}
            for name, stage in value.items():
                converted_stage: dict[str, Any] = {}
                for metric, item in stage.items():
                    path = f"stages.{name}.{metric}"
                    with contextlib.suppress(StatisticsError):
                        converted_stage[metric] = to_json_safe(item, path)
                        continue
                    _warn_once(
                        warned, path, "statistics value %s could not be converted; left out", path
                    )
                stages[name] = converted_stage
            out[key] = stages
            continue
        try:
            out[key] = to_json_safe(value, key)
        except StatisticsError:
            _warn_once(warned, key, "statistics value %s could not be converted; left out", key)
    return out


def _warn_once(seen: set[str], key: str, message: str, *args: Any) -> None:
    """Log at WARNING the first time ``key`` is seen, at DEBUG after that (no log floods)."""
    if key in seen:
        logger.debug(message, *args)
    else:
        seen.add(key)
        logger.warning(message, *args)


_REPORTERS: weakref.WeakSet[StatisticsReporter] = weakref.WeakSet()
_IN_FORKED_CHILD = False


class StatisticsReporter:
    """Posts a training job's statistics from a background thread, throttled and retried.

    Args:
        min_interval: seconds between step-level posts (``ABEJA_RUNTIME_REPORT_INTERVAL``,
            default 5). Epoch-end snapshots and flushes do not wait for it.
        sink: where documents go. Default: the job's statistics on the Training API
            (``context``, else :meth:`JobContext.from_env`), or, outside a job, a
            JSON-lines file in the result dir (``ABEJA_RUNTIME_STATISTICS_FILE``).
        context: the job to report to (default: read from the environment).
        flush_at_exit: flush (bounded by ``exit_timeout``) at interpreter exit.
        exit_timeout: seconds for that flush and for ``flush()`` without a timeout
            (``ABEJA_RUNTIME_EXIT_TIMEOUT``, default 10).
        handle_sigterm: on SIGTERM, flush (bounded by ``sigterm_timeout``) and then run
            the previous handler. Installed only when created on the main thread.
        sigterm_timeout: ``ABEJA_RUNTIME_SIGTERM_TIMEOUT``, default 20 (under the
            platform's 25 s grace period).
        system_metrics: add CPU/memory/GPU metrics (sampled on the sender thread) under
            the ``"system"`` key; ``True`` or a ready :class:`SystemMetrics`.
        request_timeout: connect/read timeout of one post to the API
            (``ABEJA_RUNTIME_REPORT_TIMEOUT``, default 10).
        max_pending_epoch_ends: cap of the in-memory epoch-end queue while the API is
            unreachable; beyond it the oldest is dropped and counted.
        rank: this process's global rank; default: detected at the first report
            (:func:`abeja_runtime.job.rank_info`). Only rank 0 posts.
        strict: raise :class:`StatisticsError` from ``report()`` for a value that can
            never be sent (default); when False, log it once and ignore that report.
        journal: durable store for epoch-end snapshots (see :class:`SnapshotJournal`);
            default: the on-disk spool when reporting to a job.
        spool: ``False`` turns the default spool off, ``True`` turns it on (outside a
            job it then needs ``spool_dir``); default: ``ABEJA_RUNTIME_SPOOL`` (on)
            when reporting to a job's API.
        spool_dir: this reporter's spool directory (default:
            ``<ABEJA_RUNTIME_SPOOL_DIR>/<training job id>``); given, it turns the
            spool on.

    Raises:
        ConfigurationError: an argument or one of the environment variables above is
            malformed.
    """

    def __init__(
        self,
        *,
        min_interval: float | None = None,
        sink: StatisticsSink | None = None,
        context: JobContext | None = None,
        flush_at_exit: bool = True,
        exit_timeout: float | None = None,
        handle_sigterm: bool = True,
        sigterm_timeout: float | None = None,
        system_metrics: bool | SystemMetrics = False,
        request_timeout: float | None = None,
        max_pending_epoch_ends: int = DEFAULT_MAX_PENDING_EPOCH_ENDS,
        rank: int | None = None,
        strict: bool = True,
        journal: SnapshotJournal | RoutingJournal | None = None,
        spool: bool | None = None,
        spool_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.min_interval = _positive(
            "min_interval", min_interval, ENV_REPORT_INTERVAL, DEFAULT_MIN_INTERVAL
        )
        self.exit_timeout = _positive(
            "exit_timeout", exit_timeout, ENV_EXIT_TIMEOUT, DEFAULT_EXIT_TIMEOUT
        )
        self.sigterm_timeout = _positive(
            "sigterm_timeout", sigterm_timeout, ENV_SIGTERM_TIMEOUT, DEFAULT_SIGTERM_TIMEOUT
        )
        request_timeout = _positive(
            "request_timeout", request_timeout, ENV_REPORT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT
        )
        if request_timeout <= 0:
            raise ConfigurationError("request_timeout must be > 0")
        if isinstance(max_pending_epoch_ends, bool) or not isinstance(max_pending_epoch_ends, int):
            raise ConfigurationError("max_pending_epoch_ends must be an integer")
        if max_pending_epoch_ends < 1:
            raise ConfigurationError("max_pending_epoch_ends must be >= 1")
        if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 0):
            raise ConfigurationError(f"rank must be an integer >= 0, got {rank!r}")
        self.max_pending_epoch_ends = max_pending_epoch_ends
        self.strict = strict
        self.flush_at_exit = flush_at_exit
        self._rank = rank

        if sink is None:
            sink = self._default_sink(context, request_timeout)
        self.sink: StatisticsSink = sink
        if journal is None:
            journal = self._default_spool(spool, spool_dir, context)
        self._journal: SnapshotJournal | RoutingJournal | None = journal
        self._routing: RoutingJournal | None = (
            journal if isinstance(journal, RoutingJournal) else None
        )
        if system_metrics is True:
            self._sysmetrics: SystemMetrics | None = SystemMetrics()
        elif isinstance(system_metrics, SystemMetrics):
            self._sysmetrics = system_metrics
        else:
            self._sysmetrics = None

        self._init_state()
        # reporting side
        self._off = False
        self._disabled_reason: str | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self._seq = 0
        self._published_seq = 0
        self._step_seq = 0  # seq of the latest step-level report
        self._taken_seq = 0  # seq of the document when the latest step copy was taken
        self._doc: dict[str, Any] = {}
        self._epoch_ends = 0
        self._dropped = 0
        # sender side
        self._settled_seq = 0
        self._flush_target = 0
        self._sent = 0
        self._sent_steps = 0
        self._failed_steps = 0
        self._retried = 0
        self._failed = 0
        self._stop = False
        self._idle = False
        self._inflight: tuple[Snapshot | None, Snapshot | None] = (None, None)
        self._recent_failures: deque[int] = deque(maxlen=1024)
        self._warned: set[str] = set()
        self._last_error: str | None = None

        self._prev_sigterm: Any = None
        self._sigterm_installed = False
        self._in_sigterm = False
        _REPORTERS.add(self)
        _register_process_hooks()
        if handle_sigterm:
            self._install_sigterm()

    def _init_state(self) -> None:
        """Locks and queues; called again in a forked child (the parent's may be held)."""
        self._lock = threading.RLock()
        self._start_lock = threading.Lock()
        self._wakeup = _Wakeup()
        self._epoch_queue: deque[Snapshot] = deque(maxlen=self.max_pending_epoch_ends)
        # a step copy taken by flush() on the caller's thread, for the sender to post
        self._slot: deque[Snapshot] = deque(maxlen=1)
        # documents a simple journal handed back, to be posted before anything else
        self._replayed: deque[Snapshot] = deque()
        # seqs of step documents that a flush made must-deliver (counted as steps)
        self._flush_seqs: set[int] = set()

    def _default_spool(
        self,
        spool: bool | None,
        spool_dir: str | os.PathLike[str] | None,
        context: JobContext | None,
    ) -> RoutingJournal | None:
        """The on-disk spool: on by default when reporting to a job's API.

        ``spool=None`` follows ``ABEJA_RUNTIME_SPOOL`` (default on) for an API sink, and
        is on when ``spool_dir`` is given; ``spool=True`` without a job needs
        ``spool_dir``. Nothing touches the disk here: a spool that cannot be written
        later is logged once and reporting goes on from memory.
        """
        from .spool import default_spool_dir, spool_enabled

        if context is None and isinstance(self.sink, APISink):
            context = self.sink.context
        if spool is None:
            spool = spool_dir is not None or (context is not None and spool_enabled())
        if not spool:
            return None
        if spool_dir is None and context is None:
            raise ConfigurationError(
                "spool=True needs spool_dir outside a training job (no job id to name it)"
            )
        from .spool import Spool

        job = None
        if context is not None:
            job = {
                "organization_id": context.organization_id,
                "job_definition_name": context.job_definition_name,
                "training_job_id": context.training_job_id,
            }
        directory = (
            Path(spool_dir)
            if spool_dir is not None
            else default_spool_dir(context.training_job_id)  # type: ignore[union-attr]
        )
        return Spool(directory, job=job)

    def _default_sink(self, context: JobContext | None, request_timeout: float) -> StatisticsSink:
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

    # ------------------------------------------------------------------ reporting side

    @property
    def enabled(self) -> bool:
        """False when this reporter posts nothing (other rank, forked child, closed)."""
        return not self._off

    @property
    def disabled_reason(self) -> str | None:
        """Why :attr:`enabled` is False, or None."""
        return self._disabled_reason

    def _disable(self, reason: str) -> None:
        self._disabled_reason = reason
        self._off = True

    def _start(self) -> bool:
        """Decide the rank and start the sender thread (first report only)."""
        with self._start_lock:
            if self._off:
                return False
            if self._thread is not None:
                return True
            rank = self._rank
            if rank is None:
                try:
                    rank = rank_info().rank
                except ConfigurationError as exc:
                    logger.warning("%s; reporting as if this were rank 0", exc)
                    rank = 0
                self._rank = rank
            if rank != 0:
                self._disable(f"global rank {rank}: only rank 0 posts statistics")
                return False
            thread = threading.Thread(
                target=self._run, name="abeja-runtime-statistics", daemon=True
            )
            try:
                thread.start()
            except RuntimeError as exc:  # interpreter shutting down
                self._disable(f"cannot start the sender thread: {exc}")
                return False
            self._thread = thread
            return True

    def report(
        self,
        statistics: Statistics | Mapping[str, Any] | None = None,
        *,
        epoch: int | None = None,
        num_epochs: int | None = None,
        progress: float | None = None,
        epoch_end: bool = False,
        **values: Any,
    ) -> None:
        """Record statistics; they are posted later by the sender thread.

        Keyword values merge into the job's current document: ``epoch``,
        ``num_epochs``, ``progress`` (the API's ``progress_percentage``, a fraction in
        [0, 1]); every dict keyword is a stage whose metrics are merged into that stage
        (``train={"loss": loss}``, ``validation={...}``, any name); every other keyword
        is a top-level value. ``None`` as a stage metric or top-level value removes
        that key. A :class:`Statistics` or a full document dict given as ``statistics``
        replaces the document (keywords then apply on top).

        Values may be numbers, strings, bools, numpy/torch scalars and 0-d tensors
        (CUDA too: they are read on the sender thread, so the loop never waits for the
        GPU; do not modify a reported tensor in place afterwards), or lists/dicts of
        those.

        Args:
            statistics: a document replacing the current one.
            epoch: the current epoch (``0`` is kept).
            num_epochs: the total number of epochs.
            progress: the fraction of the training done, in [0, 1].
            epoch_end: make this a must-deliver snapshot: it is posted even if newer
                ones follow quickly, in order, without waiting for ``min_interval``.
            **values: stages (dict values) and extra top-level values.

        Raises:
            StatisticsError: with ``strict`` (the default), for a value that can never be
                sent. Nothing else is ever raised.
        """
        if self._off:
            return
        if self._thread is None and not self._start():
            return
        # Call-site check. Fast path: plain Python values only, checked by exact type
        # (tens of ns). Anything else (numpy, tensors, lists, a Statistics, reserved
        # names, values out of range) goes through the full check.
        base: dict[str, Any] | None = None
        fast = (
            statistics is None
            and (epoch is None or (type(epoch) is int and epoch >= 0))
            and (num_epochs is None or (type(num_epochs) is int and num_epochs >= 0))
            and (progress is None or (type(progress) is float and 0.0 <= progress <= 1.0))
        )
        removes = False  # a None metric (removes that metric) among the stages
        if fast:
            plain = _PLAIN_TYPES
            for key, value in values.items():
                kind = type(value)
                if kind is dict:
                    for metric, item in value.items():
                        if type(item) not in plain or type(metric) is not str:
                            fast = False
                            break
                        if item is None:
                            removes = True
                elif kind not in plain:
                    fast = False
                if not fast or key in _RESERVED:
                    fast = False
                    break
        if not fast:
            checked = self._check(statistics, epoch, num_epochs, progress, values)
            if checked is None:
                return
            base, epoch, num_epochs, progress, values = checked
            removes = True  # not worth finding out off the fast path

        # Merge into the current document, in place. Nothing is copied here: the sender
        # copies the document (under the same lock, for about a microsecond) only when
        # it is about to post. Epoch-end snapshots are copied at once, because each must
        # be posted as it was. A dict value is a stage; None removes a key.
        lock = self._lock
        lock.acquire()  # explicit acquire/release: half the cost of ``with`` in CPython
        try:
            if base is not None:
                self._doc = base
            doc = self._doc
            if epoch is not None:
                doc["epoch"] = epoch
            if num_epochs is not None:
                doc["num_epochs"] = num_epochs
            if progress is not None:
                doc["progress_percentage"] = progress
            stages: dict[str, Any] | None = None
            for key, value in values.items():
                if type(value) is dict:
                    if stages is None:
                        stages = doc.get("stages")
                        if stages is None:
                            stages = doc["stages"] = {}
                    stage = stages.get(key)
                    if stage is None:
                        stage = stages[key] = {}
                    if removes:
                        for metric, item in value.items():
                            if item is None:
                                stage.pop(metric, None)
                            else:
                                stage[metric] = item
                    else:
                        stage.update(value)
                elif value is None:
                    doc.pop(key, None)
                else:
                    doc[key] = value
            seq = self._seq = self._seq + 1
            if epoch_end:
                self._enqueue_epoch_end(seq, doc)
            else:
                self._step_seq = seq
            self._published_seq = seq
        finally:
            lock.release()
        if epoch_end or self._idle:
            self._wakeup.set()

    def _check(
        self,
        statistics: Statistics | Mapping[str, Any] | None,
        epoch: Any,
        num_epochs: Any,
        progress: Any,
        values: dict[str, Any],
    ) -> tuple[dict[str, Any] | None, int | None, int | None, float | None, dict[str, Any]] | None:
        """The full call-site check (types, ranges, shapes): what to merge, normalised.

        Returns None for a refused report when not ``strict`` (logged once).
        """
        try:
            base = None if statistics is None else self._document_of(statistics)
            epoch = check_epoch(epoch, "epoch")
            num_epochs = check_epoch(num_epochs, "num_epochs")
            progress = check_progress(progress, "progress")
            updates: dict[str, Any] = {}
            for key, value in values.items():
                if key == "stages":  # report(stages={"train": {...}}) as in a document
                    if not isinstance(value, Mapping) or not all(
                        isinstance(name, str) and isinstance(stage, Mapping)
                        for name, stage in value.items()
                    ):
                        raise StatisticsError("stages: must map stage names to dicts of metrics")
                    for name, stage in value.items():
                        updates[name] = check_value(stage, f"stages.{name}")
                elif key == "progress_percentage":
                    progress = check_progress(value, key)
                elif isinstance(value, Mapping):
                    updates[key] = check_value(value, f"stages.{key}")
                elif isinstance(value, Statistics):
                    raise StatisticsError(
                        f"{key}: a Statistics is a whole document: report(statistics)"
                    )
                else:
                    updates[key] = check_value(value, key)
        except Exception as exc:
            error = exc
            if not isinstance(exc, StatisticsError):  # an odd object failed its own check
                error = StatisticsError(f"cannot check a reported value: {exc!r}")
            if self.strict:
                raise error  # noqa: B904 - the original stays attached as __context__
            _warn_once(self._warned, str(error), "ignored a report: %s", error)
            return None
        return base, epoch, num_epochs, progress, updates

    def _enqueue_epoch_end(self, seq: int, doc: dict[str, Any]) -> None:
        """Queue a must-deliver copy of ``doc`` (called with the lock held)."""
        try:
            frozen = _freeze_tensors(doc)
        except Exception as exc:  # a device error must not reach the training loop
            _warn_once(self._warned, "freeze", "could not copy tensors of an epoch end: %s", exc)
            frozen = _copy_document(doc)
        snapshot = Snapshot(seq, frozen, True, time.time())
        self._epoch_ends += 1
        if len(self._epoch_queue) >= self.max_pending_epoch_ends:
            # the deque drops its oldest on append: count it (never silently)
            self._dropped += 1
            with contextlib.suppress(IndexError):  # the sender may take it first
                self._recent_failures.append(self._epoch_queue[0].seq)
        if self._journal is not None:
            self._record(snapshot)
        self._epoch_queue.append(snapshot)

    def _take_step(self, wait: float, *, to_slot: bool = False) -> Snapshot | None:
        """A copy of the current document when a step report came after the last copy.

        Runs on the sender thread, and in :meth:`flush` on the caller's thread (the lock
        is re-entrant, so a flush from a SIGTERM handler that interrupted ``report()``
        still gets the latest state). ``wait`` bounds the wait for the lock. With
        ``to_slot`` the copy is put in the slot for the sender *before* the copy is
        marked as taken, so that the sender never sees it as neither copyable nor queued.
        """
        if self._step_seq <= self._taken_seq:
            return None
        lock = self._lock
        if not lock.acquire(timeout=wait):
            return None
        try:
            seq = self._seq
            if self._step_seq <= self._taken_seq:
                return None
            snapshot = Snapshot(seq, _copy_document(self._doc), False, time.time())
            if to_slot:
                self._slot.append(snapshot)
            self._taken_seq = seq
        finally:
            lock.release()
        return snapshot

    def _record(self, snapshot: Snapshot) -> None:
        assert self._journal is not None
        try:
            self._journal.record(snapshot)
        except Exception as exc:  # durability is best effort; the loop goes on
            _warn_once(self._warned, "journal.record", "journal could not record: %s", exc)

    @staticmethod
    def _document_of(statistics: Statistics | Mapping[str, Any]) -> dict[str, Any]:
        if isinstance(statistics, Statistics):
            return statistics.raw_document()
        if isinstance(statistics, Mapping):
            return check_document(statistics)
        raise StatisticsError(
            "report() takes a Statistics or a statistics dict as its first argument, got "
            f"{type(statistics).__name__}; pass values as keywords (train={{'loss': ...}})"
        )

    @property
    def last_document(self) -> dict[str, Any]:
        """The latest merged statistics document, as JSON values (reads tensors)."""
        with self._lock:
            doc = _copy_document(self._doc)
        return _convert(doc, self._warned)

    @property
    def counters(self) -> dict[str, int]:
        """Delivery counts so far.

        ``reported``: report() calls recorded; ``epoch_ends``: of those, epoch-end;
        ``sent``: posts the server accepted; ``coalesced``: step snapshots replaced by a
        newer one before being sent; ``retried``: failed attempts that will be retried;
        ``failed``: snapshots refused for good (permanent 4xx, or unconvertible);
        ``dropped``: epoch-end snapshots dropped because the queue was full;
        ``pending``: snapshots waiting to be sent.
        """
        epoch_cur, step_cur = self._inflight
        pending_steps = (
            len(self._slot) + (step_cur is not None) + (self._step_seq > self._taken_seq)
        )
        pending = (
            len(self._epoch_queue) + len(self._replayed) + pending_steps + (epoch_cur is not None)
        )
        reported = self._seq
        # every step snapshot is sent, refused, pending, or replaced by a newer one
        coalesced = reported - self._epoch_ends - self._sent_steps - self._failed_steps
        return {
            "reported": reported,
            "epoch_ends": self._epoch_ends,
            "sent": self._sent,
            "coalesced": max(0, coalesced - pending_steps),
            "retried": self._retried,
            "failed": self._failed,
            "dropped": self._dropped,
            "pending": pending,
        }

    @property
    def last_error(self) -> str | None:
        """The last delivery error, as text (never contains a credential)."""
        return self._last_error

    def flush(self, timeout: float | None = None) -> bool:
        """Send everything reported so far now, and wait until it is delivered.

        Args:
            timeout: seconds to wait at most; ``None`` means ``exit_timeout``; ``0``
                starts the sending without waiting.

        Returns:
            True when everything reported before the call was delivered (or nothing
            needed delivering); False on timeout or when part of it was refused.
        """
        if self._thread is None or self._off:
            return True
        target = self._published_seq
        start_settled = self._settled_seq
        if start_settled < target:
            limit = self.exit_timeout if timeout is None else max(0.0, timeout)
            deadline = time.monotonic() + limit
            if self._routing is not None:
                self._spool_current(min(limit, _LOCK_WAIT))
            self._take_step(min(limit, _LOCK_WAIT), to_slot=True)
            if self._flush_target < target:
                self._flush_target = target
            self._wakeup.set()
            pause = 0.0005
            while self._settled_seq < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._thread.is_alive():
                    if self._routing is not None:  # what is left must survive the process
                        with contextlib.suppress(Exception):
                            self._routing.sync()
                    return False
                # polling, not a Condition: this also runs inside a SIGTERM handler that
                # may have interrupted this thread while it held a lock
                time.sleep(min(pause, remaining))
                pause = min(pause * 2, 0.01)
        return not any(start_settled < seq <= target for seq in tuple(self._recent_failures))

    def _spool_current(self, wait: float) -> None:
        """Make the latest step document must-deliver: write it to the spool now.

        A flush (explicit, at exit, on SIGTERM) is a promise that what was reported
        gets there; with the spool, the document it promises is on disk before the
        flush starts waiting, so a process killed during the wait loses nothing.
        """
        if self._step_seq <= self._taken_seq or self._step_seq != self._seq:
            return  # nothing new, or the latest report was an epoch end (spooled already)
        lock = self._lock
        if not lock.acquire(timeout=wait):
            return
        try:
            seq = self._seq
            if self._step_seq <= self._taken_seq or self._step_seq != seq:
                return
            self._taken_seq = seq
            self._flush_seqs.add(seq)
            try:
                frozen = _freeze_tensors(self._doc)
            except Exception:
                frozen = _copy_document(self._doc)
            snapshot = Snapshot(seq, frozen, True, time.time())
            self._record(snapshot)
            self._epoch_queue.append(snapshot)
        finally:
            lock.release()

    def close(self, timeout: float | None = None) -> bool:
        """Flush (bounded by ``timeout``, default ``exit_timeout``), stop the sender.

        Later ``report()`` calls are ignored. Returns what :meth:`flush` returned.
        """
        if self._closed:
            return True
        delivered = self.flush(timeout)
        self._closed = True
        if self._disabled_reason is None:
            self._disable("closed")
        self._stop = True
        self._wakeup.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=1.0)
        if self._journal is not None:
            closer = getattr(self._journal, "close", None)
            if callable(closer):
                try:
                    closer()  # fsync what is left; another process may send it
                except Exception as exc:
                    _warn_once(self._warned, "journal.close", "journal close failed: %s", exc)
        if thread is None or not thread.is_alive():
            with contextlib.suppress(Exception):
                self.sink.close()
            if self._sysmetrics is not None:
                self._sysmetrics.close()
        self._uninstall_sigterm()
        _REPORTERS.discard(self)
        return delivered

    def __enter__(self) -> StatisticsReporter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "enabled" if self.enabled else f"disabled: {self._disabled_reason}"
        return f"<StatisticsReporter to {self.sink.description} ({state})>"

    # ------------------------------------------------------------------ sender side

    def _run(self) -> None:
        """The sender thread: pick the next snapshot, wait for its time, post it.

        Two candidates at a time: ``epoch_cur``, the oldest epoch-end snapshot not yet
        delivered, and ``step_cur``, the newest step snapshot. Whichever is older goes
        first; a step snapshot older than a pending epoch-end one is superseded by it
        (dropped, counted as coalesced), so the server never sees older-after-newer.
        """
        if self._journal is not None and self._routing is None:
            self._replay()
        epoch_cur: Snapshot | None = None
        epoch_key: Any = None  # a journal record's key when epoch_cur is not our own
        waiting = False
        step_cur: Snapshot | None = None
        last_sent_seq = 0
        last_post = -math.inf
        retry_at = 0.0
        attempts = 0
        while True:
            try:
                # 1. candidates: the newest step copy first, then the epoch-end queue, so
                # that an epoch-end older than that copy is always seen
                for fresh in (self._pop_slot(), self._take_step(_LOCK_WAIT)):
                    if fresh is not None and (step_cur is None or fresh.seq > step_cur.seq):
                        step_cur = fresh  # replaces (coalesces) an older one
                if epoch_cur is None:
                    epoch_cur, epoch_key, waiting = self._next_epoch_end()
                if step_cur is not None:
                    newest_epoch = epoch_cur.seq if epoch_cur is not None else 0
                    with contextlib.suppress(IndexError):
                        newest_epoch = self._epoch_queue[-1].seq
                    if step_cur.seq <= newest_epoch or step_cur.seq <= last_sent_seq:
                        step_cur = None  # coalesced: a newer document will reach the server
                current = epoch_cur if epoch_cur is not None else step_cur
                self._inflight = (epoch_cur, step_cur)
                if waiting and epoch_cur is None:
                    # our oldest epoch end is with the spool's sender in another process:
                    # nothing newer of ours may reach the server before it does
                    if self._stop:
                        return
                    self._wakeup.wait(_SPOOL_POLL)
                    continue
                if current is None:
                    # nothing in hand: everything published before these checks is
                    # settled, unless something arrived meanwhile (then loop again)
                    published = self._published_seq
                    if not (self._epoch_queue or self._slot or self._step_seq > self._taken_seq):
                        if published > self._settled_seq:
                            self._settled_seq = published
                        if self._stop:
                            return
                        self._idle = True
                        if not (
                            self._epoch_queue
                            or self._slot
                            or self._step_seq > self._taken_seq
                            or self._stop
                        ):
                            # with a shared spool: look for other processes' records
                            self._wakeup.wait(_IDLE_WAIT if self._routing is None else _SPOOL_POLL)
                        self._idle = False
                    continue

                # 2. wait for its time: backoff always; min_interval for step snapshots
                # unless a flush is waiting (the copy in hand covers what it waits for)
                now = time.monotonic()
                due = retry_at
                if not current.epoch_end and self._flush_target <= self._settled_seq:
                    due = max(due, last_post + self.min_interval)
                if now < due:
                    if self._stop:
                        return
                    self._wakeup.wait(due - now)
                    continue

                # 3. post
                outcome = self._post(current, attempts)
                last_post = time.monotonic()
                if outcome is None or outcome < 0:
                    as_step = not current.epoch_end or current.seq in self._flush_seqs
                    if outcome is None:
                        self._sent += 1
                        self._sent_steps += as_step
                        last_sent_seq = max(last_sent_seq, current.seq)
                        if attempts:
                            logger.info(
                                "statistics delivered again after %d failed tries", attempts
                            )
                    else:  # refused for good
                        self._failed += 1
                        self._failed_steps += as_step
                        self._recent_failures.append(current.seq)
                    self._flush_seqs.discard(current.seq)
                    key = epoch_key if current is epoch_cur else None
                    if current is epoch_cur:
                        epoch_cur = None
                        epoch_key = None
                    else:
                        step_cur = None
                    # no longer in flight before it is settled: a flush that returns on
                    # the settlement must not count it as pending
                    self._inflight = (epoch_cur, step_cur)
                    # posted in seq order, and each document holds every earlier report:
                    # everything up to this one is settled now
                    if current.seq > self._settled_seq:
                        self._settled_seq = current.seq
                    self._acknowledge(current, key)
                    attempts = 0
                    retry_at = 0.0
                else:  # retry after `outcome` seconds
                    self._retried += 1
                    attempts += 1
                    retry_at = last_post + outcome
                    if self._stop:
                        return
            except Exception:  # a bug here must not kill reporting for the rest of the run
                logger.exception("statistics sender failed; continuing")
                if epoch_cur is not None and epoch_key is not None:
                    # a journal record that breaks the sender must not come back forever
                    self._acknowledge(epoch_cur, epoch_key)
                epoch_key = None
                waiting = False
                lost_ones = [x for x in (epoch_cur, step_cur) if x is not None]
                epoch_cur = step_cur = None
                self._inflight = (None, None)
                for lost in lost_ones:
                    self._failed += 1
                    self._failed_steps += not lost.epoch_end
                    self._recent_failures.append(lost.seq)
                    self._settled_seq = max(self._settled_seq, lost.seq)
                time.sleep(0.1)

    def _pop_slot(self) -> Snapshot | None:
        try:
            return self._slot.popleft()
        except IndexError:
            return None

    def _post(self, snapshot: Snapshot, failures: int) -> float | None:
        """Send one snapshot: None when delivered, -1 when refused for good, else a delay.

        Args:
            snapshot: what to send.
            failures: consecutive failed tries before this one (for the backoff).
        """
        document = _convert(snapshot.document, self._warned)
        if self._sysmetrics is not None:
            try:
                document[SYSTEM_METRICS_KEY] = self._sysmetrics.sample()
            except Exception as exc:  # metrics are extra; never block statistics
                _warn_once(self._warned, "sysmetrics", "system metrics failed: %s", exc)
        try:
            self.sink.send(document)
        except HttpError as exc:
            status = exc.status_code or 0
            if 200 <= status < 300:  # accepted, only the response body was odd
                return None
            self._last_error = str(exc)
            retryable = _RETRY.is_retryable(exc, idempotent=True) or status in _EXTRA_STATUSES
            if status == 500 and failures + 1 >= _MAX_500_TRIES:
                retryable = False
            if retryable:
                _warn_once(
                    self._warned,
                    f"transient {status}",
                    "statistics post failed (%s); retrying in the background, "
                    "training is not affected",
                    exc,
                )
                return self._delay(failures + 1, exc)
            _warn_once(
                self._warned,
                f"permanent {status} {exc.error}",
                "statistics refused by %s: %s. This snapshot is dropped; later ones are "
                "still tried (repeats of this error are logged at debug level)",
                self.sink.description,
                exc,
            )
            return -1.0
        except APIConnectionError as exc:
            self._last_error = str(exc)
            _warn_once(
                self._warned,
                "connection",
                "statistics API unreachable (%s); retrying in the background, "
                "training is not affected",
                exc,
            )
            return self._delay(failures + 1, exc)
        except Exception as exc:
            self._last_error = f"{type(exc).__name__}: {exc}"
            _warn_once(
                self._warned,
                f"sink {type(exc).__name__}",
                "statistics could not be written to %s: %s; snapshot dropped",
                self.sink.description,
                self._last_error,
            )
            return -1.0
        return None

    @staticmethod
    def _delay(attempt: int, error: BaseException) -> float:
        """Seconds before the next try: the server's Retry-After (capped), else the backoff."""
        retry_after = getattr(error, "retry_after", None)
        if (
            isinstance(retry_after, (int, float))
            and math.isfinite(retry_after)
            and retry_after >= 0
        ):
            return float(min(retry_after, _RETRY.retry_after_max))
        return _RETRY.backoff(min(attempt, 64))

    def _acknowledge(self, snapshot: Snapshot, key: Any = None) -> None:
        """Tell the journal a snapshot is settled: our own (by seq), or a record (by key)."""
        if self._journal is None or not snapshot.epoch_end:
            return
        try:
            if key is not None:
                if self._routing is not None:
                    self._routing.acknowledge_record(key)
            elif snapshot.seq > 0:  # replayed documents of a simple journal have no seq
                self._journal.acknowledge(snapshot)
        except Exception as exc:
            _warn_once(self._warned, "journal.ack", "journal could not acknowledge: %s", exc)

    def _replay(self) -> None:
        """Queue what a simple journal hands back, to go first with the usual retries.

        Replayed documents are must-deliver snapshots with seq 0 (older than anything
        this reporter reports): kept until the server takes them, retried with backoff
        and Retry-After like any epoch end.
        """
        assert self._journal is not None
        try:
            documents = list(self._journal.replay())  # type: ignore[union-attr]
        except Exception as exc:
            _warn_once(self._warned, "journal.replay", "journal could not replay: %s", exc)
            return
        for document in documents:
            self._replayed.append(Snapshot(0, dict(document), True, time.time()))

    def _next_epoch_end(self) -> tuple[Snapshot | None, Any, bool]:
        """The next must-deliver snapshot to post: (snapshot, journal key, waiting).

        Without a routing journal: replayed documents, then our queue. With the spool:
        whatever it says comes next in its order (``JournalRoute``); ``waiting`` is True
        while another process is the sender and holds our oldest epoch end.
        """
        if self._replayed:
            return self._replayed.popleft(), None, False
        routing = self._routing
        if routing is None:
            try:
                return self._epoch_queue.popleft(), None, False
            except IndexError:
                return None, None, False
        while True:
            try:
                head: Snapshot | None = self._epoch_queue[0]
            except IndexError:
                head = None
            try:
                route = routing.route(head)
            except Exception as exc:  # the spool is a help; never stop sending for it
                _warn_once(self._warned, "journal.route", "statistics spool failed: %s", exc)
                route = JournalRoute("post_head" if head is not None else "none")
            action = route.action
            if action == "post_record" and route.document is not None:
                created = route.created or time.time()
                return Snapshot(0, route.document, True, created), route.key, False
            if head is None:
                return None, None, False
            if action == "wait":
                return None, None, True
            if action == "settled":  # delivered by the spool's sender in another process
                if self._epoch_queue and self._epoch_queue[0] is head:
                    self._epoch_queue.popleft()
                self._sent += 1
                self._sent_steps += head.seq in self._flush_seqs
                self._flush_seqs.discard(head.seq)
                if head.seq > self._settled_seq:
                    self._settled_seq = head.seq
                continue
            try:
                return self._epoch_queue.popleft(), None, False
            except IndexError:
                return None, None, False

    # ------------------------------------------------------------------ process hooks

    def _after_fork_in_child(self) -> None:
        self._init_state()
        self._thread = None
        self._inflight = (None, None)
        self._sigterm_installed = False
        self._disable("forked child process: the parent process posts statistics")

    def _install_sigterm(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            logger.debug("not on the main thread: no SIGTERM flush for this reporter")
            return
        try:
            previous = signal.getsignal(signal.SIGTERM)
            if previous is None:  # installed from C: it could not be chained, keep it
                logger.debug("SIGTERM has a handler installed from C: no SIGTERM flush")
                return
            self._prev_sigterm = previous
            signal.signal(signal.SIGTERM, self._on_sigterm)
        except (ValueError, OSError) as exc:  # embedded interpreters, odd platforms
            logger.debug("cannot install a SIGTERM handler: %s", exc)
            return
        self._sigterm_installed = True

    def _uninstall_sigterm(self) -> None:
        if not self._sigterm_installed:
            return
        if threading.current_thread() is not threading.main_thread():
            return
        with contextlib.suppress(ValueError, OSError, TypeError):
            if signal.getsignal(signal.SIGTERM) == self._on_sigterm:
                signal.signal(signal.SIGTERM, self._prev_sigterm or signal.SIG_DFL)
        self._sigterm_installed = False

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        """Flush (bounded), then do what SIGTERM did before this reporter was made."""
        if not self._in_sigterm and not self._off:
            self._in_sigterm = True
            try:
                if not self.flush(self.sigterm_timeout):
                    logger.warning(
                        "SIGTERM: statistics not fully delivered within %g s",
                        self.sigterm_timeout,
                    )
            finally:
                self._in_sigterm = False
        previous = self._prev_sigterm
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_IGN:
            return
        else:  # SIG_DFL (or unknown): die of SIGTERM as if we had never been here
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)


# ---------------------------------------------------------------------- process-wide hooks

_hooks_registered = False


def _register_process_hooks() -> None:
    """Exit flush and fork hook, once per process (at import; the hooks cost nothing idle)."""
    global _hooks_registered
    if _hooks_registered:
        return
    _hooks_registered = True
    atexit.register(_flush_at_exit)
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_after_fork_in_child)


def _after_fork_in_child() -> None:
    global _IN_FORKED_CHILD, _default_lock
    _IN_FORKED_CHILD = True
    _default_lock = threading.Lock()
    for reporter in list(_REPORTERS):
        reporter._after_fork_in_child()


def _flush_at_exit() -> None:
    """Bounded flush of every live reporter when the interpreter exits."""
    for reporter in list(_REPORTERS):
        if reporter.flush_at_exit and reporter.enabled:
            try:
                if not reporter.close(reporter.exit_timeout):
                    logger.warning(
                        "at exit: statistics not fully delivered within %g s (%s)",
                        reporter.exit_timeout,
                        reporter.counters,
                    )
            except Exception:  # pragma: no cover - never fail interpreter exit
                logger.exception("flushing statistics at exit failed")


# ---------------------------------------------------------------------- default reporter

_default: StatisticsReporter | None = None
_default_lock = threading.Lock()


def _torch_dataloader_worker() -> bool:
    data = sys.modules.get("torch.utils.data")
    info = getattr(data, "get_worker_info", None)
    try:
        return callable(info) and info() is not None
    except Exception:
        return False


_DEFAULT_SETTINGS: dict[str, Any] = {
    "min_interval": DEFAULT_MIN_INTERVAL,
    "exit_timeout": DEFAULT_EXIT_TIMEOUT,
    "sigterm_timeout": DEFAULT_SIGTERM_TIMEOUT,
    "request_timeout": DEFAULT_REQUEST_TIMEOUT,
}


def _disabled_reporter(reason: str) -> StatisticsReporter:
    """A reporter that ignores reports, made without side effects (no file, no handler)."""
    reporter = StatisticsReporter(
        sink=MemorySink(), handle_sigterm=False, flush_at_exit=False, **_DEFAULT_SETTINGS
    )
    reporter._disable(reason)
    return reporter


def _create_default() -> StatisticsReporter:
    """The default reporter; never raises (it is made inside the training loop)."""
    if _IN_FORKED_CHILD:
        return _disabled_reporter("forked child process: the parent process posts statistics")
    if _torch_dataloader_worker():
        return _disabled_reporter("DataLoader worker: the training process posts statistics")
    try:
        try:
            return StatisticsReporter(
                system_metrics=_env_flag(ENV_SYSTEM_METRICS),
                handle_sigterm=_env_flag(ENV_HANDLE_SIGTERM, default=True),
            )
        except ConfigurationError as exc:
            logger.warning("%s; using the default reporter settings", exc)
            return StatisticsReporter(**_DEFAULT_SETTINGS)
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


def set_reporter(reporter: StatisticsReporter | None) -> StatisticsReporter | None:
    """Make ``reporter`` the process-wide one (None: create anew on next use).

    Returns the previous one, which is not closed.
    """
    global _default
    with _default_lock:
        previous, _default = _default, reporter
    return previous


def report(
    statistics: Statistics | Mapping[str, Any] | None = None,
    *,
    epoch: int | None = None,
    num_epochs: int | None = None,
    progress: float | None = None,
    epoch_end: bool = False,
    **values: Any,
) -> None:
    """Report statistics through the process-wide reporter (see :meth:`StatisticsReporter.report`).

    Raises:
        StatisticsError: for a value that can never be sent. Nothing else is raised.
    """
    reporter = _default
    if reporter is None:
        reporter = get_reporter()
    reporter.report(
        statistics,
        epoch=epoch,
        num_epochs=num_epochs,
        progress=progress,
        epoch_end=epoch_end,
        **values,
    )


def flush(timeout: float | None = None) -> bool:
    """Flush the process-wide reporter (see :meth:`StatisticsReporter.flush`).

    True when there was none yet.
    """
    reporter = _default
    return True if reporter is None else reporter.flush(timeout)


def close(timeout: float | None = None) -> bool:
    """Close the process-wide reporter (flushing it); the next report makes a new one."""
    reporter = set_reporter(None)
    return True if reporter is None else reporter.close(timeout)


_register_process_hooks()
