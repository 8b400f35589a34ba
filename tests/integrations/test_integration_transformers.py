"""Transformers StatisticsCallback: a tiny BERT trained by the HF Trainer against the emulator.

The framework's own history is ``trainer.state.log_history``.
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
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")
np = pytest.importorskip("numpy")

from abeja_runtime.integrations.transformers import StatisticsCallback, split_log  # noqa: E402
from abeja_runtime.statistics.reporter import StatisticsReporter  # noqa: E402
from abeja_runtime.statistics.sinks import MemorySink  # noqa: E402

from tests.support.integration_support import assert_stage_matches, emulator_job  # noqa: E402

pytestmark = pytest.mark.framework

transformers.logging.set_verbosity_error()
logging.getLogger("transformers").setLevel(logging.ERROR)

VOCAB, LENGTH = 64, 12


class Tokens(torch.utils.data.Dataset):  # type: ignore[misc]
    """Synthetic token sequences; the label is whether the first token is in the top half."""

    def __init__(self, n: int, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(1, VOCAB, (n, LENGTH), generator=gen)
        self.labels = (self.ids[:, 0] >= VOCAB // 2).long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {
            "input_ids": self.ids[i],
            "attention_mask": torch.ones(LENGTH, dtype=torch.long),
            "labels": self.labels[i],
        }


def _model(poison: bool = False) -> Any:
    config = transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=LENGTH,
        num_labels=2,
    )
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config)
    if poison:
        with torch.no_grad():
            model.bert.embeddings.word_embeddings.weight.fill_(float("nan"))
    return model


def _accuracy(prediction: Any) -> dict[str, float]:
    predicted = np.argmax(prediction.predictions, axis=-1)
    return {"accuracy": float((predicted == prediction.label_ids).mean())}


def _trainer(
    tmp_path: Path, callback: Any, *, epochs: int, poison: bool = False, **args: Any
) -> Any:
    settings: dict[str, Any] = {
        "output_dir": str(tmp_path / "out"),
        "num_train_epochs": epochs,
        "per_device_train_batch_size": 16,
        "per_device_eval_batch_size": 32,
        "learning_rate": 5e-3,
        "save_strategy": "no",
        "report_to": [],
        "use_cpu": True,
        "disable_tqdm": True,
        "seed": 0,
    }
    settings.update(args)
    return transformers.Trainer(
        model=_model(poison),
        args=transformers.TrainingArguments(**settings),
        train_dataset=Tokens(64, seed=0),
        eval_dataset=Tokens(32, seed=1),
        compute_metrics=_accuracy,
        callbacks=[callback],
    )


def test_statistics_follow_log_history(tmp_path: Path) -> None:
    with emulator_job("transformers-history") as job:
        callback = StatisticsCallback(job.reporter, progress_interval=0)
        trainer = _trainer(
            tmp_path, callback, epochs=3, eval_strategy="epoch", logging_strategy="epoch"
        )
        trainer.train()
        assert job.reporter.counters["pending"] == 0  # flushed at train end
        docs = job.epoch_ends()
        final = job.final()
    log = trainer.state.log_history
    assert sorted(docs) == [1, 2, 3]
    for epoch in (1, 2, 3):
        train_log = next(e for e in log if e.get("epoch") == epoch and "loss" in e)
        eval_log = next(e for e in log if e.get("epoch") == epoch and "eval_loss" in e)
        doc = docs[epoch]
        expected_train = {k: v for k, v in train_log.items() if k in ("loss", "grad_norm")}
        expected_val = {k[5:]: v for k, v in eval_log.items() if k.startswith("eval_")}
        assert {"loss", "accuracy", "runtime"} <= set(expected_val)
        assert_stage_matches(doc["stages"]["train"], expected_train, f"train {epoch}")
        assert_stage_matches(doc["stages"]["validation"], expected_val, f"validation {epoch}")
        assert doc["learning_rate"] == pytest.approx(train_log["learning_rate"])
        assert doc["num_epochs"] == 3
        assert doc["progress_percentage"] == pytest.approx(epoch / 3)
    summary = log[-1]
    assert "train_runtime" in summary
    assert final["train_loss"] == pytest.approx(summary["train_loss"])  # top level, whole run
    assert final["stages"]["train"]["loss"] == pytest.approx(docs[3]["stages"]["train"]["loss"])
    assert final["epoch"] == 3 and final["progress_percentage"] == 1.0


def test_epoch_end_snapshots_hold_that_epochs_logs(tmp_path: Path) -> None:
    """Each epoch-end snapshot, in the order received, carries its own epoch's evaluation."""
    with emulator_job("transformers-order") as job:
        callback = StatisticsCallback(job.reporter, step_progress=False)
        trainer = _trainer(
            tmp_path, callback, epochs=2, eval_strategy="epoch", logging_strategy="epoch"
        )
        trainer.train()
        history = job.history()
    evals = [e for e in trainer.state.log_history if "eval_loss" in e]
    with_validation = [d for d in history if "validation" in d.get("stages", {})]
    firsts = {}
    for doc in with_validation:
        firsts.setdefault(doc["epoch"], doc)
    # the first document that shows epoch N's number already holds epoch N's evaluation
    for epoch, entry in zip((1, 2), evals, strict=True):
        assert firsts[epoch]["stages"]["validation"]["loss"] == pytest.approx(entry["eval_loss"])


