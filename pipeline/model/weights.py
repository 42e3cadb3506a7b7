"""The weights file: a network's parameters as a deterministic `.npz` (names and shapes of
`cnn.SHAPES`), written by the train stage and read by evaluate and the MLflow model."""

from __future__ import annotations

from pathlib import Path

from pipeline.files import DataError, npz_bytes, read_npz, save_npz
from pipeline.model import cnn


def weights_bytes(params: cnn.Params) -> bytes:
    """The weights file's bytes: the same values always give the same bytes."""
    return npz_bytes(dict(params))


def save_weights(path: Path, params: cnn.Params) -> None:
    """Write the parameters atomically (see `weights_bytes`)."""
    save_npz(path, dict(params))


def load_weights(path: Path, *, fix: str = "train it with `dvc repro train`") -> cnn.Params:
    """The parameters `save_weights` wrote. DataError (ending with `fix`) when the file is
    missing, unreadable, or does not hold this network's parameters."""
    params = read_npz(path, fix=fix)
    shapes = {name: p.shape for name, p in params.items()}
    if shapes != cnn.SHAPES or any(p.dtype.kind != "f" for p in params.values()):
        raise DataError(f"{path}: not weights of this network ({shapes}); {fix}")
    return params
