"""torchrun (2 processes, gloo, CPU) on the DDP example: exactly one process posts.

The workers all make the same reporting calls; the statistics the emulator received must
be rank 0's (each rank trains on its own shard, so their numbers differ), and their count
must be what rank 0's reporter says it sent: a post from any other process would show as
an extra document.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("werkzeug")
pytest.importorskip("torch")
pytest.importorskip("torch.distributed")

from abeja_runtime.emulator import Emulator

from tests.support.examples_support import check_torchrun, run_example
from tests.support.integration_support import epoch_end_docs

pytestmark = pytest.mark.framework


def test_torchrun_two_processes_only_rank_zero_posts(tmp_path: Path) -> None:
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "train.py",
    ]
    with Emulator() as emu:
        run = run_example(emu, "torchrun_ddp", tmp_path, command=command, OMP_NUM_THREADS="1")
    assert run.completed.returncode == 0, run.output
    docs = epoch_end_docs(run.history)
    assert sorted(docs) == [1, 2, 3]
    assert run.final == docs[3] == run.history[-1]
    assert run.final["epoch"] == 3 and run.final["progress_percentage"] == 1.0
    check_torchrun(run, docs, 3)
    assert run.completed.stdout.count("statistics posts sent") == 1  # printed by rank 0
