"""A small training-like script in a fresh interpreter, with an environment cleaned of the
job, platform and launcher variables this process may have (the reporter's process tests)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

_FOREIGN = ("ABEJA_", "TRAINING_", "PLATFORM_", "OMPI_", "SLURM_", "PMI_", "HOROVOD_")
_RANK_VARS = {"RANK", "LOCAL_RANK", "WORLD_SIZE", "HANDLER", "DATASETS", "CONTEXT"}


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(_FOREIGN) and key not in _RANK_VARS
    }
    env.update(extra)
    return env


def start(code: str, env: dict[str, str], cwd: Path | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run(
    code: str, env: dict[str, str], cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    proc = start(code, env, cwd)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


_EXEC_WITH_DISPOSITIONS = """
import os, signal, sys
ignored = {int(n) for n in sys.argv[1].split(",") if n}
for sig in (signal.SIGINT, signal.SIGTERM):
    signal.signal(sig, signal.SIG_IGN if int(sig) in ignored else signal.SIG_DFL)
os.execv(sys.argv[2], sys.argv[2:])
"""


def with_signals(argv: list[str], *, ignored: tuple[int, ...] = ()) -> list[str]:
    """``argv`` started with SIGINT/SIGTERM in a known state, whoever started the tests.

    ``ignored`` signals start ignored, as in a background job of a
    non-interactive shell (``cmd &`` in a script ignores SIGINT); the others
    start at their default, as from a terminal. Dispositions survive ``exec``;
    without this a test of Ctrl-C passes or fails with how pytest was launched.
    """
    spec = ",".join(str(int(sig)) for sig in ignored)
    return [sys.executable, "-c", _EXEC_WITH_DISPOSITIONS, spec, *argv]


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 90) -> None:
    """Poll ``predicate`` until it holds; an AssertionError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
