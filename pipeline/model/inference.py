"""Inference with trained parameters: outputs, predictions, loss and error, confusion matrix.

Everything runs in batches of `BATCH` images through `cnn.forward`, in the parameters' dtype;
images come as `Images` (a prepared split's bytes, converted one batch at a time) or as an array
of images in [0, 1]. With several threads the batches run concurrently, each written to its own
rows of the result, so the outputs are the same bytes for any thread count.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.data.prepared import Images, Split, as_images
from pipeline.model import cnn
from pipeline.model.parallel import workers

N_CLASSES = 10
# Images per forward pass: a pass's temporaries (float64: about 0.12 MB per image, most of it the
# first layer's windows) stay in the caches, and a few threads' passes add little to the memory.
BATCH = 100


def predict_proba(
    params: cnn.Params, x: np.ndarray | Images, batch_size: int = BATCH, threads: int = 1
) -> np.ndarray:
    """Network outputs ŷ, eq. (12), in batches (bounded memory), on `threads` threads.

    Inputs: x (N, 28, 28): `Images`, or an array of images in [0, 1].
    Returns: (N, 10) in the params' dtype.
    """
    images = as_images(x)
    dtype = params["W"].dtype
    out = np.empty((len(images), N_CLASSES), dtype)
    ops = cnn.operands(params)  # built once, shared by every batch

    def one(start: int) -> None:
        rows = slice(start, start + batch_size)
        out[rows] = cnn.forward(params, images.batch(rows, dtype), ops=ops)[0]

    workers(threads).map(one, range(0, len(images), batch_size))
    return out


def predict(
    params: cnn.Params, x: np.ndarray | Images, batch_size: int = BATCH, threads: int = 1
) -> np.ndarray:
    """Predicted labels (N,) int64: the arg-max of ŷ for images x (N, 28, 28)."""
    return predict_proba(params, x, batch_size, threads).argmax(axis=1)


def loss_and_error(
    params: cnn.Params,
    x: np.ndarray | Images,
    y: np.ndarray,
    batch_size: int = BATCH,
    threads: int = 1,
) -> tuple[float, float]:
    """Mean loss, eq. (13), and error rate on images x (N, 28, 28), one-hot y (N, 10)."""
    yhat = predict_proba(params, x, batch_size, threads)
    loss = 0.5 * float(np.sum((yhat - y) ** 2)) / len(yhat)
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


def assess(params: cnn.Params, split: Split, threads: int = 1) -> Evaluation:
    """Loss, error, predictions and confusion matrix of `params` on a split."""
    yhat = predict_proba(params, split.x, threads=threads)
    loss = 0.5 * float(np.sum((yhat - split.y) ** 2)) / len(yhat)
    pred = yhat.argmax(axis=1)
    return Evaluation(
        loss, error_rate(pred, split.labels), pred, confusion_matrix(split.labels, pred)
    )
