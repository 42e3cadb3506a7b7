"""Throwaway copies of the project, with a tiny synthetic dataset, for end-to-end tests.

`make` builds a real git + DVC repository from this one: its conf/ defaults point at a 'tiny'
dataset (a manifest written for synthetic files) and a 'tiny' training setting, so `dvc repro`,
`dvc exp run` and Hydra run the real stages in seconds, logging to a real MLflow SQLite store
next to the repository. Its DVC remote (`storage`, from .dvc/config) is redirected by
.dvc/config.local to `base/dvc-storage`, beside the repository, never the user's own.
`Project.copy` gives an independent copy (repository, store, artifacts and remote) so that each
test starts from the same state and none sees another's changes.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import synthetic
from mlflow.tracking import MlflowClient

from pipeline.files import sha256_bytes

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
COPY = [
    "pipeline",
    "conf",
    "dvc.yaml",
    ".dvc/config",
    ".dvc/.gitignore",
    ".dvc/plots",
    ".gitignore",
]
N_TRAIN, N_TEST = 60, 20
VAL_SIZE = N_TRAIN // 4
BATCH = 10
BATCHES_PER_EPOCH = -(-(N_TRAIN - VAL_SIZE) // BATCH)
# Metric points of one tiny run: 4 per epoch (train/val loss and error), its batch losses, and
# test loss and error once.
POINTS_PER_EPOCH = 4 + BATCHES_PER_EPOCH
# The training entry point as a test runs it: one run, and a Hydra multirun (a sweep).
TRAIN = ("python", "-m", "pipeline.train")
SWEEP = (*TRAIN, "-m")


def env(uri: str, **extra: str) -> dict[str, str]:
    """The environment of the tools run on a project: this venv first on PATH, its store."""
    e = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "DVC_", "PIPELINE_"))}
    e |= {
        "PATH": f"{BIN}:{e['PATH']}",
        "MLFLOW_TRACKING_URI": uri,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DVC_NO_ANALYTICS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    return e | extra


def run(cmd: list[str], cwd: Path, e: dict[str, str], check: bool = True, timeout: float = 300):
    done = subprocess.run(cmd, cwd=cwd, env=e, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"{cmd} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


@dataclass
class Project:
    """A tiny project: the repository `root` and its MLflow store `base/mlflow.db`."""

    base: Path  # holds repo/, mlflow.db and the synthetic source files

    @property
    def root(self) -> Path:
        return self.base / "repo"

    @property
    def storage(self) -> Path:
        """The folder of its DVC remote `storage` (.dvc/config.local)."""
        return self.base / "dvc-storage"

    @property
    def uri(self) -> str:
        return f"sqlite:///{self.base}/mlflow.db"

    @property
    def env(self) -> dict[str, str]:
        return env(self.uri)

    @cached_property
    def client(self) -> MlflowClient:
        return MlflowClient(self.uri)

    def run(self, *cmd: str, check: bool = True, timeout: float = 300, **extra_env: str):
        """Run a command in the repository; `python` means this interpreter."""
        argv = [sys.executable if cmd[0] == "python" else cmd[0], *cmd[1:]]
        return run(argv, self.root, self.env | extra_env, check=check, timeout=timeout)

    def runs(self, **params: str) -> list:
        """Runs of the experiment, oldest first, whose params equal `params`."""
        exp = self.client.get_experiment_by_name("zhang-cnn")
        if exp is None:
            return []
        found = self.client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])
        return [r for r in found if all(r.data.params.get(k) == v for k, v in params.items())]

    def copy(self, dest: Path) -> Project:
        """An independent copy in `dest`: repository, store, artifacts, and the source files.

        The store's absolute paths (artifact locations) are rewritten to the copy's, so runs
        logged or read through the copy never touch the original.
        """
        shutil.copytree(self.base, dest, symlinks=True)
        _rewrite_paths(dest / "mlflow.db", str(self.base), str(dest))
        return Project(dest)


def _rewrite_paths(db: Path, old: str, new: str) -> None:
    """Replace `old` by `new` in every text column of an SQLite database (MLflow's store)."""
    if not db.exists():
        return
    with sqlite3.connect(db) as con:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for _, column, kind, *_ in con.execute(f'PRAGMA table_info("{table}")'):
                if kind.upper().startswith(("VARCHAR", "TEXT")):
                    con.execute(
                        f'UPDATE "{table}" SET "{column}" = replace("{column}", ?, ?) '
                        f'WHERE "{column}" LIKE ?',
                        (old, new, f"%{old}%"),
                    )


# Relative to .dvc/, so that a copy of the project (base/ copied whole) uses its own remote.
LOCAL_REMOTE = "['remote \"storage\"']\n    url = ../../dvc-storage\n"


def clone(origin: str | Path, base: Path, *, storage: Path) -> Project:
    """A `git clone` of `origin` as `base`/repo whose DVC remote `storage` is the folder
    `storage` (a teammate's clone: the same git remote and the same DVC remote)."""
    base.mkdir(parents=True, exist_ok=True)
    project = Project(base)
    run(["git", "clone", "-q", str(origin), str(project.root)], base, project.env)
    remote = LOCAL_REMOTE.replace("../../dvc-storage", str(storage))
    (project.root / ".dvc/config.local").write_text(remote)
    return project


def make(base: Path, *, epochs: int = 2) -> Project:
    """Create a tiny project in `base` (repo/ committed, no store yet) and return it."""
    root = base / "repo"
    root.mkdir(parents=True)
    for rel in COPY:
        src, dst = REPO / rel, root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dst)
    # Learnable synthetic digits: each class a bright bar at its own row band, plus noise.
    arrs = synthetic.arrays(n_train=N_TRAIN, n_test=N_TEST, seed=1)
    for split in ("train", "test"):
        labels, images = arrs[f"{split}_labels"], arrs[f"{split}_images"] // 4
        for i, label in enumerate(labels):
            images[i, 2 + 2 * label : 5 + 2 * label, 4:24] = 255
        arrs[f"{split}_images"] = images
    files = synthetic.idx_files(arrs)
    src = synthetic.write_dir(base / "src", files, gzipped=True)
    manifest = {
        "name": "tiny",
        "title": "synthetic",
        "license": "CC0",
        "mirrors": [],
        "fallbacks": [],
        "files": {
            k: {"name": synthetic.NAMES[k], "size": len(v), "sha256": sha256_bytes(v)}
            for k, v in files.items()
        },
    }
    (root / "pipeline/data/manifests/tiny.json").write_text(json.dumps(manifest, indent=1))
    (root / "conf/data/tiny.yaml").write_text(
        "name: tiny\nraw_dir: data/raw/tiny\nprepared: data/prepared/tiny.npz\n"
        f"val_size: {VAL_SIZE}\nsplit_seed: 0\nsubset: null\n"
    )
    (root / "conf/train/tiny.yaml").write_text(
        f"lr: 1.0\nbatch_size: {BATCH}\nepochs: {epochs}\ndtype: float64\nrng: default\n"
        "test_each_epoch: false\ninit_seed: null\norder_seed: null\nthreads: null\n"
        "checkpoint_every: 1\nresume: auto\n"
    )
    cfg = (root / "conf/config.yaml").read_text()
    cfg = cfg.replace("- data: mnist ", "- data: tiny ").replace(
        "- train: reference", "- train: tiny"
    )
    cfg = cfg.replace("network: true", "network: false")
    cfg = cfg.replace("local_dir: null", f"local_dir: ../{src.name}")  # relative: copies work
    (root / "conf/config.yaml").write_text(cfg)
    (root / ".dvc/config.local").write_text(LOCAL_REMOTE)
    project = Project(base)
    project.run("python", "-m", "pipeline.config")  # params.yaml from the new conf/
    project.run("git", "init", "-q", "-b", "main")
    project.run("git", "add", "-A")
    project.run("git", "commit", "-q", "-m", "tiny project")
    return project


def commit(project: Project, message: str) -> None:
    """Commit whatever the stages changed (dvc.lock, metrics, plots, params.yaml)."""
    project.run("git", "add", "-A")
    project.run("git", "commit", "-q", "--allow-empty", "-m", message)


def assert_complete(client: MlflowClient, run, epochs: int = 2) -> None:
    """`run` FINISHED with every point of a tiny project's training logged."""
    rid = run.info.run_id
    assert run.info.status == "FINISHED"
    for key in ("train_loss", "val_loss", "val_error"):
        assert [m.step for m in client.get_metric_history(rid, key)] == list(range(1, epochs + 1))
    steps = [m.step for m in client.get_metric_history(rid, "batch_loss")]
    assert sorted(steps) == list(range(1, epochs * BATCHES_PER_EPOCH + 1))
    assert "test_error" in run.data.metrics
