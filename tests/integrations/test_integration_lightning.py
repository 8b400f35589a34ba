"""Lightning StatisticsCallback: real Trainer.fit runs on CPU against the emulator.

The framework's own history is Lightning's CSVLogger (metrics.csv): what ``self.log``
produced at each epoch, written by Lightning itself.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

pytest.importorskip("werkzeug")
torch = pytest.importorskip("torch")
pl = pytest.importorskip("lightning.pytorch")

from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from abeja_runtime.integrations import lightning as integration  # noqa: E402
from abeja_runtime.integrations.lightning import StatisticsCallback  # noqa: E402
from abeja_runtime.statistics.reporter import StatisticsReporter  # noqa: E402
from abeja_runtime.statistics.sinks import MemorySink  # noqa: E402

from tests.support.integration_support import (  # noqa: E402
    assert_stage_matches,
    emulator_job,
    lightning_csv_history,
)

pytestmark = pytest.mark.framework

for _name in ("lightning", "lightning.pytorch", "pytorch_lightning", "lightning_fabric"):
    logging.getLogger(_name).setLevel(logging.ERROR)


def _loaders() -> tuple[Any, Any]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(160, 8, generator=gen)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    train = DataLoader(TensorDataset(x[:128], y[:128]), batch_size=32)
    val = DataLoader(TensorDataset(x[128:], y[128:]), batch_size=32)
    return train, val


def _module_class(base: Any) -> Any:
    class Classifier(base):  # type: ignore[misc, valid-type]
        def __init__(self, *, fail_at_epoch: int | None = None, poison: bool = False) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.net = torch.nn.Sequential(
                torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2)
            )
            self.fail_at_epoch = fail_at_epoch
            self.poison = poison

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            if self.current_epoch == self.fail_at_epoch:
                raise RuntimeError("boom")
            x, y = batch
            if self.poison:
                x = x * float("nan")
            out = self.net(x)
            loss = torch.nn.functional.cross_entropy(out, y)
            self.log("train_loss", loss, on_step=True, on_epoch=True)
            self.log("train_acc", (out.argmax(1) == y).float().mean(), on_epoch=True, on_step=False)
            return loss

        def on_train_epoch_end(self) -> None:  # logged after callbacks' hook ran
            self.log("train_custom", 10.0 + self.current_epoch)

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            out = self.net(x)
            self.log("val_loss", torch.nn.functional.cross_entropy(out, y))
            self.log("val_acc", (out.argmax(1) == y).float().mean())

        def on_validation_epoch_end(self) -> None:
            self.log("val_custom", 100.0 + self.current_epoch)

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.5)

    return Classifier


Classifier = _module_class(pl.LightningModule)


class _DeliverFirstStep(pl.Callback):  # type: ignore[misc]
    """Flushes after the first step's report: a run this small would otherwise end before
    the reporter's first post, and the epoch end would supersede the step snapshot."""

    def __init__(self, reporter: StatisticsReporter) -> None:
        self.reporter = reporter

    def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
        if trainer.current_epoch == 0 and trainer.global_step == 1:
            self.reporter.flush(10)


def _trainer(
    tmp_path: Path, callback: Any, epochs: int, package: Any = pl, *extra: Any, **kwargs: Any
) -> Any:
    loggers = package.loggers
    return package.Trainer(
        max_epochs=epochs,
        callbacks=[callback, *extra],
        logger=loggers.CSVLogger(str(tmp_path), name="csv", version=0),
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        accelerator="cpu",
        devices=1,
        **kwargs,
    )


def _csv_history(tmp_path: Path) -> dict[int, dict[str, dict[str, float]]]:
    """Lightning's own per-epoch epoch-level metrics, as stages (CSVLogger rows)."""
    return lightning_csv_history(tmp_path / "csv" / "version_0" / "metrics.csv")


def test_statistics_follow_lightnings_logged_metrics(tmp_path: Path) -> None:
    train, val = _loaders()
    with emulator_job("lightning-history") as job:
        callback = StatisticsCallback(job.reporter, progress_interval=0)
        deliver = _DeliverFirstStep(job.reporter)
        _trainer(tmp_path, callback, 3, pl, deliver).fit(Classifier(), train, val)
        assert job.reporter.counters["pending"] == 0  # flushed at train end
        docs = job.epoch_ends()
        history = _csv_history(tmp_path)
        assert sorted(docs) == sorted(history) == [1, 2, 3]
        for epoch in (1, 2, 3):
            own = history[epoch]
            assert set(own["train"]) == {"loss", "acc", "custom"}
            assert set(own["validation"]) == {"loss", "acc", "custom"}
            stages = docs[epoch]["stages"]
            assert_stage_matches(stages["train"], own["train"], f"train {epoch}")
            assert_stage_matches(stages["validation"], own["validation"], f"validation {epoch}")
            assert stages["train"]["custom"] == 10.0 + epoch - 1  # module hook: this epoch's
            assert stages["train"]["accuracy"] == stages["train"]["acc"]
            assert docs[epoch]["num_epochs"] == 3
            assert docs[epoch]["progress_percentage"] == pytest.approx(epoch / 3)
        assert job.final() == docs[3]
        progress = [d["progress_percentage"] for d in job.history() if "progress_percentage" in d]
        assert progress == sorted(progress)
        assert any(p * 3 % 1 > 0 for p in progress), "no step-level progress arrived"


