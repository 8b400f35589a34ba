"""The on-disk statistics spool: must-deliver snapshots survive outages, crashes and restarts.

Inside a job the spool is the only home of must-deliver snapshots (epoch ends, and the
latest step document when a flush runs): each is written here *before*
``report(..., epoch_end=True)`` returns, posted from here in spool order by the one
process that is the spool's sender (its own records and every other process's), and
acknowledged once the server took it. A restarted process of the same job (or
``abeja-runtime sync``) sends what is left, first. The format of the files is in
:mod:`abeja_runtime.statistics._spool_files`. This module never imports the reporter.

Concurrency: several processes of one job (the handler and its subprocesses, local
ranks that report) share a spool. Appends and compaction hold ``spool.lock``; exactly
one process at a time holds ``sender.lock`` and posts every record in ``seq`` order,
its own and the others'. A process that is not the sender still appends; its reporter
waits until the sender acknowledged its records before it posts anything newer, so the
server never receives an older snapshot after a newer one. When the sender exits (even
by SIGKILL: the kernel drops its locks) another process takes over, or a restart, or
``abeja-runtime sync``.

Costs: an append is one JSON encoding of the document, two ``pread``/``pwrite`` of the
state and one ``write`` under the lock, with no ``fsync`` (:meth:`Spool.sync` runs at
close and after a flush that could not deliver everything). It runs on the training
thread at an epoch end and *reads tensor values* (a CUDA sync): acceptable for epoch
ends, which are rare and must be on disk before ``report()`` returns. Step-level reports
never touch the spool.

Environment variables:

``ABEJA_RUNTIME_SPOOL``
    ``0``/``false`` turns the spool off (default on inside a training job).
``ABEJA_RUNTIME_SPOOL_DIR``
    the root holding one spool directory per job (default
    ``<ABEJA_STORAGE_DIR_PATH or ABEJA_TRAINING_RESULT_DIR or .>/.abeja-runtime/spool``).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ..config import (
    ENV_SPOOL,
    ENV_SPOOL_DIR,
)
from ..errors import StatisticsError
from ..jsonsafe import to_json_safe
from ._documents import convert_document
from ._spool_files import (
    DATA_FILE_NAME,
    LOCK_NAME,
    SENDER_LOCK_NAME,
    STATE_FILE_NAME,
    STATE_LEN,
    Flock,
    SpoolBusyError,
    SpoolRecord,
    count_undelivered,
    decode_state,
    default_spool_dir,
    encode_state,
    has_leftovers,
    line_of,
    parse_line,
    rebuild_state,
    record_from,
    spool_enabled,
    spool_root,
)

__all__ = [
    "DATA_FILE_NAME",
    "ENV_SPOOL",
    "ENV_SPOOL_DIR",
    "SENDER_LOCK_NAME",
    "Spool",
    "SpoolBusyError",
    "SpoolRecord",
    "default_spool_dir",
    "has_leftovers",
    "spool_enabled",
    "spool_root",
]


#: how long the training thread waits for the spool's thread lock before giving up on
#: this record (kept in memory instead): a SIGTERM handler that interrupted an append on
#: the same thread must not deadlock
_THREAD_LOCK_WAIT = 2.0

logger = logging.getLogger("abeja_runtime.spool")


_SPOOLS: weakref.WeakSet[Spool] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for spool in list(_SPOOLS):
        spool._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Spool:
    """One job's on-disk spool: the one home of must-deliver snapshots (see the module docs).

    Nothing touches the disk until the first record or the first send, so a reporter
    that turns out to be on another rank never creates files.

    Args:
        directory: the spool directory (created 0700 on first use).
        job: the job's identity, written into each record (``organization_id``,
            ``job_definition_name``, ``training_job_id``); ``abeja-runtime sync`` posts
            to it.
    """

    def __init__(
        self, directory: str | os.PathLike[str], *, job: Mapping[str, str] | None = None
    ) -> None:
        self.directory = Path(directory).absolute()
        self.data_path = self.directory / DATA_FILE_NAME
        self.state_path = self.directory / STATE_FILE_NAME
        self.job = dict(job) if job is not None else None
        self.writer = uuid.uuid4().hex[:12]
        self._job_json = json.dumps(self.job, separators=(",", ":")).encode()
        self._thread_lock = threading.Lock()
        self._lock = Flock(self.directory / LOCK_NAME)
        self._sender = Flock(self.directory / SENDER_LOCK_NAME)
        self._data_fd: int | None = None
        self._state_fd: int | None = None
        self._closed = False
        self._broken = False
        # sender side: what was read of the data file
        self._offset = 0
        self._lineno = 0
        self._acked = 0
        self._pending: deque[SpoolRecord] = deque()
        self._tail_seen: tuple[int, int] | None = None  # (offset, size) of a partial tail
        self.damaged = 0
        _SPOOLS.add(self)

    def __repr__(self) -> str:
        return f"Spool({str(self.directory)!r})"

    # ------------------------------------------------------------------ files

    def _open(self) -> None:
        """Create the directory and open the files (under the thread lock)."""
        if self._closed:
            raise OSError(errno.EBADF, "statistics spool is closed")
        if self._data_fd is not None:
            return
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            os.chmod(self.directory, 0o700)
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0)
        data_fd = os.open(self.data_path, flags | os.O_APPEND, 0o600)
        try:
            state_fd = os.open(self.state_path, flags, 0o600)
        except BaseException:
            os.close(data_fd)
            raise
        for fd in (data_fd, state_fd):
            with contextlib.suppress(OSError, AttributeError):
                os.fchmod(fd, 0o600)
        self._data_fd, self._state_fd = data_fd, state_fd

    @contextlib.contextmanager
    def _locked(self, wait: float = -1) -> Iterator[None]:
        """The thread lock, then the file lock (both are needed: flock is per file)."""
        if not self._thread_lock.acquire(timeout=wait):
            raise TimeoutError("statistics spool is busy in this process")
        try:
            self._open()
            self._lock.acquire()
            try:
                yield
            finally:
                self._lock.release()
        finally:
            self._thread_lock.release()

    def _read_state(self) -> tuple[int, int] | None:
        """(next seq, acknowledged seq) from the state file, or None when unreadable."""
        assert self._state_fd is not None
        try:
            raw = os.pread(self._state_fd, STATE_LEN, 0)
        except OSError:
            return None
        return decode_state(raw)

    def _write_state(self, next_seq: int, acked: int) -> None:
        assert self._state_fd is not None
        data = encode_state(next_seq, acked)
        written = os.pwrite(self._state_fd, data, 0)
        if written != len(data):
            raise OSError(errno.ENOSPC, "short write of the spool state")

    def _state(self) -> tuple[int, int]:
        """The counters (under the lock); rebuilt from the data file when unreadable."""
        state = self._read_state()
        if state is not None:
            return state
        assert self._data_fd is not None and self._state_fd is not None
        size = os.fstat(self._data_fd).st_size
        rebuilt = rebuild_state(os.pread(self._data_fd, size, 0) if size else b"")
        if os.fstat(self._state_fd).st_size:  # it existed and was damaged
            logger.warning(
                "statistics spool %s: state file damaged; rebuilt from %s",
                self.directory,
                self.data_path,
            )
        return rebuilt

    def _append_line(self, line: bytes) -> None:
        """Append one line (under the lock), after terminating a dead partial line."""
        fd = self._data_fd
        assert fd is not None
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            # a writer died mid-line (or the disk filled): end that line so that it is
            # skipped on its own and this record stays whole
            line = b"\n" + line
        try:
            written = os.write(fd, line)
        except OSError:
            self._truncate_to(size)
            raise
        if written != len(line):
            self._truncate_to(size)
            raise OSError(errno.ENOSPC, "short write to the statistics spool (disk full?)")

    def _truncate_to(self, size: int) -> None:
        with contextlib.suppress(OSError):
            assert self._data_fd is not None
            os.ftruncate(self._data_fd, size)

    # ------------------------------------------------------------------ writing

    def append(
        self,
        document: Mapping[str, Any],
        *,
        lseq: int = 0,
        created: float | None = None,
    ) -> int:
        """Write one must-deliver document; returns its spool ``seq``.

        Runs on the reporting thread: converts the document to JSON (reading tensor
        values) outside the lock, then appends under it. No fsync.

        Raises:
            OSError: the spool cannot be written (full disk, read-only file system).
            TimeoutError: the spool is busy on another thread for seconds.
            StatisticsError: never for a value the reporter accepted: a value that
                fails to convert is left out (and logged), as the reporter does.
        """
        try:
            safe = to_json_safe(document)
        except StatisticsError:
            safe = convert_document(document, set())
        doc = json.dumps(safe, allow_nan=False, separators=(",", ":"), ensure_ascii=False)
        when = time.time() if created is None else created
        with self._locked(_THREAD_LOCK_WAIT):
            next_seq, acked = self._state()
            seq = next_seq
            # the counter first: a crash between the two leaves a gap, never a reused seq
            self._write_state(seq + 1, acked)
            payload = (
                b'{"seq":%d,"time":%.6f,"pid":%d,"writer":"%s","lseq":%d,"job":%s,"doc":%s}'
                % (
                    seq,
                    when,
                    os.getpid(),
                    self.writer.encode(),
                    lseq,
                    self._job_json,
                    doc.encode(),
                )
            )
            self._append_line(line_of(payload))
        return seq

    def _break(self, exc: BaseException) -> None:
        """Stop using the spool for sending after an I/O error (memory goes on)."""
        if not self._broken:
            self._broken = True
            logger.warning(
                "statistics spool %s could not be read or updated (%s): records already "
                "there stay on disk for the next start of this job or `abeja-runtime sync`; "
                "this process sends what it reports from memory",
                self.directory,
                exc,
            )

    # ------------------------------------------------------------------ sender side

    @property
    def is_sender(self) -> bool:
        """True while this instance holds the sender lock."""
        return self._sender.held

    @property
    def broken(self) -> bool:
        """True after an I/O error made this instance stop reading the spool."""
        return self._broken

    def last_seq(self) -> int:
        """The seq of the newest record written by any process (0 when none); one pread."""
        with self._thread_lock:
            self._open()
            state = self._read_state()
        return 0 if state is None else state[0] - 1

    def peek_acknowledged(self) -> int:
        """:meth:`acknowledged_seq` without the thread lock (0 when unknown).

        For a flush that may run in a signal handler which interrupted this very
        thread inside the spool: one ``pread`` of the state line, which is written in
        place with one ``pwrite`` and checksummed.
        """
        fd = self._state_fd
        if fd is None:
            return 0
        try:
            state = self._read_state()
        except (OSError, AssertionError):
            return 0
        return 0 if state is None else state[1]

    def next_record(self) -> SpoolRecord | None:
        """The oldest record not yet acknowledged, or None (sender only; reads new lines).

        Never raises: an I/O error marks the spool broken (logged once) and returns None.
        """
        if self._broken or not self._sender.held:
            return None
        try:
            self._refresh()
        except OSError as exc:
            self._break(exc)
            return None
        return self._pending[0] if self._pending else None

    def undelivered(self) -> int:
        """How many records are not acknowledged yet, read from the file by anyone.

        For the last line of a stopping process ("N snapshots kept in the spool"); it
        parses the whole data file, so it is not for a hot path.
        """
        acked = 0
        try:  # works after close() too: the last line is logged after the spool closed
            with open(self.state_path, "rb") as fh:
                state = decode_state(fh.read(STATE_LEN))
            acked = 0 if state is None else state[1]
        except OSError:
            acked = 0
        try:
            with open(self.data_path, "rb") as fh:
                data = fh.read()
        except OSError:
            return 0
        return count_undelivered(data, acked)

    def try_become_sender(self) -> bool:
        """Take the sender lock if no other process holds it (never waits)."""
        if self._sender.held:
            return True
        with self._thread_lock:
            self._open()
            if not self._sender.acquire(blocking=False):
                return False
            # a new sender reads the whole spool from the start
            self._offset = self._lineno = self._acked = 0
            self._pending.clear()
            self._tail_seen = None
            return True

    def release_sender(self) -> None:
        """Let another process become the sender."""
        with self._thread_lock:
            self._sender.release()

    def acknowledged_seq(self) -> int:
        """The highest seq the sender acknowledged (0 when unknown); read without the lock."""
        with self._thread_lock:
            self._open()
            state = self._read_state()
        return 0 if state is None else state[1]

    def pending(self) -> list[SpoolRecord]:
        """The records not yet acknowledged, oldest first (sender only: reads new lines)."""
        if not self.try_become_sender():
            raise SpoolBusyError(
                f"another process is sending the statistics spool {self.directory}"
            )
        with self._locked():  # whole lines only: a partial last line is a dead writer's
            self._read_new(under_lock=True)
        return list(self._pending)

    def _refresh(self) -> None:
        """Read the lines appended since the last read (sender only)."""
        with self._thread_lock:
            stuck = self._read_new(under_lock=False)
        if stuck:  # a partial last line that did not change: look under the lock
            with self._locked():
                self._read_new(under_lock=True)

    def _read_new(self, *, under_lock: bool) -> bool:
        """Parse new complete lines (thread lock held); True when a partial tail is stuck.

        Without the file lock a partial last line may be a write in progress; under it
        (appends are whole under the lock) it is a dead writer's: it is terminated with
        a newline so that it is skipped as one damaged record.
        """
        fd = self._data_fd
        assert fd is not None
        size = os.fstat(fd).st_size
        if size < self._offset:  # pragma: no cover - only the sender truncates
            self._offset = self._lineno = 0
            self._pending.clear()
        if size == self._offset:
            return False
        data = os.pread(fd, size - self._offset, self._offset)
        end = data.rfind(b"\n") + 1
        stuck = False
        if end < len(data):
            if under_lock:
                os.write(fd, b"\n")
                data += b"\n"
                end = len(data)
            else:
                stuck = self._tail_seen == (self._offset + end, size)
                self._tail_seen = (self._offset + end, size)
        self._parse(data[:end])
        self._offset += end
        return stuck

    def _parse(self, data: bytes) -> None:
        if not data:
            return
        state = self._read_state()
        if state is not None:
            self._acked = max(self._acked, state[1])
        for line in data.split(b"\n")[:-1]:
            self._lineno += 1
            obj, why = parse_line(line)
            seq = None if obj is None else obj.get("seq")
            if obj is not None and isinstance(obj.get("ack"), int):
                self._acked = max(self._acked, obj["ack"])
                continue
            if obj is None or not isinstance(seq, int) or not isinstance(obj.get("doc"), dict):
                self.damaged += 1
                logger.warning(
                    "statistics spool %s: line %d is damaged (%s); that record is skipped",
                    self.data_path,
                    self._lineno,
                    why or "not a statistics record",
                )
                continue
            self._pending.append(record_from(obj, seq, self._lineno))
        while self._pending and self._pending[0].seq <= self._acked:
            self._pending.popleft()

    def acknowledge_seq(self, seq: int) -> None:
        """The server took record ``seq`` and (posted in order) every earlier one.

        Appends an ack record, or truncates the data file when nothing is left.
        """
        if not self._sender.held or self._broken:
            return
        with self._locked():
            self._read_new(under_lock=True)
            self._acked = max(self._acked, seq)
            while self._pending and self._pending[0].seq <= self._acked:
                self._pending.popleft()
            next_seq, _ = self._state()
            self._write_state(next_seq, self._acked)
            assert self._data_fd is not None
            if not self._pending and os.fstat(self._data_fd).st_size == self._offset:
                os.ftruncate(self._data_fd, 0)
                self._offset = self._lineno = 0
                self._tail_seen = None
            else:
                payload = b'{"ack":%d,"time":%.6f,"pid":%d}' % (seq, time.time(), os.getpid())
                self._append_line(line_of(payload))

    # ------------------------------------------------------------------ lifecycle

    def sync(self) -> None:
        """fsync the files (at close, and after a flush that left records behind)."""
        with self._thread_lock:
            for fd in (self._data_fd, self._state_fd):
                if fd is not None:
                    with contextlib.suppress(OSError):
                        os.fsync(fd)

    def close(self) -> None:
        """fsync, give up the sender role, close the files; later records fail."""
        if self._closed:
            return
        self.sync()
        with self._thread_lock:
            self._closed = True
            self._sender.close()
            self._lock.close()
            for fd in (self._data_fd, self._state_fd):
                if fd is not None:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            self._data_fd = self._state_fd = None

    def is_empty(self) -> bool:
        """True when nothing is left to send (sender only)."""
        return not self.pending()

    def remove(self) -> None:
        """Delete the spool directory (sender only, after everything was delivered)."""
        if self.pending():
            raise SpoolBusyError(f"the statistics spool {self.directory} still holds records")
        self.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    def _after_fork_in_child(self) -> None:
        self._thread_lock = threading.Lock()
        self._sender.forget_after_fork()
        self._lock.forget_after_fork()
        self._data_fd = self._state_fd = None
        self._closed = True  # the parent owns this spool
