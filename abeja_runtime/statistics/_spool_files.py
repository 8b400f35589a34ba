"""The spool's on-disk pieces: where it is, its files, their format and its file lock.

Kept apart from :mod:`abeja_runtime.statistics.spool` (which decides what is written and sent)
so that the format can be read, and tested, on its own.

* A job's spool is ``<spool root>/<training job id>`` (:func:`default_spool_dir`);
  the root is ``ABEJA_RUNTIME_SPOOL_DIR``, else ``.abeja-runtime/spool`` under the
  storage or result dir.
* A record line is ``"<crc32 hex> <json>\\n"``: a line whose checksum or JSON does
  not check (a killed writer, a full disk) is recognised and skipped alone.
* The state line is ``"<crc> <next seq> <acknowledged seq>\\n"``, fixed width, so an
  in-place rewrite never leaves old bytes behind.
* :class:`Flock` is the ``flock(2)`` lock :mod:`filelock` takes on POSIX, held on a
  descriptor kept open (through ``filelock`` each acquire/release costs about 70 us of
  bookkeeping, a third of an epoch end's 200 us budget; the raw call about 1 us);
  :class:`filelock.FileLock` where ``fcntl`` does not exist.

Layout of one job's spool directory (mode 0700; files 0600)::

    <root>/<training job id>/
        records.log   append-only records, one per line: "<crc32 hex> <json>\\n"
        state         "<crc32 hex> <next seq> <acknowledged seq>\\n", rewritten in place
        spool.lock    held (flock) while appending, acknowledging or compacting
        sender.lock   held (flock, non-blocking try) by the one process that sends

A data record's JSON holds a spool-wide sequence number (``seq``, assigned under the
lock, so the file order is the global report order across processes), the job's
identity, the wall time, the writer's pid, a per-writer id and report number (so that a
process recognises its own records) and the JSON-safe document (``doc``). The sender
appends ``{"ack": seq}`` records as the server takes records; when everything written
has been acknowledged the data file is truncated ("removed once the server accepted
them"). Only documents are written: never a credential.

Damage: each line carries its CRC-32; a line whose CRC or JSON does not check (a
process killed mid-write, a full disk, a bad sector) is skipped with one warning naming
the file and line, and every other record is delivered. An append first terminates a
dead partial line left by a killed writer, so the damage never spreads to the next
record. The ``state`` file is a cache of the counters for the hot path; when it is
unreadable it is rebuilt from ``records.log``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from ..config import (
    ENV_RESULT_DIR,
    ENV_SPOOL,
    ENV_SPOOL_DIR,
    ENV_STORAGE_DIR,
    RUNTIME_DIR_NAME,
    env_flag,
)

try:  # POSIX
    import fcntl

    _HAVE_FCNTL = True
except ImportError:  # pragma: no cover - Windows
    _HAVE_FCNTL = False

__all__ = [
    "DATA_FILE_NAME",
    "LOCK_NAME",
    "SENDER_LOCK_NAME",
    "SPOOL_SUBDIR",
    "STATE_FILE_NAME",
    "STATE_LEN",
    "Flock",
    "SpoolBusyError",
    "SpoolRecord",
    "count_undelivered",
    "decode_state",
    "default_spool_dir",
    "encode_state",
    "has_leftovers",
    "line_of",
    "parse_line",
    "rebuild_state",
    "record_from",
    "spool_enabled",
    "spool_root",
]

DATA_FILE_NAME = "records.log"
STATE_FILE_NAME = "state"
LOCK_NAME = "spool.lock"
SENDER_LOCK_NAME = "sender.lock"
#: the library's own working directory name (never part of an uploaded model or source)
SPOOL_SUBDIR = os.path.join(RUNTIME_DIR_NAME, "spool")


def spool_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """``ABEJA_RUNTIME_SPOOL`` (default on), parsed by :func:`abeja_runtime.config.env_flag`.

    Raises:
        ConfigurationError: the variable holds something other than an on/off word.
    """
    return env_flag(ENV_SPOOL, True, environ)


def has_leftovers(directory: str | os.PathLike[str]) -> bool:
    """True when the spool in ``directory`` may hold undelivered records (one ``stat``).

    Cheap enough for every reporter start and for ``import abeja_runtime``: what an
    earlier process left must go first, without waiting for a new report.
    """
    try:
        return os.stat(os.path.join(directory, DATA_FILE_NAME)).st_size > 0
    except OSError:
        return False


def spool_root(environ: Mapping[str, str] | None = None) -> Path:
    """The directory holding one spool per job (see the module docs)."""
    env = os.environ if environ is None else environ
    explicit = env.get(ENV_SPOOL_DIR, "").strip()
    if explicit:
        return Path(explicit).expanduser()
    base = env.get(ENV_STORAGE_DIR, "").strip() or env.get(ENV_RESULT_DIR, "").strip() or "."
    return Path(base) / SPOOL_SUBDIR


def default_spool_dir(training_job_id: str, environ: Mapping[str, str] | None = None) -> Path:
    """``<spool root>/<training job id>``: the spool a job's processes share."""
    return spool_root(environ) / training_job_id


#: the state line: "<crc> <next seq> <acknowledged seq>\n", fixed width so that an
#: in-place rewrite never leaves old bytes behind
STATE_WIDTH = 20
STATE_LEN = 8 + 1 + STATE_WIDTH + 1 + STATE_WIDTH + 1