def test_epochs_without_validation_show_no_stale_validation(tmp_path: Path) -> None:
    train, val = _loaders()
    with emulator_job("lightning-val-every-2") as job:
        callback = StatisticsCallback(job.reporter, batch_progress=False)
        _trainer(tmp_path, callback, 4, check_val_every_n_epoch=2).fit(Classifier(), train, val)
        docs = job.epoch_ends()
    history = _csv_history(tmp_path)
    for epoch in (1, 2, 3, 4):
        assert ("validation" in history[epoch]) == (epoch % 2 == 0)
        got = docs[epoch]["stages"].get("validation") or {}
        assert_stage_matches(got, history[epoch].get("validation", {}), f"validation {epoch}")


def test_exception_flushes_what_was_reported(tmp_path: Path) -> None:
    train, val = _loaders()
    with emulator_job("lightning-exception") as job:
        callback = StatisticsCallback(job.reporter, batch_progress=False)
        with pytest.raises(RuntimeError, match="boom"):
            _trainer(tmp_path, callback, 4).fit(Classifier(fail_at_epoch=2), train, val)
        # on_exception flushed: the completed epochs are on the server already
        assert job.reporter.counters["pending"] == 0
        docs = job.epoch_ends()
    assert sorted(docs) == [1, 2]
    assert docs[2]["progress_percentage"] == pytest.approx(0.5)


def test_nan_loss_and_no_validation_never_break_training(tmp_path: Path) -> None:
    train, _ = _loaders()
    with emulator_job("lightning-nan") as job:
        callback = StatisticsCallback(job.reporter, progress_interval=0)
        _trainer(tmp_path, callback, 2).fit(Classifier(poison=True), train)
        docs = job.epoch_ends()
        assert job.reporter.counters["failed"] == 0
    assert sorted(docs) == [1, 2]
    assert docs[2]["stages"]["train"]["loss"] == "NaN"
    assert "validation" not in docs[2]["stages"]
    assert docs[2]["progress_percentage"] == 1.0


def test_pytorch_lightning_package(tmp_path: Path) -> None:
    legacy = pytest.importorskip("pytorch_lightning")
    callback_class = integration.PytorchLightningStatisticsCallback
    assert issubclass(callback_class, legacy.Callback)
    train, val = _loaders()
    with emulator_job("pytorch-lightning") as job:
        trainer = _trainer(tmp_path, callback_class(job.reporter), 2, package=legacy)
        trainer.fit(_module_class(legacy.LightningModule)(), train, val)
        docs = job.epoch_ends()
    history = _csv_history(tmp_path)
    assert sorted(docs) == [1, 2]
    for epoch in (1, 2):
        for stage in ("train", "validation"):
            assert_stage_matches(docs[epoch]["stages"][stage], history[epoch][stage], stage)


def test_only_global_zero_reports() -> None:
    sink = MemorySink()
    reporter = StatisticsReporter(sink=sink, min_interval=0, handle_sigterm=False, rank=0)
    try:
        callback = StatisticsCallback(reporter, progress_interval=0)
        trainer = SimpleNamespace(
            is_global_zero=False,
            max_epochs=2,
            current_epoch=0,
            num_training_batches=4,
            sanity_checking=False,
            callback_metrics={"train_loss": torch.tensor(0.5), "val_loss": torch.tensor(0.7)},
        )
        callback.on_train_start(trainer, None)
        callback.on_train_epoch_start(trainer, None)
        callback.on_train_batch_end(trainer, None, {"loss": torch.tensor(0.5)}, None, 0)
        callback.on_validation_end(trainer, None)
        callback.on_train_epoch_end(trainer, None)
        callback.on_train_end(trainer, None)
        assert reporter.counters["reported"] == 0
        # the same calls on global zero do report (the check above can fail)
        trainer.is_global_zero = True
        callback.on_train_start(trainer, None)
        callback.on_train_epoch_start(trainer, None)
        callback.on_validation_end(trainer, None)
        callback.on_train_epoch_end(trainer, None)
        callback.on_train_end(trainer, None)
    finally:
        reporter.close(5)
    assert sink.documents[-1]["stages"] == {
        "train": {"loss": 0.5},
        "validation": {"loss": pytest.approx(0.7)},
    }
    assert sink.documents[-1]["epoch"] == 1


def test_epoch_metrics_keeps_one_name_per_metric() -> None:
    metrics = {
        "train_loss": 1.0,
        "train_loss_step": 2.0,
        "train_loss_epoch": 1.0,
        "lone_epoch": 3.0,
        "test_acc": 0.5,
        "val/acc": 0.25,
    }
    assert integration.epoch_metrics(metrics) == {
        "train_loss": 1.0,
        "lone_epoch": 3.0,
        "val/acc": 0.25,
    }
    assert not math.isnan(integration.epoch_metrics({"x": 1.0})["x"])
