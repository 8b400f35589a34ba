"""Keras 3: an MNIST-like digit classifier whose statistics reach the job with one callback.

The data is generated here (ten 8x8 "digit" prototypes plus noise), so nothing is
downloaded. The only ABEJA-specific line is ``StatisticsCallback()`` in ``fit``: each epoch's
train and ``val_`` metrics become the job's train and validation stages.

Run it as the platform would: ``abeja-runtime run train:handler --source
examples/keras_mnist_like``; or plainly ``python train.py`` (statistics then go to
``statistics.jsonl`` in the result dir).

Parameters (environment variables, as a job definition's ``environment`` sets them):
``EPOCHS`` (default 3), ``BATCH_SIZE`` (32).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

# Keras 3 needs a backend; this example uses PyTorch (set before keras is imported)
os.environ.setdefault("KERAS_BACKEND", "torch")

import keras
import numpy as np

from abeja_runtime.integrations.keras import StatisticsCallback

CLASSES = 10
SIDE = 8


def make_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` noisy 8x8 images of ten fixed random "digits", with their labels."""
    prototypes = np.random.default_rng(1234).random((CLASSES, SIDE, SIDE)) > 0.5
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, size=n)
    images = prototypes[labels].astype("float32") + rng.normal(0, 0.6, (n, SIDE, SIDE))
    return images.astype("float32"), labels.astype("int64")


def build_model() -> Any:
    model = keras.Sequential(
        [
            keras.Input((SIDE, SIDE)),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(CLASSES, activation="softmax"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def handler(context: dict[str, Any]) -> None:
    epochs = int(os.environ.get("EPOCHS", "3"))
    batch_size = int(os.environ.get("BATCH_SIZE", "32"))
    result_dir = Path(os.environ.get("ABEJA_TRAINING_RESULT_DIR", "."))
    result_dir.mkdir(parents=True, exist_ok=True)

    keras.utils.set_random_seed(0)
    x_train, y_train = make_digits(1024, seed=0)
    x_val, y_val = make_digits(256, seed=1)
    model = build_model()
    fit = model.fit(
        x_train,
        y_train,
        epochs=epochs,
        batch_size=batch_size,
        validation_data=(x_val, y_val),
        verbose=2,
        callbacks=[StatisticsCallback()],  # the one line that reports to ABEJA Platform
    )

    model.save(result_dir / "model.keras")
    (result_dir / "history.json").write_text(json.dumps(fit.history, indent=1))


if __name__ == "__main__":
    handler({})
