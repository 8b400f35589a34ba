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
  :mod:`abeja_runtime.statistics._sender`.
* **Step-level** snapshots are throttled to one post per ``min_interval``; a newer
  one replaces an older one still waiting (latest wins, counted as *coalesced*).
* **Epoch-end** snapshots (``epoch_end=True``) are must-deliver: written to the job's
  on-disk spool (:mod:`abeja_runtime.statistics.spool`) before ``report()`` returns, and posted in
  spool order, each once the API takes it. The spool is the only source of
  must-deliver snapshots: the spool's sender (one process of the job at a time) posts
  every process's records, and what an earlier process left goes first, as soon as any
  reporter of the job starts, on ``flush()`` and at exit. Without a spool (outside a
  job, or ``ABEJA_RUNTIME_SPOOL=0``) they wait in memory (at most
  ``max_pending_epoch_ends``; beyond it the oldest is dropped and counted).
* The server never receives an older snapshot after a newer one (rule I1 of
  :mod:`abeja_runtime.statistics._delivery_state`).
* Failures: 429, 5xx, timeouts and refused connections are retried with the package's
  :class:`~abeja_runtime.api.retry.RetryPolicy` backoff and the server's ``Retry-After``;
  ``flush()`` cuts a running backoff short. Nothing is ever raised into the training
  loop except the ``StatisticsError`` above.
* ``flush()`` sends what is waiting at once and waits, within the process's single
  shutdown budget (:mod:`abeja_runtime.statistics._process_hooks`); it also runs at exit and on
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
    on/off: add CPU/memory/GPU metrics to the default reporter's documents (on
    inside a job, off outside one).
``ABEJA_RUNTIME_STATISTICS_FILE``
    outside a job, the JSON-lines file (default ``<result dir>/statistics.jsonl``).
``ABEJA_RUNTIME_HANDLE_SIGTERM``
    on/off: flush on SIGTERM (default on).
``ABEJA_RUNTIME_SPOOL`` / ``ABEJA_RUNTIME_SPOOL_DIR``
    on/off and location of the spool (see :mod:`abeja_runtime.statistics.spool`).

On/off variables take ``1/0/true/false/yes/no/on/off`` in any case
(:func:`abeja_runtime.config.env_flag`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Mapping
from typing import Any

from ..config import ENV_REPORT_INTERVAL, ENV_REPORT_TIMEOUT, ENV_SYSTEM_METRICS
from ..errors import ConfigurationError
from ..job import JobContext, rank_info
from ..statistics_rules import METRIC_KEYS
from . import Statistics, _process_hooks
from ._call_check import (
    _BOUND_LIMIT,
    _INT_LIMIT,
    _ITEM_BOUND,
    _RESERVED,
    _SHORT,
    CheckedReporting,
    merge_into,
)
from ._delivery_state import DeliveryState
from ._documents import Snapshot, convert_document, copy_document
from ._reporter_setup import ENV_STATISTICS_FILE, default_sink, default_spool, positive
from ._sender import Sender
from .sinks import StatisticsSink
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

DEFAULT_MIN_INTERVAL = 5.0
DEFAULT_REQUEST_TIMEOUT = 10.0
DEFAULT_MAX_PENDING_EPOCH_ENDS = 10_000

logger = logging.getLogger("abeja_runtime.reporter")


class StatisticsReporter(CheckedReporting):
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
        system_metrics: add CPU/memory/GPU metrics under the ``"system"`` key (sampled
            by :class:`SystemMetrics`' own timer thread, never the training thread);
            ``True`` or a ready :class:`SystemMetrics`. Off by default here; the default
            reporter turns it on inside a job (``ABEJA_RUNTIME_SYSTEM_METRICS``).
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
        self.min_interval = positive(
            "min_interval", min_interval, ENV_REPORT_INTERVAL, DEFAULT_MIN_INTERVAL
        )
        self.exit_timeout = positive(
            "exit_timeout", exit_timeout, ENV_EXIT_TIMEOUT, DEFAULT_EXIT_TIMEOUT
        )
        self.sigterm_timeout = positive(
            "sigterm_timeout", sigterm_timeout, ENV_SIGTERM_TIMEOUT, DEFAULT_SIGTERM_TIMEOUT
        )
        request_timeout = positive(
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
            sink = default_sink(context, request_timeout)
        self.sink: StatisticsSink = sink
        self._spool = default_spool(self.sink, spool, spool_dir, context)
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

    # ------------------------------------------------------------------ state

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
            if self._sysmetrics is not None:
                # the first sample is ready by the first post; at interpreter shutdown
                # (RuntimeError) posts go without
                with contextlib.suppress(RuntimeError):
                    self._sysmetrics.start()
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
            merge_into(state.doc, epoch, num_epochs, progress, values, removes)
            self._bound += items * _ITEM_BOUND + 64
            state.step_seq = seq = state.seq + 1  # step_seq first: see DeliveryState
            state.seq = seq
        finally:
            lock.release()
        if self._sender.idle:
            self._sender.wakeup.set()

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


# the exit flush and the fork hook from now on: a child forked before the first report
# must not post either (the hooks cost nothing while no reporter exists)
_process_hooks.register_hooks()

from ._default_reporter import (  # noqa: E402 - the module functions live in their own room
    close,
    flush,
    get_reporter,
    report,
    set_reporter,
)
