"""Keras 3 StatisticsCallback: real fit() runs on CPU (torch backend) against the emulator."""

from __future__ import annotations

import math
import os
from typing import Any

import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
pytest.importorskip("werkzeug")
pytest.importorskip("torch")
keras = pytest.importorskip("keras")
np = pytest.importorskip("numpy")

from abeja_runtime.integrations.keras import StatisticsCallback  # noqa: E402
from abeja_runtime.statistics.reporter import StatisticsReporter  # noqa: E402
from abeja_runtime.statistics.sinks import MemorySink  # noqa: E402

from tests.support.integration_support import assert_stage_matches, emulator_job  # noqa: E402

pytestmark = pytest.mark.framework


def _data(n: int = 192, seed: int = 0) -> tuple[Any, Any]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype("float32")
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype("int64")
    return x, y


def _model(metrics: list[Any]) -> Any:
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=metrics)
    return model


def custom_margin(y_true: Any, y_pred: Any) -> Any:
    """A custom metric: the mean probability of class 1."""
    return keras.ops.mean(y_pred[:, 1])


def _expected_stages(history: dict[str, list[Any]], epoch: int) -> tuple[dict[str, Any], ...]:
    train = {k: v[epoch] for k, v in history.items() if not k.startswith("val_")}
    validation = {k[4:]: v[epoch] for k, v in history.items() if k.startswith("val_")}
    return train, validation


def test_statistics_follow_history_epoch_by_epoch() -> None:
    x, y = _data()
    with emulator_job("keras-history") as job:
        model = _model(["accuracy", custom_margin])
        fit = model.fit(
            x,
            y,
            epochs=4,
            batch_size=32,
            validation_split=0.25,
            verbose=0,
            callbacks=[StatisticsCallback(job.reporter, progress_interval=0)],
        )
        history = fit.history
        assert job.reporter.counters["pending"] == 0  # on_train_end flushed
        docs = job.epoch_ends()
        assert sorted(docs) == [1, 2, 3, 4]
        for epoch in range(4):
            doc = docs[epoch + 1]
            train, validation = _expected_stages(history, epoch)
            assert set(train) == {"loss", "accuracy", "custom_margin"}
            assert_stage_matches(doc["stages"]["train"], train, f"epoch {epoch + 1} train")
            assert_stage_matches(
                doc["stages"]["validation"], validation, f"epoch {epoch + 1} validation"
            )
            assert doc["num_epochs"] == 4
            assert doc["progress_percentage"] == pytest.approx((epoch + 1) / 4)
        assert job.final() == docs[4]
        # batch-level progress went through as well, never backwards
        progress = [d["progress_percentage"] for d in job.history()]
        assert any(0 < p < 1 and p * 4 % 1 for p in progress), progress
        assert progress == sorted(progress)


@pytest.mark.parametrize(
    ("metric", "name"),
    [
        ("accuracy", "accuracy"),
        ("acc", "acc"),
        (lambda: keras.metrics.SparseCategoricalAccuracy(), "sparse_categorical_accuracy"),
        (lambda: custom_margin, "custom_margin"),
    ],
    ids=["accuracy", "acc", "sparse_categorical_accuracy", "custom"],
)
def test_every_metric_name_is_kept_in_both_stages(metric: Any, name: str) -> None:
    x, y = _data(96)
    metric = metric() if callable(metric) and not isinstance(metric, str) else metric
    with emulator_job(f"keras-metric-{name.replace('_', '-')}") as job:
        fit = _model([metric]).fit(
            x,
            y,
            epochs=2,
            batch_size=32,
            validation_data=_data(64, seed=1),
            verbose=0,
            callbacks=[StatisticsCallback(job.reporter, batch_progress=False)],
        )
        docs = job.epoch_ends()
    assert name in fit.history and f"val_{name}" in fit.history
    for epoch in range(2):
        train, validation = _expected_stages(fit.history, epoch)
        for stage, expected in (("train", train), ("validation", validation)):
            got = docs[epoch + 1]["stages"][stage]
            assert_stage_matches(got, expected, f"{stage} {epoch}")
            if name != "custom_margin":  # accuracy-like: also under the charted name
                assert got["accuracy"] == got[name]
            else:
                assert "accuracy" not in got


def test_no_validation_data_reports_train_only() -> None:
    x, y = _data(96)
    with emulator_job("keras-no-validation") as job:
        fit = _model(["accuracy"]).fit(
            x, y, epochs=2, batch_size=32, verbose=0, callbacks=[StatisticsCallback(job.reporter)]
        )
        docs = job.epoch_ends()
    assert sorted(docs) == [1, 2]
    for epoch in (1, 2):
        assert set(docs[epoch]["stages"]) == {"train"}
        assert docs[epoch]["stages"]["train"]["loss"] == pytest.approx(
            fit.history["loss"][epoch - 1], rel=1e-6
        )


