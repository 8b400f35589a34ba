"""System metrics (CPU, memory, disk, network, GPUs) added to statistics under one key.

Why a timer of its own: a job that reports once an epoch would otherwise get one sample
per epoch, and a psutil walk over the process tree (a few hundred microseconds) or an NVML
query (more) must never run on the training thread. So :class:`SystemMetrics` samples on
its own daemon thread every ``interval`` seconds (default 10, argument or
``ABEJA_RUNTIME_SYSTEM_METRICS_INTERVAL``), and :meth:`SystemMetrics.sample` -- called by
the reporter whenever it builds a statistics post -- only copies what the timer collected:
the latest sample plus the mean and the max of every figure since the previous call.

The document (the value of the statistics' ``"system"`` key)::

    {
      "cpu_percent": 183.2,             # this process and its children; 100 = one core
      "memory_rss_bytes": 2147483648,   # resident memory of the same process tree
      "system_cpu_percent": 47.5,       # the whole machine, 0-100
      "system_memory_percent": 31.0,    # the whole machine (how close the OOM killer is)
      "system_memory_used_bytes": 21474836480,
      "disk_read_bytes_per_s": 1048576, # the machine's disks, since the previous sample
      "disk_write_bytes_per_s": 0,
      "net_recv_bytes_per_s": 5120,     # the machine's network interfaces
      "net_sent_bytes_per_s": 2048,
      "gpus": [                         # visible GPUs only (CUDA_VISIBLE_DEVICES)
        {"index": 1, "uuid": "GPU-5c1d...", "utilization_percent": 97,
         "memory_used_bytes": 30064771072, "memory_total_bytes": 85899345920,
         "temperature_c": 71, "power_w": 287.4}
      ],
      "mean": {...the same numeric keys, "gpus": [{"index": 1, "uuid": ..., ...}]},
      "max":  {...},
      "samples": 6,                     # timer samples that mean and max cover
      "interval_s": 10.0
    }

The top-level figures are the latest sample (so a chart of ``system.cpu_percent`` is the
machine as it was at each post). ``mean`` and ``max`` cover the samples taken since the
previous :meth:`~SystemMetrics.sample` call, or the latest alone when none was taken since
(``samples`` says how many). A figure the machine cannot give is absent, never 0: the
throughputs in the first sample (there is no previous one to measure against), ``disk_*``
without block devices, a GPU's ``power_w`` where the board does not report power.

CPU figures of the first sample are averages since the process (or machine) started; later
ones are measured between samples. ``index`` is the GPU's NVML index (the one nvidia-smi
shows), ``uuid`` its UUID; ``CUDA_VISIBLE_DEVICES`` entries are matched as CUDA does (an
integer is an index, ``GPU-...`` a UUID or unique UUID prefix, parsing stops at the first
entry that is neither, empty means no GPU). Indices are matched in NVML (PCI bus) order, as
CUDA does with ``CUDA_DEVICE_ORDER=PCI_BUS_ID``; use UUIDs when the order matters.

GPUs come from NVML (``pip install "abeja-runtime[gpu]"`` brings ``nvidia-ml-py``), imported
and initialised on the timer thread after its first sample, so a slow driver never delays
the first post. No library, no driver or no GPU leaves ``gpus`` out, with one debug line.

Fork safety: the timer thread does not survive ``fork()``; a child that calls ``sample()``
starts its own timer, measuring its own process tree when no ``pid`` was given.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import psutil

from ..config import ENV_SYSTEM_METRICS_INTERVAL, env_float
from ..errors import ConfigurationError

__all__ = [
    "DEFAULT_INTERVAL",
    "ENV_SYSTEM_METRICS_INTERVAL",
    "SYSTEM_METRICS_KEY",
    "SystemMetrics",
    "visible_gpu_selectors",
]

#: the top-level key of the statistics document that holds the metrics
SYSTEM_METRICS_KEY = "system"
#: seconds between two samples of the timer thread, unless set
DEFAULT_INTERVAL = 10.0
#: the environment variable that sets the interval (seconds, > 0)
#: the shortest interval accepted: a shorter one would make the timer a busy loop
MIN_INTERVAL = 0.01
#: how long the first ``sample()`` waits for the timer's first sample (once per object)
FIRST_SAMPLE_WAIT = 2.0
#: how long ``close()`` waits for the timer thread (a daemon) to end: short, because it
#: runs inside the reporter's bounded flush at exit and on SIGTERM
CLOSE_WAIT = 1.0

logger = logging.getLogger("abeja_runtime.sysmetrics")


def visible_gpu_selectors(environ: Mapping[str, str] | None = None) -> list[int | str] | None:
    """The GPUs ``CUDA_VISIBLE_DEVICES`` lets the process see, as CUDA reads it.

    Returns:
        ``None`` when the variable is unset (every GPU is visible); otherwise, in order, an
        ``int`` per index entry and a ``str`` per ``GPU-`` UUID (or UUID prefix) entry.
        Parsing stops at the first entry that is neither (``-1``, ``none``, a MIG id we
        cannot map), as CUDA's does, so ``""`` and ``"-1"`` give an empty list.
    """
    env = os.environ if environ is None else environ
    raw = env.get("CUDA_VISIBLE_DEVICES")
    if raw is None:
        return None
    selectors: list[int | str] = []
    for entry in (part.strip() for part in raw.split(",")):
        if entry.isdigit():
            selectors.append(int(entry))
        elif entry.startswith("GPU-") and len(entry) > 4:
            selectors.append(entry)
        else:
            break
    return selectors


def _text(value: Any) -> str:
    """NVML answers ``bytes`` in old bindings and ``str`` in new ones."""
    return value.decode() if isinstance(value, bytes) else str(value)


class _GpuProbe:
    """NVML queries for the visible GPUs; used on the timer thread only."""

    def __init__(self, nvml: Any) -> None:
        self.nvml = nvml
        self.devices: list[tuple[int, str, Any]] = []  # (index, uuid, handle)
        self.warned = False

    @classmethod
    def open(cls, injected: Any) -> _GpuProbe | None:
        """Import (unless injected) and initialise NVML; ``None`` with one debug line if not."""
        try:
            if injected is not None:
                nvml = injected
            else:
                import pynvml

                nvml = pynvml
            nvml.nvmlInit()
        except Exception as exc:  # not installed, no driver, no GPU: not an error
            logger.debug(
                "GPU metrics unavailable (nvidia-ml-py and an NVIDIA driver needed): %s", exc
            )
            return None
        probe = cls(nvml)
        try:
            probe.devices = probe._visible_devices()
        except Exception as exc:
            logger.debug("GPU metrics unavailable: cannot list the GPUs: %s", exc)
            probe.close()
            return None
        if not probe.devices:
            logger.debug(
                "GPU metrics: no visible GPU (CUDA_VISIBLE_DEVICES=%r)",
                os.environ.get("CUDA_VISIBLE_DEVICES"),
            )
        return probe

    def _visible_devices(self) -> list[tuple[int, str, Any]]:
        nvml = self.nvml
        every: list[tuple[int, str, Any]] = []
        for index in range(int(nvml.nvmlDeviceGetCount())):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            every.append((index, _text(nvml.nvmlDeviceGetUUID(handle)), handle))
        selectors = visible_gpu_selectors()
        if selectors is None:
            return every
        chosen: list[tuple[int, str, Any]] = []
        for selector in selectors:
            if isinstance(selector, int):
                found = [d for d in every if d[0] == selector]
            else:
                found = [d for d in every if d[1].startswith(selector)]
            if len(found) != 1:  # CUDA: an unknown or ambiguous entry ends the list
                break
            if found[0] not in chosen:
                chosen.append(found[0])
        return chosen

    def sample(self) -> list[dict[str, Any]] | None:
        """One figure set per visible GPU; a figure the board refuses is left out."""
        nvml = self.nvml
        gpus: list[dict[str, Any]] = []
        for index, uuid, handle in self.devices:
            gpu: dict[str, Any] = {"index": index, "uuid": uuid}
            for keys, read in (
                (("utilization_percent",), lambda h: (nvml.nvmlDeviceGetUtilizationRates(h).gpu,)),
                (("memory_used_bytes", "memory_total_bytes"), self._memory),
                (("temperature_c",), lambda h: (nvml.nvmlDeviceGetTemperature(h, 0),)),
                (("power_w",), lambda h: (round(nvml.nvmlDeviceGetPowerUsage(h) / 1000.0, 1),)),
            ):
                try:
                    values = read(handle)
                except Exception as exc:  # not supported on this board, or a driver hiccup
                    if not self.warned:
                        self.warned = True
                        logger.debug("GPU %d: %s not available: %s", index, keys[0], exc)
                    continue
                for key, value in zip(keys, values, strict=True):
                    gpu[key] = value if isinstance(value, float) else int(value)
            gpus.append(gpu)
        return gpus or None

    def _memory(self, handle: Any) -> tuple[int, int]:
        memory = self.nvml.nvmlDeviceGetMemoryInfo(handle)  # one call for both figures
        return int(memory.used), int(memory.total)

    def close(self) -> None:
        try:
            self.nvml.nvmlShutdown()
        except Exception as exc:  # best effort
            logger.debug("nvmlShutdown failed: %s", exc)


class _Probe:
    """Takes one sample; lives on the timer thread (psutil and NVML state are not shared)."""

    def __init__(self, root_pid: int) -> None:
        self.root = psutil.Process(root_pid)
        # pid -> (process, its user+system CPU seconds, wall time) at the previous sample
        self.procs: dict[int, tuple[psutil.Process, float, float]] = {}
        self.machine_cpu: tuple[float, float] | None = None  # (total, idle) seconds
        self.counters: tuple[float, Any, Any] | None = None  # (monotonic, disk, net)
        self.gpus: _GpuProbe | None = None

    def _tree_cpu_and_rss(self, now: float) -> tuple[float, int]:
        try:
            found = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            found = [self.root]
        cpu = 0.0
        rss = 0
        current: dict[int, tuple[psutil.Process, float, float]] = {}
        for proc in found:
            known = self.procs.get(proc.pid)
            proc = known[0] if known else proc
            try:
                with proc.oneshot():
                    times = proc.cpu_times()
                    used = times.user + times.system
                    rss += proc.memory_info().rss
                    if known is None:  # first seen: its average since it started
                        before, since = 0.0, proc.create_time()
                    else:
                        before, since = known[1], known[2]
            except psutil.Error:  # ended between listing and reading
                continue
            if now > since:
                cpu += max(0.0, used - before) / (now - since) * 100.0
            current[proc.pid] = (proc, used, now)
        self.procs = current
        return cpu, rss

    def _machine_cpu(self) -> float | None:
        times = psutil.cpu_times()
        total = float(sum(times))
        idle = float(times.idle + getattr(times, "iowait", 0.0))
        before_total, before_idle = self.machine_cpu or (0.0, 0.0)
        self.machine_cpu = (total, idle)
        spent = total - before_total
        if spent <= 0:
            return None
        return min(100.0, max(0.0, (spent - (idle - before_idle)) / spent * 100.0))

    def _throughputs(self, out: dict[str, Any]) -> None:
        now = time.monotonic()
        try:
            disk = psutil.disk_io_counters()
        except Exception:  # no /proc/diskstats (containers)
            disk = None
        try:
            net = psutil.net_io_counters()
        except Exception:
            net = None
        previous, self.counters = self.counters, (now, disk, net)
        if previous is None or now <= previous[0]:
            return
        elapsed = now - previous[0]

        def rate(new: Any, old: Any, field: str) -> int:
            return max(0, int((getattr(new, field) - getattr(old, field)) / elapsed))

        if disk is not None and previous[1] is not None:
            out["disk_read_bytes_per_s"] = rate(disk, previous[1], "read_bytes")
            out["disk_write_bytes_per_s"] = rate(disk, previous[1], "write_bytes")
        if net is not None and previous[2] is not None:
            out["net_recv_bytes_per_s"] = rate(net, previous[2], "bytes_recv")
            out["net_sent_bytes_per_s"] = rate(net, previous[2], "bytes_sent")

    def sample(self) -> dict[str, Any]:
        cpu, rss = self._tree_cpu_and_rss(time.time())
        out: dict[str, Any] = {"cpu_percent": round(cpu, 1), "memory_rss_bytes": rss}
        machine = self._machine_cpu()
        if machine is not None:
            out["system_cpu_percent"] = round(machine, 1)
        memory = psutil.virtual_memory()
        out["system_memory_percent"] = float(memory.percent)
        out["system_memory_used_bytes"] = int(memory.used)
        self._throughputs(out)
        if self.gpus is not None:
            gpus = self.gpus.sample()
            if gpus:
                out["gpus"] = gpus
        return out

    def close(self) -> None:
        if self.gpus is not None:
            self.gpus.close()
            self.gpus = None


def _gpu_key(gpu: Mapping[str, Any]) -> str:
    return str(gpu.get("uuid") or gpu.get("index"))


def _numbers(sample: Mapping[str, Any]) -> dict[str, float]:
    return {
        key: value
        for key, value in sample.items()
        if isinstance(value, (int, float))
        and not isinstance(value, bool)
        and key not in ("index",)
        and math.isfinite(value)
    }


def _aggregate(samples: Sequence[Mapping[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The mean and the max of every figure over ``samples``, GPUs matched by uuid."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    maxes: dict[str, float] = {}
    gpu_ids: dict[str, dict[str, Any]] = {}  # key -> {"index", "uuid"}, first-seen order
    gpu_sums: dict[str, dict[str, float]] = {}
    gpu_counts: dict[str, dict[str, int]] = {}
    gpu_maxes: dict[str, dict[str, float]] = {}

    def add(
        values: Mapping[str, float], s: dict[str, float], c: dict[str, int], m: dict[str, float]
    ) -> None:
        for key, value in values.items():
            s[key] = s.get(key, 0.0) + value
            c[key] = c.get(key, 0) + 1
            m[key] = max(m.get(key, value), value)

    for sample in samples:
        add(_numbers(sample), sums, counts, maxes)
        for gpu in sample.get("gpus") or ():
            key = _gpu_key(gpu)
            if key not in gpu_ids:
                gpu_ids[key] = {k: gpu[k] for k in ("index", "uuid") if k in gpu}
                gpu_sums[key], gpu_counts[key], gpu_maxes[key] = {}, {}, {}
            add(_numbers(gpu), gpu_sums[key], gpu_counts[key], gpu_maxes[key])

    def mean_of(s: dict[str, float], c: dict[str, int]) -> dict[str, Any]:
        return {key: round(s[key] / c[key], 2) for key in s}

    mean: dict[str, Any] = mean_of(sums, counts)
    peak: dict[str, Any] = dict(maxes)
    if gpu_ids:
        mean["gpus"] = [{**gpu_ids[k], **mean_of(gpu_sums[k], gpu_counts[k])} for k in gpu_ids]
        peak["gpus"] = [{**gpu_ids[k], **gpu_maxes[k]} for k in gpu_ids]
    return mean, peak


class SystemMetrics:
    """Samples this process tree, the machine and its visible GPUs on a timer thread.

    Args:
        gpu: query GPUs through NVML when ``nvidia-ml-py`` (the ``[gpu]`` extra) and a
            driver are there.
        pid: the root process of the tree measured (this process by default).
        interval: seconds between samples; default ``ABEJA_RUNTIME_SYSTEM_METRICS_INTERVAL``,
            else 10.
        nvml: an object with pynvml's functions to use instead of importing ``pynvml``
            (tests inject a fake; a program may pass a preconfigured binding).

    Raises:
        ConfigurationError: ``interval`` (or its variable) is not a finite number >= 0.01.
    """

    def __init__(
        self,
        *,
        gpu: bool = True,
        pid: int | None = None,
        interval: float | None = None,
        nvml: Any = None,
    ) -> None:
        if interval is None:
            interval = env_float(
                ENV_SYSTEM_METRICS_INTERVAL, DEFAULT_INTERVAL, minimum=MIN_INTERVAL
            )
        elif (
            isinstance(interval, bool)
            or not isinstance(interval, (int, float))
            or not math.isfinite(interval)
            or interval < MIN_INTERVAL
        ):
            raise ConfigurationError(
                f"interval must be a finite number of seconds >= {MIN_INTERVAL}, got {interval!r}"
            )
        self.interval = float(interval)
        self._gpu_wanted = gpu
        self._pid = pid
        self._nvml = nvml
        self._closed = False
        self._reset()

    def _reset(self) -> None:
        """Fresh state with no thread (at construction, and in a forked child)."""
        self._owner = os.getpid()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._first = threading.Event()
        self._thread: threading.Thread | None = None
        self._latest: dict[str, Any] | None = None
        self._window: list[dict[str, Any]] = []

    @property
    def running(self) -> bool:
        """Whether the timer thread of this process is alive."""
        return self._owner == os.getpid() and self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the timer thread now (``sample()`` does it when not done yet)."""
        if self._owner != os.getpid():  # forked: the parent's thread is not ours
            self._reset()
        with self._lock:
            if self._closed or self._thread is not None:
                return
            self._thread = threading.Thread(
                target=self._run,
                args=(self._stop, self._pid or os.getpid()),
                name="abeja-runtime-sysmetrics",
                daemon=True,
            )
            self._thread.start()

    def _run(self, stop: threading.Event, root_pid: int) -> None:
        try:
            probe = _Probe(root_pid)
        except psutil.Error as exc:
            logger.debug("system metrics unavailable: %s", exc)
            self._first.set()
            return
        first = True
        try:
            while not stop.is_set():
                began = time.monotonic()
                try:
                    taken: dict[str, Any] | None = probe.sample()
                except Exception as exc:  # metrics are extra: log, keep the timer
                    logger.debug("system metrics sample failed: %s", exc)
                    taken = None
                if taken is not None:
                    with self._lock:
                        self._latest = taken
                        self._window.append(taken)
                self._first.set()
                if first:
                    first = False
                    if self._gpu_wanted and not stop.is_set():
                        probe.gpus = _GpuProbe.open(self._nvml)
                stop.wait(max(0.0, self.interval - (time.monotonic() - began)))
        finally:
            probe.close()

    def sample(self) -> dict[str, Any]:
        """The latest sample, with ``mean`` and ``max`` since the previous call.

        Returns at once, except the first call of an object, which waits up to
        ``FIRST_SAMPLE_WAIT`` seconds for the timer's first sample. Without any sample
        (closed before one, or the process is gone) only ``samples`` (0) and
        ``interval_s`` are there. The document is a new dict, the caller's to keep.
        """
        self.start()
        if not self._closed and not self._first.is_set():
            self._first.wait(FIRST_SAMPLE_WAIT)
        with self._lock:
            latest = self._latest
            window, self._window = self._window, []
        if latest is None:
            return {"samples": 0, "interval_s": self.interval}
        covered = window or [latest]
        mean, peak = _aggregate(covered)
        document = {key: value for key, value in latest.items() if key != "gpus"}
        if "gpus" in latest:
            document["gpus"] = [dict(gpu) for gpu in latest["gpus"]]
        document["mean"] = mean
        document["max"] = peak
        document["samples"] = len(covered)
        document["interval_s"] = self.interval
        return document

    def close(self) -> None:
        """Stop the timer thread (NVML is shut down on it). Later samples stay the last."""
        self._closed = True
        self._stop.set()
        thread = self._thread
        if (
            thread is not None
            and self._owner == os.getpid()
            and thread is not threading.current_thread()
        ):
            thread.join(CLOSE_WAIT)
