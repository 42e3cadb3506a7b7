"""Process-wide settings for fast, reproducible training, and what entry points read from the
environment; call from entry points only.

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
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pipeline import paths

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


@dataclass(frozen=True)
class Environment:
    """What entry points read from the process environment, read in one place (`environment`)
    and passed down as plain values: nothing below the entry points reads `os.environ`."""

    dvc_root: str | None  # DVC_ROOT: the real repo root, also for queued `dvc exp` runs
    dvc_exp_name: str | None  # DVC_EXP_NAME: the experiment `dvc exp run` is running
    tracking_uri: str | None  # MLFLOW_TRACKING_URI: overrides tracking.uri
    blas_threads: str  # OPENBLAS_NUM_THREADS as set ("default" when unset)
    sweep: str | None  # PIPELINE_SWEEP: the sweep a Hydra job belongs to (pipeline.sweep)
    sweep_parent: str | None  # PIPELINE_SWEEP_PARENT_RUN_ID: that sweep's parent run
    sweep_launcher: int | None  # PIPELINE_SWEEP_LAUNCHER_PID: a local launcher to die with
    slurm_job: str | None  # in a Slurm job: its id, <array>_<task> for an array's task

    @property
    def root(self) -> Path:
        return paths.repo_root(dvc_root=self.dvc_root)

    def store_uri(self, configured: str | None) -> str:
        """The tracking URI: MLFLOW_TRACKING_URI, else `configured` (tracking.uri), else the
        absolute SQLite store at the repo root."""
        return self.tracking_uri or configured or paths.default_store(self.root)


SWEEP_VARS = ("PIPELINE_SWEEP", "PIPELINE_SWEEP_PARENT_RUN_ID", "PIPELINE_SWEEP_LAUNCHER_PID")


def environment(env: Mapping[str, str] | None = None) -> Environment:
    """Read the variables the pipeline uses from `env` (default: this process's)."""
    env = os.environ if env is None else env
    return Environment(
        dvc_root=env.get("DVC_ROOT") or None,
        dvc_exp_name=env.get("DVC_EXP_NAME") or None,
        tracking_uri=env.get("MLFLOW_TRACKING_URI") or None,
        blas_threads=env.get("OPENBLAS_NUM_THREADS", "default"),
        sweep=env.get(SWEEP_VARS[0]) or None,
        sweep_parent=env.get(SWEEP_VARS[1]) or None,
        sweep_launcher=int(env[SWEEP_VARS[2]]) if env.get(SWEEP_VARS[2]) else None,
        slurm_job=_slurm_job(env),
    )


def _slurm_job(env: Mapping[str, str]) -> str | None:
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID") or None


def exit_with(pid: int, poll_s: float = 0.5) -> threading.Thread:
    """End this process (exit 130) as soon as process `pid` is gone: a sweep job run by a local
    launcher dies with it. Its private tracking server is gone then too, so nothing more can be
    logged; the run is left RUNNING for `python -m pipeline.runs close-stale`."""

    def watch() -> None:
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                print(f"sweep launcher (pid {pid}) is gone: this job stops", file=sys.stderr)
                os._exit(130)
            except PermissionError:
                pass  # alive, another user's
            time.sleep(poll_s)

    thread = threading.Thread(target=watch, name="exit-with-launcher", daemon=True)
    thread.start()
    return thread


class NotInProject(RuntimeError):
    """The working directory is not inside this project (no dvc.yaml and conf/ above it)."""


def enter_project(start: Path | None = None) -> Path:
    """Change to the project's root (the nearest folder at or above `start` holding dvc.yaml
    and conf/config.yaml) and return it, so that every relative path (params.yaml, data/,
    outputs/, experiments/) means the same from any subfolder."""
    start = (Path.cwd() if start is None else Path(start)).resolve()
    for folder in (start, *start.parents):
        if (folder / "dvc.yaml").is_file() and (folder / "conf" / "config.yaml").is_file():
            os.chdir(folder)
            return folder
    raise NotInProject(f"{start} is not inside the project: cd into the repository first")
