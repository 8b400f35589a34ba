"""Every shipped example trains for real as a job, and the job's statistics are its history.

Each example's ``handler(context)`` runs as the platform runs it (``handler_main`` in the
example's directory, the job's environment from the emulator) and reports through the
default reporter. Afterwards the statistics the emulator received are compared, epoch by
epoch and stage by stage, with the history the framework itself kept (written to the
result dir by the example: Keras ``History``, the loop's own list, Lightning's
CSVLogger, the HF Trainer's ``log_history``, every DDP rank's metrics).

``tests/runner/test_runner_examples.py`` runs the same examples through ``abeja-runtime run``.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("werkzeug")

from abeja_runtime.emulator import Emulator

from tests.support.examples_support import EXAMPLES, ExampleRun, check_torchrun, run_example
from tests.support.integration_support import (
    assert_stage_matches,
    epoch_end_docs,
    lightning_csv_history,
)

pytestmark = pytest.mark.framework

NUM_EPOCHS = 3


def _check_pytorch_loop(run: ExampleRun, docs: dict[int, dict[str, Any]]) -> None:
    history = json.loads((run.result_dir / "history.json").read_text())
    assert (run.result_dir / "model.pth").is_file()
    for epoch, own in enumerate(history, start=1):
        for stage in ("train", "validation"):
            assert_stage_matches(docs[epoch]["stages"][stage], own[stage], f"{stage} {epoch}")


def _check_keras(run: ExampleRun, docs: dict[int, dict[str, Any]]) -> None:
    history = json.loads((run.result_dir / "history.json").read_text())
    assert (run.result_dir / "model.keras").is_file()
    for epoch in range(1, NUM_EPOCHS + 1):
        train = {k: v[epoch - 1] for k, v in history.items() if not k.startswith("val_")}
        val = {k[4:]: v[epoch - 1] for k, v in history.items() if k.startswith("val_")}
        assert set(train) == {"loss", "accuracy"}
        assert_stage_matches(docs[epoch]["stages"]["train"], train, f"train {epoch}")
        assert_stage_matches(docs[epoch]["stages"]["validation"], val, f"validation {epoch}")


def _check_lightning(run: ExampleRun, docs: dict[int, dict[str, Any]]) -> None:
    history = lightning_csv_history(run.result_dir / "logs" / "version_0" / "metrics.csv")
    assert (run.result_dir / "model.ckpt").is_file()
    assert sorted(history) == list(range(1, NUM_EPOCHS + 1))
    for epoch, own in history.items():
        assert set(own["train"]) == {"loss", "acc"} and set(own["validation"]) == {"loss", "acc"}
        for stage in ("train", "validation"):
            assert_stage_matches(docs[epoch]["stages"][stage], own[stage], f"{stage} {epoch}")


def _check_transformers(run: ExampleRun, docs: dict[int, dict[str, Any]]) -> None:
    log = json.loads((run.result_dir / "history.json").read_text())
    assert (run.result_dir / "model" / "config.json").is_file()
    for epoch in range(1, NUM_EPOCHS + 1):
        train = next(e for e in log if e.get("epoch") == epoch and "loss" in e)
        evaluation = next(e for e in log if e.get("epoch") == epoch and "eval_loss" in e)
        stages = docs[epoch]["stages"]
        assert_stage_matches(
            stages["train"], {k: train[k] for k in ("loss", "grad_norm")}, f"train {epoch}"
        )
        own_val = {k[5:]: v for k, v in evaluation.items() if k.startswith("eval_")}
        assert_stage_matches(stages["validation"], own_val, f"validation {epoch}")
    assert run.final["train_loss"] == pytest.approx(log[-1]["train_loss"])


#: example -> (modules it needs, its check)
CHECKS: dict[str, tuple[tuple[str, ...], Callable[[ExampleRun, dict[int, Any]], None]]] = {
    "pytorch_loop": (("torch",), _check_pytorch_loop),
    "keras_mnist_like": (("torch", "keras"), _check_keras),
    "lightning_classifier": (("torch", "lightning"), _check_lightning),
    "transformers_bert": (("torch", "transformers", "accelerate"), _check_transformers),
    "torchrun_ddp": (("torch",), lambda run, docs: check_torchrun(run, docs, NUM_EPOCHS)),
}


def test_every_example_is_checked() -> None:
    shipped = sorted(p.parent.name for p in EXAMPLES.glob("*/train.py"))
    assert set(CHECKS) <= set(shipped)
    for name in shipped:
        assert (EXAMPLES / name / "requirements.txt").is_file(), name
        source = (EXAMPLES / name / "train.py").read_text()
        assert "def handler(context" in source, name
        if name in CHECKS:
            continue
        # an example of another engineer's (no framework integration): not ours to check
        assert "abeja_runtime.integrations" not in source, f"{name} has no check in CHECKS"


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_example_statistics_match_its_own_history(name: str, tmp_path: Path) -> None:
    modules, check = CHECKS[name]
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{name} needs {', '.join(missing)}")
    with Emulator() as emu:
        run = run_example(emu, name, tmp_path)
    assert run.completed.returncode == 0, run.output
    docs = epoch_end_docs(run.history)
    assert sorted(docs) == list(range(1, NUM_EPOCHS + 1)), run.history
    for epoch, doc in docs.items():
        assert doc["num_epochs"] == NUM_EPOCHS
        assert doc["progress_percentage"] == pytest.approx(epoch / NUM_EPOCHS)
    assert run.final == run.history[-1]
    assert run.final["epoch"] == NUM_EPOCHS and run.final["progress_percentage"] == 1.0
    progress = [d["progress_percentage"] for d in run.history if "progress_percentage" in d]
    assert progress == sorted(progress), progress
    check(run, docs)
