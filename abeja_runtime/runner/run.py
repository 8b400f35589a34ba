"""Run a training handler locally exactly as the platform would, and watch it.

``abeja-runtime run train:handler --source DIR`` (or :func:`run_handler` from
Python) does what ABEJA Platform does with a training job, against the platform's
API or, with no credentials, against the embedded emulator:

1. checks ``HANDLER`` (form, module, function) before anything is created;
2. creates or reuses the job definition, uploads the source directory as a new
   version (a zip without ``.venv``, ``.git``, caches and the result directory)
   and creates a job;
3. starts ``python -m abeja_runtime.runner.child`` in the source directory, in a
   process group of its own, with every variable of SPEC.md set, and marks the
   job Active;
4. streams the handler's output, with the job's progress (epoch, a bar, the
   latest stage values) read back from the API every ``poll_interval`` seconds;
   a sticky status line on a terminal, plain progress lines otherwise (CI logs
   must stay readable: no carriage-return animation into a file);
5. on SIGINT/SIGTERM, or when the job is stopped through the API, forwards the
   signal (SIGTERM for an API stop), waits the platform's grace period (25 s)
   and then kills the handler's whole process tree;
6. marks the job Complete, Failed or Stopped, uploads the result directory as the
   job's model with the final statistics as metrics (only for a Complete job
   with a non-empty result directory: a failed or stopped run's files are not a
   result, and an empty model is noise), and prints what to look at next.

Job status on the API: our emulators take ``POST .../jobs/{id}/status`` from a
local runner; an API that does not know that call (404/405) is told nothing
beyond ``stop`` (standard operation 18) and the runner says so once.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TextIO
from urllib.parse import quote

import psutil

from ..archive import StreamedZip, walk_tree
from ..config import (
    ENV_API_URL,
    ENV_CHECK_TIMEOUT,
    ENV_CONTEXT,
    ENV_DATASETS,
    ENV_HANDLER,
    ENV_JOB_DEFINITION_NAME,
    ENV_JOB_DEFINITION_VERSION,
    ENV_POLL_INTERVAL,
    ENV_RESULT_DIR,
    ENV_STOP_GRACE,
    ENV_STORAGE_DIR,
    ENV_TRAINING_JOB_ID,
    check_duration,
    env_float,
)
from ..errors import (
    AbejaRuntimeError,
    BadRequest,
    ConfigurationError,
    Conflict,
    MethodNotAllowed,
    NotFound,
)
from ..exit_codes import (
    EXIT_FAILURE,
    EXIT_JOB_STOPPED,
    EXIT_OK,
    exit_code_for_error,
    exit_code_for_signal,
)
from ..validators import check_id, check_name
from .api_target import CREDENTIAL_ENV_NAMES, ENV_ORGANIZATION_ID, ApiTarget, open_target
from .child import ENV_OUTCOME_FILE, EXIT_BAD_HANDLER, HandlerError, HandlerSpec, parse_handler

if TYPE_CHECKING:  # pragma: no cover
    from ..emulator import Emulator

__all__ = [
    "DEFAULT_GRACE_PERIOD",
    "DEFAULT_POLL_INTERVAL",
    "ENV_CHECK_TIMEOUT",
    "ENV_POLL_INTERVAL",
    "ENV_STOP_GRACE",
    "RESERVED_ENV_NAMES",
    "RunResult",
    "check_handler",
    "format_progress",
    "kill_process_tree",
    "parse_assignments",
    "progress_fraction",
    "register",
    "run_handler",
    "source_archive",
    "upload_result_dir_as_model",
    "zip_directory",
]

#: the platform's grace period between SIGTERM and SIGKILL
DEFAULT_GRACE_PERIOD = 25.0
DEFAULT_POLL_INTERVAL = 1.0
DEFAULT_CHECK_TIMEOUT = 300.0

#: what a job's handler is told; ``--env`` may not override these
JOB_ENV_NAMES = (
    ENV_ORGANIZATION_ID,
    ENV_JOB_DEFINITION_NAME,
    ENV_JOB_DEFINITION_VERSION,
    ENV_TRAINING_JOB_ID,
    ENV_API_URL,
    ENV_RESULT_DIR,
    ENV_STORAGE_DIR,
    ENV_HANDLER,
    ENV_DATASETS,
    ENV_CONTEXT,
    "PYTHONUNBUFFERED",
)
RESERVED_ENV_NAMES = frozenset((*JOB_ENV_NAMES, *CREDENTIAL_ENV_NAMES, ENV_OUTCOME_FILE))

#: directory names never uploaded with the source code
SOURCE_EXCLUDED_DIRS = frozenset(
    {
        ".venv",
        "venv",
        ".git",
        ".hg",
        ".svn",
        "__pycache__",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        ".ipynb_checkpoints",
        ".abeja-runtime",
    }
)
SOURCE_EXCLUDED_SUFFIXES = (".pyc", ".pyo")

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DEFINITION_NAME_BAD = re.compile(r"[^A-Za-z0-9_-]+")


# --------------------------------------------------------------------------- inputs


def parse_assignments(values: Iterable[str] | None, what: str) -> dict[str, str]:
    """``["K=V", ...]`` as a dict, refusing malformed or repeated keys.

    Args:
        values: the raw ``KEY=VALUE`` strings (the value may contain ``=``).
        what: the option's name for messages (``--env``, ``--dataset``).

    Raises:
        ConfigurationError: no ``=``, an empty key, or a key given twice.
    """
    result: dict[str, str] = {}
    for raw in values or ():
        key, sep, value = raw.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigurationError(f"{what} {raw!r}: expected KEY=VALUE")
        if key in result:
            raise ConfigurationError(f"{what} {key!r} given twice")
        result[key] = value
    return result


def _validate_env(env: Mapping[str, str]) -> dict[str, str]:
    clean: dict[str, str] = {}
    for key, value in env.items():
        if not _ENV_NAME.match(key):
            raise ConfigurationError(f"--env {key!r}: not a valid environment variable name")
        if key in RESERVED_ENV_NAMES:
            raise ConfigurationError(
                f"--env {key!r}: the runner sets this variable for the job itself"
            )
        clean[key] = str(value)
    return clean


def _validate_datasets(datasets: Mapping[str, str]) -> dict[str, str]:
    """Alias -> dataset id, checked before anything is created on the API."""
    clean: dict[str, str] = {}
    for alias, dataset_id in datasets.items():
        if not alias or not str(dataset_id).strip():
            raise ConfigurationError(f"--dataset {alias}={dataset_id}: expected ALIAS=DATASET_ID")
        what = f"--dataset {alias}"
        clean[check_name(str(alias), what)] = check_id(str(dataset_id).strip(), what)
    return clean


def _prepare_result_dir(path: Path) -> None:
    """Create the result dir now: one that cannot exist is refused before any upload."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(
            f"result dir {str(path)!r} cannot be created: {exc.strerror or exc}"
        ) from None


