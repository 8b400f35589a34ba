"""What the Keras and PyTorch integrations add to a CPU training epoch of a small model.

Two measurements per framework, in one run on one machine:

1. **End to end**: the same training (``--epochs`` epochs) with and without the
   integration, run alternately (A B, B A, ...) ``--reps`` times each; the time per epoch
   is compared by the ratio of the medians. The integration reports to a live emulator
   job (in a process of its own, as the platform's API is remote) over loopback HTTP, so
   its sender thread really posts (``--interval`` seconds between step-level posts) while
   the epochs run; every epoch ends with an epoch-end post, and (Keras) ``fit`` ends with
   the ``on_train_end`` flush, which waits for the last post's round trip. That flush is
   once per training: it is also printed on its own.
2. **Per step**: what the integration's per-step hook costs by itself (Keras'
   ``on_train_batch_end``; the loop's ``track`` iteration plus ``steps.log(loss=...)``),
   timed in isolation against the same loop without it, and divided by the measured step
   time. This is the precise figure; the end-to-end ratio shows it in context but carries
   the noise of a shared 2-core machine (a few tenths of a percent).

Target (issue 7): under 1 % on both. Exit status 0 when both end-to-end medians hold it.

Usage::

    python benchmarks/bench_integrations.py               # full run (about 2 minutes)
    python benchmarks/bench_integrations.py --reps 3 --keras-samples 8192 --torch-steps 600
"""

from __future__ import annotations

import argparse
import gc
import logging
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple

os.environ.setdefault("KERAS_BACKEND", "torch")

from abeja_runtime.emulator import Emulator
from abeja_runtime.job import JobContext
from abeja_runtime.statistics.reporter import StatisticsReporter
from abeja_runtime.statistics.sinks import MemorySink

TARGET = 0.01
WITHOUT = "without"
WITH_MEMORY = "with (reporter in memory)"
WITH_HTTP = "with (posting to emulator)"


class Timing(NamedTuple):
    """One timed training: wall-clock and this process's CPU seconds, per epoch."""

    wall: float
    cpu: float


def _timed(train: Callable[[], Any], epochs: int) -> Timing:
    gc.collect()  # start each run from the same heap: no collection debt carried over
    wall, cpu = time.perf_counter(), time.process_time()
    train()
    return Timing((time.perf_counter() - wall) / epochs, (time.process_time() - cpu) / epochs)


def _alternate(variants: dict[str, Callable[[], Timing]], reps: int) -> dict[str, list[Timing]]:
    """Run the variants in turn, rotating their order each repetition, so that the drift
    of a shared machine hits them alike."""
    names = list(variants)
    runs: dict[str, list[Timing]] = {name: [] for name in names}
    for rep in range(reps):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            runs[name].append(variants[name]())
    return runs


def _paired(base: list[Timing], other: list[Timing], field: str) -> float:
    """Median of the per-repetition ratios ``other / base - 1`` of one field.

    Each repetition ran the variants back to back, so its ratio is free of slow drift;
    the median ignores the odd run another process disturbed.
    """
    return statistics.median(
        getattr(b, field) / getattr(a, field) - 1 for a, b in zip(base, other, strict=True)
    )


def _report(name: str, runs: dict[str, list[Timing]], notes: list[str]) -> float:
    """Print the figures; return the end-to-end wall-clock overhead (with HTTP posting)."""
    base = runs[WITHOUT]
    print(f"\n== {name}")
    for variant, timings in runs.items():
        walls = [t.wall for t in timings]
        if os.environ.get("BENCH_VERBOSE"):
            print(f"  {variant}: " + ", ".join(f"{w * 1e3:.0f}" for w in walls))
        cpu = statistics.median(t.cpu for t in timings)
        line = (
            f"  {variant:<28} epoch median {statistics.median(walls) * 1e3:7.1f} ms wall, "
            f"{cpu * 1e3:7.1f} ms CPU"
        )
        if timings is not base:
            line += (
                f"   overhead {_paired(base, timings, 'wall') * 100:+.2f} % wall, "
                f"{_paired(base, timings, 'cpu') * 100:+.2f} % CPU"
            )
        print(line)
    walls = [t.wall for t in base]
    spread = (max(walls) - min(walls)) / statistics.median(walls)
    print(f"  (run-to-run spread of the baseline: {spread:.1%})")
    for note in notes:
        print(f"  {note}")
    return _paired(base, runs[WITH_HTTP], "wall")


# ---------------------------------------------------------------------------- Keras


