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
- Portable mode (on unless PIPELINE_PORTABLE=0): the bytes of a result must not depend on the
  CPU's SIMD level. NumPy picks, per function, the widest code path the CPU runs (AVX-512's
  float64 `exp` differs in the last bits from the AVX2 path) and OpenBLAS picks a kernel
  family per CPU (SkylakeX on AVX-512, Haswell on AVX2: different blocking and accumulation
  order). Portable mode pins both to x86-64-v3 (AVX2 + FMA: Intel since Haswell, 2013, AMD
  since Excavator, 2015), the paths an AVX2-only machine takes by itself, by setting
  `PORTABLE_ENV` before NumPy loads (`portable_simd`, called by `import pipeline`). The run
  records the mode and the paths that really ran (`simd_paths`), so `pipeline.verify` compares
  like with like. Measured cost and the check that the bytes equal an AVX2 machine's: README,
  "Same bytes on any x86-64 CPU".
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import sys
import threading
import time
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path

from pipeline import paths

BLAS_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # from glibc's <malloc.h>

PORTABLE_VAR = "PIPELINE_PORTABLE"  # "0" turns portable mode off; set to "1"/"0" once resolved
PORTABLE_ENV = {
    # OpenBLAS (NumPy's wheels build it with DYNAMIC_ARCH): the AVX2 + FMA kernels, which it
    # also picks by itself on AVX2 CPUs (an AMD Zen's "Zen" core type maps to them too).
    "OPENBLAS_CORETYPE": "Haswell",
    # NumPy 2.4 dispatches by x86-64 level: X86_V3 (AVX2, FMA3), X86_V4 (AVX-512 Skylake),
    # AVX512_ICL, AVX512_SPR. It only accepts these group names here (single features such as
    # AVX512F are silently ignored), and disabling a level the CPU lacks is allowed.
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
}
_OFF = ("0", "false", "off", "no")


def default_single_thread_blas() -> None:
    """Set the BLAS thread variables to 1 where unset (effective only before NumPy loads)."""
    for var in BLAS_THREAD_VARS:
        os.environ.setdefault(var, "1")


def _cpuinfo_field(text: str, name: str) -> str:
    return next(
        (line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith(name)),
        "",
    )


