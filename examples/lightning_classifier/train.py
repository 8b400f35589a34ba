"""PyTorch Lightning: a classifier whose logged metrics reach the job with one callback.

Whatever the LightningModule logs with ``self.log`` (``train_loss``, ``val_acc``, ...)
becomes the job's train and validation stages at each epoch end; the Trainer's own
CSVLogger keeps the same numbers in ``logs/`` of the result dir. The data is generated
here; nothing is downloaded.

Run it as the platform would: ``abeja-runtime run train:handler --source
examples/lightning_classifier``; or plainly ``python train.py``.

Parameters (environment variables): ``EPOCHS`` (default 3), ``BATCH_SIZE`` (32).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from abeja_runtime.integrations.lightning import StatisticsCallback


def make_data(n: int, seed: int) -> TensorDataset:
    """Points in 16-d space, labelled by which of 4 fixed directions they lean to most."""
    directions = torch.randn(16, 4, generator=torch.Generator().manual_seed(1234))
    x = torch.randn(n, 16, generator=torch.Generator().manual_seed(seed))
    return TensorDataset(x, (x @ directions).argmax(dim=1))


class Classifier(pl.LightningModule):
    def __init__(self, learning_rate: float = 0.1) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4)
        )

    def _step(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = batch
        out = self.net(x)
        return torch.nn.functional.cross_entropy(out, y), (out.argmax(1) == y).float().mean()

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss, acc = self._step(batch)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        self.log("train_acc", acc, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        loss, acc = self._step(batch)
        self.log("val_loss", loss)
        self.log("val_acc", acc)

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.learning_rate, momentum=0.9)


def handler(context: dict[str, Any]) -> None:
    epochs = int(os.environ.get("EPOCHS", "3"))
    batch_size = int(os.environ.get("BATCH_SIZE", "32"))
    result_dir = Path(os.environ.get("ABEJA_TRAINING_RESULT_DIR", "."))
    result_dir.mkdir(parents=True, exist_ok=True)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)

    pl.seed_everything(0, verbose=False)
    train_loader = DataLoader(make_data(2048, seed=0), batch_size=batch_size, shuffle=True)
    val_loader = DataLoader(make_data(512, seed=1), batch_size=256)
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        callbacks=[StatisticsCallback()],  # the one line that reports to ABEJA Platform
        logger=pl.loggers.CSVLogger(str(result_dir), name="logs", version=0),
        default_root_dir=str(result_dir),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=16,
    )
    model = Classifier()
    trainer.fit(model, train_loader, val_loader)
    trainer.save_checkpoint(result_dir / "model.ckpt")


if __name__ == "__main__":
    handler({})