def test_validation_skipped_on_an_epoch_leaves_no_stale_metrics() -> None:
    x, y = _data(96)
    with emulator_job("keras-validation-freq") as job:
        fit = _model(["accuracy"]).fit(
            x,
            y,
            epochs=4,
            batch_size=32,
            validation_data=_data(64, seed=1),
            validation_freq=2,
            verbose=0,
            callbacks=[StatisticsCallback(job.reporter, batch_progress=False)],
        )
        docs = job.epoch_ends()
    # Keras' History only has the validated epochs' values, so compare through the
    # epochs that had validation: 2 and 4 (History holds them at index 0 and 1)
    assert len(fit.history["val_loss"]) == 2
    for epoch in (1, 3):
        assert not docs[epoch]["stages"].get("validation"), docs[epoch]
    for index, epoch in enumerate((2, 4)):
        assert docs[epoch]["stages"]["validation"]["loss"] == pytest.approx(
            fit.history["val_loss"][index], rel=1e-6
        )


def test_epoch_without_validation_has_no_validation_stage() -> None:
    """Not even an empty one: ``"validation": {}`` reads as "validated, no metrics"."""
    x, y = _data(96)
    with emulator_job("keras-validation-freq-empty") as job:
        _model(["accuracy"]).fit(
            x,
            y,
            epochs=3,
            batch_size=32,
            validation_data=_data(64, seed=1),
            validation_freq=2,
            verbose=0,
            callbacks=[StatisticsCallback(job.reporter, batch_progress=False)],
        )
        docs = job.epoch_ends()
    assert "validation" in docs[2]["stages"]
    for epoch in (1, 3):
        assert "validation" not in docs[epoch]["stages"], docs[epoch]


def test_nan_loss_is_reported_and_never_stops_training() -> None:
    x, y = _data(64)
    x[0, 0] = np.nan  # poisons the weights: every loss from there on is NaN
    with emulator_job("keras-nan") as job:
        fit = _model(["accuracy"]).fit(
            x,
            y,
            epochs=2,
            batch_size=32,
            validation_data=_data(32, seed=1),
            verbose=0,
            callbacks=[StatisticsCallback(job.reporter, progress_interval=0)],
        )
        assert all(math.isnan(v) for v in fit.history["loss"])
        docs = job.epoch_ends()
        assert job.reporter.counters["failed"] == 0
    assert sorted(docs) == [1, 2]
    assert docs[2]["stages"]["train"]["loss"] == "NaN"
    assert docs[2]["stages"]["validation"]["loss"] == "NaN"
    assert docs[2]["progress_percentage"] == 1.0


def test_odd_logs_never_raise_and_keep_what_can_be_sent() -> None:
    """Missing keys, None, arrays, strings and non-string names, called as Keras would."""
    sink = MemorySink()
    reporter = StatisticsReporter(sink=sink, min_interval=0, handle_sigterm=False, rank=0)
    try:
        callback = StatisticsCallback(reporter, progress_interval=0)
        callback.set_params({"epochs": 3, "steps": None, "verbose": 0})
        callback.on_train_begin()
        callback.on_epoch_begin(0)
        callback.on_train_batch_end(0, None)  # no logs, unknown steps
        callback.on_epoch_end(0, None)  # no logs at all
        callback.on_epoch_begin(1)
        callback.on_epoch_end(
            1,
            {
                "loss": 0.5,
                "f1": np.array([0.1, 0.9], dtype="float32"),  # per-class: kept as a list
                "big": np.zeros(10_000),  # not statistics: left out
                "note": "text",
                "unset": None,
                "accuracy": [0.5, 0.6],  # the platform needs a number here: left out
                "val_acc": np.float32(0.25),
                7: 1.0,
                "learning_rate": 0.001,
            },
        )
        callback.on_train_end()
        reporter.flush(10)
        docs = sink.documents
    finally:
        reporter.close(5)
    assert docs[-1]["epoch"] == 2
    assert docs[-1]["learning_rate"] == 0.001
    train = docs[-1]["stages"]["train"]
    assert train["loss"] == 0.5 and train["note"] == "text"
    assert train["f1"] == pytest.approx([0.1, 0.9])
    assert "big" not in train and "unset" not in train and "accuracy" not in train
    assert docs[-1]["stages"]["validation"] == {"acc": 0.25, "accuracy": 0.25}


def test_other_ranks_report_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    sink = MemorySink()
    reporter = StatisticsReporter(sink=sink, min_interval=0, handle_sigterm=False, rank=0)
    try:
        x, y = _data(64)
        _model(["accuracy"]).fit(
            x, y, epochs=2, batch_size=32, verbose=0, callbacks=[StatisticsCallback(reporter)]
        )
        assert reporter.counters["reported"] == 0
    finally:
        reporter.close(5)
    assert sink.documents == []


def test_batch_hooks_stay_async_dispatchable() -> None:
    """The callback declares itself thread-safe, so Keras may run batch hooks off-thread."""
    from keras.src.callbacks.callback_list import CallbackList

    callbacks = CallbackList([StatisticsCallback(batch_progress=True)], add_progbar=False)
    assert callbacks._async_train
