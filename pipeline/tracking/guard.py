"""Run a service (a private `mlflow server`) for as long as the process that started it lives.

    python -m pipeline.tracking.guard PARENT_PID -- COMMAND...

The guard leads its own process group and runs COMMAND in it. When the parent dies, even by
kill -9 (the kernel sends the guard SIGTERM: Linux's parent-death signal; elsewhere the guard
notices within a second), or when the guard is told to stop (SIGTERM, SIGINT), it ends the
whole group: SIGTERM, then SIGKILL after 10 s. So a sweep's private tracking server never
outlives the sweep.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import threading
import time

PR_SET_PDEATHSIG = 1  # <sys/prctl.h>
GRACE_S = 10.0


def _parent_death_signal(signum: int) -> None:
    """Ask the kernel to send `signum` to this process when its parent dies (Linux only)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)
    except (OSError, AttributeError, TypeError):
        pass  # not Linux: the watchdog thread below notices instead


def _end_group(proc: subprocess.Popen) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the group signal reaches the guard too
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.killpg(os.getpgrp(), signal.SIGTERM)
    try:
        proc.wait(timeout=GRACE_S)
    except subprocess.TimeoutExpired:
        os.killpg(os.getpgrp(), signal.SIGKILL)


def main(argv: list[str]) -> int:
    parent, command = int(argv[0]), argv[argv.index("--") + 1 :]
    _parent_death_signal(signal.SIGTERM)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    proc = subprocess.Popen(command)
    while proc.poll() is None:
        if stop.is_set() or os.getppid() != parent:  # told to stop, or orphaned
            _end_group(proc)
            break
        time.sleep(0.2)
    return proc.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
