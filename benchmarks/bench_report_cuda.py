"""Cost of reporting a CUDA loss every step, against ``loss.item()`` every step.

An MLP (width 4096, depth 8, batch 512 by default) trains on random data on one GPU
in three modes, interleaved in rounds so that clock and thermal drift hit all three
alike:

* ``none``: no reporting at all (the baseline);
* ``item``: ``loss.item()`` every step, which makes the CPU wait for the GPU each step
  (what most hand-written loops do to log a loss);
* ``report``: ``reporter.report(train={"loss": loss})`` every step with a live sender
  posting to a local HTTP server; the tensor is read on the sender thread, so the
  training thread never synchronises the device.

Printed: steps/s per mode (median over rounds) and the slowdown against ``none``.
Target (issue 4): ``report`` costs under 1 % of the throughput; ``item`` is expected to
cost far more (about 30 % on an H100).

Exits 0 with a message when torch or CUDA is not available, so it can run anywhere.

Usage::

    python benchmarks/bench_report_cuda.py
    python benchmarks/bench_report_cuda.py --steps 100 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from abeja_runtime.job import JobContext
from abeja_runtime.statistics.reporter import StatisticsReporter


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        data = b'{"statistics": {}}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=int, default=4096)
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--steps", type=int, default=200, help="timed steps per mode and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--interval", type=float, default=1.0, help="reporter min_interval (s)")
    parser.add_argument(
        "--device",
        default="cuda",
        help="'cuda' (the measurement) or 'cpu' (only checks that the script runs: on a CPU "
        ".item() does not wait for anything, so the numbers mean nothing)",
    )
    args = parser.parse_args(argv)

    try:
        import torch
        from torch import nn
    except ImportError:
        print("torch is not installed: nothing to measure (pip install torch)")
        return 0
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        print("CUDA is not available on this machine: the GPU benchmark needs a GPU; skipped")
        return 0
    device = torch.device(args.device)

    def synchronize() -> None:
        if cuda:
            torch.cuda.synchronize()

    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for _ in range(args.depth):
        layers += [nn.Linear(args.width, args.width), nn.ReLU()]
    model = nn.Sequential(*layers).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
    inputs = torch.randn(args.batch, args.width, device=device)
    targets = torch.randn(args.batch, args.width, device=device)
    loss_fn = nn.MSELoss()

    def train_step() -> Any:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        optimizer.step()
        return loss

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    context = JobContext.from_env(
        {
            "ABEJA_ORGANIZATION_ID": "1234567890123",
            "TRAINING_JOB_DEFINITION_NAME": "bench-cuda",
            "TRAINING_JOB_DEFINITION_VERSION": "1",
            "TRAINING_JOB_ID": "2345678901234",
            "PLATFORM_AUTH_TOKEN": "bench-token",
            "ABEJA_API_URL": f"http://127.0.0.1:{server.server_address[1]}",
        }
    )
    reporter = StatisticsReporter(
        context=context,
        min_interval=args.interval,
        handle_sigterm=False,
        flush_at_exit=False,
        rank=0,
    )

    def mode_none() -> None:
        train_step()

    def mode_item() -> None:
        train_step().item()

    def mode_report() -> None:
        reporter.report(train={"loss": train_step()})

    modes: dict[str, Callable[[], None]] = {
        "none": mode_none,
        "item": mode_item,
        "report": mode_report,
    }
    for run in modes.values():
        for _ in range(args.warmup):
            run()
    synchronize()

    rates: dict[str, list[float]] = {name: [] for name in modes}
    for _ in range(args.rounds):
        for name, run in modes.items():
            synchronize()
            started = time.perf_counter()
            for _ in range(args.steps):
                run()
            synchronize()
            rates[name].append(args.steps / (time.perf_counter() - started))

    delivered = reporter.flush(30)
    device_name = torch.cuda.get_device_name(0) if cuda else "CPU (script check only)"
    print(
        f"{device_name}, torch {torch.__version__}: MLP width {args.width}, "
        f"depth {args.depth}, batch {args.batch}; {args.rounds} rounds x {args.steps} steps"
    )
    base = statistics.median(rates["none"])
    for name, values in rates.items():
        rate = statistics.median(values)
        slowdown = (1 - rate / base) * 100
        print(f"  {name:<7} {rate:9.2f} steps/s   slowdown vs none {slowdown:+6.2f} %")
    print(f"  reporter: {reporter.counters}, last flush delivered: {delivered}")
    print(f"  last reported loss: {reporter.last_document['stages']['train']['loss']}")
    report_cost = (1 - statistics.median(rates["report"]) / base) * 100
    verdict = "MET" if report_cost < 1.0 else "NOT MET"
    print(f"target: report() every step costs < 1 % of throughput: {verdict}")
    reporter.close(5)
    server.shutdown()
    return 0 if report_cost < 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
