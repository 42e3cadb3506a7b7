"""A throwaway copy of the project, with a tiny synthetic dataset, for end-to-end tests.

The copy is a real git + DVC repository; its conf/ defaults point at a 'tiny' dataset (a
manifest written for the synthetic files) and a 'tiny' training setting, so `dvc repro`,
`dvc exp run` and Hydra run the real stages in seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import synthetic
from conftest import REPO

from pipeline.files import sha256_bytes

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


def env(uri: str, **extra: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "DVC_"))}
    e |= {"PATH": f"{BIN}:{e['PATH']}", "MLFLOW_TRACKING_URI": uri,
          "MLFLOW_DISABLE_TELEMETRY": "true", "DVC_NO_ANALYTICS": "1",
          "OPENBLAS_NUM_THREADS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
          "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}  # fmt: skip
    return e | extra


def run(cmd: list[str], cwd: Path, e: dict[str, str], check: bool = True, timeout: float = 300):
    done = subprocess.run(cmd, cwd=cwd, env=e, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"{cmd} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


def make(root: Path, uri: str, *, n_train: int = 60, n_test: int = 20, epochs: int = 2) -> Path:
    """Create the project copy in `root`, committed, and return it."""
    root.mkdir(parents=True, exist_ok=True)
    for rel in COPY:
        src, dst = REPO / rel, root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dst)
    # Learnable synthetic digits: each class a bright bar at its own row band, plus noise.
    arrs = synthetic.arrays(n_train=n_train, n_test=n_test, seed=1)
    for split in ("train", "test"):
        labels, images = arrs[f"{split}_labels"], arrs[f"{split}_images"] // 4
        for i, label in enumerate(labels):
            images[i, 2 + 2 * label : 5 + 2 * label, 4:24] = 255
        arrs[f"{split}_images"] = images
    files = synthetic.idx_files(arrs)
    src = synthetic.write_dir(root.parent / f"{root.name}-src", files, gzipped=True)
    manifest = {
        "name": "tiny", "title": "synthetic", "license": "CC0", "mirrors": [], "fallbacks": [],
        "files": {k: {"name": synthetic.NAMES[k], "size": len(v), "sha256": sha256_bytes(v)}
                  for k, v in files.items()},
    }  # fmt: skip
    (root / "pipeline/manifests/tiny.json").write_text(json.dumps(manifest, indent=1))
    (root / "conf/data/tiny.yaml").write_text(
        f"name: tiny\nraw_dir: data/raw/tiny\nprepared: data/prepared/tiny.npz\n"
        f"val_size: {n_train // 4}\nsplit_seed: 0\nsubset: null\n"
    )
    (root / "conf/train/tiny.yaml").write_text(
        f"lr: 1.0\nbatch_size: 10\nepochs: {epochs}\ndtype: float64\nrng: default\n"
        "test_each_epoch: false\n"
    )
    cfg = (root / "conf/config.yaml").read_text()
    cfg = cfg.replace("- data: mnist ", "- data: tiny ").replace(
        "- train: reference", "- train: tiny"
    )
    cfg = cfg.replace("network: true", "network: false")
    cfg = cfg.replace("local_dir: null", f"local_dir: {src}")
    (root / "conf/config.yaml").write_text(cfg)
    e = env(uri)
    run([sys.executable, "-m", "pipeline.config"], root, e)  # params.yaml from the new conf/
    run(["git", "init", "-q", "-b", "main"], root, e)
    run(["git", "add", "-A"], root, e)
    run(["git", "commit", "-q", "-m", "tiny project"], root, e)
    return root
