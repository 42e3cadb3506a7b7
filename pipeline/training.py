"""Training loop (mini-batch SGD, paper section 3) and batched inference for `pipeline.cnn`.

Randomness is explicit: `make_generators(seed)` derives the initialisation and shuffling
generators from one seed through `SeedSequence(seed).spawn(2)`; nothing reads global state.

Batches: each epoch visits every sample once, in the order given by `order(epoch)` (default: a
fresh `shuffle_rng.permutation`), in consecutive batches of `batch_size`. When `batch_size` does
not divide the number of samples, the last batch is smaller and is trained like the others: its
loss and gradients are the mean over its own samples, with the same learning rate.

Determinism: the same data, seed, dtype and BLAS thread count give byte-identical weights on the
same machine. Use one BLAS thread (`OPENBLAS_NUM_THREADS=1`; see `pipeline.cnn`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TextIO

import numpy as np

from pipeline import cnn

OnBatch = Callable[[int, float], None]  # (step, loss): step counts updates from 1
OnEpoch = Callable[[int, dict[str, float]], None]  # (epoch from 1, metrics)
Order = Callable[[int], np.ndarray]  # epoch from 1 -> permutation of range(n)

N_CLASSES = 10


class DivergenceError(FloatingPointError):
    """The loss of a batch was NaN or infinite; training stops before applying that update."""

    def __init__(self, epoch: int, batch: int, step: int, loss: float) -> None:
        self.epoch, self.batch, self.step, self.loss = epoch, batch, step, loss
        super().__init__(
            f"training diverged: loss {loss} at epoch {epoch}, batch {batch} (step {step}); "
            "try a smaller learning rate"
        )


def make_generators(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """The (init, shuffle) generators of a run, from `SeedSequence(seed).spawn(2)`."""
    init_seq, shuffle_seq = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(init_seq), np.random.default_rng(shuffle_seq)


@dataclass
class TrainResult:
    params: cnn.Params
    batch_losses: np.ndarray  # (steps,) loss of each batch, computed before its update
    history: list[dict[str, float]] = field(default_factory=list)  # one metrics dict per epoch


class Progress:
    """A one-line progress bar on `stream`, drawn only when it is a terminal."""

    def __init__(self, total: int, stream: TextIO | None = None, enabled: bool | None = None):
        self.stream = sys.stderr if stream is None else stream
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.total, self.last_draw = total, 0.0

    def update(self, done: int, text: str) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self.last_draw < 0.1 and done < self.total):
            return
        self.last_draw = now
        filled = 30 * done // max(self.total, 1)
        bar = "#" * filled + "." * (30 - filled)
        self.stream.write(f"\r[{bar}] {done}/{self.total} {text}")
        if done >= self.total:
            self.stream.write("\n")
        self.stream.flush()


def _check_permutation(perm: np.ndarray, n: int, epoch: int) -> np.ndarray:
    perm = np.asarray(perm)
    if perm.shape != (n,) or not np.array_equal(np.bincount(perm, minlength=n), np.ones(n)):
        raise ValueError(f"order({epoch}) must return a permutation of range({n})")
    return perm


def train(
    params: cnn.Params,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    shuffle_rng: np.random.Generator | None = None,
    order: Order | None = None,
    x_val: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
    extra_evals: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
    on_batch: OnBatch | None = None,
    on_epoch: OnEpoch | None = None,
    progress: bool | None = None,
) -> TrainResult:
    """Train with plain mini-batch SGD, eqs. (65)-(70), on batch-mean gradients.

    Inputs:
    - params: initial parameters (`cnn.init_params`); not modified. Their dtype is the training
      dtype.
    - x (N, 28, 28) images in [0, 1]; y (N, 10) one-hot targets.
    - epochs, batch_size, lr: the schedule; the last batch of an epoch may be smaller (module
      docstring).
    - shuffle_rng: draws each epoch's order when `order` is None.
    - order: optional epoch -> permutation of range(N) (e.g. a replay of MATLAB's randperm).
    - x_val, y_val: optional validation set, evaluated after every epoch.
    - extra_evals: optional {name: (x, y)} also evaluated after every epoch, reported as
      `<name>_loss` and `<name>_error` (e.g. the test set, for a reproduction report).
    - on_batch(step, loss): after every update; step counts updates from 1, loss is the batch's
      loss before its update. on_epoch(epoch, metrics): after every epoch (epochs from 1).
    - progress: draw a progress bar on stderr; None means only when stderr is a terminal.

    Returns: TrainResult with the final params, every batch's loss, and per-epoch metrics:
    train_loss and train_error are the sample-weighted means over the epoch's batches, each
    measured before that batch's update; val_loss and val_error after the epoch.
    Raises DivergenceError when a batch's loss is NaN or infinite.
    """
    n = x.shape[0]
    if y.shape != (n, N_CLASSES):
        raise ValueError(f"y must be one-hot of shape ({n}, {N_CLASSES}), got {y.shape}")
    if batch_size < 1 or epochs < 0:
        raise ValueError("batch_size must be >= 1 and epochs >= 0")
    if order is None and shuffle_rng is None:
        raise ValueError("give shuffle_rng or order")
    labels = y.argmax(axis=1)
    batches_per_epoch = -(-n // batch_size)
    bar = Progress(epochs * batches_per_epoch, enabled=progress)
    losses = np.empty(epochs * batches_per_epoch)
    history: list[dict[str, float]] = []
    step = 0
    for epoch in range(1, epochs + 1):
        perm = (
            shuffle_rng.permutation(n)
            if order is None
            else _check_permutation(order(epoch), n, epoch)
        )
        loss_sum, wrong = 0.0, 0
        for batch, start in enumerate(range(0, n, batch_size), start=1):
            idx = perm[start : start + batch_size]
            yhat, cache = cnn.forward(params, x[idx])
            loss, grads = cnn.backward(params, cache, y[idx])
            step += 1
            if not np.isfinite(loss):
                raise DivergenceError(epoch, batch, step, loss)
            params = cnn.sgd_update(params, grads, lr)
            losses[step - 1] = loss
            loss_sum += loss * len(idx)
            wrong += int(np.count_nonzero(yhat.argmax(axis=1) != labels[idx]))
            if on_batch is not None:
                on_batch(step, loss)
            bar.update(step, f"epoch {epoch}/{epochs} loss {loss:.4f}")
        metrics = {"epoch": float(epoch), "train_loss": loss_sum / n, "train_error": wrong / n}
        if x_val is not None and y_val is not None:
            metrics["val_loss"], metrics["val_error"] = evaluate(params, x_val, y_val)
        for name, (x_e, y_e) in (extra_evals or {}).items():
            metrics[f"{name}_loss"], metrics[f"{name}_error"] = evaluate(params, x_e, y_e)
        history.append(metrics)
        if on_epoch is not None:
            on_epoch(epoch, metrics)
    return TrainResult(params=params, batch_losses=losses[:step], history=history)


# --------------------------------------------------------------------------- inference


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


def evaluate(
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
