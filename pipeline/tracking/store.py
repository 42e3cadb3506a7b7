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

import os
import sqlite3
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from sqlalchemy.exc import SQLAlchemyError


class TrackingError(RuntimeError):
    """The tracking store cannot be used; the message says which and how to fix it."""


def redact(uri: str) -> str:
    """`uri` with any password replaced by ***, for printing (postgresql://u:***@host/db)."""
    parts = urllib.parse.urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


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


SQLITE_HEADER = b"SQLite format 3\x00"
ELSEWHERE = "or point MLFLOW_TRACKING_URI (or tracking.uri) at another store"


def sqlite_path(uri: str) -> Path | None:
    """The file of a `sqlite:///` URI (None for other stores)."""
    return Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None


def check_sqlite(path: Path, lock_timeout_s: float = 2.0) -> None:
    """Fail with one paragraph naming the file and the fix when a SQLite store cannot be used:
    not a database, damaged, not writable (the file or, for a new one, its folder), or locked
    by another writer. A missing file in a writable folder is fine: MLflow creates it."""
    folder = path.parent
    if not path.exists():
        if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
            raise TrackingError(
                f"MLflow store {path} does not exist and cannot be created: {folder} is missing "
                f"or not writable. Create it or fix its permissions, {ELSEWHERE}."
            )
        return
    with open(path, "rb") as fh:
        header = fh.read(len(SQLITE_HEADER))
    if header and header != SQLITE_HEADER:
        raise TrackingError(
            f"MLflow store {path} is not an SQLite database (it starts with {header[:8]!r}), "
            f"so runs cannot be logged to it. Move it aside (`mv {path} {path}.bak`) to start a "
            f"new store, {ELSEWHERE}."
        )
    if not os.access(path, os.W_OK) or not os.access(folder, os.W_OK | os.X_OK):
        what = path if not os.access(path, os.W_OK) else f"its folder {folder}"
        raise TrackingError(
            f"MLflow store {path} is read-only for this user ({what} is not writable; SQLite "
            f"also writes a journal next to the file). Fix the permissions (`chmod u+w {path} "
            f"{folder}`), {ELSEWHERE}."
        )
    try:
        con = sqlite3.connect(path, timeout=lock_timeout_s)
        try:
            problem = con.execute("PRAGMA quick_check").fetchone()[0]
            con.execute("BEGIN IMMEDIATE")  # a write lock: fails if another writer holds one
            con.rollback()
        finally:
            con.close()
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc):
            raise TrackingError(
                f"MLflow store {path} is locked: another process has held its write lock for "
                f"over {lock_timeout_s:g} s (a hung or crashed writer; `fuser {path}` names "
                f"it). Wait for it or stop it; several processes logging at once should go "
                f"through an MLflow server (see README, Sweeps)."
            ) from None
        problem = str(exc)
    except sqlite3.DatabaseError as exc:
        problem = str(exc)
    if problem != "ok":
        raise TrackingError(
            f"MLflow store {path} is damaged (SQLite: {problem}). Keep it for recovery "
            f"(`sqlite3 {path} .recover > recovered.sql`), move it aside to start a new store, "
            f"{ELSEWHERE}."
        )


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
    """Check the store can be used, point MLflow at it, and return (client, experiment id).

    Raises TrackingError, naming the store and the fix, for an unreachable server or an
    unusable SQLite file, before anything else is done.
    """
    check_reachable(uri)
    if (path := sqlite_path(uri)) is not None:
        check_sqlite(path)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    try:
        return client, ensure_experiment(client, experiment, artifact_root)
    except (MlflowException, SQLAlchemyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrackingError(f"MLflow store {uri} cannot be used: {first}") from exc
