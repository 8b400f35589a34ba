"""The handler's process: its environment's ``PYTHONPATH``, signals, its whole tree."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

if TYPE_CHECKING:  # pragma: no cover
    pass

__all__ = ["kill_process_tree"]


def _child_pythonpath(existing: str | None) -> str:
    """``PYTHONPATH`` that lets the child import this very ``abeja_runtime``.

    The child runs from the source directory, so a runner started from a source
    checkout (not installed) would otherwise not find its own package there.
    Appended, never prepended: the source directory's modules come first.
    """
    package_root = str(Path(__file__).resolve().parents[2])
    parts = [p for p in (existing or "").split(os.pathsep) if p]
    if package_root not in parts:
        parts.append(package_root)
    return os.pathsep.join(parts)


# --------------------------------------------------------------------------- processes


def kill_process_tree(pid: int, *, timeout: float = 5.0, extra: Iterable[Any] = ()) -> None:
    """SIGKILL ``pid``, every descendant of it and its process group.

    Descendants are collected before anything is killed (orphans are re-parented
    and could no longer be found from ``pid``); ``extra`` adds processes seen
    earlier that may have left the tree (a daemonised grandchild). The process
    group catches the rest, since the runner started ``pid`` as a group leader.
    """
    victims: dict[int, psutil.Process] = {}
    for proc in extra:
        with contextlib.suppress(psutil.Error):
            if proc.is_running():
                victims[proc.pid] = proc
    try:
        parent = psutil.Process(pid)
        for child in parent.children(recursive=True):
            victims[child.pid] = child
        victims[parent.pid] = parent
    except psutil.Error:
        pass
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)
    for proc in victims.values():
        with contextlib.suppress(psutil.Error):
            proc.kill()
    # Our own child is left for its Popen to reap: psutil would reap it here and
    # Popen would then read exit status 0 for a process that was killed.
    others = [p for pid_, p in victims.items() if pid_ != pid or not _is_our_child(p)]
    psutil.wait_procs(others, timeout=timeout)


def _is_our_child(proc: psutil.Process) -> bool:
    try:
        return proc.ppid() == os.getpid()
    except psutil.Error:
        return False


class _ProcessTree:
    """The handler process and every descendant seen while it ran."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.seen: dict[int, psutil.Process] = {}
        self.refresh()

    def refresh(self) -> None:
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(self.pid).children(recursive=True):
                self.seen.setdefault(child.pid, child)

    def kill(self) -> None:
        kill_process_tree(self.pid, extra=list(self.seen.values()))


def _read_outcome(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


@contextlib.contextmanager
def _forwarded_signals(received: list[int]) -> Iterator[None]:
    """Record SIGINT/SIGTERM instead of dying, while the handler runs (main thread only).

    A signal this process was started with ignored stays ignored, as in Python
    and the shells: a runner started in the background of a non-interactive
    shell (``abeja-runtime run ... &``) ignores ``SIGINT``, so a Ctrl-C meant
    for the foreground command does not stop the job.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def record(signum: int, _frame: Any) -> None:
        received.append(signum)

    previous = {
        sig: signal.signal(sig, record)
        for sig in (signal.SIGINT, signal.SIGTERM)
        if signal.getsignal(sig) is not signal.SIG_IGN
    }
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