def bench_keras(job_env: dict[str, str], args: argparse.Namespace) -> float:
    import keras
    import numpy as np

    from abeja_runtime.integrations.keras import StatisticsCallback

    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.keras_samples, 64)).astype("float32")
    y = rng.integers(0, 10, size=args.keras_samples).astype("int64")
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    reporter = _http_reporter(job_env, args)
    in_memory = _memory_reporter(args)

    def fit(callbacks: list[Any]) -> None:
        model.fit(x, y, epochs=args.epochs, batch_size=32, verbose=0, callbacks=callbacks)

    variants = {
        WITHOUT: lambda: _timed(lambda: fit([]), args.epochs),
        WITH_MEMORY: lambda: _timed(lambda: fit([StatisticsCallback(in_memory)]), args.epochs),
        WITH_HTTP: lambda: _timed(lambda: fit([StatisticsCallback(reporter)]), args.epochs),
    }
    for variant in variants.values():  # warm-up: compile paths, allocator, connection
        variant()
    runs = _alternate(variants, args.reps)
    without = [t.wall for t in runs[WITHOUT]]
    steps = -(-args.keras_samples // 32)
    step_seconds = statistics.median(without) / steps

    # the hook alone: what on_train_batch_end costs per call (a clock read when no
    # report is due), against an empty callback's, over many calls
    callback = StatisticsCallback(reporter)
    callback.set_params({"epochs": 1, "steps": steps, "verbose": 0})
    callback.on_train_begin()
    callback.on_epoch_begin(0)
    empty = keras.callbacks.Callback()
    logs = {"loss": 0.5, "accuracy": 0.5}
    calls = 200_000
    hook = _per_call(lambda i: callback.on_train_batch_end(i, logs), calls)
    noop = _per_call(lambda i: empty.on_train_batch_end(i, logs), calls)
    cost = max(0.0, hook - noop)
    notes = _notes(reporter, cost, step_seconds, "batch")
    in_memory.close(10)
    return _report(
        f"Keras 3 (torch backend), MLP 64-128-128-10, {steps} steps of 32 per epoch, "
        f"fit(epochs={args.epochs})",
        runs,
        notes,
    )


# ---------------------------------------------------------------------------- PyTorch


def bench_torch(job_env: dict[str, str], args: argparse.Namespace) -> float:
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from abeja_runtime.integrations.torch import epoch_end, track

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.torch_steps * 64, 64, generator=gen)
    y = torch.randint(0, 10, (len(x),), generator=gen)
    loader = DataLoader(TensorDataset(x, y), batch_size=64)
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(64, 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, 10),
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    reporter = _http_reporter(job_env, args)
    in_memory = _memory_reporter(args)

    def step(xb: Any, yb: Any) -> Any:
        loss = torch.nn.functional.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    epochs = args.epochs

    def plain() -> None:
        for _epoch in range(epochs):
            total = torch.zeros(())
            for xb, yb in loader:
                loss = step(xb, yb)
                total += loss.detach()
            _ = total / len(loader)

    def integrated(reporter: StatisticsReporter) -> None:
        for epoch in range(epochs):
            total = torch.zeros(())
            steps = track(loader, epoch=epoch, num_epochs=epochs, reporter=reporter)
            for xb, yb in steps:
                loss = step(xb, yb)
                steps.log(loss=loss)
                total += loss.detach()
            train = {"loss": total / len(loader)}
            epoch_end(epoch, num_epochs=epochs, reporter=reporter, train=train)

    variants = {
        WITHOUT: lambda: _timed(plain, epochs),
        WITH_MEMORY: lambda: _timed(lambda: integrated(in_memory), epochs),
        WITH_HTTP: lambda: _timed(lambda: integrated(reporter), epochs),
    }
    for variant in variants.values():
        variant()
    runs = _alternate(variants, args.reps)
    step_seconds = statistics.median(t.wall for t in runs[WITHOUT]) / len(loader)

    # the per-step cost alone: iterating a tracked list and logging a tensor, against
    # iterating the list, over many steps
    items = list(range(200_000))
    loss = torch.tensor(0.5)

    def tracked() -> float:
        start = time.perf_counter()
        steps = track(items, epoch=0, num_epochs=1, reporter=reporter)
        for _ in steps:
            steps.log(loss=loss)
        return time.perf_counter() - start

    def bare() -> float:
        start = time.perf_counter()
        for _ in items:
            pass
        return time.perf_counter() - start

    cost = max(0.0, (min(tracked() for _ in range(3)) - min(bare() for _ in range(3))))
    cost /= len(items)
    notes = _notes(reporter, cost, step_seconds, "step")
    in_memory.close(10)
    return _report(
        f"PyTorch loop, MLP 64-256-256-10, {len(loader)} steps of 64 per epoch, {epochs} epochs",
        runs,
        notes,
    )


