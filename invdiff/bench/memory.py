"""Peak memory of a block of code: CUDA's allocator peak, or the process's resident set size sampled on CPU."""

from __future__ import annotations

import ctypes
import os
import threading

import torch


class PeakMemory:
    """Peak memory of a ``with`` block, in MB (``peak_mb``), above its value when the block started.

    On CUDA: ``torch.cuda.max_memory_allocated`` over the block minus ``memory_allocated`` at its start.
    On CPU: the largest resident set size (``/proc/self/statm``), sampled every 5 ms by a thread,
    minus the RSS at the start, read after ``malloc_trim(0)`` has handed freed heap back to the
    operating system (so that the block's own allocations show). Approximate: allocations shorter
    than 5 ms can be missed.
    """

    def __init__(self, device: str):
        self.cuda = str(device).startswith("cuda")
        self.peak_mb = float("nan")

    @staticmethod
    def _rss() -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError):
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
            return self
        try:  # hand freed heap back to the OS so that this block's allocations show in RSS
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass
        self._base = self._rss()
        self._peak = self._base
        self._stop = threading.Event()

        def sample():
            while not self._stop.wait(0.005):
                self._peak = max(self._peak, self._rss())

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize()
            self.peak_mb = (torch.cuda.max_memory_allocated() - self._base) / 2**20
            return False
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, self._rss())
        self.peak_mb = (self._peak - self._base) / 2**20
        return False
