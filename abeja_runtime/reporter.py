"""Report training statistics from the loop without ever slowing it down.

``report()`` only records: it checks the values against the statistics rules
(:mod:`abeja_runtime.statistics_rules`: types and shapes, never tensor data), merges
them into the job's current statistics document in place, and returns, in about a
microsecond. One background *sender* thread does everything else: it copies the
document when a post is due, converts the values (this is where a CUDA tensor is read,
so the training thread never waits for the GPU), posts, retries and throttles. The
lock the training thread takes is never held across I/O.

Example::

    import abeja_runtime

    for epoch in range(num_epochs):
        for step, batch in enumerate(loader):
            loss = train_step(batch)  # a CUDA tensor is fine: it is read later
            abeja_runtime.report(epoch=epoch, num_epochs=num_epochs, train={"loss": loss})
        abeja_runtime.report(validation={"loss": val_loss, "accuracy": val_acc}, epoch_end=True)

Delivery rules:

* **A bad value is an error at the call that reported it.** Whatever the platform
  refuses (a string as ``accuracy``, ``True`` or a list as ``loss``, an empty stage
  name, ``epoch > num_epochs``, an integer JSON cannot carry, a document over 1 MiB)
  raises :class:`~abeja_runtime.errors.StatisticsError` before anything is queued,
  and the merged document stays as it was (``strict=False``: logged once, ignored).
  A refusal the rules did not foresee never silences the job either: see
  :mod:`abeja_runtime._sender`.
* **Step-level** snapshots are throttled to one post per ``min_interval``; a newer
  one replaces an older one still waiting (latest wins, counted as *coalesced*).
* **Epoch-end** snapshots (``epoch_end=True``) are must-deliver: written to the job's
  on-disk spool (:mod:`abeja_runtime.spool`) before ``report()`` returns, and posted in
  spool order, each once the API takes it. The spool is the only source of
  must-deliver snapshots: the spool's sender (one process of the job at a time) posts
  every process's records, and what an earlier process left goes first, as soon as any
  reporter of the job starts, on ``flush()`` and at exit. Without a spool (outside a
  job, or ``ABEJA_RUNTIME_SPOOL=0``) they wait in memory (at most
  ``max_pending_epoch_ends``; beyond it the oldest is dropped and counted).
* The server never receives an older snapshot after a newer one (rule I1 of
  :mod:`abeja_runtime._delivery_state`).
* Failures: 429, 5xx, timeouts and refused connections are retried with the package's
  :class:`~abeja_runtime.retry.RetryPolicy` backoff and the server's ``Retry-After``;
  ``flush()`` cuts a running backoff short. Nothing is ever raised into the training
  loop except the ``StatisticsError`` above.
* ``flush()`` sends what is waiting at once and waits, within the process's single
  shutdown budget (:mod:`abeja_runtime._process_hooks`); it also runs at exit and on
  SIGTERM, and the last line says whether everything was delivered, kept in the spool
  (and how to send it), or lost.

Environment variables (read when a reporter is created; a malformed value is a
:class:`~abeja_runtime.errors.ConfigurationError` naming the variable):

``ABEJA_RUNTIME_REPORT_INTERVAL``
    ``min_interval`` in seconds, default 5.
``ABEJA_RUNTIME_EXIT_TIMEOUT``
    seconds the flush at exit (and ``flush()`` without a timeout) may take, default 10.
``ABEJA_RUNTIME_SIGTERM_TIMEOUT``
    seconds a stopping process may spend flushing after SIGTERM, all flushes
    together, default 20 (the platform kills 25 s after SIGTERM).
``ABEJA_RUNTIME_REPORT_TIMEOUT``
    connect/read timeout of one post, seconds > 0, default 10.
``ABEJA_RUNTIME_SYSTEM_METRICS``
    on/off: add CPU/memory/GPU metrics to the default reporter's documents (off).
``ABEJA_RUNTIME_STATISTICS_FILE``
    outside a job, the JSON-lines file (default ``<result dir>/statistics.jsonl``).
``ABEJA_RUNTIME_HANDLE_SIGTERM``
    on/off: flush on SIGTERM (default on).
``ABEJA_RUNTIME_SPOOL`` / ``ABEJA_RUNTIME_SPOOL_DIR``
    on/off and location of the spool (see :mod:`abeja_runtime.spool`).

On/off variables take ``1/0/true/false/yes/no/on/off`` in any case
(:func:`abeja_runtime.config.env_flag`).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import _process_hooks
from ._delivery_state import DeliveryState
from ._documents import Snapshot, convert_document, copy_document, warn_once
from ._sender import LOCK_WAIT, Sender
from .config import env_float
from .errors import ConfigurationError, StatisticsError
from .job import ENV_RESULT_DIR, JobContext, rank_info
from .sinks import DEFAULT_STATISTICS_FILE_NAME, APISink, JSONLinesSink, StatisticsSink
from .statistics import Statistics
from .statistics_rules import (
    MAX_DOCUMENT_BYTES,
    METRIC_KEYS,
    check_document,
    check_epoch,
    check_epoch_order,
    check_progress,
    check_stage,
    check_value,
    size_bound,
)
from .sysmetrics import SystemMetrics

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
    "Snapshot",
    "StatisticsReporter",
    "close",
    "flush",
    "get_reporter",
    "report",
    "set_reporter",
]

from ._process_hooks import (
    DEFAULT_EXIT_TIMEOUT,
    DEFAULT_SIGTERM_TIMEOUT,
    ENV_EXIT_TIMEOUT,
    ENV_HANDLE_SIGTERM,
    ENV_SIGTERM_TIMEOUT,
)

ENV_REPORT_INTERVAL = "ABEJA_RUNTIME_REPORT_INTERVAL"
ENV_REPORT_TIMEOUT = "ABEJA_RUNTIME_REPORT_TIMEOUT"
ENV_SYSTEM_METRICS = "ABEJA_RUNTIME_SYSTEM_METRICS"
ENV_STATISTICS_FILE = "ABEJA_RUNTIME_STATISTICS_FILE"

DEFAULT_MIN_INTERVAL = 5.0
DEFAULT_REQUEST_TIMEOUT = 10.0
DEFAULT_MAX_PENDING_EPOCH_ENDS = 10_000

logger = logging.getLogger(__name__)

#: keyword names with a meaning of their own, handled by the full check
_RESERVED = frozenset({"stages", "progress_percentage"})
#: the hot path takes strings and key names up to this length, ints within 63 bits
_SHORT = 64
_INT_LIMIT = 1 << 63
#: what one plain value (key <= 64 chars, value <= 64 chars) adds to the document's
#: JSON size at most; the hot path keeps a running bound with it and sends the call
#: through the full check (which measures the whole document) when it nears 1 MiB
_ITEM_BOUND = 6 * _SHORT * 2 + 16
_BOUND_LIMIT = MAX_DOCUMENT_BYTES - 64 * _ITEM_BOUND


def _positive(name: str, value: float | None, env_name: str, default: float) -> float:
    if value is None:
        return env_float(env_name, default, minimum=0.0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ConfigurationError(f"{name} must be a number >= 0, got {value!r}")
    if not math.isfinite(value):
        raise ConfigurationError(f"{name} must be finite, got {value!r}")
    return float(value)


class StatisticsReporter:
    """Posts a training job's statistics from a background thread, throttled and retried.

    Args:
        min_interval: seconds between step-level posts (``ABEJA_RUNTIME_REPORT_INTERVAL``,
            default 5). Epoch-end snapshots and flushes do not wait for it.
        sink: where documents go. Default: the job's statistics on the Training API
            (``context``, else :meth:`JobContext.from_env`), or, outside a job, a
            JSON-lines file in the result dir (``ABEJA_RUNTIME_STATISTICS_FILE``).
        context: the job to report to (default: read from the environment).
        flush_at_exit: flush at interpreter exit (within the shutdown budget).
        exit_timeout: seconds for that flush and for ``flush()`` without a timeout
            (``ABEJA_RUNTIME_EXIT_TIMEOUT``, default 10).
        handle_sigterm: on SIGTERM, flush and then run the previous handler. Works
            whichever thread made the reporter when ``import abeja_runtime`` ran on
            the main thread inside a job (the handler is installed then).
        sigterm_timeout: ``ABEJA_RUNTIME_SIGTERM_TIMEOUT``, default 20 (under the
            platform's 25 s grace period).
        system_metrics: add CPU/memory/GPU metrics (sampled on the sender thread) under
            the ``"system"`` key; ``True`` or a ready :class:`SystemMetrics`.
        request_timeout: connect/read timeout of one post to the API
            (``ABEJA_RUNTIME_REPORT_TIMEOUT``, default 10).
        max_pending_epoch_ends: cap of the epoch-end snapshots held in memory (no
            spool, or the disk refused them); beyond it the oldest is dropped, counted.
        rank: this process's global rank; default: detected at the first report
            (:func:`abeja_runtime.job.rank_info`). Only rank 0 posts.
        strict: raise :class:`StatisticsError` from ``report()`` for a value that can
            never be sent (default); when False, log it once and ignore that report.
        spool: ``False`` turns the spool off, ``True`` on (outside a job it then needs
            ``spool_dir``); default: ``ABEJA_RUNTIME_SPOOL`` (on) when reporting to a
            job's API.
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
            where = (
                "request_timeout"
                if os.environ.get(ENV_REPORT_TIMEOUT, "").strip() == ""
                else (f"{ENV_REPORT_TIMEOUT} ({os.environ[ENV_REPORT_TIMEOUT]!r})")
            )
            raise ConfigurationError(f"{where} must be > 0 seconds (the timeout of one post)")
        if isinstance(max_pending_epoch_ends, bool) or not isinstance(max_pending_epoch_ends, int):
            raise ConfigurationError("max_pending_epoch_ends must be an integer")
        if max_pending_epoch_ends < 1:
            raise ConfigurationError("max_pending_epoch_ends must be >= 1")
        if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 0):
            raise ConfigurationError(f"rank must be an integer >= 0, got {rank!r}")
        self.max_pending_epoch_ends = max_pending_epoch_ends
        self.strict = strict
        self.flush_at_exit = flush_at_exit
        self.handle_sigterm = handle_sigterm
        self._rank = rank

        if sink is None:
            sink = self._default_sink(context, request_timeout)
        self.sink: StatisticsSink = sink
        self._spool = self._default_spool(spool, spool_dir, context)
        if system_metrics is True:
            self._sysmetrics: SystemMetrics | None = SystemMetrics()
        elif isinstance(system_metrics, SystemMetrics):
            self._sysmetrics = system_metrics
        else:
            self._sysmetrics = None

        self._off = False
        self._disabled_reason: str | None = None
        self._closed = False
        self._warned: set[str] = set()
        self._disk_error: str | None = None
        self._init_state()
        _process_hooks.register(self)
        if handle_sigterm:
            _process_hooks.install_sigterm()
        if self._spool is not None:
            from .spool import has_leftovers

            if has_leftovers(self._spool.directory):
                self._start()  # what an earlier process left goes first, without waiting

    def _init_state(self) -> None:
        """State, locks and the sender; called again in a forked child."""
        self._state = DeliveryState(self.max_pending_epoch_ends)
        self._lock = self._state.lock
        self._must_lock = threading.RLock()  # serialises must-deliver writes (seq order)
        self._start_lock = threading.Lock()
        self._good_stages: set[str] = set()
        self._bound = 0
        self._thread: threading.Thread | None = None
        self._sender = Sender(
            self._state,
            self.sink,
            self._spool,
            self.min_interval,
            self._sysmetrics,
            self._warned,
            on_delivered=_process_hooks.BUDGET.delivered,
        )

    def _default_spool(
        self,
        spool: bool | None,
        spool_dir: str | os.PathLike[str] | None,
        context: JobContext | None,
    ) -> Any:
        """The on-disk spool: on by default when reporting to a job's API.

        Nothing touches the disk here: a spool that cannot be written later is logged
        once and reporting goes on from memory.
        """
        from .spool import Spool, default_spool_dir, spool_enabled

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

    # ------------------------------------------------------------------ state

    @property
    def enabled(self) -> bool:
        """False when this reporter posts nothing (other rank, forked child, closed)."""
        return not self._off

    @property
    def disabled_reason(self) -> str | None:
        """Why :attr:`enabled` is False, or None."""
        return self._disabled_reason

    @property
    def spool_directory(self) -> Path | None:
        """The spool this reporter writes must-deliver snapshots to, or None."""
        return None if self._spool is None else Path(self._spool.directory)

    def _disable(self, reason: str) -> None:
        self._disabled_reason = reason
        self._off = True

    def _start(self) -> bool:
        """Decide the rank and start the sender thread (once)."""
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
                target=self._sender.run, name="abeja-runtime-statistics", daemon=True
            )
            try:
                thread.start()
            except RuntimeError as exc:  # interpreter shutting down
                self._disable(f"cannot start the sender thread: {exc}")
                return False
            self._thread = thread
            return True

    # ------------------------------------------------------------------ reporting

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
        (``train={"loss": loss}``, any name); every other keyword is a top-level value.
        ``None`` as a stage metric or top-level value removes that key. A
        :class:`Statistics` or a full document dict given as ``statistics`` replaces the
        document (keywords then apply on top).

        Args:
            statistics: a document replacing the current one.
            epoch: the current epoch (``0`` is kept).
            num_epochs: the total number of epochs.
            progress: the fraction of the training done, in [0, 1].
            epoch_end: make this a must-deliver snapshot (spooled before this returns).
            **values: stages (dict values) and extra top-level values.

        Raises:
            StatisticsError: with ``strict`` (the default), for a value the platform
                refuses; the merged document is then left as it was. Nothing else.
        """
        if self._off:
            return
        if self._thread is None and not self._start():
            return
        # The hot path: plain Python values whose rules can be checked by exact type in
        # tens of ns. Anything else goes through the full check of the statistics rules.
        state = self._state
        fast = (
            statistics is None
            and self._bound < _BOUND_LIMIT
            and (epoch is None or (type(epoch) is int and 0 <= epoch < _INT_LIMIT))
            and (num_epochs is None or (type(num_epochs) is int and 0 <= num_epochs < _INT_LIMIT))
            and (progress is None or (type(progress) is float and 0.0 <= progress <= 1.0))
        )
        if fast and (epoch is not None or num_epochs is not None):
            doc = state.doc
            top = num_epochs if num_epochs is not None else doc.get("num_epochs")
            now = epoch if epoch is not None else doc.get("epoch")
            fast = top is None or now is None or now <= top
        removes = False
        items = 0
        if fast:
            good = self._good_stages
            for key, value in values.items():
                kind = type(value)
                if kind is dict:
                    if key not in good:
                        fast = False
                        break
                    for metric, item in value.items():
                        items += 1
                        k = type(item)
                        if type(metric) is not str or len(metric) > _SHORT:
                            fast = False
                            break
                        if k is float:
                            continue
                        if k is int:
                            if -_INT_LIMIT < item < _INT_LIMIT:
                                continue
                        elif item is None:
                            removes = True
                            continue
                        elif (k is bool or (k is str and len(item) <= _SHORT)) and (
                            metric not in METRIC_KEYS
                        ):
                            continue
                        fast = False
                        break
                    if not fast:
                        break
                    continue
                items += 1
                if key in _RESERVED or len(key) > _SHORT:
                    fast = False
                    break
                if kind is float or kind is bool or value is None:
                    continue
                if kind is int:
                    if -_INT_LIMIT < value < _INT_LIMIT:
                        continue
                elif kind is str and len(value) <= _SHORT:
                    continue
                fast = False
                break
        if not fast:
            self._report_checked(statistics, epoch, num_epochs, progress, epoch_end, values)
            return
        if epoch_end:
            self._report_must(None, epoch, num_epochs, progress, values, removes, 0)
            return
        lock = self._lock
        lock.acquire()  # explicit acquire/release: half the cost of ``with`` in CPython
        try:
            self._merge(state.doc, epoch, num_epochs, progress, values, removes)
            self._bound += items * _ITEM_BOUND + 64
            state.step_seq = seq = state.seq + 1  # step_seq first: see DeliveryState
            state.seq = seq
        finally:
            lock.release()
        if self._sender.idle:
            self._sender.wakeup.set()

    @staticmethod
    def _merge(
        doc: dict[str, Any],
        epoch: int | None,
        num_epochs: int | None,
        progress: float | None,
        values: Mapping[str, Any],
        removes: bool,
    ) -> None:
        """Merge checked values into ``doc`` in place (a dict value is a stage)."""
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

    def _report_checked(
        self,
        statistics: Statistics | Mapping[str, Any] | None,
        epoch: Any,
        num_epochs: Any,
        progress: Any,
        epoch_end: bool,
        values: dict[str, Any],
    ) -> None:
        """The full check of the statistics rules, then the merge (never half of it)."""
        try:
            base = None if statistics is None else self._document_of(statistics)
            epoch = check_epoch(epoch, "epoch")
            num_epochs = check_epoch(num_epochs, "num_epochs")
            progress = check_progress(progress, "progress")
            updates: dict[str, Any] = {}
            for key, value in values.items():
                if key == "stages":  # report(stages={"train": {...}}) as in a document
                    if not isinstance(value, Mapping):
                        raise StatisticsError("stages: must map stage names to dicts of metrics")
                    for name, stage in value.items():
                        updates[name] = check_stage(name, stage, "stages")
                elif key == "progress_percentage":
                    progress = check_progress(value, key)
                elif isinstance(value, Mapping):
                    updates[key] = check_stage(key, value, "stages")
                elif isinstance(value, Statistics):
                    raise StatisticsError(
                        f"{key}: a Statistics is a whole document: report(statistics)"
                    )
                else:
                    updates[key] = check_value(value, key)
            if epoch_end:
                self._report_must(base, epoch, num_epochs, progress, updates, True, -1)
                return
            with self._lock:
                self._apply_checked(base, epoch, num_epochs, progress, updates)
                state = self._state
                state.step_seq = state.seq + 1
                state.seq = state.step_seq
        except Exception as exc:
            error = exc
            if not isinstance(exc, StatisticsError):  # an odd object failed its own check
                error = StatisticsError(f"cannot check a reported value: {exc!r}")
            if self.strict:
                raise error  # noqa: B904 - the original stays attached as __context__
            warn_once(self._warned, str(error), "ignored a report: %s", error)
            return
        for name, value in updates.items():
            if type(value) is dict:
                self._good_stages.add(name)
        if self._sender.idle:
            self._sender.wakeup.set()

    def _apply_checked(
        self,
        base: dict[str, Any] | None,
        epoch: int | None,
        num_epochs: int | None,
        progress: float | None,
        updates: dict[str, Any],
    ) -> None:
        """Merge into a copy, check the whole-document rules, then swap (lock held)."""
        state = self._state
        candidate = base if base is not None else copy_document(state.doc)
        self._merge(candidate, epoch, num_epochs, progress, updates, True)
        check_epoch_order(candidate.get("epoch"), candidate.get("num_epochs"), "statistics")
        bound = size_bound({"statistics": candidate})
        if bound > MAX_DOCUMENT_BYTES:
            raise StatisticsError(
                f"statistics: the document would be up to {bound:,} bytes, over the limit of "
                f"{MAX_DOCUMENT_BYTES:,} bytes; report fewer or shorter values (a histogram "
                "or a long text belongs in a file of the result dir)"
            )
        state.doc = candidate
        self._bound = bound

    def _report_must(
        self,
        base: dict[str, Any] | None,
        epoch: int | None,
        num_epochs: int | None,
        progress: float | None,
        values: Mapping[str, Any],
        removes: bool,
        items: int,
    ) -> None:
        """An epoch end: merge, copy, write to the spool (or memory), in seq order."""
        state = self._state
        with self._must_lock:
            with self._lock:
                if items < 0:
                    self._apply_checked(base, epoch, num_epochs, progress, dict(values))
                else:
                    self._merge(state.doc, epoch, num_epochs, progress, values, removes)
                    self._bound += items * _ITEM_BOUND + 64
                state.must_seq = state.seq + 1  # must_seq first: see DeliveryState
                state.seq += 1
                snapshot = state.begin_must()
            assert snapshot is not None
            self._store(snapshot)
        self._sender.wakeup.set()

    def _store(self, snapshot: Snapshot) -> None:
        """Put a must-deliver snapshot in its one place: the spool, else memory.

        While memory holds earlier ones (the disk refused them) later ones go there
        too, so that the spool's order never puts a newer one first.
        """
        spool = self._spool
        position: int | None = None
        if spool is not None and not self._state.memory:
            try:
                position = spool.append(
                    snapshot.document, lseq=snapshot.seq, created=snapshot.created
                )
            except Exception as exc:  # the disk refused it: memory, said once
                self._disk_error = f"{type(exc).__name__}: {exc}"
                self._state.lost_on_disk += 1
                warn_once(
                    self._warned,
                    "spool.write",
                    "statistics spool %s: could not write an epoch-end snapshot (%s); it is "
                    "kept in memory only and is lost if this process ends before the API "
                    "takes it",
                    spool.directory,
                    self._disk_error,
                )
        self._state.store_must(snapshot, position)

    @staticmethod
    def _document_of(statistics: Statistics | Mapping[str, Any]) -> dict[str, Any]:
        if isinstance(statistics, Statistics):
            return check_document(statistics.raw_document())
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
            doc = copy_document(self._state.doc)
        return convert_document(doc, self._warned)

    @property
    def counters(self) -> dict[str, int]:
        """Delivery counts so far.

        ``reported``: report() calls recorded; ``epoch_ends``: of those, epoch-end;
        ``sent``: posts the server accepted (spool records of any process included);
        ``coalesced``: step snapshots replaced by a newer one before being sent;
        ``retried``: failed attempts that will be retried; ``failed``: snapshots refused
        for good; ``dropped``: epoch-end snapshots dropped because memory was full;
        ``pending``: snapshots of this reporter waiting to be sent; ``repaired``:
        refusals the statistics rules did not foresee, after which the new keys were
        dropped from the merged document.
        """
        return self._state.counters()

    @property
    def last_error(self) -> str | None:
        """The last delivery error, as text (never contains a credential)."""
        return self._sender.last_error

    # ------------------------------------------------------------------ flush / close

    def flush(self, timeout: float | None = None) -> bool:
        """Send everything reported so far, and the spool's leftovers, now; wait (bounded).

        It tries at once (a running backoff is cut short), then backs off within its
        deadline: ``timeout`` (default ``exit_timeout``), shortened to the process's
        shutdown budget once the process is stopping.

        Returns:
            True when everything reported before the call was delivered and the spool
            holds nothing undelivered that was there before the call; False on timeout
            or when part of it was refused.
        """
        if self._off:
            return True
        if self._thread is None and not self._start():
            return True
        started = time.monotonic()
        limit = self.exit_timeout if timeout is None else max(0.0, timeout)
        deadline = _process_hooks.BUDGET.deadline(started + limit)
        state = self._state
        target = state.seq
        start_settled = state.settled_seq
        wait = min(max(0.0, deadline - started), LOCK_WAIT)
        spool = self._spool
        spool_target = 0
        spool_start = self._acked()
        if spool is not None:
            self._spool_current(wait)
            try:
                spool_target = spool.last_seq()
            except OSError:
                spool_target = 0
        elif self._lock.acquire(timeout=wait):
            try:
                state.take_step(0, must=True)
            finally:
                self._lock.release()
        sender = self._sender
        if sender.flush_target < target:
            sender.flush_target = target
        sender.hurry()
        pause = 0.0005
        while state.settled_seq < target or (spool_target and self._acked() < spool_target):
            remaining = deadline - time.monotonic()
            thread = self._thread
            if remaining <= 0 or thread is None or not thread.is_alive():
                if spool is not None:  # what is left must survive the process
                    spool.sync()
                _process_hooks.BUDGET.flush_failed(started)
                return False
            # polling, not a Condition: this also runs inside a SIGTERM handler that
            # may have interrupted this thread while it held a lock
            time.sleep(min(pause, remaining))
            pause = min(pause * 2, 0.01)
        if any(spool_start < seq <= spool_target for seq in tuple(sender.refused_records)):
            return False
        return not state.any_refused(start_settled, target)

    def _acked(self) -> int:
        """The spool position acknowledged, as this process's sender or the state file says."""
        spool = self._spool
        acked = self._sender.acked
        if spool is not None and not spool.is_sender:
            acked = max(acked, spool.peek_acknowledged())
        return acked

    def _spool_current(self, wait: float) -> None:
        """Make the latest step document must-deliver: on disk before a flush waits."""
        if not self._must_lock.acquire(timeout=wait):
            return
        try:
            if not self._lock.acquire(timeout=wait):
                return
            try:
                snapshot = self._state.begin_must(flushing=True)
            finally:
                self._lock.release()
            if snapshot is not None:
                self._store(snapshot)
        finally:
            self._must_lock.release()

    def final_line(self, when: str, delivered: bool) -> None:
        """Log what became of this reporter's statistics: delivered, kept, or lost."""
        state = self._state
        lost = len(state.memory)
        if self._spool is None and (state.step is not None or state.step_seq > state.taken_seq):
            lost += 1
        _process_hooks.log_outcome(
            when,
            delivered,
            kept=self._kept(),
            spool_dir=self.spool_directory,
            lost=lost,
            disk_error=self._disk_error if self._spool is not None else None,
            description=self.sink.description,
        )

    def _kept(self) -> int:
        spool = self._spool
        if spool is None:
            return 0
        try:
            return int(spool.undelivered())
        except OSError:
            return 0

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
        self._sender.stop = True
        self._sender.wakeup.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=1.0)
        if self._spool is not None:
            try:
                self._spool.close()  # fsync what is left; another process may send it
            except Exception as exc:
                warn_once(self._warned, "spool.close", "statistics spool close failed: %s", exc)
        if thread is None or not thread.is_alive():
            try:
                self.sink.close()
            except Exception:
                logger.debug("closing the statistics sink failed", exc_info=True)
            if self._sysmetrics is not None:
                self._sysmetrics.close()
        _process_hooks.unregister(self)
        return delivered

    def _after_fork_in_child(self) -> None:
        """In a forked child: fresh locks, no sender, disabled (the parent posts)."""
        self._init_state()
        self._disable("forked child process: the parent process posts statistics")

    def __enter__(self) -> StatisticsReporter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "enabled" if self.enabled else f"disabled: {self._disabled_reason}"
        return f"<StatisticsReporter to {self.sink.description} ({state})>"


from ._default_reporter import (  # noqa: E402 - the module functions live in their own room
    close,
    flush,
    get_reporter,
    report,
    set_reporter,
)


def __getattr__(name: str) -> Any:
    """``_default``: the process-wide reporter (read by :mod:`abeja_runtime.models`)."""
    if name == "_default":
        from . import _default_reporter

        return _default_reporter._default
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
