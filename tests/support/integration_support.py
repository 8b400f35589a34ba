"""Helpers for the framework integration tests: a job on the emulator and its history.

Each test trains for real on CPU and reports through a real
:class:`~abeja_runtime.statistics.reporter.StatisticsReporter` posting over loopback HTTP to the
emulator, then reads back what the emulator received.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from abeja_runtime.emulator import Emulator
from abeja_runtime.job import JobContext
from abeja_runtime.statistics.reporter import StatisticsReporter

#: seconds between step-level posts in tests: small, so that tests are quick
TEST_MIN_INTERVAL = 0.05


@dataclass
class Job:
    """A job on the emulator and a reporter posting to it."""

    emulator: Emulator
    env: dict[str, str]
    reporter: StatisticsReporter

    @property
    def name(self) -> str:
        return self.env["TRAINING_JOB_DEFINITION_NAME"]

    @property
    def job_id(self) -> str:
        return self.env["TRAINING_JOB_ID"]

    def history(self) -> list[dict[str, Any]]:
        """Every statistics document the emulator received, oldest first."""
        return [e["statistics"] for e in self.emulator.statistics_history(self.name, self.job_id)]

    def final(self) -> dict[str, Any]:
        """The job's current statistics on the emulator."""
        statistics: dict[str, Any] = self.emulator.job(self.name, self.job_id)["statistics"]
        return statistics

    def epoch_ends(self) -> dict[int, dict[str, Any]]:
        """The last document per ``epoch``: the epoch-end one (see epoch_end_docs)."""
        return epoch_end_docs(self.history())


def epoch_end_docs(history: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """The last document received for each ``epoch`` value.

    The integrations report ``epoch`` as the 1-based number of the epoch in progress and,
    at its end, of the epoch completed; nothing is reported for an epoch after its end
    (the next report already carries the next number), and the reporter never delivers
    an older snapshot after a newer one. So the last document per epoch is that epoch's
    end, whatever step-level documents came before it.
    """
    out: dict[int, dict[str, Any]] = {}
    for doc in history:
        if "epoch" in doc:
            out[doc["epoch"]] = doc
    return out


@contextmanager
def emulator_job(name: str, **reporter_kwargs: Any) -> Iterator[Job]:
    """A fresh emulator, a job on it, and a fast reporter to it (closed at the end)."""
    with Emulator() as emu:
        env = emu.create_job(name)
        kwargs: dict[str, Any] = {
            "min_interval": TEST_MIN_INTERVAL,
            "handle_sigterm": False,
            "flush_at_exit": False,
        }
        kwargs.update(reporter_kwargs)
        reporter = StatisticsReporter(context=JobContext.from_env(env), **kwargs)
        try:
            yield Job(emu, env, reporter)
        finally:
            reporter.close(10)


def as_sent(value: Any) -> Any:
    """A float as the emulator holds it (non-finite values are strings on the wire)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


def close(a: Any, b: Any, rel: float = 1e-6) -> bool:
    """Equal values, numbers within ``rel`` (float32 metrics through two conversions)."""
    if isinstance(a, str) or isinstance(b, str):
        return bool(a == b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=rel, abs_tol=1e-9)
    return bool(a == b)


def assert_stage_matches(got: dict[str, Any], expected: dict[str, Any], where: str) -> None:
    """``got`` holds exactly ``expected``'s metrics (plus an ``accuracy`` alias)."""
    extra = set(got) - set(expected) - {"accuracy"}
    assert not extra, f"{where}: unexpected metrics {sorted(extra)} in {got}"
    for key, value in expected.items():
        assert key in got, f"{where}: {key} missing from {got}"
        assert close(got[key], as_sent(value)), f"{where}.{key}: {got[key]!r} != {value!r}"


def lightning_csv_history(metrics_csv: Path) -> dict[int, dict[str, dict[str, float]]]:
    """Lightning's own per-epoch, epoch-level metrics (CSVLogger's metrics.csv) as stages.

    Keys of the 1-based epoch; ``train_loss_epoch`` -> ``train.loss``, ``val_acc`` ->
    ``validation.acc``, unprefixed names in ``train``; step-level columns are left out.
    """
    out: dict[int, dict[str, dict[str, float]]] = {}
    with metrics_csv.open() as handle:
        for row in csv.DictReader(handle):
            epoch = int(row["epoch"])
            for key, value in row.items():
                if key in ("epoch", "step") or not value or key.endswith("_step"):
                    continue
                name = key.removesuffix("_epoch")
                if name.startswith("val_"):
                    stage, metric = "validation", name[len("val_") :]
                else:
                    stage, metric = "train", name.removeprefix("train_")
                out.setdefault(epoch + 1, {}).setdefault(stage, {})[metric] = float(value)
    return out