def encode_state(next_seq: int, acked: int) -> bytes:
    """The state line for these counters."""
    body = b"%0*d %0*d" % (STATE_WIDTH, next_seq, STATE_WIDTH, acked)
    return b"%08x %s\n" % (zlib.crc32(body), body)


def decode_state(raw: bytes) -> tuple[int, int] | None:
    """(next seq, acknowledged seq) from a state line, or None when it does not check."""
    if len(raw) != STATE_LEN or raw[8:9] != b" " or raw[-1:] != b"\n":
        return None
    body = raw[9:-1]
    try:
        if int(raw[:8], 16) != zlib.crc32(body):
            return None
        next_text, acked_text = body.split(b" ")
        return int(next_text), int(acked_text)
    except ValueError:
        return None


class Flock:
    """An exclusive lock on a file, shared by every process that opens the same path.

    POSIX: ``flock(2)`` on a descriptor kept open (the lock :mod:`filelock` takes, without
    its 70 us of bookkeeping per acquire). Elsewhere: :class:`filelock.FileLock`.
    A ``flock`` lock belongs to the open file, not the thread: callers serialise their
    own threads.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._filelock: Any = None
        self.held = False

    def _open(self) -> int:
        if self._fd is None:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            self._fd = fd
        return self._fd

    def acquire(self, blocking: bool = True) -> bool:
        if self.held:
            return True
        if not _HAVE_FCNTL:  # pragma: no cover - Windows
            import filelock

            if self._filelock is None:
                self._filelock = filelock.FileLock(
                    str(self.path), thread_local=False, preserve_lock_file=True
                )
            try:
                self._filelock.acquire(blocking=blocking)
            except filelock.Timeout:
                return False
            self.held = True
            return True
        fd = self._open()
        flags = fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB)
        try:
            fcntl.flock(fd, flags)
        except BlockingIOError:
            return False
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                return False
            raise
        self.held = True
        return True

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        if self._filelock is not None:  # pragma: no cover - Windows
            self._filelock.release()
            return
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        self.release()
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def forget_after_fork(self) -> None:
        """In a forked child: drop the inherited descriptor without unlocking the parent's."""
        fd, self._fd = self._fd, None
        self.held = False
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)  # closing a duplicate never releases the parent's flock


def line_of(payload: bytes) -> bytes:
    return b"%08x %s\n" % (zlib.crc32(payload), payload)


def parse_line(line: bytes) -> tuple[dict[str, Any] | None, str]:
    """The record's JSON object, or (None, why it is damaged)."""
    if len(line) < 10 or line[8:9] != b" ":
        return None, "truncated or malformed"
    payload = line[9:]
    try:
        crc = int(line[:8], 16)
    except ValueError:
        return None, "bad checksum field"
    if zlib.crc32(payload) != crc:
        return None, "checksum mismatch"
    try:
        obj = json.loads(payload)
    except ValueError:
        return None, "invalid JSON"
    if not isinstance(obj, dict):
        return None, "not a record"
    return obj, ""


class SpoolBusyError(RuntimeError):
    """Another process is this spool's sender (``abeja-runtime sync`` refuses then)."""


class SpoolRecord(NamedTuple):
    """One must-deliver document read back from the spool.

    Attributes:
        seq: spool-wide position (1, 2, ...), the order in which records are posted.
        document: the JSON-safe statistics document.
        time: wall-clock time of the report.
        pid: the writing process.
        writer: the writing :class:`Spool` instance's id.
        lseq: the writer's own report number (its reporter's ``Snapshot.seq``).
        job: the job's identity (``organization_id``, ``job_definition_name``,
            ``training_job_id``), or None when the writer did not know it.
        line: line number in the data file (for messages).
    """

    seq: int
    document: dict[str, Any]
    time: float
    pid: int
    writer: str
    lseq: int
    job: dict[str, str] | None
    line: int


def record_from(obj: dict[str, Any], seq: int, line: int) -> SpoolRecord:
    """The record of a data line's checked JSON object (``seq`` and ``doc`` are valid)."""
    job = obj.get("job")
    return SpoolRecord(
        seq=seq,
        document=obj["doc"],
        time=float(obj.get("time") or 0.0),
        pid=int(obj.get("pid") or 0),
        writer=str(obj.get("writer") or ""),
        lseq=int(obj.get("lseq") or 0),
        job=job if isinstance(job, dict) else None,
        line=line,
    )


def count_undelivered(data: bytes, acked: int) -> int:
    """How many data records of a whole ``records.log`` are past every acknowledgement."""
    seqs: list[int] = []
    for line in data.split(b"\n"):
        obj, _ = parse_line(line)
        if obj is None:
            continue
        ack = obj.get("ack")
        if isinstance(ack, int):
            acked = max(acked, ack)
            continue
        seq = obj.get("seq")
        if isinstance(seq, int):
            seqs.append(seq)
    return sum(1 for seq in seqs if seq > acked)


def rebuild_state(data: bytes) -> tuple[int, int]:
    """(next seq, acknowledged seq) read back from a whole ``records.log``."""
    max_seq = acked = 0
    for line in data.split(b"\n"):
        obj, _ = parse_line(line)
        if obj is None:
            continue
        if isinstance(obj.get("seq"), int):
            max_seq = max(max_seq, obj["seq"])
        if isinstance(obj.get("ack"), int):
            acked = max(acked, obj["ack"])
    return max_seq + 1, acked
