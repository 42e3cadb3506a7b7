"""Process-wide settings for fast, reproducible training; call from entry points only.

- BLAS threads: one. Results of a BLAS product depend on its thread count, and on two shared
  cores two threads were many times slower whenever another process was busy. The variables only
  take effect if set before NumPy is first imported, so entry points set them at the very top
  (as `pipeline.bench` does); the Makefile exports them too.
- malloc (glibc only): every training step allocates a few arrays of 1-9 MB. By default glibc
  serves those with fresh mmap pages and returns them to the OS on free, so every step pays the
  kernel's page faults and zeroing again: 15-20% of a float64 epoch on these machines. Raising
  the mmap and trim thresholds keeps the memory in the heap for reuse (RSS then stays at the
  peak, a few tens of MB above the data). Results are unchanged: only addresses differ.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

BLAS_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # from glibc's <malloc.h>


def default_single_thread_blas() -> None:
    """Set the BLAS thread variables to 1 where unset (effective only before NumPy loads)."""
    for var in BLAS_THREAD_VARS:
        os.environ.setdefault(var, "1")


def tune_malloc(mmap_threshold: int = 256 << 20, trim_threshold: int = 1 << 30) -> bool:
    """Keep freed large blocks in glibc's heap for reuse. Returns False where not glibc."""
    path = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(path)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(
        mallopt(_M_TRIM_THRESHOLD, trim_threshold)
    )
