"""The prepared dataset file: one deterministic `.npz` holding everything training needs.

Keys (N = 60,000 training images, T = 10,000 test images, V = the validation size):
- train_images (N, 28, 28) uint8, train_labels (N,) uint8, train_onehot (N, 10) uint8
- val_index (V,) int64: sorted indices into the training images, held out for validation
- test_images (T, 28, 28) uint8, test_labels (T,) uint8, test_onehot (T, 10) uint8
Pixels are stored as their exact uint8 values and stay so in memory: a `Split` refers to the
file's arrays and the rows it holds (no copy), and its `Images` are divided by 255 in the training
dtype one batch at a time, so float64 runs see exactly the reference's x/255, float32 runs its
nearest float32, and a run holds MNIST once, as 55 MB of bytes (as float64, 440 MB).
`pipeline.files.save_npz` writes the container with fixed timestamps and order, so the same
arrays always give the same bytes.
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


SCALE = 255  # a stored pixel p means p / 255 in [0, 1]


@dataclass(frozen=True)
class Images:
    """Images as stored, converted one batch at a time: image i is pixels[rows[i]] / scale.

    A split of a file refers to the file's pixel array and the rows it holds, so no second copy
    of the data exists; `batch` converts only the images asked for.
    """

    pixels: np.ndarray  # (M, H, W), any real dtype: uint8 as the prepared file stores them
    rows: np.ndarray | None = None  # (N,) int64 indices into pixels; None: all M, in order
    scale: float = 1.0  # divisor: SCALE for stored bytes, 1 for images already in [0, 1]

    def __len__(self) -> int:
        return len(self.pixels) if self.rows is None else len(self.rows)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self.pixels.shape[1:])

    def batch(self, idx: slice | np.ndarray, dtype: np.dtype | str) -> np.ndarray:
        """Images idx (a slice or an index array into range(N)) as (B, H, W) `dtype` arrays,
        pixels / scale: the same numbers as converting every image first."""
        dtype = np.dtype(dtype)
        pixels = self.pixels[idx] if self.rows is None else self.pixels[self.rows[idx]]
        return np.divide(pixels, dtype.type(self.scale), dtype=dtype)  # (B, H, W)

    def array(self, dtype: np.dtype | str) -> np.ndarray:
        """Every image converted: (N, H, W) `dtype` (a copy; for small sets and checks)."""
        return self.batch(slice(None), dtype)

    def head(self, n: int | None) -> Images:
        """The first n images (all of them when n is None)."""
        if n is None or n >= len(self):
            return self
        if self.rows is None:
            return Images(self.pixels[:n], None, self.scale)
        return Images(self.pixels, self.rows[:n], self.scale)

    def transposed(self) -> Images:
        """Every image transposed (H <-> W): a view, converted per batch like the rest."""
        return Images(self.pixels.swapaxes(-1, -2), self.rows, self.scale)


def as_images(x: np.ndarray | Images) -> Images:
    """`x` as `Images`: an (N, H, W) array of images in [0, 1] is taken as it is (scale 1)."""
    return x if isinstance(x, Images) else Images(np.asarray(x))


@dataclass(frozen=True)
class Split:
    """N samples of a prepared file: images (converted per batch, see `Images`), integer labels
    (N,) and one-hot targets (N, 10) uint8."""

    x: Images
    labels: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def head(self, n: int | None) -> Split:
        """The first n samples (all of them when n is None)."""
        if n is None or n >= len(self):
            return self
        return Split(x=self.x.head(n), labels=self.labels[:n], y=self.y[:n])


@dataclass(frozen=True)
class Prepared:
    """A prepared file's arrays as stored (uint8); `split` selects one part of them."""

    arrays: dict[str, np.ndarray]

    @property
    def n_val(self) -> int:
        return len(self.arrays["val_index"])

    def split(self, part: str) -> Split:
        """One part, its images still the file's bytes (read as x/255 per batch, `Images`).

        part: "fit" (training images minus the validation split), "val", "test", or "train"
        (all training images in file order, the validation split included).
        """
        a = self.arrays
        prefix = "test" if part == "test" else "train"
        images, labels, onehot = (a[f"{prefix}_{k}"] for k in ("images", "labels", "onehot"))
        rows = None
        if part in ("fit", "val"):
            keep = np.zeros(len(labels), dtype=bool)
            keep[a["val_index"]] = True
            rows = np.flatnonzero(keep if part == "val" else ~keep)  # (N,) int64, file order
            labels, onehot = labels[rows], onehot[rows]
        elif part not in ("test", "train"):
            raise ValueError(f"part must be fit, val, test or train, got {part!r}")
        return Split(x=Images(images, rows, SCALE), labels=labels.astype(np.int64), y=onehot)


def read_prepared(path: Path, *, fix: str = "prepare it with `dvc repro prepare`") -> Prepared:
    """Read a prepared file. Raises DataError ending with `fix` when missing or malformed."""
    return Prepared(read_npz(path, KEYS, fix=fix))