def default_definition_name(source: Path) -> str:
    """The job definition a run uses when none is named: the source directory's name."""
    name = _DEFINITION_NAME_BAD.sub("-", source.resolve().name).strip("-")
    return name or "default"


def check_handler(
    handler: str,
    source: str | os.PathLike[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> HandlerSpec:
    """Validate ``HANDLER`` before any job is created.

    Two steps. The form (exactly one colon, Python names) is checked here,
    statically. Whether the module imports from ``source`` and has a callable
    of that name is checked by ``python -m abeja_runtime.runner.child --check``
    in a child process from ``source``, because only importing tells the truth
    (handlers are often assigned, re-exported or decorated, which static parsing
    misses) and importing the user's module in the runner itself would run its
    top-level code (a framework import, a GPU initialisation) in our process and
    resolve it against our ``sys.path`` rather than the job's. The price is one
    import of the module more than the job itself makes.

    Raises:
        HandlerError: with one clear line: the form, module not found, the import
            failing, function missing or not callable.
        ConfigurationError: ``source`` is not a directory.
    """
    spec = parse_handler(handler)
    directory = Path(source)
    if not directory.is_dir():
        raise ConfigurationError(f"--source {str(source)!r} is not a directory")
    child_env = dict(os.environ if env is None else env)
    child_env["HANDLER"] = str(spec)
    child_env["PYTHONPATH"] = _child_pythonpath(child_env.get("PYTHONPATH"))
    child_env.pop(ENV_OUTCOME_FILE, None)
    limit = (
        timeout
        if timeout is not None
        else env_float(ENV_CHECK_TIMEOUT, DEFAULT_CHECK_TIMEOUT, minimum=1.0)
    )
    try:
        done = subprocess.run(
            [sys.executable, "-m", "abeja_runtime.runner.child", "--check"],
            cwd=str(directory),
            env=child_env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=limit,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise HandlerError(
            f"HANDLER '{spec}': importing module {spec.module!r} took more than {limit:g} s "
            f"(set {ENV_CHECK_TIMEOUT} to wait longer)"
        ) from None
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        message = next(
            (line for line in reversed(lines) if line.startswith("abeja-runtime: ")),
            lines[-1] if lines else f"handler check exited with code {done.returncode}",
        )
        raise HandlerError(message.removeprefix("abeja-runtime: "))
    return spec


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


# --------------------------------------------------------------------------- zips


def source_archive(
    root: Path,
    *,
    exclude_dirs: Iterable[Path] = (),
    exclude_names: frozenset[str] = frozenset(),
    exclude_suffixes: tuple[str, ...] = (),
) -> tuple[StreamedZip, int, int]:
    """``root``'s files as a streamed zip, with paths relative to ``root``.

    The one zip writer of the package (:class:`~abeja_runtime.archive.StreamedZip`):
    produced while the request body is sent, so nothing is written to disk and
    memory does not grow with the files. Symbolic links are followed only when
    they point inside ``root`` (a link to a dataset elsewhere must not drag it
    into the upload, a link loop must not hang us); what is skipped is named
    in one warning.

    Returns:
        (the archive, number of files, total bytes of the files).
    """
    root = root.resolve()
    entries = walk_tree(
        root,
        "source directory",
        exclude_dirs=exclude_dirs,
        exclude_names=exclude_names,
        exclude_suffixes=exclude_suffixes,
    )
    total = sum(path.stat().st_size for path, _name in entries)
    return StreamedZip(entries), len(entries), total


def zip_directory(
    root: Path,
    fileobj: IO[bytes],
    *,
    exclude_dirs: Iterable[Path] = (),
    exclude_names: frozenset[str] = frozenset(),
    exclude_suffixes: tuple[str, ...] = (),
) -> tuple[int, int]:
    """Write :func:`source_archive` of ``root`` to ``fileobj`` (for callers that need a file).

    Returns:
        (number of files, total uncompressed bytes).
    """
    archive, count, total = source_archive(
        root,
        exclude_dirs=exclude_dirs,
        exclude_names=exclude_names,
        exclude_suffixes=exclude_suffixes,
    )
    for chunk in archive:
        fileobj.write(chunk)
    return count, total


def _directory_is_empty(path: Path) -> bool:
    return not path.is_dir() or not any(p.is_file() for p in path.rglob("*"))


def upload_result_dir_as_model(
    api: ApiTarget,
    job_definition_name: str,
    training_job_id: str,
    result_dir: Path,
    *,
    metrics: Mapping[str, Any] | None,
    description: str | None,
) -> dict[str, Any]:
    """Upload ``result_dir`` as the job's model; the ONE place a run creates a model.

    Through :func:`abeja_runtime.artifacts.models.upload_model` (a stored zip produced while it is sent,
    SHA-256 checked, no duplicate after a dropped connection): operation 24 with
    ``training_job_id``, ``description`` and the final statistics as ``metrics``.
    Kept in one function so that a run creates models in one place only.

    Returns:
        the model dict from the API.
    """
    from ..artifacts.models import upload_model  # streamed, checksum-verified, duplicate-safe

    return upload_model(
        result_dir,
        description=description or None,
        metrics=dict(metrics) if metrics else {},
        training_job_id=training_job_id,
        job_definition_name=job_definition_name,
        organization_id=api.organization_id,
        client=api.client,
        progress=False,
    )


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


def progress_fraction(statistics: Mapping[str, Any]) -> float | None:
    """``progress_percentage`` clamped to [0, 1], else ``epoch / num_epochs``, else ``None``."""
    progress = statistics.get("progress_percentage")
    if isinstance(progress, (int, float)) and not isinstance(progress, bool):
        return min(max(float(progress), 0.0), 1.0)
    epoch, total = statistics.get("epoch"), statistics.get("num_epochs")
    if isinstance(epoch, (int, float)) and isinstance(total, (int, float)) and total > 0:
        return min(max(float(epoch) / float(total), 0.0), 1.0)
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


# --------------------------------------------------------------------------- the job


@dataclass
class RunResult:
    """What a run ended with.

    Attributes:
        job_definition_name: the definition the job belongs to.
        job_definition_version: the version uploaded for this run.
        training_job_id: the job's id.
        status: the job's final status: ``Complete``, ``Failed`` or ``Stopped``.
        status_message: why (the handler's exception, the signal, ...), or ``None``.
        returncode: the handler process's exit code (negative: killed by that signal).
        statistics: the job's final statistics on the API (``{}`` when none).
        model: the model dict, or ``None`` when none was uploaded.
        model_note: why no model was uploaded, or ``None``.
        result_dir: the directory the handler wrote its results into.
        exit_code: what ``abeja-runtime run`` exits with (see :mod:`abeja_runtime.exit_codes`).
        organization_id: the organization of the job.
        api_url: the API the job ran against.
        emulator_dir: the embedded emulator's data directory, when one was used.
    """

    job_definition_name: str
    job_definition_version: int
    training_job_id: str
    status: str
    status_message: str | None
    returncode: int | None
    statistics: dict[str, Any]
    model: dict[str, Any] | None
    model_note: str | None
    result_dir: Path
    exit_code: int
    organization_id: str
    api_url: str
    emulator_dir: Path | None = None
    stop_reason: str | None = field(default=None, repr=False)

    def as_dict(self) -> dict[str, Any]:
        """The outcome as JSON-ready values (what ``run --output-json`` writes)."""
        return {
            "job_definition_name": self.job_definition_name,
            "job_definition_version": self.job_definition_version,
            "training_job_id": self.training_job_id,
            "status": self.status,
            "status_message": self.status_message,
            "returncode": self.returncode,
            "statistics": self.statistics,
            "training_model_id": self.model_id,
            "model_note": self.model_note,
            "result_dir": str(self.result_dir),
            "exit_code": self.exit_code,
            "organization_id": self.organization_id,
            "api_url": self.api_url,
            "emulator_dir": str(self.emulator_dir) if self.emulator_dir else None,
        }

    @property
    def model_id(self) -> str | None:
        """The uploaded model's id, or ``None``."""
        if not self.model:
            return None
        value = self.model.get("training_model_id") or self.model.get("id")
        return str(value) if value is not None else None


class _JobWatcher(threading.Thread):
    """Polls the job on the API: progress for the console, and API stops."""

    def __init__(
        self,
        api: ApiTarget,
        name: str,
        job_id: str,
        interval: float,
        console: _Console,
    ) -> None:
        super().__init__(name="abeja-runtime-job-watcher", daemon=True)
        self.api = api
        self.job_name = name
        self.job_id = job_id
        self.interval = interval
        self.console = console
        self.done = threading.Event()
        self.stopped = threading.Event()
        self.latest: dict[str, Any] | None = None
        self.errors = 0

    def poll_once(self) -> None:
        try:
            job = self.api.client.get_training_job(
                self.api.organization_id, self.job_name, self.job_id
            )
        except AbejaRuntimeError as exc:
            self.errors += 1
            if self.errors == 1:
                self.console.note(f"cannot read the job's progress ({exc}); still trying")
            return
        self.latest = dict(job)
        statistics = job.get("statistics")
        if statistics:
            self.console.status(format_progress(statistics))
        if job.get("status") == "Stopped":
            self.stopped.set()

    def run(self) -> None:
        while not self.done.wait(self.interval):
            self.poll_once()


class _JobStatus:
    """Sets the job's status through the emulators' ``POST .../status`` call."""

    def __init__(self, api: ApiTarget, name: str, job_id: str, console: _Console) -> None:
        self.api = api
        self.name = name
        self.job_id = job_id
        self.console = console
        self.unsupported = False

    @property
    def _path(self) -> str:
        return (
            f"/organizations/{quote(self.api.organization_id, safe='')}/training/definitions/"
            f"{quote(self.name, safe='')}/jobs/{quote(self.job_id, safe='')}/status"
        )

    def set(self, status: str, message: str | None = None) -> bool:
        """Move the job to ``status``; ``False`` (with a note) when the API refused."""
        if self.unsupported:
            return False
        body: dict[str, Any] = {"status": status}
        if message:
            body["status_message"] = message[:1000]
        try:
            self.api.client.request("POST", self._path, json=body, idempotent=True)
            return True
        except (NotFound, MethodNotAllowed) as exc:
            self.unsupported = True
            self.console.note(
                f"this API does not take job status from a local runner ({exc.status_code}); "
                "the job's status is left to the server",
                error=True,
            )
        except Conflict as exc:
            with contextlib.suppress(AbejaRuntimeError):
                job = self.api.client.get_training_job(
                    self.api.organization_id, self.name, self.job_id
                )
                if job.get("status") == status:
                    return True
            self.console.note(f"could not mark the job {status}: {exc}", error=True)
        return False

    def stop(self, message: str) -> None:
        """Mark the job Stopped: the status call when possible, else operation 18."""
        if self.set("Stopped", message):
            return
        with contextlib.suppress(Conflict):
            self.api.client.stop_training_job(self.api.organization_id, self.name, self.job_id)


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


def _human_size(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"  # pragma: no cover


def _default_storage_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "abeja-runtime" / "storage"


@contextlib.contextmanager
def _forwarded_signals(received: list[int]) -> Iterator[None]:
    """Record SIGINT/SIGTERM instead of dying, while the handler runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def record(signum: int, _frame: Any) -> None:
        received.append(signum)

    previous = {sig: signal.signal(sig, record) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@dataclass
class _Prepared:
    name: str
    version: int
    job_id: str
    result_dir: Path


class _Run:
    """One run's state; :func:`run_handler` is its public face."""

    def __init__(
        self,
        api: ApiTarget,
        spec: HandlerSpec,
        source: Path,
        console: _Console,
        *,
        datasets: dict[str, str],
        env: dict[str, str],
        result_dir: Path | None,
        job_definition_name: str | None,
        description: str | None,
        image: str | None,
        grace_period: float,
        poll_interval: float,
        handle_signals: bool,
    ) -> None:
        self.api = api
        self.spec = spec
        self.source = source
        self.console = console
        self.datasets = datasets
        self.env = env
        self.result_dir_arg = result_dir
        self.name = job_definition_name or default_definition_name(source)
        self.description = description
        self.image = image
        self.grace_period = grace_period
        self.poll_interval = poll_interval
        self.handle_signals = handle_signals

    # -- set-up -------------------------------------------------------------------------

    def _ensure_definition(self) -> None:
        client, org = self.api.client, self.api.organization_id
        try:
            client.get_training_job_definition(org, self.name, include_jobs=False)
            self.console.note(f"job definition {self.name!r} (reused)")
            return
        except NotFound:
            pass
        try:
            client.create_training_job_definition(org, self.name)
            self.console.note(f"job definition {self.name!r} (created)")
        except Conflict:  # created by someone else meanwhile
            self.console.note(f"job definition {self.name!r} (reused)")

    def _upload_version(self, result_dir: Path | None) -> int:
        excluded = [result_dir] if result_dir is not None else []
        parameters: dict[str, Any] = {"handler": str(self.spec)}
        if self.image:
            parameters["image"] = self.image
        parameters["description"] = f"abeja-runtime run {self.spec} from {self.source}"
        archive, files, size = source_archive(
            self.source,
            exclude_dirs=excluded,
            exclude_names=SOURCE_EXCLUDED_DIRS,
            exclude_suffixes=SOURCE_EXCLUDED_SUFFIXES,
        )
        version = self.api.client.create_training_job_definition_version_native_api(
            self.api.organization_id, self.name, archive, parameters
        )
        number = int(version["job_definition_version"])
        self.console.note(
            f"version {number} uploaded from {self.source} ({files} files, {_human_size(size)})"
        )
        return number

    def _create_job(self, version: int) -> str:
        """Operation 15, asking for ``exec_env: local`` where the server takes it.

        ``exec_env`` is not a field of the platform's create-job body; our
        emulators accept it as an extension so that a local run is recorded as
        one. A server that refuses the field (400 naming it) gets the standard
        body: a 400 created nothing, so asking again cannot duplicate the job.
        """
        body: dict[str, Any] = {
            "description": self.description or f"abeja-runtime run {self.spec}",
            "exec_env": "local",
        }
        if self.env:
            body["environment"] = self.env
        if self.datasets:
            body["datasets"] = self.datasets
        path = (
            f"/organizations/{quote(self.api.organization_id, safe='')}/training/definitions/"
            f"{quote(self.name, safe='')}/versions/{version}/jobs"
        )
        try:
            job = self.api.client.request("POST", path, json=body, idempotent=False)
        except BadRequest as exc:
            if "exec_env" not in f"{exc.error_description} {exc.error_detail}":
                raise
            job = self.api.client.create_training_job(
                self.api.organization_id,
                self.name,
                version,
                datasets=self.datasets or None,
                environment=self.env or None,
                description=body["description"],
            )
        job_id = str(job.get("training_job_id") or job.get("id"))
        self.console.note(f"job {job_id} created ({self.name} version {version})")
        return job_id

    def _child_env(self, prepared: _Prepared, outcome: Path) -> dict[str, str]:
        env = dict(os.environ)
        for name in CREDENTIAL_ENV_NAMES:
            env.pop(name, None)
        env.update(self.env)
        env.update(self.api.job_env)
        storage = os.environ.get("ABEJA_STORAGE_DIR_PATH") or str(_default_storage_dir())
        Path(storage).mkdir(parents=True, exist_ok=True)
        env.update(
            {
                ENV_ORGANIZATION_ID: self.api.organization_id,
                "TRAINING_JOB_DEFINITION_NAME": prepared.name,
                "TRAINING_JOB_DEFINITION_VERSION": str(prepared.version),
                "TRAINING_JOB_ID": prepared.job_id,
                ENV_API_URL: self.api.url,
                "ABEJA_TRAINING_RESULT_DIR": str(prepared.result_dir),
                "ABEJA_STORAGE_DIR_PATH": storage,
                "HANDLER": str(self.spec),
                "DATASETS": json.dumps(self.datasets),
                "CONTEXT": json.dumps({}),
                "PYTHONUNBUFFERED": "1",
                ENV_OUTCOME_FILE: str(outcome),
                "PYTHONPATH": _child_pythonpath(os.environ.get("PYTHONPATH")),
            }
        )
        return env

    # -- the child ----------------------------------------------------------------------

    def _supervise(
        self, proc: subprocess.Popen[bytes], watcher: _JobWatcher
    ) -> tuple[str | None, int | None]:
        """Wait for the child, forwarding signals and API stops; returns (reason, signal)."""
        tree = _ProcessTree(proc.pid)
        received: list[int] = []
        reason: str | None = None
        reason_signal: int | None = None
        kill_at: float | None = None
        handled = 0
        next_refresh = time.monotonic() + 1.0
        guard = _forwarded_signals(received) if self.handle_signals else contextlib.nullcontext()
        with guard:
            while proc.poll() is None:
                while handled < len(received):
                    signum = received[handled]
                    handled += 1
                    if reason is None:
                        reason, reason_signal = _signal_name(signum), signum
                        self.console.note(
                            f"{reason}: passing it to the handler; its process tree is "
                            f"killed if it is still running in {self.grace_period:g} s "
                            "(again to kill it now)"
                        )
                        with contextlib.suppress(OSError):
                            os.kill(proc.pid, signum)
                        kill_at = time.monotonic() + self.grace_period
                    else:
                        self.console.note(f"{_signal_name(signum)} again: killing the handler now")
                        tree.kill()
                if reason is None and watcher.stopped.is_set():
                    reason = "api"
                    self.console.note(
                        "the job was stopped through the API: sending SIGTERM to the handler "
                        f"(killed if still running in {self.grace_period:g} s)"
                    )
                    with contextlib.suppress(OSError):
                        os.kill(proc.pid, signal.SIGTERM)
                    kill_at = time.monotonic() + self.grace_period
                now = time.monotonic()
                if kill_at is not None and now >= kill_at:
                    self.console.note(
                        f"the handler is still running after {self.grace_period:g} s: "
                        "killing its process tree"
                    )
                    tree.kill()
                    kill_at = None
                if now >= next_refresh:
                    tree.refresh()
                    next_refresh = now + 1.0
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=0.1)
            # The handler is gone; whatever it left behind goes too, as when the
            # platform's container ends.
            tree.kill()
        return reason, reason_signal

    def run(self) -> RunResult:
        self._ensure_definition()
        result_dir_hint = self.result_dir_arg.resolve() if self.result_dir_arg else None
        version = self._upload_version(result_dir_hint)
        job_id = self._create_job(version)
        status = _JobStatus(self.api, self.name, job_id, self.console)
        try:
            return self._run_job(job_id, version, status)
        except BaseException as exc:
            # Whatever broke after the job exists must not leave it Pending/Active.
            if isinstance(exc, KeyboardInterrupt):
                with contextlib.suppress(Exception):
                    status.stop("interrupted while starting")
            else:
                with contextlib.suppress(Exception):
                    status.set("Failed", f"runner error: {type(exc).__name__}: {exc}")
            raise

    def _announce_dashboard(self, job_id: str) -> None:
        """The job's live dashboard page, when this run started its own emulator.

        (The platform has its own console.) The link that logs a browser in
        holds the emulator's token, so it is printed only on a terminal; in a
        log the page's address goes alone.
        """
        emulator = self.api.emulator
        if not self.api.owns_emulator or emulator is None:
            return
        path = f"/definitions/{quote(self.name, safe='')}/jobs/{job_id}"
        if self.console.live:
            self.console.note(f"live dashboard: {emulator.dashboard_link(path)}")
        else:
            self.console.note(
                f"live dashboard: {emulator.url}{path} (a terminal gets a link that logs in; "
                "it is left out of non-terminal output because it holds the token)"
            )

    def _run_job(self, job_id: str, version: int, status: _JobStatus) -> RunResult:
        if self.result_dir_arg is not None:
            result_dir = self.result_dir_arg.resolve()
        else:
            result_dir = (Path.cwd() / ".abeja-runtime" / "results" / job_id).resolve()
        result_dir.mkdir(parents=True, exist_ok=True)
        if not _directory_is_empty(result_dir):
            self.console.note(
                f"result dir {result_dir} is not empty: its files will be part of the model"
            )
        prepared = _Prepared(self.name, version, job_id, result_dir)
        with tempfile.TemporaryDirectory(prefix="abeja-runtime-") as scratch:
            outcome_path = Path(scratch) / "outcome.json"
            env = self._child_env(prepared, outcome_path)
            status.set("Active")
            self.console.note(f"running {self.spec} in {self.source} (results in {result_dir})")
            self._announce_dashboard(job_id)
            started = time.monotonic()
            proc = subprocess.Popen(
                [sys.executable, "-m", "abeja_runtime.runner.child"],
                cwd=str(self.source),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
            assert proc.stdout is not None and proc.stderr is not None
            pumps = [
                threading.Thread(
                    target=_pump, args=(proc.stdout, self.console, False), daemon=True
                ),
                threading.Thread(target=_pump, args=(proc.stderr, self.console, True), daemon=True),
            ]
            for pump in pumps:
                pump.start()
            watcher = _JobWatcher(self.api, self.name, job_id, self.poll_interval, self.console)
            watcher.start()
            try:
                reason, reason_signal = self._supervise(proc, watcher)
            except BaseException:
                if proc.poll() is None:  # never leave a handler running behind us
                    kill_process_tree(proc.pid)
                    proc.wait()
                raise
            finally:
                watcher.done.set()
                for pump in pumps:
                    pump.join(timeout=10)
                watcher.join(timeout=30)
            elapsed = time.monotonic() - started
            outcome = _read_outcome(outcome_path)
        self._deliver_spool_leftovers(job_id, env)
        self.console.close()
        returncode = proc.returncode
        if reason is None and watcher.stopped.is_set():
            reason = "api"  # stopped through the API just as the handler ended
        final_status, message = self._decide(reason, returncode, outcome)
        if final_status == "Stopped":
            if reason != "api":
                status.stop(message or "stopped")
        else:
            status.set(final_status, message if final_status == "Failed" else None)
        job = self._final_job(watcher)
        statistics = dict(job.get("statistics") or {}) if job else {}
        model, model_note, upload_failed = self._model(final_status, job_id, result_dir, statistics)
        if final_status == "Complete":
            exit_code = EXIT_FAILURE if upload_failed else EXIT_OK
        elif final_status == "Failed":
            exit_code = EXIT_FAILURE
        elif reason == "api":
            exit_code = EXIT_JOB_STOPPED
        else:
            exit_code = exit_code_for_signal(reason_signal or signal.SIGTERM)
        result = RunResult(
            job_definition_name=self.name,
            job_definition_version=version,
            training_job_id=job_id,
            status=final_status,
            status_message=message,
            returncode=returncode,
            statistics=statistics,
            model=model,
            model_note=model_note,
            result_dir=result_dir,
            exit_code=exit_code,
            organization_id=self.api.organization_id,
            api_url=self.api.url,
            emulator_dir=self.api.emulator_dir,
            stop_reason=reason,
        )
        self._summary(result, elapsed)
        return result

    def _deliver_spool_leftovers(self, job_id: str, env: Mapping[str, str]) -> None:
        """Send what the handler left in its statistics spool, before the final status.

        A handler killed (SIGKILL, OOM) or whose exit flush ran out of time leaves its
        undelivered epoch ends on disk; the job's statistics must hold them before it is
        marked Complete/Failed/Stopped and before its model takes them as metrics.
        """
        from ..statistics.delivery import deliver_spool
        from ..statistics.spool import DATA_FILE_NAME, default_spool_dir, spool_enabled

        if not spool_enabled(env):
            return
        directory = default_spool_dir(job_id, env)
        if not directory.is_absolute():  # relative to the handler's working dir
            directory = self.source / directory
        if not (directory / DATA_FILE_NAME).exists():
            return
        lines: list[str] = []
        try:
            code = deliver_spool(
                directory,
                self.api.client,
                organization=self.api.organization_id,
                say=lines.append,
            )
        except AbejaRuntimeError as exc:
            self.console.note(f"statistics spool {directory} not delivered: {exc}", error=True)
            return
        sent = [line for line in lines if line.startswith("sent record")]
        if code != EXIT_OK:
            self.console.note(
                f"statistics spool {directory} not fully delivered: {lines[-1] if lines else ''}"
                " (send it later with: abeja-runtime sync --dir DIR)",
                error=True,
            )
        elif sent:
            self.console.note(f"delivered {len(sent)} statistics the handler left in its spool")

    @staticmethod
    def _decide(
        reason: str | None, returncode: int | None, outcome: Mapping[str, Any]
    ) -> tuple[str, str | None]:
        if reason == "api":
            return "Stopped", "stopped through the API"
        if reason is not None:
            return "Stopped", f"stopped by {reason} to the runner"
        if returncode == 0:
            return "Complete", None
        error = outcome.get("error")
        if isinstance(error, str) and error:
            return "Failed", error
        if returncode is not None and returncode < 0:
            return "Failed", f"handler killed by {_signal_name(-returncode)}"
        if returncode == EXIT_BAD_HANDLER:
            return "Failed", "the handler could not be loaded"
        return "Failed", f"handler exited with code {returncode}"

    def _final_job(self, watcher: _JobWatcher) -> dict[str, Any] | None:
        for attempt in range(3):
            try:
                return dict(
                    self.api.client.get_training_job(
                        self.api.organization_id, self.name, watcher.job_id
                    )
                )
            except AbejaRuntimeError as exc:
                if attempt == 2:
                    self.console.note(f"cannot read the job's final state: {exc}", error=True)
                time.sleep(0.5 * (attempt + 1))
        return watcher.latest

    def _model(
        self, final_status: str, job_id: str, result_dir: Path, statistics: dict[str, Any]
    ) -> tuple[dict[str, Any] | None, str | None, bool]:
        if final_status != "Complete":
            return None, f"no model uploaded: the job is {final_status}", False
        if _directory_is_empty(result_dir):
            return None, f"no model uploaded: the result dir {result_dir} is empty", False
        try:
            model = upload_result_dir_as_model(
                self.api,
                self.name,
                job_id,
                result_dir,
                metrics=statistics,
                description=f"result of job {job_id} ({self.spec})",
            )
        except (AbejaRuntimeError, OSError) as exc:
            message = " ".join(str(exc).split())
            self.console.note(f"model upload failed: {message}", error=True)
            return None, f"model upload failed: {message}", True
        return model, None, False

    def _summary(self, result: RunResult, elapsed: float) -> None:
        note = self.console.note
        tail = f": {result.status_message}" if result.status_message else ""
        note(f"job {result.training_job_id} {result.status} after {elapsed:.1f} s{tail}")
        if result.statistics:
            self.console.status(format_progress(result.statistics), final=True)
            note(f"final statistics: {json.dumps(result.statistics)}")
        else:
            note("final statistics: none (the handler reported nothing)")
        if result.model_id:
            note(f"model {result.model_id} uploaded from {result.result_dir}")
        elif result.model_note:
            note(result.model_note)
        org = "" if result.emulator_dir else f" --organization {result.organization_id}"
        note("next:")
        note(f"  abeja-runtime jobs get {result.job_definition_name} {result.training_job_id}{org}")
        if result.model_id:
            note(
                f"  abeja-runtime models download {result.job_definition_name} "
                f"{result.model_id}{org}"
            )
        note(f"  result files: {result.result_dir}")
        if result.emulator_dir:
            note(f"  emulator state: {result.emulator_dir}")


def _is_live(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and os.environ.get("TERM", "") not in ("", "dumb")


def run_handler(
    handler: str,
    *,
    source: str | os.PathLike[str] = ".",
    datasets: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
    result_dir: str | os.PathLike[str] | None = None,
    job_definition_name: str | None = None,
    description: str | None = None,
    api: ApiTarget | Emulator | None = None,
    organization: str | None = None,
    image: str | None = None,
    grace_period: float | None = None,
    poll_interval: float | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    live: bool | None = None,
    handle_signals: bool = True,
) -> RunResult:
    """Run ``handler`` (``module:function``) from ``source`` as a training job.

    See the module docstring for the steps. Nothing is created on the API when
    the handler cannot be loaded.

    Args:
        handler: ``module:function``, e.g. ``"train:handler"``.
        source: the directory with the handler's code (uploaded as the version).
        datasets: alias -> dataset id, given to the job and as ``DATASETS``.
        env: extra environment variables for the job (not the reserved ones).
        result_dir: ``ABEJA_TRAINING_RESULT_DIR``; default
            ``./.abeja-runtime/results/<job id>``.
        job_definition_name: default: the source directory's name.
        description: the job's description.
        api: an :class:`~abeja_runtime.runner.api_target.ApiTarget` or a running
            ``Emulator``; default: chosen from the environment (embedded emulator
            without credentials).
        organization: with credentials, the organization (default
            ``ABEJA_ORGANIZATION_ID``).
        image: the version's ``image`` (the platform needs one; the emulator does not).
        grace_period: seconds between forwarding a stop and killing the tree
            (default ``ABEJA_RUNTIME_STOP_GRACE`` or 25).
        poll_interval: seconds between reads of the job's progress/status
            (default ``ABEJA_RUNTIME_POLL_INTERVAL`` or 1).
        stdout: where handler stdout and our lines go (default ``sys.stdout``).
        stderr: where handler stderr and our errors go (default ``sys.stderr``).
        live: sticky progress line; default: when ``stdout`` is a terminal.
        handle_signals: catch SIGINT/SIGTERM while the handler runs (main thread only).

    Raises:
        HandlerError: ``handler`` cannot be loaded from ``source`` (no job created).
        ConfigurationError: bad ``source``, ``env`` or ``datasets``, or no usable API.
        HttpError, APIConnectionError: the API refused or could not be reached.
    """
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    console = _Console(out, err, _is_live(out) if live is None else live)
    source_dir = Path(source).resolve()
    clean_env = _validate_env(env or {})
    clean_datasets = _validate_datasets(datasets or {})
    grace = (
        check_duration(grace_period, "grace_period")
        if grace_period is not None
        else env_float(ENV_STOP_GRACE, DEFAULT_GRACE_PERIOD, minimum=0.0)
    )
    interval = (
        check_duration(poll_interval, "poll_interval", minimum=0.05)
        if poll_interval is not None
        else env_float(ENV_POLL_INTERVAL, DEFAULT_POLL_INTERVAL, minimum=0.05)
    )
    if job_definition_name is not None:
        check_name(job_definition_name, "job_definition_name")
    if result_dir is not None:
        _prepare_result_dir(Path(result_dir))
    check_env = {k: v for k, v in os.environ.items() if k not in CREDENTIAL_ENV_NAMES}
    check_env.update(clean_env)
    check_env["DATASETS"] = json.dumps(clean_datasets)
    check_env["CONTEXT"] = "{}"
    spec = check_handler(handler, source_dir, env=check_env)

    with contextlib.ExitStack() as stack:
        if api is None:
            target = stack.enter_context(
                open_target(organization, announce=lambda line: console.note(line))
            )
        elif isinstance(api, ApiTarget):
            target = api
        else:
            target = ApiTarget.from_emulator(api)
        if not target.is_emulator:
            console.note(f"using the API at {target.url} (organization {target.organization_id})")
        run = _Run(
            target,
            spec,
            source_dir,
            console,
            datasets=clean_datasets,
            env=clean_env,
            result_dir=Path(result_dir) if result_dir is not None else None,
            job_definition_name=job_definition_name,
            description=description,
            image=image,
            grace_period=grace,
            poll_interval=interval,
            handle_signals=handle_signals,
        )
        return run.run()
    raise AssertionError("unreachable")  # pragma: no cover


# --------------------------------------------------------------------------- CLI


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``abeja-runtime run`` to the CLI."""
    parser = subparsers.add_parser(
        "run",
        help="run a training handler locally as the platform would (emulator by default)",
        description=(
            "Run HANDLER (module:function) from --source as a training job: against the "
            "embedded emulator when no platform credentials are set, else against "
            f"{ENV_API_URL}. Exit code 0 when the job is Complete."
        ),
    )
    parser.add_argument("handler", metavar="HANDLER", help="module:function, e.g. train:handler")
    parser.add_argument("--source", default=".", metavar="DIR", help="the handler's directory")
    parser.add_argument(
        "--dataset",
        action="append",
        default=[],
        metavar="ALIAS=ID",
        help="a dataset for the job (repeatable)",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an environment variable for the job (repeatable)",
    )
    parser.add_argument(
        "--result-dir",
        metavar="DIR",
        help="ABEJA_TRAINING_RESULT_DIR (default ./.abeja-runtime/results/<job id>)",
    )
    parser.add_argument(
        "--job-definition", metavar="NAME", help="default: the source directory's name"
    )
    parser.add_argument("--description", metavar="TEXT", help="the job's description")
    parser.add_argument("--organization", metavar="ID", help=f"default: ${ENV_ORGANIZATION_ID}")
    parser.add_argument("--image", metavar="IMAGE", help="the version's image (platform only)")
    parser.add_argument(
        "--grace",
        type=_grace_seconds,
        metavar="SECONDS",
        help=f"stop grace period before the kill (default ${ENV_STOP_GRACE} or 25)",
    )
    parser.add_argument(
        "--output-json",
        metavar="FILE",
        help="also write the outcome (job id, status, statistics, model id) as JSON to FILE",
    )
    parser.set_defaults(func=_cli_run)


def _grace_seconds(text: str) -> float:
    """``--grace``: the same check as ``ABEJA_RUNTIME_STOP_GRACE`` (seconds >= 0)."""
    try:
        return check_duration(float(text), "--grace")
    except (ValueError, ConfigurationError):
        raise argparse.ArgumentTypeError(
            f"must be a finite number of seconds >= 0, got {text!r}"
        ) from None


def _cli_run(args: argparse.Namespace) -> int:
    try:
        datasets = parse_assignments(args.dataset, "--dataset")
        env = parse_assignments(args.env, "--env")
        result = run_handler(
            args.handler,
            source=args.source,
            datasets=datasets,
            env=env,
            result_dir=args.result_dir,
            job_definition_name=args.job_definition,
            description=args.description,
            organization=args.organization,
            image=args.image,
            grace_period=args.grace,
        )
    except AbejaRuntimeError as exc:
        print(f"abeja-runtime: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return exit_code_for_error(exc)
    if args.output_json:
        Path(args.output_json).write_text(json.dumps(result.as_dict(), indent=2) + "\n")
    return result.exit_code
