"""Peak memory of a run: the CUDA allocator's peak, or the process's resident set on CPU."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import threading

import psutil
import torch


# psutil reads the resident set; it has no resettable peak, so the peak comes from the
# kernel's high-water mark where Linux offers one (a sampling thread preempts OpenMP workers
# spinning at barriers and slows 2-thread inference, so it is only the fallback).
def _reset_high_water_mark() -> bool:
    """Reset this process's peak RSS (Linux ``clear_refs`` 5); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _high_water_mark() > 0
    except OSError:
        return False


def _high_water_mark() -> int:
    """Peak RSS in bytes since the last reset (``VmHWM``), 0 if unknown."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _rss_bytes() -> int:
    return psutil.Process().memory_info().rss


def _trim_heap() -> None:
    """Give freed heap back to the OS so the baseline RSS is what is really in use (glibc)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class PeakMemory:
    """Peak memory above the level at entry, in MiB (``peak_mib``).

    On CUDA: the allocator's ``max_memory_allocated``. On CPU: the kernel's resident-set
    high-water mark (``VmHWM``, reset at entry through ``/proc/self/clear_refs``), so no thread
    competes with the timed run; where that is unavailable, the RSS (psutil) sampled by a
    background thread every ``interval`` seconds.
    """

    def __init__(self, device: torch.device | str, interval: float = 0.005) -> None:
        self.device = torch.device(device)
        self.interval = interval
        self.peak_mib = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            return self
        gc.collect()
        _trim_heap()
        self._base = self._peak = _rss_bytes()
        if not _reset_high_water_mark():
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, _rss_bytes())

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        elif self._thread is None:
            peak = max(_high_water_mark(), _rss_bytes())
        else:
            self._stop.set()
            self._thread.join()
            peak = max(self._peak, _rss_bytes())
        self.peak_mib = max(0, peak - self._base) / 2**20


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
