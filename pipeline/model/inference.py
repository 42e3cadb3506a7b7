"""Inference with trained parameters: outputs, predictions, loss and error, confusion matrix.

Everything runs in batches of bounded size through `cnn.forward`, in the parameters' dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.data.prepared import Split
from pipeline.model import cnn

N_CLASSES = 10


def predict_proba(params: cnn.Params, x: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """Network outputs ŷ, eq. (12), in batches (bounded memory).

    Inputs: x (N, 28, 28). Returns: (N, 10) in the params' dtype.
    """
    out = np.empty((x.shape[0], N_CLASSES), params["W"].dtype)
    for start in range(0, x.shape[0], batch_size):
        out[start : start + batch_size] = cnn.forward(params, x[start : start + batch_size])[0]
    return out


def predict(params: cnn.Params, x: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """Predicted labels (N,) int64: the arg-max of ŷ for images x (N, 28, 28)."""
    return predict_proba(params, x, batch_size).argmax(axis=1)


def loss_and_error(
    params: cnn.Params, x: np.ndarray, y: np.ndarray, batch_size: int = 500
) -> tuple[float, float]:
    """Mean loss, eq. (13), and error rate on images x (N, 28, 28), one-hot y (N, 10)."""
    yhat = predict_proba(params, x, batch_size)
    loss = 0.5 * float(np.sum((yhat - y) ** 2)) / x.shape[0]
    return loss, error_rate(yhat.argmax(axis=1), y.argmax(axis=1))


def error_rate(pred: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of `pred` (N,) that differ from `labels` (N,)."""
    return float(np.mean(np.asarray(pred) != np.asarray(labels)))


def confusion_matrix(
    labels: np.ndarray, pred: np.ndarray, n_classes: int = N_CLASSES
) -> np.ndarray:
    """Counts (n_classes, n_classes) int64: rows are true labels, columns predictions."""
    idx = np.asarray(labels, np.int64) * n_classes + np.asarray(pred, np.int64)
    return np.bincount(idx, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


@dataclass(frozen=True)
class Evaluation:
    loss: float  # eq. (13), mean over the split
    error: float
    predictions: np.ndarray  # (N,) int64
    confusion: np.ndarray  # (10, 10) int64, rows: true label


def assess(params: cnn.Params, split: Split) -> Evaluation:
    """Loss, error, predictions and confusion matrix of `params` on a split."""
    loss, error = loss_and_error(params, split.x, split.y)
    pred = predict(params, split.x)
    return Evaluation(loss, error, pred, confusion_matrix(split.labels, pred))
