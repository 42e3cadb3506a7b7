"""MLflow at the edge: where the store is, one experiment created once, one run per training.

- Store: `MLFLOW_TRACKING_URI` if set, else the config's `tracking.uri`, else an absolute
  `sqlite:///<repo root>/mlflow.db`. The repo root is `DVC_ROOT` when DVC runs the stage (queued
  `dvc exp` runs execute in a temporary copy of the repo, where a relative store would be lost),
  else the git top level, else the working directory.
- Artifacts: `<repo root>/mlartifacts/<experiment>` for experiments created here, fixed at
  creation as an absolute path (MLflow would otherwise use the creating process's cwd).
- The experiment is looked up or created once and its id passed on: `mlflow.set_experiment`
  racing across processes was seen to file runs under Default silently.
- A run ends FINISHED only when everything was logged; an exception ends it FAILED, Ctrl-C or
  SIGTERM ends it KILLED.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import mlflow
from mlflow.entities import Metric, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

MAX_BATCH = 1000  # MLflow's limit of metrics per log_batch call


class TrackingError(RuntimeError):
    """The tracking store cannot be used; the message says which and how to fix it."""


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM so the run can end KILLED and clean up."""


def repo_root() -> Path:
    if os.environ.get("DVC_ROOT"):
        return Path(os.environ["DVC_ROOT"]).resolve()
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        out = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=True
        )
        return Path(out.stdout.strip()).resolve()
    return Path.cwd().resolve()


def resolve_uri(configured: str | None = None) -> str:
    """The tracking URI to use (environment > config > absolute SQLite at the repo root)."""
    return (
        os.environ.get("MLFLOW_TRACKING_URI")
        or configured
        or f"sqlite:///{repo_root() / 'mlflow.db'}"
    )


def check_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast, before any training, when an HTTP tracking server does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s) as resp:
            resp.read()
    except (urllib.error.URLError, OSError) as exc:
        raise TrackingError(
            f"MLflow tracking server {uri} is unreachable ({getattr(exc, 'reason', exc)}). "
            "Start it (see README, 'MLflow UI'), or unset MLFLOW_TRACKING_URI / tracking.uri to "
            "log to the local SQLite store."
        ) from None


# Marks the experiment as model training, so the MLflow UI opens it on its runs, not on the
# GenAI overview that MLflow 3 shows by default.
KIND = {"mlflow.experimentKind": "custom_model_development"}


def ensure_experiment(client: MlflowClient, name: str) -> str:
    """Id of experiment `name`, created (with an absolute artifact location) if missing."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.tags.get("mlflow.experimentKind") is None:
            client.set_experiment_tag(exp.experiment_id, *next(iter(KIND.items())))
        return exp.experiment_id
    location = (repo_root() / "mlartifacts" / name).as_uri()
    try:
        return client.create_experiment(name, artifact_location=location, tags=KIND)
    except MlflowException:
        exp = client.get_experiment_by_name(name)  # another process created it first
        if exp is None:
            raise
        return exp.experiment_id


def connect(uri: str | None, experiment: str) -> tuple[MlflowClient, str]:
    """Point MLflow at the store, check it answers, and return (client, experiment id)."""
    uri = resolve_uri(uri)
    check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    try:
        return client, ensure_experiment(client, experiment)
    except MlflowException as exc:
        raise TrackingError(f"MLflow store {uri} cannot be used: {exc}") from exc


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": 1}} -> {"train.lr": 1}: MLflow params as dotted keys."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def log_series(
    client: MlflowClient, run_id: str, key: str, values: Sequence[float], first_step: int
) -> None:
    """Log values[i] at step first_step + i, in as few calls as MLflow allows."""
    now = int(time.time() * 1000)
    metrics = [
        Metric(key, float(v), now, first_step + i) for i, v in enumerate(values) if math.isfinite(v)
    ]
    for start in range(0, len(metrics), MAX_BATCH):
        client.log_batch(run_id, metrics=metrics[start : start + MAX_BATCH])


_pending: list[int] = []  # signals received inside `run`, not yet acted on


def _on_signal(signum: int, frame: Any) -> None:
    """Note a SIGTERM or Ctrl-C; act on it at the next `stop_point` (a second one: at once).

    Raising at an arbitrary bytecode could land inside MLflow's own database calls, which may
    turn the exception into an ordinary error (the run would then end FAILED, not KILLED).
    """
    _pending.append(signum)
    if len(_pending) > 1:
        stop_point()


def stop_point() -> None:
    """Raise KeyboardInterrupt (Ctrl-C) or Terminated (SIGTERM) if one arrived during `run`."""
    if _pending:
        signum = _pending[0]
        _pending.clear()
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise Terminated(f"signal {signum}")


@contextlib.contextmanager
def run(
    experiment_id: str, *, run_name: str | None = None, tags: Mapping[str, str] | None = None,
    parent_run_id: str | None = None,
) -> Iterator[mlflow.ActiveRun]:  # fmt: skip
    """An MLflow run that ends FINISHED, FAILED (exception) or KILLED (Ctrl-C, SIGTERM).

    Inside it, SIGTERM and Ctrl-C are noted and raised at the next `stop_point()` (the training
    loop calls it after every batch), or at the end of the block, before the run is FINISHED.
    """
    handled = (signal.SIGTERM, signal.SIGINT)
    previous = {s: signal.getsignal(s) for s in handled}
    _pending.clear()
    with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
        for s in handled:
            signal.signal(s, _on_signal)
    active = mlflow.start_run(
        experiment_id=experiment_id, run_name=run_name, tags=dict(tags or {}),
        parent_run_id=parent_run_id,
    )  # fmt: skip
    status = RunStatus.to_string(RunStatus.FAILED)
    try:
        yield active
        stop_point()
        status = RunStatus.to_string(RunStatus.FINISHED)
    except (KeyboardInterrupt, Terminated):
        status = RunStatus.to_string(RunStatus.KILLED)
        raise
    finally:
        mlflow.end_run(status)
        with contextlib.suppress(ValueError, TypeError):
            for s, handler in previous.items():
                signal.signal(s, handler)


class Server:
    """A lean `mlflow server` on loopback over an existing store, for several writing processes.

    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false and one worker: 2 processes and ~460 MB instead of
    ~15 and 2.4 GB. It runs in its own process group so `stop` ends its workers too.
    """

    def __init__(self, backend_uri: str, port: int | None = None) -> None:
        self.backend_uri = backend_uri
        self.port = port or _free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 90.0) -> Server:
        cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1",
               "--port", str(self.port), "--workers", "1",
               "--backend-store-uri", self.backend_uri]  # fmt: skip
        env = os.environ | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace")[-2000:]
                raise TrackingError(f"mlflow server exited ({self.proc.returncode}): {err}")
            try:
                check_reachable(self.uri, timeout_s=1.0)
                return self
            except TrackingError:
                time.sleep(0.25)
        self.stop()
        raise TrackingError(f"mlflow server on {self.uri} did not answer in {timeout_s:.0f} s")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
