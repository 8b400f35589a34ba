"""Hugging Face Transformers: a tiny BERT classifier whose Trainer logs reach the job.

The model is built from a ``BertConfig`` (no pretrained weights, nothing downloaded) and
trained on synthetic token sequences: the label says whether the sequence's first token
is a "positive" one. ``StatisticsCallback()`` maps the Trainer's logs
(``loss``, ``eval_loss``, ``eval_accuracy``, ...) to the job's train and validation stages.

Run it as the platform would: ``abeja-runtime run train:handler --source
examples/transformers_bert``; or plainly ``python train.py``.

Parameters (environment variables): ``EPOCHS`` (default 3), ``BATCH_SIZE`` (16),
``LEARNING_RATE`` (0.003).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers

from abeja_runtime.integrations.transformers import StatisticsCallback

VOCAB = 64
LENGTH = 16
#: token ids 2..31 are "negative", 32..63 "positive" (0 is padding, 1 is [CLS])
SPLIT = 32


class SyntheticTokens(torch.utils.data.Dataset):  # type: ignore[misc]
    def __init__(self, n: int, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        ids = torch.randint(2, VOCAB, (n, LENGTH), generator=gen)
        ids[:, 0] = 1
        self.ids = ids
        self.labels = (ids[:, 1] >= SPLIT).long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {
            "input_ids": self.ids[i],
            "attention_mask": torch.ones(LENGTH, dtype=torch.long),
            "labels": self.labels[i],
        }


def accuracy(prediction: Any) -> dict[str, float]:
    predicted = np.argmax(prediction.predictions, axis=-1)
    return {"accuracy": float((predicted == prediction.label_ids).mean())}


def handler(context: dict[str, Any]) -> None:
    epochs = int(os.environ.get("EPOCHS", "3"))
    batch_size = int(os.environ.get("BATCH_SIZE", "16"))
    learning_rate = float(os.environ.get("LEARNING_RATE", "0.003"))
    result_dir = Path(os.environ.get("ABEJA_TRAINING_RESULT_DIR", "."))
    result_dir.mkdir(parents=True, exist_ok=True)
    transformers.logging.set_verbosity_error()

    config = transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=LENGTH,
        num_labels=2,
    )
    transformers.set_seed(0)
    model = transformers.BertForSequenceClassification(config)
    with tempfile.TemporaryDirectory() as scratch:  # the Trainer's own output, not a result
        args = transformers.TrainingArguments(
            output_dir=scratch,
            num_train_epochs=epochs,
            per_device_train_batch_size=batch_size,
            per_device_eval_batch_size=64,
            learning_rate=learning_rate,
            eval_strategy="epoch",
            logging_strategy="epoch",
            save_strategy="no",
            report_to=[],
            use_cpu=True,
            disable_tqdm=True,
            seed=0,
        )
        trainer = transformers.Trainer(
            model=model,
            args=args,
            train_dataset=SyntheticTokens(1024, seed=0),
            eval_dataset=SyntheticTokens(128, seed=1),
            compute_metrics=accuracy,
            callbacks=[StatisticsCallback()],  # the one line that reports to ABEJA Platform
        )
        trainer.train()
    trainer.save_model(str(result_dir / "model"))
    (result_dir / "history.json").write_text(json.dumps(trainer.state.log_history, indent=1))


if __name__ == "__main__":
    handler({})
