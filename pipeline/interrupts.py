"""Ctrl-C, SIGTERM, SIGUSR1 and SIGUSR2, handled so that an interrupted command leaves a true
account of itself.

SIGUSR1 and SIGUSR2 are what a cluster sends before it stops a job: Slurm sends the signal of
`sbatch --signal` before a time limit, and submitit (Hydra's submitit launcher) asks for SIGUSR2
and requeues the job from its handler of it. Training treats them as it treats SIGTERM (a
checkpoint, then the run ends KILLED), then `pass_on` hands them to the handler that was there
before, so that submitit requeues the job and the next attempt resumes from the checkpoint.

- `raising()`: entry points install it first; a signal then raises `Interrupted` at once
  (SIGTERM's default would end the process with no word), so each entry point can say what it
  left behind.
- `at_safe_points()`: inside it a signal is only noted, and acted on where the code calls
  `check()` (between training batches), never inside a write or one of MLflow's database calls,
  where an exception could turn into an ordinary error. A second signal acts at once.
- `deferred()`: inside it the signals are held back and raised again when the block ends: for
  the moment a group of finished files is renamed into place.
Signals can only be handled in the main thread; elsewhere these do nothing.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

# Handed on to an earlier handler (`pass_on`): the signals a cluster sends before it stops a job.
REQUEUE_SIGNALS = tuple(getattr(signal, n) for n in ("SIGUSR1", "SIGUSR2") if hasattr(signal, n))
SIGNALS = (signal.SIGINT, signal.SIGTERM, *REQUEUE_SIGNALS)


class Interrupted(BaseException):
    """A signal arrived. A BaseException, like KeyboardInterrupt: `except Exception` does not
    swallow it. `run_id` names the MLflow run it ended, if any (set by
    `pipeline.tracking.runs.run`); `safe`: raised at a safe point (`check()`), where the work's
    state is whole; `checkpoint`: what was saved before the run ended, if anything (set by
    training)."""

    def __init__(self, signum: int, *, safe: bool = False) -> None:
        self.signum = signum
        self.safe = safe
        self.run_id: str | None = None
        self.checkpoint: str | None = None
        super().__init__(f"interrupted by {signal.Signals(signum).name}")


_pending: list[int] = []  # signals noted inside `at_safe_points`, not yet acted on


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _raise_now(signum: int, frame: Any) -> None:
    raise Interrupted(signum)


def _note(signum: int, frame: Any) -> None:
    _pending.append(signum)
    if len(_pending) > 1:  # asked twice: stop now, wherever this is (not a safe point)
        first = _pending[0]
        _pending.clear()
        raise Interrupted(first)


@contextlib.contextmanager
def _handlers(handler: Any) -> Iterator[None]:
    if not _main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    for s in SIGNALS:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


def raising() -> contextlib.AbstractContextManager[None]:
    """Any of the signals raises `Interrupted` at once, for the whole block."""
    return _handlers(_raise_now)


@contextlib.contextmanager
def at_safe_points() -> Iterator[None]:
    """Signals are noted and raised as `Interrupted` at the next `check()` (a second one at
    once). Whatever is still pending when the block ends is left for `take()` or `check()`."""
    _pending.clear()
    with _handlers(_note):
        yield


def check() -> None:
    """A safe point: raise `Interrupted` if a signal was noted."""
    if _pending:
        signum = _pending[0]
        _pending.clear()
        raise Interrupted(signum, safe=True)


def pending() -> bool:
    """Whether a signal was noted and not yet acted on."""
    return bool(_pending)


def pass_on(signum: int) -> None:
    """Hand SIGUSR1/SIGUSR2 to the handler installed before this module's (submitit's, in a
    Slurm job: it requeues the job, then ends the process with SystemExit); nothing for other
    signals, or when that handler is the default or this module's."""
    if signum not in REQUEUE_SIGNALS or not _main_thread():
        return
    handler = signal.getsignal(signum)
    if callable(handler) and handler not in (_note, _raise_now):
        handler(signum, None)


def take() -> int | None:
    """The signal noted and not yet acted on, if any; clears it (the caller acts on it)."""
    signum = _pending[0] if _pending else None
    _pending.clear()
    return signum


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold the signals back during a short block: they are noted, and raised again, once each
    in the order they came, to the handlers in place when it ends.

    Not the kernel's signal mask: it is per thread, and a process-directed signal goes to any
    thread that does not block it (a BLAS, training or tqdm thread), whose C handler then has
    the main thread run the Python handler inside the block anyway."""
    if not _main_thread():
        yield
        return
    held: list[int] = []

    def hold(signum: int, frame: Any) -> None:
        if signum not in held:
            held.append(signum)

    try:
        with _handlers(hold):
            yield
    finally:
        for signum in held:  # _handlers restored the previous handlers first
            signal.raise_signal(signum)
