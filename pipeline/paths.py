"""Where things are: the repository root, the stages' DVC outputs, the default MLflow store.

Nothing here reads the environment: entry points pass what they read (`DVC_ROOT`) in.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

# What decides a run's result. DVC deletes and rewrites its own outputs (dvc.lock, metrics/,
# plots/) while stages run, so only these mark a work tree dirty.
CODE_PATHS = ("pipeline", "conf", "dvc.yaml", "pyproject.toml", "requirements.lock")


PROVENANCE = "provenance.json"  # in a raw data folder: where each file came from (fetch)


def _output_names() -> dict[str, str]:
    text = (resources.files("pipeline") / "outputs.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)["outputs"]


OUTPUT_NAMES = _output_names()  # {"weights": "models/weights.npz", ...}, from outputs.yaml


@dataclass(frozen=True)
class Outputs:
    """The train and evaluate stages' files under `root` (the repo root, or a Hydra job folder)."""

    root: Path = Path()

    def _at(self, key: str) -> Path:
        return Path(self.root) / OUTPUT_NAMES[key]

    weights = property(lambda self: self._at("weights"))
    train_metrics = property(lambda self: self._at("train_metrics"))
    epochs_csv = property(lambda self: self._at("epochs_csv"))
    batches_csv = property(lambda self: self._at("batches_csv"))
    test_metrics = property(lambda self: self._at("test_metrics"))
    confusion_csv = property(lambda self: self._at("confusion_csv"))


def _git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def repo_root(*, dvc_root: str | None = None, cwd: Path | None = None) -> Path:
    """The repository root: `dvc_root` when DVC runs the stage (queued `dvc exp` runs execute in
    a temporary copy, where anything relative is lost), else git's top level, else `cwd`."""
    if dvc_root:
        return Path(dvc_root).resolve()
    cwd = Path.cwd() if cwd is None else Path(cwd)
    try:
        return Path(_git(cwd, "rev-parse", "--show-toplevel")).resolve()
    except (OSError, subprocess.CalledProcessError):
        return cwd.resolve()


def git_commit(root: Path) -> str:
    """HEAD's commit, with "-dirty" when the code or configuration differs from it (see
    CODE_PATHS); "unknown" outside a git repository."""
    try:
        head = _git(root, "rev-parse", "HEAD")
        paths = [p for p in CODE_PATHS if (Path(root) / p).exists()]
        dirty = _git(root, "status", "--porcelain", "--untracked-files=no", "--", *paths)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}-dirty" if dirty else head


def default_store(root: Path) -> str:
    """The laptop store: an absolute SQLite file at the repo root (absolute, see `repo_root`)."""
    return f"sqlite:///{Path(root).resolve() / 'mlflow.db'}"


def checkpoints(root: Path) -> Path:
    """Where training keeps its checkpoints: `checkpoints/` at the repo root, outside DVC's
    outputs (gitignored and dvcignored), one folder per run configuration."""
    return Path(root).resolve() / "checkpoints"


def artifact_root(root: Path) -> Path:
    """Where experiments created against a local store keep their artifacts."""
    return Path(root).resolve() / "mlartifacts"
