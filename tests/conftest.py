"""Shared fixtures. Expensive setup (a tiny project run through DVC, a sweep) is built once per
session and each test gets its own copy in its `tmp_path`, so every test stands alone: it passes
when run by itself (`-k`) and in any order (the suite runs shuffled, with pytest-randomly)."""

from __future__ import annotations

import os
import shutil

import mlflow
import pytest
import services
from project import SWEEP, Project, commit, make

from pipeline.tracking import store
from pipeline.tracking.server import Server

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

SWEEP_FAST = ("tracking.log_model=false", "train.epochs=2")


@pytest.fixture(scope="session")
def tiny_prepared(tmp_path_factory) -> Project:
    """A tiny project after `dvc repro prepare`, committed; no MLflow run yet."""
    project = make(tmp_path_factory.mktemp("tiny-prepared"))
    project.run("dvc", "repro", "prepare")
    commit(project, "prepared")
    return project


@pytest.fixture(scope="session")
def tiny_repro(tiny_prepared, tmp_path_factory) -> tuple[Project, str]:
    """A tiny project after a whole `dvc repro` (one MLflow run), committed; and its output."""
    project = tiny_prepared.copy(tmp_path_factory.mktemp("tiny-repro") / "p")
    done = project.run("dvc", "repro")
    commit(project, "results")
    return project, done.stdout


@pytest.fixture(scope="session")
def tiny_swept(tiny_prepared, tmp_path_factory) -> Project:
    """A tiny project with one Hydra sweep logged: `basic`, lr {0.5, 1.0} x seed {0, 1}."""
    project = tiny_prepared.copy(tmp_path_factory.mktemp("tiny-swept") / "p")
    project.run(
        *SWEEP,
        *SWEEP_FAST,
        "train.lr=0.5,1.0",
        "seed=0,1",
        "tracking.sweep=basic",
    )
    return project


@pytest.fixture
def prepared_project(tiny_prepared, tmp_path) -> Project:
    """This test's own copy of `tiny_prepared`."""
    return tiny_prepared.copy(tmp_path / "p")


@pytest.fixture
def repro_project(tiny_repro, tmp_path) -> Project:
    """This test's own copy of `tiny_repro`'s project."""
    return tiny_repro[0].copy(tmp_path / "p")


@pytest.fixture
def swept_project(tiny_swept, tmp_path) -> Project:
    """This test's own copy of `tiny_swept`."""
    return tiny_swept.copy(tmp_path / "p")


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory):
    """One SQLite store for the session (MLflow dislikes many stores in one pytest process);
    each test works in an experiment of its own (`experiment`)."""
    root = tmp_path_factory.mktemp("mlflow")
    yield f"sqlite:///{root}/mlflow.db", root
    mlflow.set_tracking_uri(None)


@pytest.fixture
def experiment(mlflow_store, request):
    """(client, experiment id, artifact root) of a new experiment named after the test."""
    uri, root = mlflow_store
    client, exp_id = store.connect(uri, request.node.name, root / "mlartifacts")
    return client, exp_id, root / "mlartifacts"


# ---------------------------------------------------------------- services beyond one machine
# Started once per session on loopback ports, stopped at the end; a test that needs one skips
# (naming the Debian package) where it cannot run. Tests share them but not their data: each
# works in an MLflow experiment of its own.


@pytest.fixture(scope="session")
def postgres():
    """PostgreSQL (scripts/postgres-local): database `mlflow`, password in a pgpass file."""
    pg = services.start_postgres()
    yield pg
    pg.down()
    shutil.rmtree(pg.dir, ignore_errors=True)


def server_env(postgres) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    return base | postgres.env


@pytest.fixture(scope="session")
def team_server(postgres, tmp_path_factory):
    """The team's MLflow server: PostgreSQL store, artifacts stored by the server."""
    base = tmp_path_factory.mktemp("team-server")
    server = Server(
        postgres.uri,
        env=server_env(postgres),
        artifacts_destination=str(base / "artifacts"),
        log_path=base / "server.log",
    )
    yield server.start(timeout_s=300)  # a new database: MLflow's migrations, ~25 s
    server.stop()


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A one-node Slurm cluster (scripts/slurm-local) offering 12 CPUs: 12 one-CPU jobs at
    once, whatever the machine has."""
    cluster = services.start_slurm(tmp_path_factory.mktemp("slurm"), cpus=12)
    yield cluster
    cluster.down()
