"""System metrics: the process tree's CPU and memory, GPUs only when NVML is there."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import psutil

from abeja_runtime.sysmetrics import SYSTEM_METRICS_KEY, SystemMetrics


def test_sample_has_the_documented_keys_and_is_json() -> None:
    metrics = SystemMetrics(gpu=False)
    sample = metrics.sample()
    assert set(sample) == {"cpu_percent", "memory_rss_bytes", "system_memory_percent"}
    assert sample["memory_rss_bytes"] >= psutil.Process().memory_info().rss // 2
    assert 0 <= sample["system_memory_percent"] <= 100
    json.dumps(sample, allow_nan=False)
    assert SYSTEM_METRICS_KEY == "system"
    metrics.close()


def test_children_count_towards_cpu_and_memory() -> None:
    own_rss = psutil.Process().memory_info().rss
    child = subprocess.Popen(
        [sys.executable, "-c", "x = bytearray(64 * 1024 * 1024)\nwhile True: pass"]
    )
    try:
        metrics = SystemMetrics(gpu=False)
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
    # the ended child disappears without an error
    assert SystemMetrics(gpu=False).sample()["memory_rss_bytes"] > 0


def test_without_nvml_there_is_no_gpu_key() -> None:
    metrics = SystemMetrics(gpu=True)
    sample = metrics.sample()
    try:
        import pynvml  # noqa: F401
    except ImportError:
        assert "gpus" not in sample
    else:  # pragma: no cover - depends on the machine
        assert "gpus" not in sample or isinstance(sample["gpus"], list)
    metrics.close()
