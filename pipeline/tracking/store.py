"""The MLflow store at the edge: which store, reachable or not, one experiment created once.

- Store: chosen by the entry points (`pipeline.runtime.Environment.store_uri`:
  `MLFLOW_TRACKING_URI`, else `tracking.uri`, else the absolute SQLite file at the repo root)
  and passed in; nothing here reads the environment.
- Artifacts: `<repo root>/mlartifacts/<experiment>` for experiments created against a local
  store, fixed at creation as an absolute path (MLflow would otherwise use the creating
  process's working directory).
- The experiment is looked up or created once and its id passed on: `mlflow.set_experiment`
  racing across processes was seen to file runs under Default silently.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient


class TrackingError(RuntimeError):
    """The tracking store cannot be used; the message says which and how to fix it."""


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


def ensure_experiment(client: MlflowClient, name: str, artifact_root: Path) -> str:
    """Id of experiment `name`, created (artifacts under `artifact_root`/name) if missing."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.tags.get("mlflow.experimentKind") is None:
            client.set_experiment_tag(exp.experiment_id, *next(iter(KIND.items())))
        return exp.experiment_id
    location = (Path(artifact_root) / name).as_uri()
    try:
        return client.create_experiment(name, artifact_location=location, tags=KIND)
    except MlflowException:
        exp = client.get_experiment_by_name(name)  # another process created it first
        if exp is None:
            raise
        return exp.experiment_id


def connect(uri: str, experiment: str, artifact_root: Path) -> tuple[MlflowClient, str]:
    """Point MLflow at the store, check it answers, and return (client, experiment id)."""
    check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    try:
        return client, ensure_experiment(client, experiment, artifact_root)
    except MlflowException as exc:
        raise TrackingError(f"MLflow store {uri} cannot be used: {exc}") from exc
