"""System metrics: sampled on a timer thread, latest + mean/max per sample() call.

GPUs are tested with a fake NVML module (no GPU on the test machines) injected through
``SystemMetrics(nvml=...)``; it records the thread of every call, so the tests can show that
no query ever runs on the thread that calls ``sample()``.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from types import SimpleNamespace
from typing import Any

import psutil
import pytest

from abeja_runtime.errors import ConfigurationError
from abeja_runtime.statistics.sysmetrics import (
    ENV_SYSTEM_METRICS_INTERVAL,
    SYSTEM_METRICS_KEY,
    SystemMetrics,
    visible_gpu_selectors,
)

FAST = 0.05


class FakeNvml:
    """pynvml's functions over scripted GPUs; every call records its thread ident."""

    def __init__(self, gpus: int = 3, *, power: bool = True) -> None:
        self.uuids = [f"GPU-{i}aaaaaaa-0000-0000-0000-00000000000{i}" for i in range(gpus)]
        self.util = [10 * (i + 1) for i in range(gpus)]  # the test changes these
        self.power = power
        self.threads: set[int] = set()
        self.queried: set[int] = set()  # indices whose figures were read
        self.calls = 0
        self.shutdown = 0

    def _call(self) -> None:
        self.threads.add(threading.get_ident())
        self.calls += 1

    def nvmlInit(self) -> None:
        self._call()

    def nvmlShutdown(self) -> None:
        self._call()
        self.shutdown += 1

    def nvmlDeviceGetCount(self) -> int:
        self._call()
        return len(self.uuids)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        self._call()
        return index

    def nvmlDeviceGetUUID(self, handle: int) -> bytes:
        self._call()
        return self.uuids[handle].encode()  # old bindings answer bytes

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> Any:
        self._call()
        self.queried.add(handle)
        return SimpleNamespace(gpu=self.util[handle], memory=0)

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Any:
        self._call()
        return SimpleNamespace(used=(handle + 1) * 2**30, total=80 * 2**30, free=0)

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:
        self._call()
        assert sensor == 0  # NVML_TEMPERATURE_GPU
        return 60 + handle

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        self._call()
        if not self.power:
            raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")
        return 250_500 + handle * 1000  # milliwatts


