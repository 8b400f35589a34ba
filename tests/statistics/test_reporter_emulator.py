"""End to end: a training loop reports through the default reporter into the emulator."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest

pytest.importorskip("werkzeug")

from abeja_runtime.emulator import Emulator
from abeja_runtime.job import JobContext
from abeja_runtime.statistics import reporter as reporter_module
from abeja_runtime.statistics.reporter import StatisticsReporter

from tests.support.emulator_support import job_statistics


def test_training_loop_statistics_reach_the_emulator(
    fresh_emu: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = fresh_emu.create_job("reporter-e2e")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("ABEJA_RUNTIME_REPORT_INTERVAL", "0.05")
    reporter = StatisticsReporter(handle_sigterm=False, flush_at_exit=False, rank=0)
    previous = reporter_module.set_reporter(reporter)
    try:
        num_epochs, steps = 4, 200
        for epoch in range(num_epochs):
            for step in range(steps):
                reporter_module.report(
                    epoch=epoch,
                    num_epochs=num_epochs,
                    progress=(epoch * steps + step + 1) / (num_epochs * steps),
                    train={"loss": 1.0 / (step + 1)},
                )
            reporter_module.report(
                train={"loss": 0.5 / (epoch + 1), "accuracy": 0.5 + epoch / 10},
                validation={"loss": 0.6 / (epoch + 1), "accuracy": 0.0 if epoch == 0 else 0.4},
                epoch_end=True,
            )
        assert reporter_module.flush(30)
    finally:
        reporter_module.set_reporter(previous)
        reporter.close(5)
    docs = job_statistics(fresh_emu, env)
    epoch_ends = [doc for doc in docs if "validation" in doc.get("stages", {})]
    assert [doc["epoch"] for doc in epoch_ends] == list(range(num_epochs))
    assert epoch_ends[0]["stages"]["validation"]["accuracy"] == 0.0  # zero kept
    final = fresh_emu.job(env["TRAINING_JOB_DEFINITION_NAME"], env["TRAINING_JOB_ID"])
    assert final["statistics"] == reporter.last_document == epoch_ends[-1]
    assert final["statistics"]["progress_percentage"] == 1.0
    assert reporter.counters["failed"] == 0


def test_handler_process_reports_into_its_job(fresh_emu: Emulator, tmp_path: Any) -> None:
    env = fresh_emu.create_job("reporter-subprocess")
    code = """
        import abeja_runtime
        from abeja_runtime import JobContext
        ctx = JobContext.from_env()
        for epoch in range(3):
            abeja_runtime.report(epoch=epoch, num_epochs=3, train={"loss": 1 / (epoch + 1)},
                                 epoch_end=True)
        print(ctx.training_job_id)
    """
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("ABEJA_")}
    child_env.update(env)
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=child_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == env["TRAINING_JOB_ID"]
    documents = job_statistics(fresh_emu, env)
    # system metrics are on by default inside a job, sampled in the handler process
    assert all(document.pop("system")["memory_rss_bytes"] > 0 for document in documents)
    assert documents == [
        {"epoch": e, "num_epochs": 3, "stages": {"train": {"loss": 1 / (e + 1)}}} for e in range(3)
    ]
    assert JobContext.from_env(env).training_job_id == env["TRAINING_JOB_ID"]
