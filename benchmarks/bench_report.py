"""Cost of one ``report()`` call with a live sender, against ``wandb.log`` offline.

What is measured, in one run on one machine:

1. ``StatisticsReporter.report(...)`` with the sender thread posting to a local HTTP
   server (127.0.0.1) every ``--interval`` seconds, so posts, JSON encoding and
   retries really happen in the background while the loop reports. Per-call times
   with ``time.perf_counter_ns``: p50, p99, p99.9, max; also the module-level
   ``abeja_runtime.report(...)``.
2. ``wandb.log(...)`` in offline mode (``WANDB_MODE=offline``, a temporary dir), the
   same values, same harness: the baseline the targets are stated against.
3. System metrics on vs off (issue 17): the same ``report()`` loop through two
   reporters, one whose :class:`~abeja_runtime.statistics.sysmetrics.SystemMetrics` timer samples
   every 0.1 s (100 times the default rate) and one without, alternating rounds; the
   ratio of their p50 and of the loop's time must stay ~1.0 (the timer thread does
   the sampling, never the training thread). ``bench_sysmetrics.py`` measures it on a
   loop with real work per step.
4. Memory: ``--memory-reports`` reports (1,000,000 by default) with the server down
   (connection refused, the sender retrying), resident memory printed before and
   after; it must stay flat because step-level snapshots replace each other.

Targets (issues 4 and 13): p50 <= 1.5 us and at least 50x below wandb's p50; p99 <=
50 us; RSS growth over the memory run under 10 MiB. Exit status 0 when all targets that
could be measured hold (wandb missing: its comparison is skipped with a note).

Usage::

    python benchmarks/bench_report.py                      # full run
    python benchmarks/bench_report.py --calls 20000 --memory-reports 100000  # quick
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psutil

from abeja_runtime.job import JobContext
from abeja_runtime.statistics import reporter as reporter_module
from abeja_runtime.statistics.reporter import StatisticsReporter

ORG = "1234567890123"
JOB = "2345678901234"


class _Handler(BaseHTTPRequestHandler):
    posts = 0

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        json.loads(body)
        type(self).posts += 1
        data = b'{"statistics": {}}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def start_server() -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def context_for(url: str) -> JobContext:
    return JobContext.from_env(
        {
            "ABEJA_ORGANIZATION_ID": ORG,
            "TRAINING_JOB_DEFINITION_NAME": "bench",
            "TRAINING_JOB_DEFINITION_VERSION": "1",
            "TRAINING_JOB_ID": JOB,
            "PLATFORM_AUTH_TOKEN": "bench-token",
            "ABEJA_API_URL": url,
        }
    )


def percentiles(samples: list[int]) -> dict[str, float]:
    ordered = sorted(samples)
    n = len(ordered)

    def at(q: float) -> float:
        return ordered[min(n - 1, int(q * n))] / 1000.0

    return {"p50": at(0.50), "p99": at(0.99), "p99.9": at(0.999), "max": ordered[-1] / 1000.0}


#: every PAUSE_EVERY calls the loop sleeps PAUSE seconds, outside the timed region: the
#: GIL-free part of a real training step (kernel launches, data loading), without which
#: a background thread (ours, or wandb's) would only run on forced GIL switches
PAUSE_EVERY = 1000
PAUSE = 0.001


def time_calls(call: Callable[[int], None], calls: int, warmup: int) -> dict[str, float]:
    for i in range(warmup):
        call(i)
    samples = [0] * calls
    clock = time.perf_counter_ns
    sleep = time.sleep
    for i in range(calls):
        if i % PAUSE_EVERY == 0:
            sleep(PAUSE)
        before = clock()
        call(i)
        samples[i] = clock() - before
    return percentiles(samples)


def show(name: str, stats: dict[str, float]) -> None:
    print(
        f"  {name:<34} p50 {stats['p50']:9.2f} us   p99 {stats['p99']:9.2f} us   "
        f"p99.9 {stats['p99.9']:9.2f} us   max {stats['max']:10.1f} us"
    )


def bench_reporter(calls: int, interval: float) -> tuple[dict[str, float], dict[str, float], int]:
    server = start_server()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    reporter = StatisticsReporter(
        context=context_for(url),
        min_interval=interval,
        handle_sigterm=False,
        flush_at_exit=False,
        rank=0,
    )
    steps_per_epoch = 1000

    def one(i: int) -> None:
        reporter.report(
            epoch=i // steps_per_epoch,
            progress=0.5,
            train={"loss": 1.0 / (i + 1), "accuracy": 0.5},
        )

    method = time_calls(one, calls, warmup=min(10_000, calls))
    previous = reporter_module.set_reporter(reporter)
    report = reporter_module.report

    def module_level(i: int) -> None:
        report(epoch=i // steps_per_epoch, progress=0.5, train={"loss": 1.0 / (i + 1)})

    module = time_calls(module_level, calls, warmup=1000)
    reporter_module.set_reporter(previous)
    reporter.flush(10)
    posts = reporter.counters["sent"]
    reporter.close(5)
    server.shutdown()
    server.server_close()
    return method, module, posts


def bench_system_metrics(
    calls: int, interval: float, rounds: int = 4
) -> tuple[dict[str, float], dict[str, float], float, float]:
    """report() with a live 0.1 s system-metrics timer vs without, alternating rounds.

    Returns (on, off) percentiles over all rounds and the loop time per call, on and off.
    """
    from abeja_runtime.statistics.sysmetrics import SystemMetrics

    server = start_server()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    reporters = {
        name: StatisticsReporter(
            context=context_for(url),
            min_interval=interval,
            handle_sigterm=False,
            flush_at_exit=False,
            rank=0,
            system_metrics=SystemMetrics(interval=0.1) if name == "on" else False,
        )
        for name in ("on", "off")
    }
    samples: dict[str, list[int]] = {"on": [], "off": []}
    loop_ns = {"on": 0, "off": 0}
    per_round = max(1, calls // rounds)
    clock = time.perf_counter_ns
    for index in range(rounds):
        order = ("on", "off") if index % 2 == 0 else ("off", "on")
        for name in order:
            report = reporters[name].report
            report(epoch=0, train={"loss": 1.0})  # starts the sender (and the timer)
            out = samples[name]
            began = clock()
            for i in range(per_round):
                t0 = clock()
                report(epoch=i // 1000, progress=0.5, train={"loss": 1.0 / (i + 1)})
                out.append(clock() - t0)
                if i % PAUSE_EVERY == 0:
                    time.sleep(PAUSE)
            loop_ns[name] += clock() - began
    for reporter in reporters.values():
        reporter.close(5)
    server.shutdown()
    server.server_close()
    per_call = {name: loop_ns[name] / (per_round * rounds) / 1000 for name in loop_ns}
    return (
        percentiles(samples["on"]),
        percentiles(samples["off"]),
        per_call["on"],
        per_call["off"],
    )


def bench_wandb(calls: int) -> dict[str, float] | None:
    try:
        import wandb
    except ImportError:
        print("  wandb not installed (pip install wandb): comparison skipped")
        return None
    workdir = tempfile.mkdtemp(prefix="bench-wandb-")
    os.environ.update(
        {
            "WANDB_MODE": "offline",
            "WANDB_SILENT": "true",
            "WANDB_DIR": workdir,
            "WANDB_CONSOLE": "off",
        }
    )
    run = wandb.init(project="bench-report", dir=workdir, settings=wandb.Settings(silent=True))
    steps_per_epoch = 1000

    def one(i: int) -> None:
        run.log(
            {
                "epoch": i // steps_per_epoch,
                "progress": 0.5,
                "train/loss": 1.0 / (i + 1),
                "train/accuracy": 0.5,
            }
        )

    stats = time_calls(one, calls, warmup=min(1000, calls))
    run.finish()
    return stats


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def bench_memory(reports: int) -> tuple[float, float, float, dict[str, int]]:
    # nothing listens on this port: every post is refused and retried
    url = f"http://127.0.0.1:{free_port()}"
    logging.getLogger("abeja_runtime.reporter").setLevel(logging.ERROR)
    reporter = StatisticsReporter(
        context=context_for(url),
        min_interval=0.0,
        handle_sigterm=False,
        flush_at_exit=False,
        rank=0,
    )
    process = psutil.Process()
    warm = min(100_000, reports // 10)
    for i in range(warm):
        reporter.report(step=i, train={"loss": 1.0 / (i + 1)})
    gc.collect()
    start_rss = process.memory_info().rss / 2**20
    started = time.perf_counter()
    for i in range(warm, reports):
        reporter.report(step=i, epoch=i // 10_000, train={"loss": 1.0 / (i + 1), "acc": 0.5})
    elapsed = time.perf_counter() - started
    gc.collect()
    end_rss = process.memory_info().rss / 2**20
    counters = reporter.counters
    reporter.close(0.1)
    return start_rss, end_rss, elapsed, counters


def main(argv: list[str] | None = None) -> int:
    global PAUSE_EVERY, PAUSE
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200_000, help="timed report() calls")
    parser.add_argument("--wandb-calls", type=int, default=20_000, help="timed wandb.log calls")
    parser.add_argument(
        "--interval", type=float, default=0.01, help="reporter min_interval (s) during timing"
    )
    parser.add_argument("--memory-reports", type=int, default=1_000_000)
    parser.add_argument(
        "--pause-every", type=int, default=PAUSE_EVERY, help="calls between GIL-free pauses"
    )
    parser.add_argument("--pause", type=float, default=PAUSE, help="pause length (s)")
    args = parser.parse_args(argv)
    PAUSE_EVERY, PAUSE = max(1, args.pause_every), args.pause

    print(f"python {sys.version.split()[0]}, {psutil.cpu_count()} CPUs")
    print(
        f"report() with a live sender posting every {args.interval} s to 127.0.0.1 "
        f"(a {PAUSE * 1000:g} ms GIL-free pause every {PAUSE_EVERY} calls, untimed):"
    )
    method, module, posts = bench_reporter(args.calls, args.interval)
    show("StatisticsReporter.report()", method)
    show("abeja_runtime.report()", module)
    print(f"  (the sender made {posts} posts meanwhile)")

    print("wandb.log() offline, same values:")
    wandb_stats = bench_wandb(args.wandb_calls)
    ok = method["p50"] <= 1.5 and method["p99"] <= 50.0
    if wandb_stats is not None:
        show("wandb.log()", wandb_stats)
        ratio = wandb_stats["p50"] / method["p50"]
        ratio99 = wandb_stats["p99"] / method["p99"]
        print(f"  ratio wandb/report: p50 {ratio:.0f}x, p99 {ratio99:.0f}x")
        ok = ok and ratio >= 50

    print("system metrics on (timer every 0.1 s) vs off, same loop, alternating rounds:")
    on, off, loop_on, loop_off = bench_system_metrics(args.calls, args.interval)
    show("report(), metrics on", on)
    show("report(), metrics off", off)
    print(
        f"  ratio on/off: p50 {on['p50'] / off['p50']:.2f}x, p99 {on['p99'] / off['p99']:.2f}x, "
        f"loop time per call (incl. pauses) {loop_on / loop_off:.2f}x"
    )

    print(f"memory, {args.memory_reports:,} reports with the server down (connection refused):")
    start_rss, end_rss, elapsed, counters = bench_memory(args.memory_reports)
    growth = end_rss - start_rss
    print(
        f"  RSS start {start_rss:.1f} MiB, end {end_rss:.1f} MiB, growth {growth:+.1f} MiB "
        f"({elapsed:.1f} s, {elapsed / args.memory_reports * 1e6:.2f} us/report)"
    )
    print(f"  counters: {counters}")
    ok = ok and growth < 10.0

    print(
        "targets: p50 <= 1.5 us, p99 <= 50 us, >= 50x below wandb p50, RSS flat (< 10 MiB): "
        + ("MET" if ok else "NOT MET")
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
