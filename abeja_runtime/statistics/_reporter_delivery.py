"""The delivery side of a :class:`~abeja_runtime.statistics.reporter.StatisticsReporter`.

Where a must-deliver snapshot goes (the spool, else memory), :meth:`flush` and
:meth:`close` within the process's shutdown budget, and the last line saying what
became of the statistics. Kept apart from the reporting side (``report()`` and its
checks, in :mod:`abeja_runtime.statistics.reporter`) so that each reads on its own; the state
both sides share is :class:`~abeja_runtime.statistics._delivery_state.DeliveryState`.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from . import _process_hooks
from ._delivery_state import DeliveryState
from ._documents import Snapshot, warn_once
from ._sender import LOCK_WAIT, Sender

if TYPE_CHECKING:
    from .sinks import StatisticsSink
    from .spool import Spool
    from .sysmetrics import SystemMetrics

__all__ = ["DeliverySide"]

logger = logging.getLogger("abeja_runtime.reporter")

#: how long a flush waits for a post of the latest document already on the wire before
#: it spools that document anyway (a local post takes milliseconds; one slower than
#: this has an unknown outcome, and the document must be on disk)
INFLIGHT_WAIT = 1.0


class DeliverySide:
    """Flush, close and the durable store of a reporter (a base class, see the module docs)."""

    exit_timeout: float
    sink: StatisticsSink
    _off: bool
    _closed: bool
    _disabled_reason: str | None
    _thread: threading.Thread | None
    _state: DeliveryState
    _lock: threading.RLock
    _must_lock: threading.RLock
    _spool: Spool | None
    _sender: Sender
    _sysmetrics: SystemMetrics | None
    _warned: set[str]
    _disk_error: str | None

    def _start(self) -> bool:  # pragma: no cover - defined by the reporter
        raise NotImplementedError

    def _disable(self, reason: str) -> None:  # pragma: no cover - defined by the reporter
        raise NotImplementedError

    @property
    def spool_directory(self) -> Path | None:
        """The spool this reporter writes must-deliver snapshots to, or None."""
        return None if self._spool is None else Path(self._spool.directory)

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
            self._await_inflight_step(min(deadline, started + INFLIGHT_WAIT))
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
        sender.hurry(deadline)
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

    def _await_inflight_step(self, until: float) -> None:
        """Let a post of the latest document already on the wire end first (until ``until``).

        Otherwise the flush would spool the very document that post carries and the
        server would get it twice. A post still unanswered by ``until`` has an unknown
        outcome: the flush spools the document then, and a repeat is allowed (I2).
        """
        state = self._state
        inflight = state.inflight
        if inflight is None or inflight.seq != state.seq:
            return
        pause = 0.0005
        while state.inflight is inflight and time.monotonic() < until:
            time.sleep(pause)  # polling: this may run inside a SIGTERM handler
            pause = min(pause * 2, 0.01)

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
