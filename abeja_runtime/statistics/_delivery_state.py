"""The reporter's queue and sequence state: what is reported, what may be posted next.

No threads are started here and no I/O is done: the reporter's training-thread side
and its sender thread both call into one :class:`DeliveryState`, under its lock, and
the unit tests drive it directly. The spool (when on) is seen only through two numbers
the caller passes in: the spool position a snapshot must wait for, and the position
the spool's sender has acknowledged.

Invariants (the rules every method keeps; ``seq`` numbers this reporter's reports
1, 2, ...):

I1. *Never older after newer.* A local snapshot is handed out for posting only when
    every local must-deliver snapshot with a lower ``seq`` is settled, and the spool's
    records up to its ``barrier`` are acknowledged; local snapshots are handed out in
    increasing ``seq``; a step snapshot older than a must-deliver one is dropped
    (coalesced), never posted late.
I2. *One durable path.* A must-deliver snapshot (an epoch end, or the latest step
    document when a flush runs) lives in exactly one place until it is settled: the
    spool (``spooled``: its spool position, acknowledged by the spool's sender,
    whichever process that is) or, when there is no spool or the disk refused it,
    ``memory``. Memory holds at most ``max_memory``; beyond that the oldest is dropped
    and counted in ``dropped``, never silently.
I3. *Memory stays flat for steps.* At most one step snapshot is held (``step``); a
    newer one replaces it (latest wins).
I4. ``settled_seq``: every local report with ``seq <= settled_seq`` was delivered,
    refused for good, or replaced by a newer snapshot that is itself settled.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

from ._documents import Snapshot, copy_document, drop_paths, freeze_tensors

__all__ = ["DeliveryState"]


class DeliveryState:
    """Reported documents, must-deliver snapshots and delivery counts of one reporter.

    Args:
        max_memory: how many must-deliver snapshots memory holds (see I2).
    """

    def __init__(self, max_memory: int) -> None:
        self.lock = threading.RLock()
        self.max_memory = max_memory
        self.doc: dict[str, Any] = {}
        self.seq = 0
        self.step_seq = 0  # seq of the latest step report
        self.taken_seq = 0  # seq of the document when the latest copy was taken
        self.must_seq = 0  # seq of the newest must-deliver snapshot begun
        self.stored_seq = 0  # seq of the newest must-deliver snapshot stored (spool/memory)
        self.memory: deque[Snapshot] = deque()
        self.spooled: deque[tuple[int, int]] = deque()  # (seq, spool position), oldest first
        self.step: Snapshot | None = None
        self.inflight: Snapshot | None = None
        self.settled_seq = 0
        self.refused: deque[int] = deque(maxlen=1024)  # seqs refused or dropped
        self.flush_seqs: set[int] = set()  # step documents a flush made must-deliver
        # counts
        self.epoch_ends = 0
        self.sent = 0
        self.sent_steps = 0
        self.failed = 0
        self.failed_steps = 0
        self.retried = 0
        self.dropped = 0
        self.repaired = 0
        self.lost_on_disk = 0  # must-deliver snapshots the spool refused (kept in memory)

    # ------------------------------------------------------------------ reporting side

    def begin_must(self, flushing: bool = False) -> Snapshot | None:
        """A frozen copy of the current document as a must-deliver snapshot (lock held).

        ``flushing``: the copy is of the latest step report (a flush makes it
        must-deliver); None when there is no such report to cover.
        """
        seq = self.seq
        if flushing:
            # the latest report is a step not yet made must-deliver nor delivered (the
            # sender may hold a copy in ``step``: it is dropped as overtaken)
            if self.step_seq != seq or seq <= self.must_seq or seq <= self.settled_seq:
                return None
            self.taken_seq = seq
            self.flush_seqs.add(seq)
        else:
            self.epoch_ends += 1
        try:
            frozen = freeze_tensors(self.doc)
        except Exception:  # a device error must not reach the training loop
            frozen = copy_document(self.doc)
        self.must_seq = seq
        return Snapshot(seq, frozen, True, time.time())

    def store_must(self, snapshot: Snapshot, position: int | None) -> None:
        """Where a must-deliver snapshot went: spool ``position``, or memory (None).

        Called in ``seq`` order (the reporter serialises must-deliver reports).
        """
        with self.lock:
            if position is not None:
                self.spooled.append((snapshot.seq, position))
            else:
                if len(self.memory) >= self.max_memory:
                    oldest = self.memory.popleft()
                    self.dropped += 1
                    self.refused.append(oldest.seq)
                self.memory.append(snapshot)
            if snapshot.seq > self.stored_seq:
                self.stored_seq = snapshot.seq

    def take_step(self, barrier: int, *, must: bool = False) -> bool:
        """Copy the current document into ``step`` when a step report came since (lock held).

        ``barrier``: the spool position the copy waits for. ``must``: a flush asked
        for it (posted without waiting for ``min_interval``). True when copied.
        """
        if self.step_seq <= self.taken_seq:
            return False
        if self.step_seq <= self.must_seq:  # a must-deliver snapshot covers it already
            self.taken_seq = self.step_seq
            return False
        seq = self.seq
        self.step = Snapshot(seq, copy_document(self.doc), False, time.time(), barrier)
        self.taken_seq = seq
        if must:
            self.flush_seqs.add(seq)
        return True

    # ------------------------------------------------------------------ sender side

    def next_local(self, acked: int) -> Snapshot | None:
        """The local snapshot to post next, given the spool's acknowledged position.

        Settles spooled snapshots the spool's sender acknowledged, drops a step that a
        must-deliver snapshot overtook, and keeps I1. None: nothing may go now.

        Sender thread only, without the lock (a flush in a SIGTERM handler may hold it
        on the training thread): the training thread only appends to ``memory`` and
        ``spooled`` and raises ``must_seq`` before ``stored_seq``, each one atomic.
        """
        seq_now = self.seq  # read first: writers raise step_seq/must_seq before seq
        while self.spooled and self.spooled[0][1] <= acked:
            seq, _ = self.spooled.popleft()
            self.settled_seq = max(self.settled_seq, seq)
        if self.stored_seq < self.must_seq:
            return None  # a must-deliver snapshot is being written: it goes first
        step = self.step
        if step is not None and step.seq <= self.must_seq:
            self.step = None  # coalesced: a newer document reaches the server
            step = None
        if self.spooled:
            return None  # older local records are with the spool's sender
        if self.memory:
            return self.memory[0]
        if step is not None and step.barrier <= acked:
            return step
        if step is None and self.step_seq <= self.taken_seq:
            # nothing in hand and nothing new: every report so far is settled
            self.settled_seq = max(self.settled_seq, seq_now)
        return None

    def has_work(self) -> bool:
        """True when something local is not settled yet (read without the lock)."""
        return bool(
            self.memory
            or self.spooled
            or self.step is not None
            or self.step_seq > self.taken_seq
            or self.stored_seq < self.must_seq
        )

    def settle(self, snapshot: Snapshot, delivered: bool) -> None:
        """The server took ``snapshot`` (or refused it for good): it leaves the queue.

        Sender thread only, without the lock (see :meth:`next_local`).
        """
        as_step = not snapshot.epoch_end or snapshot.seq in self.flush_seqs
        self.flush_seqs.discard(snapshot.seq)
        if self.memory and self.memory[0] is snapshot:
            self.memory.popleft()
        elif self.step is snapshot:
            self.step = None
        if self.inflight is snapshot:
            self.inflight = None
        if delivered:
            self.sent += 1
            self.sent_steps += as_step
        else:
            self.failed += 1
            self.failed_steps += as_step
            self.refused.append(snapshot.seq)
        # posted in seq order, and each document holds every earlier report
        if snapshot.seq > self.settled_seq:
            self.settled_seq = snapshot.seq

    def settle_remote(self, delivered: bool) -> None:
        """A spool record (any process's) was posted: count it."""
        if delivered:
            self.sent += 1
        else:
            self.failed += 1

    def repair(self, paths: set[str]) -> list[str]:
        """Drop ``paths`` from the merged document and from every local snapshot held.

        Called after a refusal the statistics rules did not foresee, so that the next
        report gets through. Returns the paths removed from the merged document.
        """
        removed: list[str] = []
        if self.lock.acquire(timeout=1.0):
            try:
                removed = drop_paths(self.doc, paths)
            finally:
                self.lock.release()
        for snapshot in [*self.memory, self.step]:
            if snapshot is not None:
                drop_paths(snapshot.document, paths)
        self.repaired += 1
        return removed

    def any_refused(self, after: int, upto: int) -> bool:
        """True when a snapshot with ``after < seq <= upto`` was refused or dropped."""
        return any(after < seq <= upto for seq in tuple(self.refused))

    def counters(self) -> dict[str, int]:
        """See :attr:`StatisticsReporter.counters <abeja_runtime.statistics.reporter.StatisticsReporter>`."""
        step_pending = (self.step is not None) + (self.step_seq > self.taken_seq)
        pending = len(self.memory) + len(self.spooled) + step_pending
        coalesced = self.seq - self.epoch_ends - self.sent_steps - self.failed_steps
        return {
            "reported": self.seq,
            "epoch_ends": self.epoch_ends,
            "sent": self.sent,
            "coalesced": max(0, coalesced - step_pending),
            "retried": self.retried,
            "failed": self.failed,
            "dropped": self.dropped,
            "pending": pending,
            "repaired": self.repaired,
        }
