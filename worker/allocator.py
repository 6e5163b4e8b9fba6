"""glibc's malloc, tuned for a process that allocates the same large tensors step after step.

By default glibc serves an allocation above its mmap threshold (dynamic, from 128 KB up) with a fresh mmap, and gives
memory at the top of the heap back to the OS past its trim threshold, so a loop whose activations are megabytes pays
page faults on some passes and not others, depending on what the process allocated before. Measured here
(BENCHMARKS.md): the spec's plain sampling loop (10 MB activations) runs 1.5x faster with both thresholds raised, a
fresh worker's first sampling job 1.6x faster, the worker's steady state the same. PyTorch's CPU tuning guides load
jemalloc or tcmalloc for the same reason; this needs no LD_PRELOAD.
"""

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt(3)
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest on 64-bit: allocations up to this come from the heap
TRIM_THRESHOLD = 1024**3  # freed heap kept for reuse, up to 1 GiB
ENVIRONMENT = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")  # glibc's own settings: they win


def tune_malloc() -> bool:
    """Raises glibc's mmap and trim thresholds for this process; False where it did not (not glibc, or the
    environment sets them)."""
    if sys.platform != "linux" or any(name in os.environ for name in ENVIRONMENT):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):  # another C library (musl has no mallopt)
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
