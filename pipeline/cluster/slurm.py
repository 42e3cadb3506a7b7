"""Slurm, seen from the host that launches a `hydra/launcher=submitit_slurm` sweep.

- `check_controller`: refuse the sweep, before any job, when `scontrol ping` does not find the
  controller (Slurm's client reads SLURM_CONF, or /etc/slurm/slurm.conf).
- `JobWatch`: the launcher waits on submitit, which learns a job's end from its result file or
  from `sacct`. A job killed from outside (scancel, SIGKILL, a lost node) writes no result, and
  without an accounting database `sacct` fails, so submitit reports UNKNOWN and would wait
  forever. The watch follows the sweep's jobs in `squeue -t all` (which shows ended jobs for
  MinJobAge, 300 s by default) and, once every job has ended and the launcher is still waiting
  after a grace period, interrupts it: SIGUSR1 to the main thread, whose handler raises
  SystemExit naming the lost jobs (the sweep callback then ends the parent run at exit). It
  also tells, per job, the last state Slurm showed, and waits for every job to end.

Jobs are found in submitit's folder (`hydra.launcher.submitit_folder`, default
`<sweep dir>/.submitit/%j`): one `<job id>_submitted.pkl` per job, job ids `<array>_<task>`.
Sorted by array then task, their positions are the Hydra job numbers (one array per batch of
jobs, submitted in order).
"""

from __future__ import annotations

import logging
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# squeue states of a job that has not ended yet
ACTIVE = frozenset(
    [
        "PENDING",
        "CONFIGURING",
        "RUNNING",
        "COMPLETING",
        "SUSPENDED",
        "REQUEUED",
        "REQUEUE_FED",
        "REQUEUE_HOLD",
        "RESIZING",
        "SIGNALING",
        "STAGE_OUT",
        "STOPPED",
        "RESV_DEL_HOLD",
    ]
)
GONE = "GONE"  # ended long enough ago to have left squeue (MinJobAge)
_ID = re.compile(r"^(\d+)(?:_(\d+))?_submitted\.pkl$")


class SlurmError(RuntimeError):
    """Slurm cannot be used from here; the message says why and how to fix it."""


def _run(cmd: list[str], timeout_s: float) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SlurmError(f"`{' '.join(cmd)}` failed: {exc}") from None


def check_controller(timeout_s: float = 20.0) -> None:
    """Raise SlurmError unless the Slurm client is installed and its controller answers."""
    if shutil.which("sbatch") is None or shutil.which("scontrol") is None:
        raise SlurmError(
            "no Slurm client here (sbatch, scontrol): install Debian's slurm-client and point "
            "SLURM_CONF at the cluster's slurm.conf (a local cluster: scripts/slurm-local up)"
        )
    done = _run(["scontrol", "ping"], timeout_s)
    said = " ".join((done.stdout + done.stderr).split())
    if done.returncode != 0 or " is UP" not in said:
        raise SlurmError(
            f"the Slurm controller does not answer (`scontrol ping`: {said or 'no output'}): "
            "start it (a local cluster: scripts/slurm-local up), or set SLURM_CONF to the "
            "cluster's slurm.conf"
        )


def _key(job_id: str) -> tuple[int, int]:
    array, _, task = job_id.partition("_")
    return int(array), int(task or 0)


def submitted_jobs(folder: str, since: float = 0.0) -> list[str]:
    """Ids of the jobs submitit submitted under `folder` (a submitit_folder pattern, `%j` for the
    job id) since `since` (epoch seconds), in Hydra job order."""
    base = Path(folder.split("%", 1)[0])
    if not base.is_dir():
        return []
    ids = []
    for pkl in base.rglob("*_submitted.pkl"):
        match = _ID.match(pkl.name)
        try:
            recent = pkl.stat().st_mtime >= since
        except OSError:  # moved or removed meanwhile
            continue
        if match and recent:
            ids.append(pkl.name.removesuffix("_submitted.pkl"))
    return sorted(set(ids), key=_key)


def job_states(ids: list[str], timeout_s: float = 20.0) -> dict[str, str]:
    """{job id: state} for the jobs squeue still knows (running, pending or recently ended)."""
    arrays = sorted({i.split("_", 1)[0] for i in ids})
    if not arrays:
        return {}
    cmd = ["squeue", "-h", "-r", "-t", "all", "-o", "%i|%T", "-j", ",".join(arrays)]
    done = _run(cmd, timeout_s)
    if done.returncode != 0 and "Invalid job id" not in done.stderr:
        raise SlurmError(f"`squeue` failed: {' '.join(done.stderr.split())}")
    states = {}
    for line in done.stdout.splitlines():
        job, _, state = line.strip().partition("|")
        states[job] = state.split()[0] if state else "UNKNOWN"
    return states


