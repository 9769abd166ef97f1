"""Memory as Prometheus series, read when /metrics is scraped (seed 002's release loop watches them):

    r1_process_resident_memory_bytes{process="server", variant=""}       the HTTP process
    r1_process_resident_memory_bytes{process="inference", variant=V}      each variant's worker process
    r1_gpu_memory_used_bytes{gpu="0"}                                     each GPU, all processes (NVML)
    r1_process_gpu_memory_bytes{process, variant, gpu}                    what each of those processes holds

RSS comes from /proc/<pid>/statm (Linux); GPU memory from NVML (`pynvml`, nvidia-ml-py) when it is
installed and a GPU is present, else from torch's caching allocator for the server process when it
runs the model itself (`inference: thread`) on CUDA. Without a GPU the GPU series are absent.
"""
from __future__ import annotations

import logging
import os
import sys
from typing import Callable

from prometheus_client.core import GaugeMetricFamily

log = logging.getLogger(__name__)
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes(pid: int) -> int | None:
    """Resident set size of process `pid` (None where /proc cannot tell: gone, or not Linux)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except (OSError, ValueError, IndexError):
        return None


def _nvml():
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # no driver / no GPU
        return None
    return pynvml


def gpu_memory(pids: dict[int, tuple[str, str]]) -> tuple[list[tuple[str, int]], list[tuple[str, str, str, int]]]:
    """-> ([(gpu, used bytes)], [(process, variant, gpu, bytes)]) for the processes in `pids` (pid ->
    (process, variant)); empty lists without a GPU."""
    nvml = _nvml()
    devices, owned = [], []
    if nvml is not None:
        try:
            for i in range(nvml.nvmlDeviceGetCount()):
                handle = nvml.nvmlDeviceGetHandleByIndex(i)
                devices.append((str(i), int(nvml.nvmlDeviceGetMemoryInfo(handle).used)))
                for proc in nvml.nvmlDeviceGetComputeRunningProcesses(handle):
                    if proc.pid in pids and proc.usedGpuMemory is not None:
                        owned.append((*pids[proc.pid], str(i), int(proc.usedGpuMemory)))
        except Exception as err:  # a driver hiccup must not break /metrics
            log.debug("NVML: %r", err)
        return devices, owned
    torch = sys.modules.get("torch")  # only when the model runs here: importing torch costs seconds
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        me = pids.get(os.getpid(), ("server", ""))
        for i in range(torch.cuda.device_count()):
            owned.append((*me, str(i), int(torch.cuda.memory_reserved(i))))
    return devices, owned


def processes(st) -> dict[int, tuple[str, str]]:
    """pid -> (process, variant) of the server and each variant's inference process."""
    out = {os.getpid(): ("server", "")}
    for name, engine in st.engines.items():
        worker = engine.worker
        if worker is not None and worker.pid is not None:
            out[worker.pid] = ("inference", name)
    return out


class ResourceCollector:
    """A Prometheus collector of the series above; `pids()` says which processes to read."""

    def __init__(self, pids: Callable[[], dict[int, tuple[str, str]]]):
        self.pids = pids

    def collect(self):
        pids = self.pids()
        rss = GaugeMetricFamily("r1_process_resident_memory_bytes", "Resident memory of the server process and "
                                "of each variant's inference process.", labels=["process", "variant"])
        for pid, (process, variant) in pids.items():
            value = rss_bytes(pid)
            if value is not None:
                rss.add_metric([process, variant], value)
        yield rss
        devices, owned = gpu_memory(pids)
        if devices:
            used = GaugeMetricFamily("r1_gpu_memory_used_bytes", "Memory in use on each GPU (all processes).",
                                     labels=["gpu"])
            for gpu, value in devices:
                used.add_metric([gpu], value)
            yield used
        if owned:
            mine = GaugeMetricFamily("r1_process_gpu_memory_bytes", "GPU memory held by the server's processes.",
                                     labels=["process", "variant", "gpu"])
            for process, variant, gpu, value in owned:
                mine.add_metric([process, variant, gpu], value)
            yield mine

    def describe(self):  # no samples at registration (it would read /proc and NVML once for nothing)
        return []
