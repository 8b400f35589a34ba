"""A plain PyTorch training loop reporting its job's statistics in two lines.

``track(loader, ...)`` reports progress (and the step's loss) as the loop runs, and
``epoch_end(...)`` reports each epoch's train and validation metrics. Losses are passed as
tensors: nothing here calls ``.item()`` for reporting, so on a GPU the loop never waits for
the device because of it. The data is generated here; nothing is downloaded.

Run it as the platform would: ``abeja-runtime run train:handler --source
examples/pytorch_loop``; or plainly ``python train.py``.

Parameters (environment variables): ``EPOCHS`` (default 3), ``BATCH_SIZE`` (32),
``LEARNING_RATE`` (0.1).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset

from abeja_runtime.integrations.torch import epoch_end, track


def make_data(n: int, seed: int) -> TensorDataset:
    """Points in 16-d space, labelled by which of 4 fixed directions they lean to most."""
    directions = torch.randn(16, 4, generator=torch.Generator().manual_seed(1234))
    x = torch.randn(n, 16, generator=torch.Generator().manual_seed(seed))
    return TensorDataset(x, (x @ directions).argmax(dim=1))


def evaluate(model: torch.nn.Module, loader: DataLoader) -> dict[str, torch.Tensor]:
    """Mean loss and accuracy over ``loader``, as tensors (read later, off the loop)."""
    model.eval()
    loss_sum, correct, seen = torch.zeros(()), torch.zeros(()), 0
    with torch.no_grad():
        for x, y in loader:
            out = model(x)
            loss_sum += torch.nn.functional.cross_entropy(out, y, reduction="sum")
            correct += (out.argmax(1) == y).sum()
            seen += len(y)
    return {"loss": loss_sum / seen, "accuracy": correct / seen}


def handler(context: dict[str, Any]) -> None:
    epochs = int(os.environ.get("EPOCHS", "3"))
    batch_size = int(os.environ.get("BATCH_SIZE", "32"))
    learning_rate = float(os.environ.get("LEARNING_RATE", "0.1"))
    result_dir = Path(os.environ.get("ABEJA_TRAINING_RESULT_DIR", "."))
    result_dir.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(0)
    train_loader = DataLoader(make_data(2048, seed=0), batch_size=batch_size, shuffle=True)
    val_loader = DataLoader(make_data(512, seed=1), batch_size=256)
    model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=learning_rate, momentum=0.9)

    history = []
    for epoch in range(epochs):
        model.train()
        steps = track(train_loader, epoch=epoch, num_epochs=epochs)  # reports progress
        loss_sum, correct, seen = torch.zeros(()), torch.zeros(()), 0
        for x, y in steps:
            out = model(x)
            loss = torch.nn.functional.cross_entropy(out, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps.log(loss=loss)  # a tensor: read later on the reporter's thread
            loss_sum += loss.detach() * len(y)
            correct += (out.argmax(1) == y).sum()
            seen += len(y)
        train = {"loss": loss_sum / seen, "accuracy": correct / seen}
        validation = evaluate(model, val_loader)
        epoch_end(epoch, num_epochs=epochs, train=train, validation=validation)

        row = {"train": train, "validation": validation}
        history.append({stage: {k: float(v) for k, v in m.items()} for stage, m in row.items()})
        print(f"epoch {epoch + 1}/{epochs}: {history[-1]}", flush=True)

    torch.save(model.state_dict(), result_dir / "model.pth")
    (result_dir / "history.json").write_text(json.dumps(history, indent=1))


if __name__ == "__main__":
    handler({})
