"""Load benchmark of the emulator: many jobs posting statistics at a fixed rate.

Each simulated job posts a statistics document ``--rate`` times a second for
``--duration`` seconds, on its own schedule (a random phase, no
synchronisation between jobs), the way a reporter in a training loop does.
The emulator runs in this process (file-backed WAL state by default, as the
CLI runs it); the jobs run as threads in ``--client-processes`` separate
processes so that the clients' CPU work does not share the server's GIL.

Printed: latency p50/p90/p99/max, failures (must be 0), the achieved rate
against the target, how far behind schedule the jobs fell, the server's CPU
use, and a check that every post is in the job's history in order. A short
baseline first drives ``GET /_emulator/health`` (no auth, no store) with the
same harness, so the statistics latency is also given as a ratio to the bare
HTTP cost measured in the same run.

Usage::

    python benchmarks/bench_emulator.py                 # 64 jobs x 10/s x 30 s
    python benchmarks/bench_emulator.py --jobs 8 --duration 2 --in-memory

Exit status 0 only if no request failed and nothing is missing from history.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psutil
import requests

from abeja_runtime.emulator import Emulator


@dataclass
class JobResult:
    name: str
    job_id: str
    sent: int = 0
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    max_lag: float = 0.0
    elapsed: float = 0.0


def _document(i: int, n: int) -> dict[str, Any]:
    return {
        "statistics": {
            "num_epochs": n,
            "epoch": i,
            "progress_percentage": (i + 1) / n,
            "stages": {
                "train": {"loss": 1.0 / (i + 1), "accuracy": i / n},
                "validation": {"loss": 1.2 / (i + 1), "accuracy": i / n * 0.9},
            },
            "learning_rate": 0.001,
        }
    }


def _run_job(
    url: str,
    token: str | None,
    job: JobResult,
    posts: int,
    rate: float,
    go_at: float,
    health: bool,
) -> None:
    session = requests.Session()
    if token:
        session.headers["Authorization"] = f"Bearer {token}"
    phase = random.random() / rate
    delay = go_at - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    start = time.monotonic()
    for i in range(posts):
        due = start + phase + i / rate
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        else:
            job.max_lag = max(job.max_lag, -wait)
        began = time.perf_counter()
        job.sent += 1
        try:
            if health:
                response = session.get(url, timeout=30)
            else:
                response = session.post(url, json=_document(i, posts), timeout=30)
            if response.status_code == 200:
                job.ok += 1
            else:
                job.failures.append(f"{response.status_code}: {response.text[:200]}")
        except requests.RequestException as exc:
            job.failures.append(f"{type(exc).__name__}: {exc}")
        job.latencies.append(time.perf_counter() - began)
    job.elapsed = time.monotonic() - start
    session.close()


def _client_process(
    base: str,
    token: str,
    jobs: list[tuple[str, str]],
    posts: int,
    rate: float,
    health: bool,
    ready: Any,
    go: Any,
    results: Any,
) -> None:
    ready.put(os.getpid())
    go.wait()
    go_at = time.monotonic() + 0.2
    outcome = [JobResult(name, job_id) for name, job_id in jobs]
    threads = []
    for job in outcome:
        if health:
            url, auth = base.split("/organizations/")[0] + "/_emulator/health", None
        else:
            url, auth = f"{base}/definitions/{job.name}/jobs/{job.job_id}/statistics", token
        thread = threading.Thread(
            target=_run_job, args=(url, auth, job, posts, rate, go_at, health), daemon=True
        )
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join()
    results.put(outcome)


def _drive(
    emu: Emulator,
    jobs: list[tuple[str, str]],
    rate: float,
    duration: float,
    processes: int,
    health: bool,
) -> tuple[list[JobResult], float, float]:
    """Run the load; returns per-job results, wall seconds and server CPU seconds."""
    ctx = mp.get_context("spawn")
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    base = f"{emu.url}/organizations/{emu.organization_id}/training"
    posts = max(1, round(rate * duration))
    shares = [jobs[i::processes] for i in range(processes)]
    workers = [
        ctx.Process(
            target=_client_process,
            args=(base, emu.token, share, posts, rate, health, ready, go, results),
        )
        for share in shares
        if share
    ]
    for worker in workers:
        worker.start()
    for _ in workers:
        ready.get(timeout=120)
    me = psutil.Process()
    cpu_before = sum(me.cpu_times()[:2])
    began = time.monotonic()
    go.set()
    outcome: list[JobResult] = []
    for _ in workers:
        outcome.extend(results.get(timeout=duration * 10 + 120))
    wall = time.monotonic() - began
    cpu = sum(me.cpu_times()[:2]) - cpu_before
    for worker in workers:
        worker.join(timeout=60)
    return outcome, wall, cpu


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def _latency_line(latencies: list[float]) -> str:
    ms = [x * 1000 for x in latencies]
    return (
        f"p50 {_percentile(ms, 50):.1f} ms, p90 {_percentile(ms, 90):.1f} ms, "
        f"p99 {_percentile(ms, 99):.1f} ms, max {max(ms):.1f} ms"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=64, help="concurrent jobs (default 64)")
    parser.add_argument("--rate", type=float, default=10.0, help="posts/s per job (default 10)")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds (default 30)")
    parser.add_argument(
        "--baseline-duration",
        type=float,
        default=5.0,
        help="seconds of the health-check baseline (0: skip; default 5)",
    )
    parser.add_argument(
        "--client-processes", type=int, default=2, help="processes the jobs run in (default 2)"
    )
    parser.add_argument(
        "--in-memory", action="store_true", help="in-memory state instead of a WAL file"
    )
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-emulator-") as tmp:
        data_dir = None if args.in_memory else tmp
        with Emulator(data_dir=data_dir) as emu:
            jobs = []
            for i in range(args.jobs):
                env = emu.create_job(f"bench-{i:03d}")
                jobs.append((env["TRAINING_JOB_DEFINITION_NAME"], env["TRAINING_JOB_ID"]))
            mode = "in-memory SQLite" if args.in_memory else "file SQLite (WAL, synchronous=NORMAL)"
            target = args.jobs * args.rate
            print(
                f"emulator benchmark: {args.jobs} jobs x {args.rate:g} posts/s x "
                f"{args.duration:g} s = {target:g} posts/s target; {mode}; "
                f"{args.client_processes} client processes; {os.cpu_count()} CPUs"
            )

            baseline: list[float] = []
            if args.baseline_duration > 0:
                base_results, _, _ = _drive(
                    emu, jobs, args.rate, args.baseline_duration, args.client_processes, True
                )
                baseline = [x for r in base_results for x in r.latencies]
                base_failed = sum(len(r.failures) for r in base_results)
                print(
                    f"baseline GET /_emulator/health: {len(baseline)} requests, "
                    f"{base_failed} failed; {_latency_line(baseline)}"
                )

            results, wall, cpu = _drive(
                emu, jobs, args.rate, args.duration, args.client_processes, False
            )
            latencies = [x for r in results for x in r.latencies]
            sent = sum(r.sent for r in results)
            ok = sum(r.ok for r in results)
            failures = [f for r in results for f in r.failures]
            print(f"statistics posts: {sent} sent, {ok} ok, {len(failures)} failed")
            for failure in failures[:5]:
                print(f"  failure: {failure}")
            print(f"latency: {_latency_line(latencies)}")
            if baseline:
                print(
                    "latency ratio to baseline: p50 x"
                    f"{_percentile(latencies, 50) / _percentile(baseline, 50):.2f}, p99 x"
                    f"{_percentile(latencies, 99) / _percentile(baseline, 99):.2f}"
                )
            achieved = sent / max(r.elapsed for r in results)
            lags = [r.max_lag for r in results]
            print(
                f"keeping up: {achieved:.1f} posts/s achieved of {target:g} "
                f"(ratio {achieved / target:.3f}); worst job fell {max(lags) * 1000:.0f} ms "
                f"behind schedule (median job {statistics.median(lags) * 1000:.0f} ms)"
            )
            print(
                f"server process CPU: {cpu:.1f} s over {wall:.1f} s = {cpu / wall:.2f} cores "
                f"(of {os.cpu_count()}, shared with the clients)"
            )

            missing = 0
            disordered = 0
            recorded = 0
            for r in results:
                history = emu.statistics_history(r.name, r.job_id)
                recorded += len(history)
                epochs = [h["statistics"]["epoch"] for h in history]
                if len(history) != r.ok:
                    missing += abs(r.ok - len(history))
                if epochs != sorted(epochs) or len(set(epochs)) != len(epochs):
                    disordered += 1
            print(
                f"history: {recorded} documents recorded for {ok} accepted posts; "
                f"{missing} missing, {disordered} jobs out of order"
            )
            passed = not failures and missing == 0 and disordered == 0 and sent == ok
            print("RESULT: " + ("PASS" if passed else "FAIL"))
            return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
