"""The reporter's sender loop: one background thread that posts, retries and waits.

Each turn picks one document to post, in this order (rule I1 of
:mod:`abeja_runtime.statistics._delivery_state`):

1. with the spool on and this process its sender: the spool's oldest undelivered
   record, whichever process wrote it (the spool is the only source of must-deliver
   snapshots, so leftovers of an earlier process and other processes' epoch ends go
   out in spool order);
2. else this reporter's oldest must-deliver snapshot held in memory (no spool, or
   the disk refused it), once the spool's records before it were delivered;
3. else the latest step snapshot (coalesced: latest wins), at most once per
   ``min_interval`` unless a flush waits for it.

Delays come from one :class:`~abeja_runtime.api.retry.RetryPolicy` (the package's only
backoff); a flush cuts a running backoff short (:meth:`Sender.hurry`), and a server's
``Retry-After`` only when it would outlast the flush. A refusal the
statistics rules did not foresee (400/422) never silences the job: one ERROR line with
the server's reason and the keys added since the last accepted document, which are
then dropped from the merged document (counted as ``repaired``) so that the next
report gets through.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from ..api.retry import RETRYABLE_STATUSES, RetryPolicy
from ..errors import APIConnectionError, HttpError
from ._delivery_state import DeliveryState
from ._documents import Snapshot, convert_document, drop_paths, key_paths, warn_once
from .sysmetrics import SYSTEM_METRICS_KEY

if TYPE_CHECKING:
    from .sinks import StatisticsSink
    from .spool import Spool, SpoolRecord
    from .sysmetrics import SystemMetrics

__all__ = ["RETRY", "Sender", "Wakeup"]

logger = logging.getLogger("abeja_runtime.reporter")

#: The reporter retries for as long as the process lives (each try is one small post,
#: and newer snapshots replace what is retried): no retry count to speak of, a 30 s
#: backoff ceiling (an outage's end is noticed within 30 s, at once by a flush), a
#: server's Retry-After honoured up to 5 min; 408 and 500 retried too (a post replaces
#: the document, so a repeat is harmless), 500 at most a few times in a row.
RETRY = RetryPolicy(
    max_retries=2**62,
    backoff_max=30.0,
    retry_after_max=300.0,
    retry_statuses=RETRYABLE_STATUSES | {408, 500},
)
_MAX_500_TRIES = 5
#: how long the idle sender sleeps before looking again (it is woken when work arrives)
_IDLE_WAIT = 5.0
#: how often a sender with a spool looks for records of other processes, and a process
#: that is not the spool's sender for their delivery (one pread of the state file)
SPOOL_POLL = 0.2
#: how long the sender waits for the report lock (held for microseconds, unless a
#: signal handler interrupted report() on the main thread)
LOCK_WAIT = 0.05
#: statuses that mean "this document is malformed": the repair applies
_MALFORMED = frozenset({400, 422})
#: top-level keys the rules check fully: never the unforeseen cause of a refusal
_RULED = frozenset({"epoch", "num_epochs", "progress_percentage", SYSTEM_METRICS_KEY})
_NO_SPOOL = 2**62


class Wakeup:
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


class Sender:
    """The loop run by a reporter's sender thread (see the module docs).

    Args:
        state: the reporter's queue/sequence state.
        sink: where documents go.
        spool: the job's spool, or None.
        min_interval: seconds between step posts.
        sysmetrics: adds ``"system"`` to each post when given.
        warned: the reporter's once-only warning keys.
        on_delivered: called after each accepted post (the shutdown budget hears it).
    """

    def __init__(
        self,
        state: DeliveryState,
        sink: StatisticsSink,
        spool: Spool | None,
        min_interval: float,
        sysmetrics: SystemMetrics | None,
        warned: set[str],
        on_delivered: Any = None,
    ) -> None:
        self.state = state
        self.sink = sink
        self.spool = spool
        self.min_interval = min_interval
        self.sysmetrics = sysmetrics
        self.warned = warned
        self.on_delivered = on_delivered
        self.wakeup = Wakeup()
        self.stop = False
        self.idle = False
        self.flush_target = 0  # a flush waits for local reports up to this seq
        self.last_error: str | None = None
        self.acked = 0  # the spool position known to be acknowledged
        self.refused_records: deque[int] = deque(maxlen=1024)  # spool positions refused
        self._hurry = False
        self._server_asked_wait = False  # the running delay is the server's Retry-After
        self._hurry_deadline = math.inf  # the deadline of the latest flush
        self._accepted: set[str] | None = None  # key paths of the last accepted document
        self._strip: list[tuple[set[str], int]] = []  # (paths, spool position) repairs

    def hurry(self, deadline: float = math.inf) -> None:
        """Try at once: cut a running backoff short (a flush calls it; never blocks).

        A server's ``Retry-After`` that ends before ``deadline`` (the flush's, monotonic)
        is waited for: the server asked, and the flush has the time. One that would
        outlast the flush is cut too: better one early try than a flush that gives up
        without trying (after an outage the server is often back long before its wait).
        """
        self._hurry_deadline = deadline
        self._hurry = True
        self.wakeup.set()

    # ------------------------------------------------------------------ the loop

    def run(self) -> None:
        """Pick the next document, wait for its time, post it; until :attr:`stop`."""
        attempts = 0
        retry_at = 0.0
        last_post = -math.inf
        while True:
            try:
                if self._hurry:
                    self._hurry = False
                    if not (self._server_asked_wait and retry_at <= self._hurry_deadline):
                        retry_at = 0.0
                    attempts = min(attempts, 1)  # back off again from the start
                acked, record = self._spool_turn()
                state = self.state
                if state.step_seq > state.taken_seq and state.lock.acquire(timeout=LOCK_WAIT):
                    try:
                        state.take_step(self._barrier())
                    finally:
                        state.lock.release()
                local = state.next_local(acked)  # also settles what the spool acknowledged
                current = self._record_snapshot(record) if record is not None else local
                if current is None:
                    if self.stop:
                        return
                    self.idle = True
                    if not state.has_work() or self.spool is not None:
                        wait = _IDLE_WAIT if self.spool is None else SPOOL_POLL
                        self.wakeup.wait(wait)
                    else:
                        self.wakeup.wait(SPOOL_POLL)
                    self.idle = False
                    continue
                now = time.monotonic()
                due = retry_at
                is_step = record is None and current is state.step
                if is_step and self.flush_target <= state.settled_seq:
                    due = max(due, last_post + self.min_interval)
                if now < due:
                    if self.stop:
                        return
                    self.wakeup.wait(due - now)
                    continue
                state.inflight = current if record is None else None
                outcome = self._post(current, attempts)
                last_post = time.monotonic()
                if outcome is None or outcome < 0:
                    delivered = outcome is None
                    if record is not None:
                        state.settle_remote(delivered)
                        if not delivered:
                            self.refused_records.append(record.seq)
                        self._acknowledge(record.seq)
                    else:
                        state.settle(current, delivered)
                    if delivered and attempts:
                        logger.info("statistics delivered again after %d failed tries", attempts)
                    attempts = 0
                    retry_at = 0.0
                else:
                    state.retried += 1
                    attempts += 1
                    retry_at = last_post + outcome
                    if self.stop:
                        return
            except Exception:  # a bug here must not kill reporting for the rest of the run
                logger.exception("statistics sender failed; continuing")
                time.sleep(0.1)

    def _barrier(self) -> int:
        """The spool position a step copied now must wait for (every record written)."""
        spool = self.spool
        if spool is None or spool.broken:
            return 0
        try:
            return spool.last_seq()
        except OSError:
            return 0

    def _spool_turn(self) -> tuple[int, SpoolRecord | None]:
        """(acknowledged spool position, the record to post next or None).

        Becomes the spool's sender when records wait and no other process sends them
        (the one that did may have exited or been killed: the kernel dropped its lock).
        """
        spool = self.spool
        if spool is None or spool.broken:
            return _NO_SPOOL, None
        try:
            if not spool.is_sender:
                acked = spool.acknowledged_seq()
                if acked >= spool.last_seq() or not spool.try_become_sender():
                    self.acked = max(self.acked, acked)
                    return self.acked, None
            record = spool.next_record()
            if spool.broken:
                return _NO_SPOOL, None
            self.acked = max(self.acked, spool.acknowledged_seq())
            return self.acked, record
        except OSError as exc:
            spool._break(exc)
            return _NO_SPOOL, None

    def _record_snapshot(self, record: SpoolRecord) -> Snapshot:
        document = record.document
        for paths, upto in self._strip:
            if record.seq <= upto:
                document = dict(document)
                stages = document.get("stages")
                if isinstance(stages, dict):
                    document["stages"] = {k: dict(v) for k, v in stages.items()}
                drop_paths(document, paths)
        return Snapshot(0, document, True, record.time)

    def _acknowledge(self, seq: int) -> None:
        spool = self.spool
        assert spool is not None
        try:
            spool.acknowledge_seq(seq)
        except OSError as exc:
            spool._break(exc)
        self.acked = max(self.acked, seq)

    # ------------------------------------------------------------------ one post

    def _post(self, snapshot: Snapshot, failures: int) -> float | None:
        """Send one snapshot: None when delivered, -1 when refused for good, else a delay."""
        document = convert_document(snapshot.document, self.warned)
        if self.sysmetrics is not None:
            try:
                document[SYSTEM_METRICS_KEY] = self.sysmetrics.sample()
            except Exception as exc:  # metrics are extra; never block statistics
                warn_once(self.warned, "sysmetrics", "system metrics failed: %s", exc)
        try:
            self.sink.send(document)
        except HttpError as exc:
            status = exc.status_code or 0
            if 200 <= status < 300:  # accepted, only the response body was odd
                self._accepted_now(document)
                return None
            self.last_error = str(exc)
            delay = RETRY.delay_for(min(failures + 1, 64), exc, idempotent=True)
            if status == 500 and failures + 1 >= _MAX_500_TRIES:
                delay = None
            if delay is not None:
                retry_after = getattr(exc, "retry_after", None)
                self._server_asked_wait = isinstance(retry_after, (int, float))
                warn_once(
                    self.warned,
                    f"transient {status}",
                    "statistics post failed (%s); retrying in the background, "
                    "training is not affected",
                    exc,
                )
                return delay
            if status in _MALFORMED:
                self._refused(document, exc)
            else:
                warn_once(
                    self.warned,
                    f"permanent {status} {exc.error}",
                    "statistics refused by %s: %s. This snapshot is dropped; later ones are "
                    "still tried (repeats of this error are logged at debug level)",
                    self.sink.description,
                    exc,
                )
            return -1.0
        except APIConnectionError as exc:
            self.last_error = str(exc)
            warn_once(
                self.warned,
                "connection",
                "statistics API unreachable (%s); retrying in the background, "
                "training is not affected",
                exc,
            )
            self._server_asked_wait = False
            return RETRY.delay_for(min(failures + 1, 64), exc, idempotent=True) or RETRY.backoff(1)
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            warn_once(
                self.warned,
                f"sink {type(exc).__name__}",
                "statistics could not be written to %s: %s; snapshot dropped",
                self.sink.description,
                self.last_error,
            )
            return -1.0
        self._accepted_now(document)
        return None

    def _accepted_now(self, document: dict[str, Any]) -> None:
        self._accepted = key_paths(document)
        if self.on_delivered is not None:
            self.on_delivered()

    def _refused(self, document: dict[str, Any], exc: HttpError) -> None:
        """A malformed-document refusal the rules did not foresee: repair, log once."""
        paths = key_paths(document) - (self._accepted or set())
        paths = {p for p in paths if p not in _RULED and p != "stages"}
        removed: list[str] = []
        if paths:
            removed = self.state.repair(paths)
            upto = self._barrier()
            if upto:
                self._strip.append((paths, upto))
        key = f"refused {exc.status_code} {exc.error} {sorted(paths)}"
        if key in self.warned:
            logger.debug("statistics refused again: %s", exc)
            return
        self.warned.add(key)
        logger.error(
            "statistics refused by %s: %s. Keys added since the last accepted document: %s; "
            "%s so that later reports get through (the statistics rules did not foresee "
            "this refusal: please report it)",
            self.sink.description,
            exc,
            ", ".join(sorted(paths)) or "none",
            f"removed {', '.join(removed) or 'them'} from the reported statistics"
            if paths
            else "this snapshot is dropped",
        )