class JobWatch:
    """Follows a sweep's Slurm jobs in a background thread (see the module's docstring).

    Inputs: folder: the launcher's submitit_folder; on_stuck: called once, from the watch's
    thread, when every job has ended and `done()` was not called within grace_s (default:
    interrupt the main thread, see `start`); poll_s: how often squeue is asked.
    """

    def __init__(
        self,
        folder: str,
        on_stuck: Callable[[], None] | None = None,
        *,
        poll_s: float = 2.0,
        grace_s: float = 20.0,  # submitit itself allows 15 s for a result file to appear
    ) -> None:
        self.folder = folder
        self.on_stuck = on_stuck or self._interrupt_main
        self.poll_s = poll_s
        self.grace_s = grace_s
        self.since = time.time() - 1.0  # submission files older than the sweep are not its own
        self.states: dict[str, str] = {}  # last state seen per job
        self.error: str | None = None  # the last squeue failure, if any
        self._all_ended_at: float | None = None
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="slurm-watch", daemon=True)

    def start(self) -> JobWatch:
        """Start watching; call from the main thread (it installs the SIGUSR1 handler that
        `_interrupt_main` relies on) before the launcher submits."""
        quiet_sacct_warnings()
        self._main = threading.main_thread().ident
        signal.signal(signal.SIGUSR1, self._lost)
        self._thread.start()
        return self

    def _interrupt_main(self) -> None:
        signal.pthread_kill(self._main, signal.SIGUSR1)

    def _lost(self, signum: int, frame: Any) -> None:
        # SystemExit rather than an exception that Hydra would print with its traceback.
        lost = [f"{j} ({s})" for j, s in self.by_job_number().values() if s != "COMPLETED"]
        raise SystemExit(
            f"sweep stopped waiting: Slurm jobs ended without a result: {', '.join(lost)} "
            "(without Slurm accounting submitit cannot see their end and would wait forever)"
        )

    def done(self) -> None:
        """The launcher returned: no need to interrupt it any more."""
        self._done.set()

    def poll(self) -> None:
        ids = submitted_jobs(self.folder, self.since)
        if not ids:
            return
        try:
            seen = job_states(ids)
            self.error = None
        except SlurmError as exc:
            self.error = str(exc)
            return
        with self._lock:
            for job in ids:
                if job in seen:
                    self.states[job] = seen[job]
                elif self.states.get(job, "PENDING") in ACTIVE:
                    # not (or no longer) in squeue; a job just submitted always shows
                    self.states[job] = GONE
            ended = all(s not in ACTIVE for s in self.states.values())
        if not ended:
            self._all_ended_at = None
        elif self._all_ended_at is None:
            self._all_ended_at = time.monotonic()

    def all_ended(self) -> bool:
        with self._lock:
            return bool(self.states) and all(s not in ACTIVE for s in self.states.values())

    def active(self) -> dict[str, str]:
        """{job id: state} of the jobs that have not ended."""
        with self._lock:
            return {j: s for j, s in self.states.items() if s in ACTIVE}

    def by_job_number(self) -> dict[int, tuple[str, str]]:
        """{Hydra job number: (Slurm job id, last state seen)}."""
        with self._lock:
            ids = sorted(self.states, key=_key)
            return {n: (j, self.states[j]) for n, j in enumerate(ids)}

    def notes(self) -> dict[int, str]:
        """{Hydra job number: "Slurm job <id> <state>"}, for the parent run's failure list."""
        return {n: f"Slurm job {j} {s}" for n, (j, s) in self.by_job_number().items()}

    def wait_ended(
        self, tell: Callable[[dict[str, str]], None] | None = None, tell_after_s: float = 5.0
    ) -> None:
        """Block until every job of the sweep has ended (Ctrl-C stops waiting); if that takes
        longer than tell_after_s, call `tell` once with the jobs still active."""
        start = time.monotonic()
        while True:
            self.poll()
            if self.all_ended() or (not self.states and self.error is None):
                return
            if tell is not None and time.monotonic() - start > tell_after_s:
                tell(self.active())
                tell = None
            time.sleep(1.0)

    def _loop(self) -> None:
        while not self._done.wait(self.poll_s):
            self.poll()
            stuck_for = time.monotonic() - (self._all_ended_at or time.monotonic())
            if self._all_ended_at is not None and stuck_for > self.grace_s:
                if not self._done.is_set():
                    self.on_stuck()
                return


def quiet_sacct_warnings() -> None:
    """Drop submitit's warning, on every poll, that `sacct` failed (no accounting database):
    the sweep does not rely on those states."""
    import submitit  # noqa: F401  (configures its logger on import; the filter goes after)

    logging.getLogger("submitit").addFilter(
        lambda record: "Bypassing sacct error" not in record.getMessage()
    )