def _wait_for(predicate: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_sample_has_the_documented_keys_and_is_json() -> None:
    metrics = SystemMetrics(gpu=False, interval=FAST)
    try:
        first = metrics.sample()  # waits once for the timer's first sample
        assert {
            "cpu_percent",
            "memory_rss_bytes",
            "system_memory_percent",
            "system_memory_used_bytes",
            "mean",
            "max",
            "samples",
            "interval_s",
        } <= set(first)
        assert first["memory_rss_bytes"] >= psutil.Process().memory_info().rss // 2
        assert 0 <= first["system_memory_percent"] <= 100
        assert first["interval_s"] == FAST
        _wait_for(lambda: len(metrics._window) >= 2)
        doc = metrics.sample()
        # throughputs need two samples; then they are there (absent, never 0, before)
        assert {"system_cpu_percent", "net_recv_bytes_per_s", "net_sent_bytes_per_s"} <= set(doc)
        assert 0 <= doc["system_cpu_percent"] <= 100
        assert doc["samples"] >= 2
        for key in ("cpu_percent", "memory_rss_bytes", "net_sent_bytes_per_s"):
            assert doc["max"][key] >= doc["mean"][key] >= 0
        assert "gpus" not in doc
        json.dumps(doc, allow_nan=False)
        assert SYSTEM_METRICS_KEY == "system"
    finally:
        metrics.close()


def test_children_count_towards_cpu_and_memory() -> None:
    own_rss = psutil.Process().memory_info().rss
    child = subprocess.Popen(
        [sys.executable, "-c", "x = bytearray(64 * 1024 * 1024)\nwhile True: pass"]
    )
    metrics = SystemMetrics(gpu=False, interval=0.2)
    try:
        deadline = time.monotonic() + 30
        sample = metrics.sample()
        while time.monotonic() < deadline:
            time.sleep(0.3)
            sample = metrics.sample()
            if sample["cpu_percent"] > 20 and sample["memory_rss_bytes"] > own_rss + 32 * 2**20:
                break
        # a busy child is seen: the main process alone sleeps here
        assert sample["cpu_percent"] > 20, sample
        assert sample["memory_rss_bytes"] > own_rss + 32 * 2**20, sample
    finally:
        child.kill()
        child.wait()
        metrics.close()
    # the ended child disappears without an error
    again = SystemMetrics(gpu=False, interval=FAST)
    assert again.sample()["memory_rss_bytes"] > 0
    again.close()


def test_visible_gpus_only_with_mean_and_max_since_the_last_sample(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,GPU-0aaa")  # GPU 2, then GPU 0 by prefix
    nvml = FakeNvml(gpus=3)
    metrics = SystemMetrics(interval=FAST, nvml=nvml)
    try:
        metrics.sample()  # the first sample has no GPUs (NVML starts after it)
        _wait_for(lambda: "gpus" in (metrics._latest or {}))
        metrics.sample()  # start a window with the GPUs at their first figures
        nvml.util = [5, 5, 90]
        _wait_for(
            lambda: (
                sum(1 for s in metrics._window if s["gpus"][0]["utilization_percent"] == 90) >= 2
            )
        )
        nvml.util = [5, 5, 30]
        _wait_for(lambda: (metrics._latest or {})["gpus"][0]["utilization_percent"] == 30)
        doc = metrics.sample()
        _wait_for(lambda: len(metrics._window) >= 1)
        after = metrics.sample()
    finally:
        metrics.close()
    # GPU 1 is never even queried; the order is CUDA_VISIBLE_DEVICES's
    assert nvml.queried == {0, 2}
    assert [(g["index"], g["uuid"]) for g in doc["gpus"]] == [
        (2, nvml.uuids[2]),
        (0, nvml.uuids[0]),
    ]
    latest = doc["gpus"][0]
    assert latest == {
        "index": 2,
        "uuid": nvml.uuids[2],
        "utilization_percent": 30,
        "memory_used_bytes": 3 * 2**30,
        "memory_total_bytes": 80 * 2**30,
        "temperature_c": 62,
        "power_w": 252.5,
    }
    # mean and max cover the samples since the previous sample() call, per GPU by uuid
    assert [g["uuid"] for g in doc["max"]["gpus"]] == [nvml.uuids[2], nvml.uuids[0]]
    assert doc["max"]["gpus"][0]["utilization_percent"] == 90
    mean = doc["mean"]["gpus"][0]["utilization_percent"]
    assert 30 < mean < 90  # 30 (first figures) ... 90 ... 30
    assert doc["mean"]["gpus"][1]["utilization_percent"] <= 10
    assert doc["max"]["gpus"][0]["power_w"] == 252.5
    # the next call starts a new window: the 90 is gone from max
    assert after["max"]["gpus"][0]["utilization_percent"] == 30
    json.dumps(doc, allow_nan=False)
    assert nvml.shutdown == 1


def test_the_timer_never_runs_on_the_calling_thread() -> None:
    nvml = FakeNvml(gpus=1)
    metrics = SystemMetrics(interval=FAST, nvml=nvml)
    caller = threading.get_ident()
    try:
        for _ in range(5):
            metrics.sample()
            time.sleep(FAST)
        _wait_for(lambda: nvml.calls > 30)
        threads_seen = set(nvml.threads)
    finally:
        metrics.close()
    assert caller not in threads_seen
    assert len(threads_seen) == 1  # one timer thread did every NVML call
    assert caller not in nvml.threads  # not even nvmlShutdown at close()
    assert not metrics.running


def test_sample_returns_at_once_while_the_timer_is_slow() -> None:
    gate = threading.Event()

    class SlowNvml(FakeNvml):
        def nvmlDeviceGetUtilizationRates(self, handle: int) -> Any:
            gate.wait(30)
            return super().nvmlDeviceGetUtilizationRates(handle)

    metrics = SystemMetrics(interval=FAST, nvml=SlowNvml(gpus=1))
    try:
        metrics.sample()
        time.sleep(0.3)  # the timer is now stuck in an NVML call
        began = time.monotonic()
        for _ in range(20):
            doc = metrics.sample()
        assert time.monotonic() - began < 1.0  # a stuck timer never blocks the caller
        assert doc["samples"] == 1 and "cpu_percent" in doc
    finally:
        gate.set()
        metrics.close()


def test_without_nvml_the_rest_arrives_with_one_debug_line(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # "import pynvml" raises ImportError
    caplog.set_level(logging.DEBUG, logger="abeja_runtime.sysmetrics")
    metrics = SystemMetrics(interval=FAST)
    try:
        metrics.sample()
        _wait_for(lambda: len(metrics._window) >= 3)
        doc = metrics.sample()
    finally:
        metrics.close()
    assert "gpus" not in doc and "gpus" not in doc["mean"]
    assert {"cpu_percent", "memory_rss_bytes", "system_memory_percent"} <= set(doc)
    lines = [r for r in caplog.records if "GPU metrics unavailable" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.DEBUG


def test_a_driver_that_fails_to_start_leaves_gpus_out() -> None:
    class NoDriver(FakeNvml):
        def nvmlInit(self) -> None:
            raise RuntimeError("NVML_ERROR_DRIVER_NOT_LOADED")

    metrics = SystemMetrics(interval=FAST, nvml=NoDriver())
    try:
        metrics.sample()
        _wait_for(lambda: len(metrics._window) >= 2)
        assert "gpus" not in metrics.sample()
    finally:
        metrics.close()


def test_a_figure_the_board_refuses_is_absent_not_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    nvml = FakeNvml(gpus=2, power=False)
    metrics = SystemMetrics(interval=FAST, nvml=nvml)
    try:
        metrics.sample()
        _wait_for(lambda: "gpus" in (metrics._latest or {}))
        doc = metrics.sample()
    finally:
        metrics.close()
    assert [g["index"] for g in doc["gpus"]] == [0, 1]  # unset: every GPU
    assert all("power_w" not in g and g["temperature_c"] >= 60 for g in doc["gpus"])
    assert all("power_w" not in g for g in doc["max"]["gpus"])


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, None),
        ("", []),
        ("-1", []),
        ("0,1", [0, 1]),
        (" 1 , 0 ", [1, 0]),
        ("1,-1,0", [1]),  # CUDA stops at the first invalid entry
        ("GPU-abc,2", ["GPU-abc", 2]),
        ("MIG-xyz,0", []),
    ],
)
def test_cuda_visible_devices_is_read_as_cuda_does(raw: str | None, expected: Any) -> None:
    env = {} if raw is None else {"CUDA_VISIBLE_DEVICES": raw}
    assert visible_gpu_selectors(env) == expected


def test_an_empty_cuda_visible_devices_hides_every_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    nvml = FakeNvml(gpus=2)
    metrics = SystemMetrics(interval=FAST, nvml=nvml)
    try:
        metrics.sample()
        _wait_for(lambda: len(metrics._window) >= 3)
        assert "gpus" not in metrics.sample()
    finally:
        metrics.close()
    assert nvml.queried == set()


def test_the_interval_comes_from_the_argument_or_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(ENV_SYSTEM_METRICS_INTERVAL, raising=False)
    assert SystemMetrics().interval == 10.0
    monkeypatch.setenv(ENV_SYSTEM_METRICS_INTERVAL, "2.5")
    assert SystemMetrics().interval == 2.5
    assert SystemMetrics(interval=1).interval == 1.0
    for bad in ("0", "soon", "nan", "-3"):
        monkeypatch.setenv(ENV_SYSTEM_METRICS_INTERVAL, bad)
        with pytest.raises(ConfigurationError, match=ENV_SYSTEM_METRICS_INTERVAL):
            SystemMetrics()
    for value in (0, -1, float("inf"), True, "5"):
        with pytest.raises(ConfigurationError, match="interval"):
            SystemMetrics(interval=value)  # type: ignore[arg-type]


def test_no_thread_before_first_use_and_none_after_close() -> None:
    metrics = SystemMetrics(gpu=False, interval=FAST)
    assert not metrics.running  # constructing it costs no thread
    metrics.sample()
    assert metrics.running
    metrics.close()
    assert not metrics.running
    doc = metrics.sample()  # after close: the last figures, no new thread, no wait
    assert not metrics.running and "cpu_percent" in doc


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_gets_its_own_timer() -> None:
    metrics = SystemMetrics(gpu=False, interval=FAST)
    metrics.sample()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        try:
            doc = metrics.sample()
            ok = metrics.running and doc.get("memory_rss_bytes", 0) > 0
            os.write(write, b"ok" if ok else json.dumps(doc).encode()[:500])
            metrics.close()
        finally:
            os._exit(0)
    os.close(write)
    answer = os.read(read, 1000)
    os.close(read)
    os.waitpid(pid, 0)
    assert answer == b"ok"
    assert metrics.running  # the parent's timer is untouched
    metrics.close()
