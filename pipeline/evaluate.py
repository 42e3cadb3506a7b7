"""DVC stage `evaluate`: the trained weights on the test set, for `dvc metrics` and `dvc plots`.

Writes metrics/test.json (test_loss, test_error) and plots/confusion.csv (one row per test
image: actual, predicted). The numbers equal the test metrics the train stage logged to MLflow:
the same weights through the same `assess`.

Usage: python -m pipeline.evaluate [--params params.yaml]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline import outputs, training
from pipeline.config import ConfigError, load_params
from pipeline.dataset import Split, load_prepared
from pipeline.integrity import DataError
from pipeline.outputs import Paths, load_weights


@dataclass(frozen=True)
class Evaluation:
    loss: float  # eq. (13), mean over the split
    error: float
    predictions: np.ndarray  # (N,) int64
    confusion: np.ndarray  # (10, 10) int64, rows: true label


def assess(params: dict[str, np.ndarray], split: Split) -> Evaluation:
    """Loss, error, predictions and confusion matrix of `params` on a split."""
    loss, error = training.evaluate(params, split.x, split.y)
    pred = training.predict(params, split.x)
    return Evaluation(loss, error, pred, training.confusion_matrix(split.labels, pred))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    paths = Paths()
    try:
        cfg = load_params(args.params)
        data = load_prepared(Path(cfg.data.prepared), cfg.train.dtype)
        if not paths.weights.is_file():
            raise DataError(f"{paths.weights} not found: run `dvc repro train` first")
        params = load_weights(paths.weights)
    except (ConfigError, DataError) as exc:
        print(f"evaluate failed: {exc}", file=sys.stderr)
        return 1
    test = assess(params, data.test)
    outputs.write_json(paths.test_metrics, {"test_loss": test.loss, "test_error": test.error})
    outputs.write_csv(
        paths.confusion_csv, ["actual", "predicted"],
        list(zip(data.test.labels.tolist(), test.predictions.tolist(), strict=True)),
    )  # fmt: skip
    print(f"evaluate: test error {test.error:.2%}, test loss {test.loss:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
