"""What ``abeja-runtime run`` prints: the handler's output, and the job's progress.

A sticky status line on a terminal, plain progress lines otherwise (CI logs must stay
readable: no carriage-return animation into a file).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Mapping
from typing import IO, TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:  # pragma: no cover
    pass

from ..statistics_rules import progress_fraction

__all__ = ["format_progress", "progress_fraction"]


# --------------------------------------------------------------------------- output


def _scalar(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None if value is None else str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, str):
        return value if len(value) <= 24 else value[:23] + "~"
    return None


def format_progress(statistics: Mapping[str, Any] | None, *, width: int = 20) -> str:
    """One line for a statistics document: ``epoch 3/10 [####----] 30% train loss=0.5 ...``.

    Stage values come in the order the handler reported them; non-scalar extras
    (nested system metrics, lists) are left out to keep it one readable line.
    """
    if not statistics:
        return "no statistics yet"
    parts: list[str] = []
    head: list[str] = []
    epoch, total = statistics.get("epoch"), statistics.get("num_epochs")
    if epoch is not None:
        head.append(f"epoch {epoch}/{total}" if total is not None else f"epoch {epoch}")
    fraction = progress_fraction(statistics)
    if fraction is not None:
        filled = round(fraction * width)
        head.append(f"[{'#' * filled}{'-' * (width - filled)}] {fraction * 100:3.0f}%")
    if head:
        parts.append(" ".join(head))
    stages = statistics.get("stages")
    if isinstance(stages, Mapping):
        for stage, values in stages.items():
            if isinstance(values, Mapping):
                shown = [
                    f"{key}={text}"
                    for key, value in values.items()
                    if (text := _scalar(value)) is not None
                ]
                if shown:
                    parts.append(f"{stage} " + " ".join(shown))
    extras = [
        f"{key}={text}"
        for key, value in statistics.items()
        if key not in ("epoch", "num_epochs", "progress_percentage", "stages")
        and (text := _scalar(value)) is not None
    ]
    if extras:
        parts.append(" ".join(extras))
    return " | ".join(parts) if parts else "no statistics yet"


class _Console:
    """Where the run's lines go: handler output verbatim, our notes, the progress.

    On a terminal the progress is one sticky line at the bottom, cleared before
    and redrawn after every other line. Anywhere else (CI, a file, a pipe) each
    change of progress is one plain line: no carriage returns in logs.
    Thread-safe: two output pumps and the status poller write concurrently.
    """

    PREFIX = "abeja-runtime: "

    def __init__(self, out: TextIO, err: TextIO, live: bool) -> None:
        self.out = out
        self.err = err
        self.live = live
        self._lock = threading.Lock()
        self._status = ""
        self._shown = False
        self._last_plain = ""

    @staticmethod
    def _write(stream: TextIO, text: str) -> None:
        try:
            stream.write(text)
        except UnicodeEncodeError:
            encoding = getattr(stream, "encoding", None) or "ascii"
            stream.write(text.encode(encoding, "backslashreplace").decode(encoding))
        stream.flush()

    def _clear(self) -> None:
        if self.live and self._shown:
            self._write(self.out, "\r\x1b[K")
            self._shown = False

    def _draw(self) -> None:
        if self.live and self._status:
            columns = shutil.get_terminal_size((100, 24)).columns
            self._write(self.out, self._status[: max(columns - 1, 10)])
            self._shown = True

    def note(self, text: str, *, error: bool = False) -> None:
        with self._lock:
            self._clear()
            self._write(self.err if error else self.out, f"{self.PREFIX}{text}\n")
            self._draw()

    def line(self, text: str, *, error: bool = False) -> None:
        with self._lock:
            self._clear()
            self._write(self.err if error else self.out, text + "\n")
            self._draw()

    def status(self, text: str, *, final: bool = False) -> None:
        """Show the job's progress; ``final``: as a plain line, whatever the mode."""
        with self._lock:
            if self.live and final:
                self._clear()
                self._status = ""
                self._write(self.out, f"{self.PREFIX}{text}\n")
            elif self.live:
                self._clear()
                self._status = text
                self._draw()
            elif text != self._last_plain:
                self._last_plain = text
                self._write(self.out, f"{self.PREFIX}{text}\n")

    def close(self) -> None:
        with self._lock:
            self._clear()
            self._status = ""


def _pump(pipe: IO[bytes], console: _Console, error: bool) -> None:
    """Copy the child's output to the console line by line.

    A carriage return inside a line (a progress bar in the handler) keeps only
    what a terminal would show last. Lines are read in bounded chunks, so a
    handler printing megabytes without a newline cannot exhaust our memory.
    """
    try:
        for raw in iter(lambda: pipe.readline(65536), b""):
            text = raw.decode("utf-8", "replace").rstrip("\n").rstrip("\r")
            if "\r" in text:
                text = next((seg for seg in reversed(text.split("\r")) if seg), "")
            console.line(text, error=error)
    finally:
        pipe.close()


def _start_pumps(proc: subprocess.Popen[bytes], console: _Console) -> list[threading.Thread]:
    """One daemon thread per output pipe of ``proc``, copying it to ``console``."""
    assert proc.stdout is not None and proc.stderr is not None
    pumps = [
        threading.Thread(target=_pump, args=(proc.stdout, console, False), daemon=True),
        threading.Thread(target=_pump, args=(proc.stderr, console, True), daemon=True),
    ]
    for pump in pumps:
        pump.start()
    return pumps


def _human_size(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"  # pragma: no cover


def _is_live(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and os.environ.get("TERM", "") not in ("", "dumb")
