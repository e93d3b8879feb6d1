"""Timing and memory helpers shared by every benchmark (``from benchmarks.timing import ...``).

Device work is asynchronous: :func:`synchronize` waits for the device, so a host clock read after it
measures finished work (:func:`time_calls` for repeated calls, :class:`Laps` for the stages of one run);
:func:`device_mark` / :func:`elapsed_ms` time a stretch on the device's stream without waiting in between.
:class:`PeakMemory` measures the peak memory of a stretch of work; :func:`summarize_ms` gives the median and
spread of repeated timings; :func:`cpu_seconds` the CPU time of this process and its workers.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import math
import platform
import resource
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import torch


def synchronize(device: torch.device | str) -> None:
    """Wait for all queued work on ``device`` (no-op on the CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device | str) -> str:
    """The GPU's name, or the CPU and its torch thread count."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} torch threads"


def summarize_ms(times_ms: Sequence[float]) -> dict[str, float]:
    """Median, mean, p10, p90, min and max of repeated timings (milliseconds); p10/p90 by nearest rank."""
    ordered = sorted(times_ms)
    count = len(ordered)
    return {
        "n": count,
        "median": statistics.median(ordered),
        "mean": statistics.fmean(ordered),
        "p10": ordered[max(0, math.ceil(0.1 * count) - 1)],
        "p90": ordered[max(0, math.ceil(0.9 * count) - 1)],
        "min": ordered[0],
        "max": ordered[-1],
    }


def time_calls(function: Callable[[], object], device: torch.device | str, repeat: int, warmup: int = 1) -> list[float]:
    """Milliseconds of ``repeat`` calls of ``function`` after ``warmup`` untimed ones, synchronised around each."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeat):
        synchronize(device)
        start = time.perf_counter()
        function()
        synchronize(device)
        times.append((time.perf_counter() - start) * 1e3)
    return times


class Laps:
    """Host milliseconds of named stages, ``device`` waited for at every mark.

    :meth:`start` sets the mark; :meth:`lap` appends the milliseconds since the mark to ``times[name]`` and
    moves the mark there (so consecutive laps tile the run; call :meth:`start` again to skip untimed work).
    """

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = device
        self.times: dict[str, list[float]] = defaultdict(list)
        self._mark = 0.0

    def start(self) -> None:
        synchronize(self.device)
        self._mark = time.perf_counter()

    def lap(self, name: str) -> None:
        synchronize(self.device)
        now = time.perf_counter()
        self.times[name].append((now - self._mark) * 1e3)
        self._mark = now


def device_mark(device: torch.device):
    """A point in time: a recorded CUDA event on the current stream (no wait), or the host clock on the CPU."""
    if device.type == "cuda":
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event
    return time.perf_counter()


def elapsed_ms(start, end) -> float:
    """Milliseconds between two :func:`device_mark` results (waits for the ``end`` event on CUDA)."""
    if isinstance(start, float):
        return (end - start) * 1e3
    end.synchronize()
    return start.elapsed_time(end)


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and its finished children (worker processes)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class PeakMemory:
    """Peak memory of a stretch of work above the level at :meth:`start` (see the module docstring)."""

    def __init__(self, device: torch.device):
        self.device = device
        self._libc = _libc()
        self._baseline = 0
        self.resettable = device.type == "cuda" or self._reset_high_water_mark()
        if device.type == "cuda":
            self.method = "torch.cuda.max_memory_allocated (tensor memory)"
        else:
            current = "psutil" if _psutil() is not None else "/proc/self/statm"
            self.method = (
                f"peak RSS: getrusage ru_maxrss after resetting the high-water mark (/proc/self/clear_refs) "
                f"minus RSS before ({current})"
                if self.resettable
                else "getrusage ru_maxrss, process-wide high-water mark NOT resettable: deltas are lower bounds"
            )

    def start(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self._baseline = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        if self._libc is not None:
            self._libc.malloc_trim(0)  # give freed heap pages back, so the RSS before is the live memory
        if self.resettable:
            self._reset_high_water_mark()
            self._baseline = _current_rss_bytes()
        else:
            self._baseline = _max_rss_bytes()

    def stop(self) -> int:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) - self._baseline
        return max(_max_rss_bytes() - self._baseline, 0)

    @staticmethod
    def _reset_high_water_mark() -> bool:
        try:
            Path("/proc/self/clear_refs").write_text("5")  # Linux >= 4.0: reset the peak RSS
        except OSError:
            return False
        return True


def _libc():
    name = ctypes.util.find_library("c")
    with contextlib.suppress(OSError):
        libc = ctypes.CDLL(name)
        if hasattr(libc, "malloc_trim"):
            return libc
    return None


def _psutil():
    try:
        import psutil
    except ImportError:
        return None
    return psutil


def _current_rss_bytes() -> int:
    psutil = _psutil()
    if psutil is not None:
        return psutil.Process().memory_info().rss
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize()


def _max_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux
