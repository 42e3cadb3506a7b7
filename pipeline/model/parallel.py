"""Several threads for one run, with results that do not depend on how many.

The work is cut into parts that depend on the work alone (`parts`: a batch into a fixed number of
slices of samples; an evaluation into fixed-size batches), never on the thread count. Threads
only decide who runs which part, and the parts' results are combined in part order by the
caller, so 1, 2 or 32 threads give the same bytes.

Why threads work here: NumPy releases the GIL inside its loops and around its BLAS calls, which
is where a part spends its time. BLAS itself runs on one thread (`pipeline.runtime`): a part's
products then run in the thread that asked for them, with the same kernels and the same order
whichever thread that is.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

_pools: dict[int, Workers] = {}
_lock = threading.Lock()


def parts(n: int, count: int) -> list[slice]:
    """Cut range(n) into min(count, n) consecutive slices whose sizes differ by at most one, the
    longer ones first (n = 50, count = 4: 13, 13, 12, 12). A function of n and count only."""
    count = max(1, min(count, n))
    size, longer = divmod(n, count)
    bounds = [i * size + min(i, longer) for i in range(count + 1)]
    return [slice(a, b) for a, b in itertools.pairwise(bounds)]


def workers(threads: int) -> Workers:
    """The process's pool of `threads` threads, made on first use and kept: idle threads cost
    nothing, and a run's parts, evaluations and final test all use the same threads."""
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    with _lock:
        if threads not in _pools:
            _pools[threads] = Workers(threads)
        return _pools[threads]


class Workers:
    """A pool of `threads` threads that runs parts (`map`); with one thread, the calling thread
    runs them itself. `workers(threads)` gives the process's shared one."""

    def __init__(self, threads: int) -> None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.threads = threads
        self._pool = ThreadPoolExecutor(threads, "pipeline-part") if threads > 1 else None

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """[fn(item) for item in items], the items run concurrently; results in item order. An
        exception in one part is raised here once every part has ended."""
        if self._pool is None:
            return [fn(item) for item in items]
        futures = [self._pool.submit(fn, item) for item in items]
        errors = [f.exception() for f in futures]  # waits for every part, failed or not
        for error in errors:
            if error is not None:
                raise error
        return [f.result() for f in futures]