def cpu(cpuinfo: Path = Path("/proc/cpuinfo")) -> tuple[str, str]:
    """This CPU's model name and widest SIMD level as the CPU itself offers it, whatever
    portable mode pins: ("AMD EPYC", "AVX-512"), or "AVX2", "SSE4.2", ... ("?" if unknown)."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor() or platform.machine(), "?"
    flags = set(_cpuinfo_field(text, "flags").split())
    levels = (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX"), ("sse4_2", "SSE4.2"))
    level = next((name for flag, name in levels if flag in flags), "?")
    return _cpuinfo_field(text, "model name") or platform.machine(), level


def _has_x86_64_v3(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this CPU runs AVX2 + FMA code (the pinned paths): x86-64, and where Linux says
    which flags it has, avx2 and fma among them."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return True  # not Linux: every x86-64 Mac or PC of the last decade has both
    flags = next(
        (line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")),
        [],
    )
    return {"avx2", "fma"} <= set(flags)


def portable_simd(env: MutableMapping[str, str] | None = None) -> bool:
    """Portable mode, unless PIPELINE_PORTABLE=0: set `PORTABLE_ENV` in `env` (default: this
    process's environment, inherited by its children); effective only before NumPy loads.

    Leaves PIPELINE_PORTABLE at "1" when the pins are set, "0" when the mode is off or the CPU
    lacks AVX2 + FMA (forcing Haswell kernels there would crash). Returns whether it is on.
    """
    env = os.environ if env is None else env
    on = env.get(PORTABLE_VAR, "1").strip().lower() not in _OFF and _has_x86_64_v3()
    if on:
        env.update(PORTABLE_ENV)
    env[PORTABLE_VAR] = "1" if on else "0"
    return on


def with_portable(env: Mapping[str, str], on: bool) -> dict[str, str]:
    """A copy of `env` for a child process in portable mode `on`; off also drops the pins that
    a portable parent left in the environment (they would otherwise still apply)."""
    child = {k: v for k, v in env.items() if not (not on and PORTABLE_ENV.get(k) == v)}
    child[PORTABLE_VAR] = "1" if on else "0"
    return child


def simd_paths() -> str:
    """The SIMD code paths this process really runs, read after NumPy loaded: NumPy's widest
    enabled dispatch target and OpenBLAS's kernel family, e.g. "numpy X86_V3, openblas Haswell".
    """
    try:
        from numpy._core._multiarray_umath import (
            __cpu_baseline__,
            __cpu_dispatch__,
            __cpu_features__,
        )

        enabled = [t for t in __cpu_dispatch__ if __cpu_features__.get(t)]
        numpy_level = enabled[-1] if enabled else f"baseline {__cpu_baseline__[-1]}"
    except (ImportError, IndexError):
        numpy_level = "unknown"
    import numpy  # noqa: F401  (loads OpenBLAS, so that threadpoolctl finds it)
    from threadpoolctl import threadpool_info

    cores = [
        i.get("architecture", "?") for i in threadpool_info() if i["internal_api"] == "openblas"
    ]
    return f"numpy {numpy_level}, openblas {cores[0] if cores else 'none'}"


def inherited() -> dict[str, str]:
    """A copy of this process's environment, for the child processes an entry point starts."""
    return dict(os.environ)


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
    portable: bool  # PIPELINE_PORTABLE: portable mode (resolved by `portable_simd`)
    sweep: str | None  # PIPELINE_SWEEP: the sweep a Hydra job belongs to (pipeline.sweep)
    sweep_parent: str | None  # PIPELINE_SWEEP_PARENT_RUN_ID: that sweep's parent run
    sweep_launcher: int | None  # PIPELINE_SWEEP_LAUNCHER_PID: a local launcher to die with
    slurm_job: str | None  # in a Slurm job: its id, <array>_<task> for an array's task
    slurm_cpus: int | None  # in a Slurm job: the CPUs of its task (SLURM_CPUS_PER_TASK, else
    # SLURM_CPUS_ON_NODE)

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
        portable=env.get(PORTABLE_VAR, "0") == "1",
        sweep=env.get(SWEEP_VARS[0]) or None,
        sweep_parent=env.get(SWEEP_VARS[1]) or None,
        sweep_launcher=int(env[SWEEP_VARS[2]]) if env.get(SWEEP_VARS[2]) else None,
        slurm_job=_slurm_job(env),
        slurm_cpus=_slurm_cpus(env),
    )


def _slurm_job(env: Mapping[str, str]) -> str | None:
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID") or None


def _slurm_cpus(env: Mapping[str, str]) -> int | None:
    if not env.get("SLURM_JOB_ID"):
        return None
    for var in ("SLURM_CPUS_PER_TASK", "SLURM_CPUS_ON_NODE"):
        if env.get(var, "").isdigit() and int(env[var]) >= 1:
            return int(env[var])
    return 1  # Slurm's default allocation: one CPU per task


def available_cores() -> int:
    """The cores this process may run on: its CPU affinity, which taskset, a cgroup's cpuset
    and Slurm's task binding narrow (`os.cpu_count` where the platform has no affinity)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def training_threads(configured: int | None, *, cores: int, slurm_cpus: int | None = None) -> int:
    """The threads of one training run (`pipeline.model.parallel`; its results do not depend on
    them): `configured` (train.threads) when set; else, in a Slurm job, the CPUs of its task;
    else `cores`, the cores the run may use (`available_cores`, or a sweep job's share of them,
    see `pipeline.train`). At least 1."""
    if configured is not None:
        return configured
    if slurm_cpus is not None:
        return slurm_cpus
    return max(1, cores)


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
