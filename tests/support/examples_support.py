"""Run a shipped example's ``handler(context)`` as a job process against the emulator.

The example runs exactly as the platform starts a job: ``python -m
abeja_runtime.runner.child`` in the example's directory, with the job's environment (from
the emulator), so its statistics go through the default reporter over loopback HTTP.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from abeja_runtime.emulator import Emulator
from abeja_runtime.job import RANK_ENV_FAMILIES
from abeja_runtime.runner.api_target import CREDENTIAL_ENV_NAMES

from tests.support import REPO
from tests.support.integration_support import assert_stage_matches

EXAMPLES = REPO / "examples"

#: variables of the test process that must not leak into a job process
_RANK_NAMES = {name for family in RANK_ENV_FAMILIES for name in family[1:]}
_DROPPED = {"MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID", *_RANK_NAMES}


@dataclass
class ExampleRun:
    """What one example run left: its process, result dir and the job's statistics."""

    completed: subprocess.CompletedProcess[str]
    result_dir: Path
    history: list[dict[str, Any]]
    final: dict[str, Any]

    @property
    def output(self) -> str:
        return (self.completed.stdout or "")[-4000:] + (self.completed.stderr or "")[-4000:]


def job_process_env(job_env: dict[str, str], result_dir: Path, **extra: str) -> dict[str, str]:
    """This process's environment, less anything job-like, plus the job's."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("ABEJA_", "TRAINING_JOB"))
        and key not in CREDENTIAL_ENV_NAMES
        and key not in _DROPPED
    }
    env.update(job_env)
    env.update(
        {
            "PYTHONPATH": str(REPO),
            "ABEJA_TRAINING_RESULT_DIR": str(result_dir),
            # quick step-level posts; epoch ends never wait for it anyway
            "ABEJA_RUNTIME_REPORT_INTERVAL": "0.1",
            "EPOCHS": "3",
        }
    )
    env.update(extra)
    return env


def run_example(
    emu: Emulator,
    name: str,
    tmp_path: Path,
    *,
    command: list[str] | None = None,
    timeout: float = 300,
    **extra_env: str,
) -> ExampleRun:
    """Run ``examples/<name>``'s handler (or ``command``) as a job; return what it left."""
    job_env = emu.create_job(f"example-{name.replace('_', '-')}")
    result_dir = tmp_path / "result"
    completed = subprocess.run(
        command or [sys.executable, "-m", "abeja_runtime.runner.child"],
        cwd=EXAMPLES / name,
        env=job_process_env(job_env, result_dir, **extra_env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    definition, job_id = job_env["TRAINING_JOB_DEFINITION_NAME"], job_env["TRAINING_JOB_ID"]
    history = [e["statistics"] for e in emu.statistics_history(definition, job_id)]
    final = emu.job(definition, job_id)["statistics"]
    return ExampleRun(completed, result_dir, history, final)


def check_torchrun(run: ExampleRun, docs: dict[int, dict[str, Any]], num_epochs: int) -> None:
    """Rank 0's numbers only, posted by rank 0 only (also used by the torchrun test)."""
    record = json.loads((run.result_dir / "history.json").read_text())
    assert (run.result_dir / "model.pth").is_file()
    assert record["world_size"] == 2
    rank0, rank1 = record["ranks"]
    for epoch in range(1, num_epochs + 1):
        doc = docs[epoch]
        assert doc["reporting_rank"] == 0 and doc["world_size"] == 2
        for stage in ("train", "validation"):
            assert_stage_matches(doc["stages"][stage], rank0[epoch - 1][stage], f"{stage} {epoch}")
        # the ranks trained on different shards: rank 1's numbers are not what was posted
        assert rank1[epoch - 1]["train"]["loss"] != rank0[epoch - 1]["train"]["loss"]
    assert {d.get("reporting_rank", 0) for d in run.history} == {0}
    # exactly one process posted: the emulator received what rank 0 says it sent
    line = next(x for x in run.completed.stdout.splitlines() if "statistics posts sent" in x)
    assert int(line.split(":")[1].split()[0]) == len(run.history), (line, len(run.history))
