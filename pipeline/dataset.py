"""The prepared dataset file: one deterministic `.npz` holding everything training needs.

Keys (N = 60,000 training images, T = 10,000 test images, V = the validation size):
- train_images (N, 28, 28) uint8, train_labels (N,) uint8, train_onehot (N, 10) uint8
- val_index (V,) int64: sorted indices into the training images, held out for validation
- test_images (T, 28, 28) uint8, test_labels (T,) uint8, test_onehot (T, 10) uint8
Pixels are stored as their exact uint8 values; `load_prepared` returns them divided by 255 in
the training dtype, so float64 runs see exactly the reference's x/255 and float32 runs its
nearest float32. The zip container is written with fixed timestamps and order, so the same
arrays always give the same bytes (np.savez stamps the current time into every entry).
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.integrity import DataError, atomic_path

KEYS = (
    "train_images",
    "train_labels",
    "train_onehot",
    "val_index",
    "test_images",
    "test_labels",
    "test_onehot",
)
_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can hold


def save_npz_deterministic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write arrays as an uncompressed `.npz` whose bytes depend only on the arrays; atomic."""
    with atomic_path(Path(path)) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
        for name in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_EPOCH)
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue())


@dataclass(frozen=True)
class Split:
    """Images (N, 28, 28) in [0, 1], integer labels (N,) and one-hot targets (N, 10)."""

    x: np.ndarray
    labels: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Prepared:
    fit: Split  # training images minus the validation split
    val: Split  # may be empty (data.val_size = 0)
    test: Split


def _read(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The named arrays of a prepared file; DataError (with the fix) if missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} not found: prepare the data first with `dvc repro prepare`")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in keys}
    except (KeyError, ValueError, OSError, zipfile.BadZipFile) as exc:
        msg = f"{path}: not a prepared dataset ({exc}); rerun `dvc repro prepare`"
        raise DataError(msg) from exc


def _split(images: np.ndarray, labels: np.ndarray, onehot: np.ndarray, dtype: np.dtype) -> Split:
    x = images.astype(dtype) / dtype.type(255)  # (N, 28, 28)
    return Split(x=x, labels=labels.astype(np.int64), y=onehot.astype(dtype))


def load_prepared(path: Path, dtype: np.dtype | str = np.float64) -> Prepared:
    """Load a prepared file as float images x/255 of `dtype`.

    Raises DataError (with the command to rebuild it) when the file is missing or malformed.
    """
    arrays = _read(path, KEYS)
    dtype = np.dtype(dtype)
    val = arrays["val_index"]
    keep = np.ones(len(arrays["train_labels"]), dtype=bool)
    keep[val] = False
    tr = (arrays["train_images"], arrays["train_labels"], arrays["train_onehot"])
    return Prepared(
        fit=_split(*(a[keep] for a in tr), dtype),
        val=_split(*(a[val] for a in tr), dtype),
        test=_split(arrays["test_images"], arrays["test_labels"], arrays["test_onehot"], dtype),
    )


def load_training_set(path: Path, dtype: np.dtype | str = np.float64) -> Split:
    """All training images (validation split included) in file order, as x/255 of `dtype`.

    For a replay of the reference toolbox, which trains on all 60,000 images in IDX order.
    """
    keys = ("train_images", "train_labels", "train_onehot")
    return _split(*_read(path, keys).values(), np.dtype(dtype))
