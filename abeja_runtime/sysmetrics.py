"""System metrics (CPU, memory, GPU) added to statistics under one key.

Sampled on the reporter's sender thread just before a post, never on the training
thread: a psutil walk over the process tree costs a few hundred microseconds and an
NVML query more, which would be visible in a step-level ``report()``.

What is measured, and why these:

* ``cpu_percent``: CPU use of this process and all its children (DataLoader workers
  are children), summed, so 400 means four cores busy. It is measured between two
  samples, so the first sample says 0;
* ``memory_rss_bytes``: resident memory of the same process tree (a leak in a worker
  shows here, not in the main process's RSS);
* ``system_memory_percent``: how close the whole machine is to the OOM killer;
* ``gpus``: per GPU, utilisation and memory, through NVML (``nvidia-ml-py``, imported
  only when installed; no GPU or no driver simply leaves the key out).

psutil is a core dependency; ``nvidia-ml-py`` is optional and never required.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from typing import Any

import psutil

__all__ = ["SYSTEM_METRICS_KEY", "SystemMetrics"]

#: the top-level key of the statistics document that holds the metrics
SYSTEM_METRICS_KEY = "system"

logger = logging.getLogger(__name__)


class SystemMetrics:
    """Samples CPU and memory of this process tree, and GPUs when NVML is available.

    Args:
        gpu: query GPUs through NVML when ``nvidia-ml-py`` is installed.
        pid: the root process (this process by default).
    """

    def __init__(self, *, gpu: bool = True, pid: int | None = None) -> None:
        self._root = psutil.Process(pid or os.getpid())
        self._procs: dict[int, psutil.Process] = {}
        self._gpu_wanted = gpu
        self._nvml: Any = None
        self._nvml_failed = False
        self._lock = threading.Lock()

    def _tree(self) -> list[psutil.Process]:
        """The root and its live descendants, reusing Process objects (cpu_percent needs it)."""
        try:
            found = [self._root, *self._root.children(recursive=True)]
        except psutil.Error:
            found = [self._root]
        current: dict[int, psutil.Process] = {}
        for proc in found:
            # a cached object keeps the previous CPU times, which cpu_percent() compares to
            current[proc.pid] = self._procs.get(proc.pid, proc)
        self._procs = current
        return list(current.values())

    def _init_nvml(self) -> Any:
        if self._nvml is not None or self._nvml_failed or not self._gpu_wanted:
            return self._nvml
        try:
            import pynvml

            pynvml.nvmlInit()
        except Exception as exc:  # not installed, no driver, no GPU: not an error
            logger.debug("GPU metrics unavailable: %s", exc)
            self._nvml_failed = True
            return None
        self._nvml = pynvml
        return pynvml

    def _gpus(self) -> list[dict[str, Any]] | None:
        nvml = self._init_nvml()
        if nvml is None:
            return None
        gpus: list[dict[str, Any]] = []
        try:
            for index in range(nvml.nvmlDeviceGetCount()):
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                util = nvml.nvmlDeviceGetUtilizationRates(handle)
                mem = nvml.nvmlDeviceGetMemoryInfo(handle)
                gpus.append(
                    {
                        "index": index,
                        "utilization_percent": int(util.gpu),
                        "memory_used_bytes": int(mem.used),
                        "memory_total_bytes": int(mem.total),
                    }
                )
        except Exception as exc:  # a driver hiccup must not break reporting
            logger.debug("GPU metrics failed: %s", exc)
            return None
        return gpus

    def sample(self) -> dict[str, Any]:
        """One sample: ``cpu_percent``, ``memory_rss_bytes``, ``system_memory_percent``, ``gpus``.

        ``gpus`` is present only when NVML answered.
        """
        with self._lock:
            cpu = 0.0
            rss = 0
            for proc in self._tree():
                try:
                    cpu += proc.cpu_percent(interval=None)
                    rss += proc.memory_info().rss
                except psutil.Error:  # the process ended between listing and reading
                    continue
            result: dict[str, Any] = {
                "cpu_percent": round(cpu, 1),
                "memory_rss_bytes": rss,
                "system_memory_percent": psutil.virtual_memory().percent,
            }
            gpus = self._gpus()
            if gpus:
                result["gpus"] = gpus
            return result

    def close(self) -> None:
        """Shut NVML down if it was started."""
        with self._lock:
            nvml, self._nvml = self._nvml, None
        if nvml is not None:
            with contextlib.suppress(Exception):  # best effort
                nvml.nvmlShutdown()