def test_step_logs_without_evaluation_and_nan_loss(tmp_path: Path) -> None:
    with emulator_job("transformers-nan") as job:
        callback = StatisticsCallback(job.reporter, progress_interval=0)
        trainer = _trainer(
            tmp_path,
            callback,
            epochs=2,
            poison=True,
            eval_strategy="no",
            logging_strategy="steps",
            logging_steps=3,
            logging_nan_inf_filter=False,
        )
        trainer.train()
        docs = job.epoch_ends()
        assert job.reporter.counters["failed"] == 0
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert losses and all(math.isnan(v) for v in losses)
    assert sorted(docs) == [1, 2]
    assert docs[2]["stages"]["train"]["loss"] == "NaN"
    assert "validation" not in docs[2]["stages"]
    assert docs[2]["progress_percentage"] == 1.0


def test_split_log_maps_hf_keys() -> None:
    stages, extra = split_log(
        {"loss": 0.5, "grad_norm": 1.0, "learning_rate": 1e-3, "epoch": 1.5, "custom": 2}
    )
    assert stages == {"train": {"loss": 0.5, "grad_norm": 1.0, "custom": 2}}
    assert extra == {"learning_rate": 1e-3}
    stages, extra = split_log({"eval_loss": 0.4, "eval_accuracy": 0.9, "test_f1": 0.7, "epoch": 2})
    assert stages == {"validation": {"loss": 0.4, "accuracy": 0.9}, "test": {"f1": 0.7}}
    assert extra == {}
    stages, extra = split_log({"train_runtime": 1.0, "train_loss": 0.3, "epoch": 2.0})
    assert stages == {} and extra == {"train_runtime": 1.0, "train_loss": 0.3}


def test_only_world_process_zero_reports() -> None:
    sink = MemorySink()
    reporter = StatisticsReporter(sink=sink, min_interval=0, handle_sigterm=False, rank=0)
    try:
        callback = StatisticsCallback(reporter, progress_interval=0)
        args = SimpleNamespace(num_train_epochs=1)
        state = SimpleNamespace(
            is_world_process_zero=False, num_train_epochs=1, epoch=1.0, global_step=4, max_steps=4
        )
        for zero in (False, True):
            state.is_world_process_zero = zero
            callback.on_train_begin(args, state, None)
            callback.on_step_end(args, state, None)
            callback.on_epoch_end(args, state, None)
            callback.on_log(args, state, None, logs={"loss": 0.5, "epoch": 1.0})
            callback.on_train_end(args, state, None)
            if not zero:
                assert reporter.counters["reported"] == 0
    finally:
        reporter.close(5)
    assert sink.documents[-1] == {
        "epoch": 1,
        "num_epochs": 1,
        "progress_percentage": 1.0,
        "stages": {"train": {"loss": 0.5}},
    }
