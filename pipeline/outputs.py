"""Files the train and evaluate stages write for DVC: weights, metrics JSON, plots CSV.

Everything here is a deterministic function of the arrays (no timestamps, no run ids), so
`dvc repro -f` with the same params gives byte-identical files. Each write is atomic.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.dataset import save_npz_deterministic
from pipeline.integrity import atomic_write_bytes


@dataclass(frozen=True)
class Paths:
    """Where a run's files go (the DVC stages use the defaults, relative to the repo root)."""

    root: Path = Path()

    @property
    def weights(self) -> Path:
        return self.root / "models" / "weights.npz"

    @property
    def train_metrics(self) -> Path:
        return self.root / "metrics" / "train.json"

    @property
    def test_metrics(self) -> Path:
        return self.root / "metrics" / "test.json"

    @property
    def epochs_csv(self) -> Path:
        return self.root / "plots" / "epochs.csv"

    @property
    def batches_csv(self) -> Path:
        return self.root / "plots" / "batches.csv"

    @property
    def confusion_csv(self) -> Path:
        return self.root / "plots" / "confusion.csv"


def write_weights(path: Path, params: Mapping[str, np.ndarray]) -> None:
    save_npz_deterministic(path, dict(params))


def load_weights(path: Path) -> dict[str, np.ndarray]:
    """The parameter dict `write_weights` saved (see `pipeline.cnn` for names and shapes)."""
    with np.load(path, allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def write_json(path: Path, values: Mapping[str, float | int | str]) -> None:
    atomic_write_bytes(path, (json.dumps(dict(values), indent=2, sort_keys=True) + "\n").encode())


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence]) -> None:
    """CSV with floats in repr form (round-trips exactly, stable across runs)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([_cell(v) for v in row] for row in rows)
    atomic_write_bytes(path, buf.getvalue().encode())


def _cell(v: object) -> object:
    if isinstance(v, float | np.floating):
        return repr(float(v))
    if isinstance(v, np.integer):
        return int(v)
    return v
