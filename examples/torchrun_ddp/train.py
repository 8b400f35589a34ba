"""Distributed data parallel training under torchrun; only global rank 0 posts statistics.

``handler(context)`` starts ``python -m torch.distributed.run --standalone
--nproc_per_node=N`` on this file (gloo, CPU). Every worker runs the same loop with
``track``/``epoch_end`` and nothing rank-specific: the reporter sees ``RANK`` (set by
torchrun) and posts from rank 0 only, so the job's statistics are rank 0's. Each rank's
train metrics are those of its own data shard, which is why the statistics also carry
``reporting_rank``: the numbers come from that process.

Rank 0 also gathers every rank's per-epoch metrics into ``history.json`` and saves the
model to the result dir. The data is generated here; nothing is downloaded.

Run it as the platform would: ``abeja-runtime run train:handler --source
examples/torchrun_ddp``; or directly ``torchrun --standalone --nproc_per_node=2 train.py``.

Parameters (environment variables): ``NPROC_PER_NODE`` (default 2), ``EPOCHS`` (3),
``BATCH_SIZE`` (32).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

import abeja_runtime
from abeja_runtime.integrations.torch import epoch_end, track


def make_data(n: int, seed: int) -> TensorDataset:
    """Points in 16-d space, labelled by which of 4 fixed directions they lean to most."""
    directions = torch.randn(16, 4, generator=torch.Generator().manual_seed(1234))
    x = torch.randn(n, 16, generator=torch.Generator().manual_seed(seed))
    return TensorDataset(x, (x @ directions).argmax(dim=1))


def evaluate(model: torch.nn.Module, loader: DataLoader) -> dict[str, torch.Tensor]:
    model.eval()
    loss_sum, correct, seen = torch.zeros(()), torch.zeros(()), 0
    with torch.no_grad():
        for x, y in loader:
            out = model(x)
            loss_sum += torch.nn.functional.cross_entropy(out, y, reduction="sum")
            correct += (out.argmax(1) == y).sum()
            seen += len(y)
    return {"loss": loss_sum / seen, "accuracy": correct / seen}


def train() -> None:
    """One worker of the distributed run (started by torchrun)."""
    epochs = int(os.environ.get("EPOCHS", "3"))
    batch_size = int(os.environ.get("BATCH_SIZE", "32"))
    result_dir = Path(os.environ.get("ABEJA_TRAINING_RESULT_DIR", "."))
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world_size = dist.get_rank(), dist.get_world_size()

    torch.manual_seed(0)  # the same initial weights on every rank
    train_set = make_data(2048, seed=0)
    sampler = DistributedSampler(train_set, shuffle=True, seed=0)
    train_loader = DataLoader(train_set, batch_size=batch_size, sampler=sampler)
    val_loader = DataLoader(make_data(512, seed=1), batch_size=256)
    model = DistributedDataParallel(
        torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    history = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        model.train()
        steps = track(train_loader, epoch=epoch, num_epochs=epochs)
        loss_sum, correct, seen = torch.zeros(()), torch.zeros(()), 0
        for x, y in steps:
            out = model(x)
            loss = torch.nn.functional.cross_entropy(out, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps.log(loss=loss)
            loss_sum += loss.detach() * len(y)
            correct += (out.argmax(1) == y).sum()
            seen += len(y)
        train = {"loss": loss_sum / seen, "accuracy": correct / seen}  # this rank's shard
        validation = evaluate(model.module, val_loader)
        # the same call on every rank: the reporter posts from global rank 0 only
        epoch_end(
            epoch,
            num_epochs=epochs,
            train=train,
            validation=validation,
            reporting_rank=rank,
            world_size=world_size,
        )
        row = {"train": train, "validation": validation}
        history.append({stage: {k: float(v) for k, v in m.items()} for stage, m in row.items()})

    if rank == 0:  # deliver what is left now, and say how many posts this run made
        abeja_runtime.flush(30)
        sent = abeja_runtime.get_reporter().counters["sent"]
        print(f"rank 0: {sent} statistics posts sent (the other ranks post none)", flush=True)

    histories: list[Any] = [None] * world_size
    dist.all_gather_object(histories, history)
    if rank == 0:
        result_dir.mkdir(parents=True, exist_ok=True)
        torch.save(model.module.state_dict(), result_dir / "model.pth")
        record = {"world_size": world_size, "ranks": histories}
        (result_dir / "history.json").write_text(json.dumps(record, indent=1))
        print(f"rank 0: trained {epochs} epochs on {world_size} processes", flush=True)
    dist.barrier()
    dist.destroy_process_group()


def handler(context: dict[str, Any]) -> None:
    """The job's entrypoint: run this file's ``train()`` on N processes with torchrun."""
    nproc = int(os.environ.get("NPROC_PER_NODE", "2"))
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        str(Path(__file__).resolve()),
    ]
    subprocess.run(command, env=env, check=True)


if __name__ == "__main__":
    train()
