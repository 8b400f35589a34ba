"""A 30 s API outage in the middle of a training run (issue 5).

A training loop reports every step and every epoch through the default-on spool to
the emulator, behind the fault proxy: first slow (latency), then 30 s of outage (10 s
connection refused, 10 s 503 with Retry-After, 10 s connection dropped after the
server took the post), then healthy again. Afterwards every epoch-end snapshot is on
the server, in order, and ``report()`` stayed under 50 us at p99 during the outage.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

pytest.importorskip("werkzeug")

from abeja_runtime.emulator import Emulator
from abeja_runtime.job import JobContext
from abeja_runtime.statistics.reporter import StatisticsReporter

from tests.support.fault_proxy import FaultProxy

OUTAGE = 30.0


def _percentile(values: list[int], q: float) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_30s_outage_loses_no_epoch_end_and_report_stays_fast(
    fresh_emu: Emulator, tmp_path: Path
) -> None:
    env = fresh_emu.create_job("spool-outage")
    proxy = FaultProxy(fresh_emu.port)
    proxy.latency = 0.05
    context = JobContext.from_env({**env, "ABEJA_API_URL": proxy.url})
    reporter = StatisticsReporter(
        context=context,
        min_interval=0.05,
        request_timeout=2.0,
        handle_sigterm=False,
        flush_at_exit=False,
        rank=0,
        spool_dir=tmp_path / "spool",
    )
    steps_per_epoch = 2000
    timings: list[int] = []
    clock = time.perf_counter_ns
    epoch = 0
    phases = [(3.0, None), (OUTAGE / 3, "refuse"), (OUTAGE / 3, "status"), (OUTAGE / 3, "drop")]
    try:
        for duration, fault in phases:
            if fault == "refuse":
                proxy.latency = 0.0  # latency was the first phase's fault
                proxy.refuse()
            elif fault == "status":
                proxy.restore()
                proxy.status, proxy.retry_after, proxy.mode = 503, 2.0, "status"
            elif fault is not None:
                proxy.mode = fault
            measured = fault is not None
            end = time.monotonic() + duration
            while time.monotonic() < end:
                for step in range(steps_per_epoch):
                    loss = 1.0 / (step + 1)
                    start = clock()
                    reporter.report(
                        epoch=epoch, progress=0.5, train={"loss": loss, "step": float(step)}
                    )
                    took = clock() - start
                    if measured:
                        timings.append(took)
                    if step % 4 == 0:
                        time.sleep(0.0002)  # a light loop: leave the 2 cores to the test
                start = clock()
                reporter.report(epoch=epoch, validation={"loss": float(epoch)}, epoch_end=True)
                took = clock() - start
                if measured:
                    timings.append(took)
                epoch += 1
        during = reporter.counters
        proxy.restore()
        assert reporter.flush(120), reporter.counters
    finally:
        reporter.close(5)
        proxy.close()
    p99 = _percentile(timings, 0.99)
    p50 = _percentile(timings, 0.50)
    print(
        f"report() during the {OUTAGE:g} s outage: {len(timings)} calls, p50 {p50 / 1000:.1f} us, "
        f"p99 {p99 / 1000:.1f} us; {epoch} epoch ends; counters then {during}"
    )
    assert p99 < 50_000, (p50, p99)
    docs = [
        entry["statistics"]
        for entry in fresh_emu.statistics_history(
            env["TRAINING_JOB_DEFINITION_NAME"], env["TRAINING_JOB_ID"]
        )
    ]
    ends = [
        d["epoch"]
        for d in docs
        if "validation" in d.get("stages", {}) and d["epoch"] == d["stages"]["validation"]["loss"]
    ]
    # every epoch end arrived, in order (a dropped connection may repeat one: harmless)
    assert sorted(set(ends)) == list(range(epoch)), (epoch, ends)
    assert ends == sorted(ends)
    job = fresh_emu.job(env["TRAINING_JOB_DEFINITION_NAME"], env["TRAINING_JOB_ID"])
    assert job["statistics"]["epoch"] == epoch - 1
    assert (tmp_path / "spool" / "records.log").stat().st_size == 0
