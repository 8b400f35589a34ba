"""A small training-like script in a fresh interpreter, with an environment cleaned of the
job, platform and launcher variables this process may have (the reporter's process tests)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
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