def _interval(args: argparse.Namespace) -> float:
    if args.interval is not None:
        return float(args.interval)
    return StatisticsReporter(sink=MemorySink(), handle_sigterm=False).min_interval


def _http_reporter(job_env: dict[str, str], args: argparse.Namespace) -> StatisticsReporter:
    return StatisticsReporter(
        context=JobContext.from_env(job_env),
        min_interval=args.interval,
        handle_sigterm=False,
        flush_at_exit=False,
    )


def _memory_reporter(args: argparse.Namespace) -> StatisticsReporter:
    """The same reporter posting nowhere: isolates the integration from HTTP work."""
    return StatisticsReporter(
        sink=MemorySink(), min_interval=args.interval, handle_sigterm=False, flush_at_exit=False
    )


def _notes(reporter: StatisticsReporter, hook: float, step_seconds: float, unit: str) -> list[str]:
    """The per-step hook, the posts made and one post's round trip; closes ``reporter``."""
    sent = reporter.counters["sent"]
    flush = _flush_round_trip(reporter)
    reporter.close(10)
    return [
        f"per-{unit} hook alone: {hook * 1e6:.2f} us = {hook / step_seconds * 100:.3f} % of a "
        f"{step_seconds * 1e3:.2f} ms {unit}",
        f"posts to the emulator: {sent} in the run; one epoch-end post + flush round trip "
        f"{flush * 1e3:.1f} ms (what fit()'s end waits for, once per training)",
    ]


def _flush_round_trip(reporter: StatisticsReporter) -> float:
    """Seconds an epoch-end report plus a flush takes: what ``on_train_end`` waits for."""
    best = float("inf")
    for epoch in range(5):
        start = time.perf_counter()
        reporter.report(epoch=epoch + 1, train={"loss": 0.5}, epoch_end=True)
        reporter.flush(10)
        best = min(best, time.perf_counter() - start)
    return best


def _per_call(call: Callable[[int], Any], calls: int) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for i in range(calls):
            call(i)
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def _serve_emulator(names: list[str], envs: Any, stop: Any) -> None:
    """Child process: an emulator with one job per name, until told to stop."""
    with Emulator() as emu:
        for name in names:
            envs.put(emu.create_job(name))
        stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=7, help="trainings per variant (default 7)")
    parser.add_argument(
        "--interval",
        type=float,
        default=None,
        help="reporter min_interval, s (default: the reporter's, 5 s unless "
        "ABEJA_RUNTIME_REPORT_INTERVAL says otherwise)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument(
        "--epochs", type=int, default=2, help="epochs per timed training (default 2)"
    )
    parser.add_argument("--keras-samples", type=int, default=24576, help="(768 steps of 32)")
    parser.add_argument("--torch-steps", type=int, default=1800, help="steps of 64 per epoch")
    parser.add_argument("--only", choices=("keras", "torch"), help="run one framework only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)

    import torch

    torch.set_num_threads(args.threads)
    print(
        f"python {sys.version.split()[0]}, torch {torch.__version__}, "
        f"{args.threads} torch thread(s), {os.cpu_count()} CPUs, reps={args.reps} trainings "
        f"of {args.epochs} epochs per variant, "
        f"reporter min_interval={_interval(args)}s, reporting to an emulator process on 127.0.0.1"
    )
    # The emulator runs in a process of its own, as the platform's API is remote: served
    # in this process, its request handling would compete with training for the GIL
    # and be counted as the integration's cost.
    context = multiprocessing.get_context("spawn")
    envs, stop = context.Queue(), context.Event()
    server = context.Process(
        target=_serve_emulator, args=(["bench-keras", "bench-torch"], envs, stop), daemon=True
    )
    server.start()
    results: dict[str, float] = {}
    try:
        keras_env, torch_env = envs.get(timeout=120), envs.get(timeout=120)
        if args.only in (None, "keras"):
            results["keras"] = bench_keras(keras_env, args)
        if args.only in (None, "torch"):
            results["torch"] = bench_torch(torch_env, args)
    finally:
        stop.set()
        server.join(30)
    print()
    ok = True
    for name, overhead in results.items():
        held = overhead < TARGET
        ok = ok and held
        print(
            f"{name}: end-to-end overhead {overhead * 100:+.2f} % (target < 1 %): "
            f"{'OK' if held else 'MISSED'}"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
