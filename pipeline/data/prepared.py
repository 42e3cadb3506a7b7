"""The prepared dataset file: one deterministic `.npz` holding everything training needs.

Keys (N = 60,000 training images, T = 10,000 test images, V = the validation size):
- train_images (N, 28, 28) uint8, train_labels (N,) uint8, train_onehot (N, 10) uint8
- val_index (V,) int64: sorted indices into the training images, held out for validation
- test_images (T, 28, 28) uint8, test_labels (T,) uint8, test_onehot (T, 10) uint8
Pixels are stored as their exact uint8 values; a `Split` holds them divided by 255 in the
training dtype, so float64 runs see exactly the reference's x/255 and float32 runs its nearest
float32. `pipeline.files.save_npz` writes the container with fixed timestamps and order, so the
same arrays always give the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.data.idx import parse_images_labels
from pipeline.files import DataError, read_npz

KEYS = (
    "train_images",
    "train_labels",
    "train_onehot",
    "val_index",
    "test_images",
    "test_labels",
    "test_onehot",
)
CLASSES = 10


# --------------------------------------------------------------------------- writing


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
    """The prepared arrays (keys above) from the four raw IDX files' bytes."""
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


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Split:
    """Images (N, 28, 28) in [0, 1], integer labels (N,) and one-hot targets (N, 10)."""

    x: np.ndarray
    labels: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def head(self, n: int | None) -> Split:
        """The first n samples (all of them when n is None)."""
        if n is None or n >= len(self):
            return self
        return Split(x=self.x[:n], labels=self.labels[:n], y=self.y[:n])


@dataclass(frozen=True)
class Prepared:
    """A prepared file's arrays as stored (uint8); `split` converts one part to a dtype."""

    arrays: dict[str, np.ndarray]

    @property
    def n_val(self) -> int:
        return len(self.arrays["val_index"])

    def split(self, part: str, dtype: np.dtype | str) -> Split:
        """One part as float images x/255 of `dtype`.

        part: "fit" (training images minus the validation split), "val", "test", or "train"
        (all training images in file order, the validation split included).
        """
        a, dtype = self.arrays, np.dtype(dtype)
        prefix = "test" if part == "test" else "train"
        images, labels, onehot = (a[f"{prefix}_{k}"] for k in ("images", "labels", "onehot"))
        if part in ("fit", "val"):
            keep = np.zeros(len(labels), dtype=bool)
            keep[a["val_index"]] = True
            if part == "fit":
                keep = ~keep
            images, labels, onehot = images[keep], labels[keep], onehot[keep]
        elif part not in ("test", "train"):
            raise ValueError(f"part must be fit, val, test or train, got {part!r}")
        x = images.astype(dtype) / dtype.type(255)  # (N, 28, 28)
        return Split(x=x, labels=labels.astype(np.int64), y=onehot.astype(dtype))


def read_prepared(path: Path, *, fix: str = "prepare it with `dvc repro prepare`") -> Prepared:
    """Read a prepared file. Raises DataError ending with `fix` when missing or malformed."""
    return Prepared(read_npz(path, KEYS, fix=fix))
