"""DVC stage `prepare`: parse the raw IDX files and write the prepared dataset file.

Usage: python -m pipeline.prepare [--params params.yaml]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from pipeline.config import load_params
from pipeline.dataset import save_npz_deterministic
from pipeline.idx import parse_images_labels
from pipeline.integrity import DataError
from pipeline.manifest import load_manifest

CLASSES = 10


def one_hot(labels: np.ndarray, classes: int = CLASSES) -> np.ndarray:
    """(N,) integer labels -> (N, classes) uint8 one-hot rows."""
    return (labels[:, None] == np.arange(classes)[None, :]).astype(np.uint8)  # (N, classes)


def validation_index(n: int, val_size: int, split_seed: int) -> np.ndarray:
    """Sorted indices of `val_size` of `n` training images, drawn from their own seed.

    The split has its own seed so that changing a run's seed never moves images between the
    training and validation sets.
    """
    rng = np.random.default_rng(np.random.SeedSequence(split_seed))
    return np.sort(rng.permutation(n)[:val_size]).astype(np.int64)


def prepare_arrays(
    files: dict[str, bytes], *, val_size: int, split_seed: int
) -> dict[str, np.ndarray]:
    """The prepared arrays (see `pipeline.dataset`) from the four raw IDX files' bytes."""
    train_x, train_y = parse_images_labels(
        files["train_images"], files["train_labels"], what="train"
    )
    test_x, test_y = parse_images_labels(files["test_images"], files["test_labels"], what="test")
    if val_size >= len(train_y):
        raise DataError(f"data.val_size={val_size} leaves no training images of {len(train_y)}")
    return {
        "train_images": train_x,
        "train_labels": train_y,
        "train_onehot": one_hot(train_y),
        "val_index": validation_index(len(train_y), val_size, split_seed),
        "test_images": test_x,
        "test_labels": test_y,
        "test_onehot": one_hot(test_y),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    cfg = load_params(args.params)
    raw = Path(cfg.data.raw_dir)
    m = load_manifest(cfg.data.name)
    try:
        files = {s.key: (raw / s.name).read_bytes() for s in m.files}
        arrays = prepare_arrays(files, val_size=cfg.data.val_size, split_seed=cfg.data.split_seed)
    except FileNotFoundError as exc:
        print(f"prepare failed: {exc.filename} is missing; run `dvc repro fetch`", file=sys.stderr)
        return 1
    except DataError as exc:
        print(f"prepare failed: {exc}", file=sys.stderr)
        return 1
    save_npz_deterministic(Path(cfg.data.prepared), arrays)
    n_val = len(arrays["val_index"])
    print(
        f"prepare: {cfg.data.name}: {len(arrays['train_labels']) - n_val} fit + {n_val} validation"
        f" + {len(arrays['test_labels'])} test images -> {cfg.data.prepared}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
