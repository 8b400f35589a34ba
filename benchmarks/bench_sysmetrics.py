"""Training-loop cost of ``report()`` with a live system-metrics timer vs without, same run.

What is measured, in one process, rounds alternating which variant goes first:

* a training loop of ``--steps`` steps, each a slice of GIL-holding Python work (the
  part of a real step the interpreter runs) and one step-level ``report()``, with a
  GIL-free pause every 100 steps (kernel launches, data loading), the reporter posting to
  a local HTTP server every ``--post-interval`` seconds;
* "on": the reporter has a :class:`~abeja_runtime.statistics.sysmetrics.SystemMetrics` whose timer
  samples every ``--interval`` seconds (default 0.1 s: 100 times the default rate, so that
  its cost, if any, shows in a short run), and every post carries the ``system`` key;
* "off": the same reporter without system metrics.

Printed: per-call ``report()`` p50/p99 and the loop's time per step, on vs off, and their
ratio (target: unchanged, ~1.0x within the noise of the machine), plus what one sample
costs on the timer thread (the work moved off the training thread).

Usage::

    python benchmarks/bench_sysmetrics.py                 # full run
    python benchmarks/bench_sysmetrics.py --steps 20000 --rounds 2   # quick
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from abeja_runtime.job import JobContext
from abeja_runtime.statistics.reporter import StatisticsReporter
from abeja_runtime.statistics.sysmetrics import SystemMetrics, _Probe


class _Handler(BaseHTTPRequestHandler):
    posts = 0
    with_system = 0

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        type(self).posts += 1
        if "system" in body.get("statistics", {}):
            type(self).with_system += 1
        data = b'{"statistics": {}}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _context(url: str) -> JobContext:
    return JobContext.from_env(
        {
            "ABEJA_ORGANIZATION_ID": "1234567890123",
            "TRAINING_JOB_DEFINITION_NAME": "bench",
            "TRAINING_JOB_DEFINITION_VERSION": "1",
            "TRAINING_JOB_ID": "2345678901234",
            "PLATFORM_AUTH_TOKEN": "bench-token",
            "ABEJA_API_URL": url,
        }
    )


def _work(units: int) -> float:
    """GIL-holding Python work, about what the interpreter does in a small step."""
    total = 0.0
    for k in range(units):
        total += k * 0.5
    return total


def _loop(reporter: StatisticsReporter, steps: int, work: int) -> tuple[list[int], float]:
    """Per-report() times (ns) and the loop's wall time per step (us)."""
    samples = [0] * steps
    clock = time.perf_counter_ns
    began = clock()
    for i in range(steps):
        if i % 100 == 0:
            time.sleep(0.001)  # the GIL-free part of a step
        _work(work)
        before = clock()
        reporter.report(epoch=i // 1000, progress=0.5, train={"loss": 1.0 / (i + 1)})
        samples[i] = clock() - before
    return samples, (clock() - began) / steps / 1000


def _pct(samples: list[int], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000


def _sample_cost(count: int) -> tuple[float, float]:
    """Median and p99 of one timer sample (ms), measured directly."""
    probe = _Probe(__import__("os").getpid())
    probe.sample()
    times = []
    for _ in range(count):
        before = time.perf_counter()
        probe.sample()
        times.append((time.perf_counter() - before) * 1000)
    probe.close()
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(0.99 * len(times)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=400_000, help="steps per variant, in all")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--interval", type=float, default=0.1, help="timer interval, seconds")
    parser.add_argument("--post-interval", type=float, default=0.5, help="reporter min_interval")
    parser.add_argument("--work", type=int, default=300, help="Python work units per step")
    args = parser.parse_args()

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"

    results: dict[str, dict[str, list[Any]]] = {
        "on": {"calls": [], "step_us": []},
        "off": {"calls": [], "step_us": []},
    }
    for round_ in range(args.rounds):
        for name in ["on", "off"] if round_ % 2 == 0 else ["off", "on"]:
            metrics = SystemMetrics(interval=args.interval) if name == "on" else None
            reporter = StatisticsReporter(
                context=_context(url),
                min_interval=args.post_interval,
                handle_sigterm=False,
                flush_at_exit=False,
                rank=0,
                system_metrics=metrics if metrics is not None else False,
            )
            _loop(reporter, 2000, args.work)  # warm-up: sender (and timer) running
            if metrics is not None:
                metrics.start()
            calls, step_us = _loop(reporter, args.steps // args.rounds, args.work)
            results[name]["calls"] += calls
            results[name]["step_us"].append(step_us)
            reporter.flush(10)
            reporter.close(10)
    server.shutdown()
    server.server_close()

    on, off = results["on"], results["off"]
    print(
        f"report() in a training loop, {len(on['calls'])} steps per variant, {args.rounds} rounds"
    )
    print(f"  timer interval {args.interval} s (default 10 s), posts every {args.post_interval} s")
    for name, r in (("metrics on ", on), ("metrics off", off)):
        print(
            f"  {name}: report() p50 {_pct(r['calls'], 0.5):6.2f} us   p99 "
            f"{_pct(r['calls'], 0.99):7.2f} us   loop {statistics.median(r['step_us']):7.2f} us/step"
            f"   (rounds: {', '.join(f'{s:.2f}' for s in r['step_us'])})"
        )
    p50 = _pct(on["calls"], 0.5) / _pct(off["calls"], 0.5)
    p99 = _pct(on["calls"], 0.99) / _pct(off["calls"], 0.99)
    loop = statistics.median(on["step_us"]) / statistics.median(off["step_us"])
    print(f"  ratio on/off: report() p50 {p50:.2f}x   p99 {p99:.2f}x   loop time {loop:.3f}x")
    print(f"  posts: {_Handler.posts}, {_Handler.with_system} of them with the system key")
    median, p99_ms = _sample_cost(200)
    print(
        f"  one timer sample (off the training thread): median {median:.2f} ms, p99 {p99_ms:.2f} ms"
    )


if __name__ == "__main__":
    main()
