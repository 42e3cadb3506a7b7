"""The MLflow store at the edge: which store, reachable or not, one experiment created once.

- Store: chosen by the entry points (`pipeline.runtime.Environment.store_uri`:
  `MLFLOW_TRACKING_URI`, else `tracking.uri`, else the absolute SQLite file at the repo root)
  and passed in; nothing here reads the environment.
- Artifacts: an experiment created against a tracking server (http/https) gets the location the
  server chooses: `mlflow-artifacts:/<id>` when it serves artifacts (`mlflow server
  --artifacts-destination`), so runs logged from any process or machine upload their files to
  it. Against a local store (SQLite, or a database URI) it is `<repo root>/mlartifacts/<name>`,
  fixed at creation as an absolute path (MLflow would otherwise use the creating process's
  working directory).
- The experiment is looked up or created once and its id passed on: `mlflow.set_experiment`
  racing across processes was seen to file runs under Default silently.
- Credentials: a database password belongs in PGPASSWORD or ~/.pgpass, never in a URI; a URI
  that holds one anyway is printed with it replaced by `***` (`redact`), everywhere.
"""

from __future__ import annotations

import json
import os
import sqlite3
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from sqlalchemy.exc import SQLAlchemyError

# Database URIs MLflow accepts as a store (`postgresql+psycopg://user@host:port/db`, ...).
DATABASES = ("postgresql", "mysql", "mssql")


class TrackingError(RuntimeError):
    """The tracking store cannot be used; the message says which and how to fix it."""


def redact(uri: str) -> str:
    """`uri` with its password, if any, replaced by `***` (what every printed URI goes through)."""
    parts = urllib.parse.urlsplit(uri)
    if parts.password is None:
        return uri
    userinfo, hostport = parts.netloc.rsplit("@", 1)
    user = userinfo.split(":", 1)[0]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{hostport}"))


def scrub(text: str, uri: str) -> str:
    """`text` (an error message) with `uri`'s password, raw or decoded, replaced by `***`."""
    password = urllib.parse.urlsplit(uri).password
    if not password:
        return text
    for secret in {password, urllib.parse.unquote(password)}:
        text = text.replace(secret, "***")
    return text


def is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def is_database(uri: str) -> bool:
    return uri.split(":", 1)[0].split("+", 1)[0] in DATABASES


def check_database(
    uri: str, timeout_s: int = 10, credentials: Mapping[str, str] | None = None
) -> None:
    """Fail fast, naming the server (password redacted), when a database store cannot be
    opened: server down, wrong credentials, no such database. MLflow itself would retry for
    minutes. credentials: PGPASSWORD / PGPASSFILE for another process's connection (None:
    libpq reads this process's environment, as MLflow's own connection here will)."""
    if not is_database(uri):
        return
    import sqlalchemy

    args: dict[str, object] = {}
    if uri.startswith("postgresql"):
        args["connect_timeout"] = timeout_s
        creds = credentials or {}
        if creds.get("PGPASSWORD"):
            args["password"] = creds["PGPASSWORD"]
        elif creds.get("PGPASSFILE"):
            args["passfile"] = creds["PGPASSFILE"]
    try:
        engine = sqlalchemy.create_engine(uri, connect_args=args, poolclass=sqlalchemy.NullPool)
        with engine.connect():
            pass
    except Exception as exc:  # the driver's own errors: refused, auth failed, unknown db...
        lines = scrub(str(getattr(exc, "orig", None) or exc), uri).strip().splitlines()
        reason = " ".join(" ".join(lines[:2]).split()).rstrip(".")
        raise TrackingError(
            f"database {redact(uri)} cannot be used: {reason}. Start it, or fix "
            "the credentials: the password goes in PGPASSWORD or ~/.pgpass (PGPASSFILE), "
            "never in the URI."
        ) from None


def check_reachable(uri: str, timeout_s: float = 5.0, store_timeout_s: float = 30.0) -> None:
    """Fail fast, before any training, when a tracking server does not answer, or answers but
    cannot use its own store (its database down: MLflow returns 503 naming it); a database URI
    is checked directly (`check_database`). Plain requests, without MLflow's retries."""
    if is_database(uri):
        return check_database(uri)
    if not is_server(uri):
        return None
    base = uri.rstrip("/")
    try:
        with urllib.request.urlopen(f"{base}/health", timeout=timeout_s) as resp:
            resp.read()
    except (urllib.error.URLError, OSError) as exc:
        raise TrackingError(
            f"MLflow tracking server {redact(uri)} is unreachable "
            f"({scrub(str(getattr(exc, 'reason', exc)), uri)}). Start it (see README, "
            "'Scaling out'), or unset MLFLOW_TRACKING_URI / tracking.uri to log to the local "
            "SQLite store."
        ) from None
    probe = f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=Default"
    try:
        with urllib.request.urlopen(probe, timeout=store_timeout_s) as resp:
            resp.read()
    except urllib.error.HTTPError as exc:
        if exc.code < 500:  # 404: no experiment Default, the store answered
            return None
        try:
            message = json.loads(exc.read()).get("message", "")
        except ValueError:
            message = ""
        raise TrackingError(
            f"MLflow tracking server {redact(uri)} cannot use its store (HTTP {exc.code}: "
            f"{' '.join(message.split())[:400]}). Check its database and the server's log."
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        raise TrackingError(
            f"MLflow tracking server {redact(uri)} answers but its store did not within "
            f"{store_timeout_s:.0f} s ({getattr(exc, 'reason', exc)}): its database may be "
            "down; check the server's log."
        ) from None
    return None


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


def shares_artifacts(location: str) -> bool:
    """Whether an artifact location is reachable from other machines (served by the tracking
    server, or an object store), not a folder on the disk of whoever logs."""
    scheme = urllib.parse.urlsplit(location).scheme
    return scheme not in ("", "file") and len(scheme) > 1  # "C:" is a drive, not a scheme


# Marks the experiment as model training, so the MLflow UI opens it on its runs, not on the
# GenAI overview that MLflow 3 shows by default.
KIND = {"mlflow.experimentKind": "custom_model_development"}


def ensure_experiment(client: MlflowClient, name: str, artifact_root: Path) -> str:
    """Id of experiment `name`, created if missing: against a tracking server with the
    server's artifact location, else with artifacts under `artifact_root`/name."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.tags.get("mlflow.experimentKind") is None:
            client.set_experiment_tag(exp.experiment_id, *next(iter(KIND.items())))
        return exp.experiment_id
    location = None if is_server(client.tracking_uri) else (Path(artifact_root) / name).as_uri()
    try:
        return client.create_experiment(name, artifact_location=location, tags=KIND)
    except MlflowException:
        exp = client.get_experiment_by_name(name)  # another process created it first
        if exp is None:
            raise
        return exp.experiment_id


def connect(uri: str, experiment: str, artifact_root: Path) -> tuple[MlflowClient, str]:
    """Check the store can be used, point MLflow at it, and return (client, experiment id).

    Raises TrackingError, naming the store (password redacted) and the fix, for a server or
    database that does not answer or an unusable SQLite file, before anything else is done.
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
        raise TrackingError(
            f"MLflow store {redact(uri)} cannot be used: {scrub(first, uri)}"
        ) from None
