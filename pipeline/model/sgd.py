"""Mini-batch SGD for `pipeline.model.cnn` (paper, section 3): one step, and the training loop.

`step` is the one place a batch is trained: forward, backward, update. The loop, the benchmark
and the reproduction report all call it.

Batches: each epoch visits every sample once, in the order given by `order(epoch)`, in
consecutive batches of `batch_size`. When `batch_size` does not divide the number of samples,
the last batch is smaller and is trained like the others: its loss and gradients are the mean
over its own samples, with the same learning rate.

Determinism: nothing here draws random numbers; the order comes in from `order` (see
`pipeline.model.plan`). The same inputs, dtype and BLAS thread count give byte-identical
weights on the same machine (see `pipeline.runtime`).

Resuming: `train` keeps a `TrainState` up to date after every batch (where it stands: the
epoch and batch, the parameters, the epoch's order and running sums, every loss and metric so
far). A checkpoint saves it (`pipeline.model.checkpoint`); `train` given a saved state, and an
`order` whose generator was restored to the same moment, continues exactly where it stood: the
same updates in the same order, so the same bytes as a run never interrupted.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from tqdm import tqdm

from pipeline.model import cnn
from pipeline.model.inference import N_CLASSES, loss_and_error

OnBatch = Callable[[int, float], None]  # (step, loss): step counts updates from 1
OnEpoch = Callable[[int, dict[str, float]], None]  # (epoch from 1, metrics)
Order = Callable[[int], np.ndarray]  # epoch from 1 -> permutation of range(n)


class DivergenceError(FloatingPointError):
    """The loss of a batch was NaN or infinite; training stops before applying that update."""

    def __init__(self, epoch: int, batch: int, step: int, loss: float) -> None:
        self.epoch, self.batch, self.step, self.loss = epoch, batch, step, loss
        super().__init__(
            f"training diverged: loss {loss} at epoch {epoch}, batch {batch} (step {step}); "
            "try a smaller learning rate"
        )


class Step(NamedTuple):
    params: cnn.Params  # after the update (unchanged when the loss is not finite)
    loss: float  # eq. (13), batch mean, before the update
    yhat: np.ndarray  # (N, 10) outputs before the update


def step(
    params: cnn.Params, x: np.ndarray, y: np.ndarray, lr: float, lap: cnn.Lap = cnn.no_lap
) -> Step:
    """One SGD step on one batch: forward, eqs. (4)-(12); backward, eqs. (13)-(64); update,
    eqs. (65)-(70).

    Inputs: params; x (N, 28, 28); y (N, 10) one-hot; lr the learning rate α; lap: profiling
    hook called with each stage's name when it ends ("sgd" for the update).
    Returns: Step. A NaN or infinite loss skips the update, so the caller can stop before it.
    """
    yhat, cache = cnn.forward(params, x, lap)
    loss, grads = cnn.backward(params, cache, y, lap)
    if np.isfinite(loss):
        params = cnn.sgd_update(params, grads, lr)
    lap("sgd")
    return Step(params, loss, yhat)


@dataclass
class TrainState:
    """Where training stands, enough to continue it exactly; `train` updates it after every
    batch and at every epoch's end (a checkpoint saves it; see the module docstring).

    epoch: the epoch in progress, from 1 (epochs + 1 when all are done); batch: how many of its
    batches are trained; perm (N,): its order (None until drawn, when batch is 0); loss_sum,
    wrong: its sample-weighted loss and misclassified count so far; params: after the last
    update; losses (>= step,): every batch's loss, step = updates so far; history: one metrics
    dict per finished epoch.
    """

    params: cnn.Params
    epoch: int = 1
    batch: int = 0
    perm: np.ndarray | None = None
    loss_sum: float = 0.0
    wrong: int = 0
    step: int = 0
    losses: np.ndarray = field(default_factory=lambda: np.empty(0))
    history: list[dict[str, float]] = field(default_factory=list)

    def after_batch(
        self, batch: int, step: int, params: cnn.Params, loss_sum: float, wrong: int
    ) -> None:
        self.batch, self.step, self.params = batch, step, params
        self.loss_sum, self.wrong = loss_sum, wrong


@dataclass
class TrainResult:
    params: cnn.Params
    batch_losses: np.ndarray  # (steps,) loss of each batch, computed before its update
    history: list[dict[str, float]] = field(default_factory=list)  # one metrics dict per epoch


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
    order: Order,
    evals: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
    on_batch: OnBatch | None = None,
    on_epoch: OnEpoch | None = None,
    progress: bool | None = None,
    state: TrainState | None = None,
) -> TrainResult:
    """Train with plain mini-batch SGD, eqs. (65)-(70), on batch-mean gradients.

    Inputs:
    - params: initial parameters (`cnn.init_params`); not modified. Their dtype is the training
      dtype.
    - x (N, 28, 28) images in [0, 1]; y (N, 10) one-hot targets.
    - epochs, batch_size, lr: the schedule; the last batch of an epoch may be smaller (module
      docstring).
    - order: epoch (from 1) -> permutation of range(N), asked for once per epoch in sequence.
    - evals: optional {name: (x, y)} evaluated after every epoch, reported as `<name>_loss`
      and `<name>_error` (e.g. {"val": ...}, and the test set for a reproduction report).
    - on_batch(step, loss): after every update; step counts updates from 1, loss is the batch's
      loss before its update. on_epoch(epoch, metrics): after every epoch (epochs from 1).
    - progress: draw a progress bar (tqdm) on stderr; None means only when it is a terminal.
    - state: where to start (None: a fresh start from `params`; a saved state: its params,
      counters and metrics replace `params`, and `order` must continue from the same moment);
      updated in place after every batch, before on_batch, and after every epoch, before
      on_epoch, so a callback can save it.

    Returns: TrainResult with the final params, every batch's loss, and per-epoch metrics:
    train_loss and train_error are the sample-weighted means over the epoch's batches, each
    measured before that batch's update; the evals' after the epoch.
    Raises DivergenceError when a batch's loss is NaN or infinite.
    """
    n = x.shape[0]
    if y.shape != (n, N_CLASSES):
        raise ValueError(f"y must be one-hot of shape ({n}, {N_CLASSES}), got {y.shape}")
    if batch_size < 1 or epochs < 0:
        raise ValueError("batch_size must be >= 1 and epochs >= 0")
    labels = y.argmax(axis=1)
    batches_per_epoch = -(-n // batch_size)
    state = TrainState(params) if state is None else state
    if not 0 <= state.batch <= batches_per_epoch or (state.batch and state.perm is None):
        raise ValueError(f"state: batch {state.batch} of epoch {state.epoch} cannot be resumed")
    params, done, history = state.params, state.step, state.history
    losses = np.empty(epochs * batches_per_epoch)
    losses[:done] = state.losses[:done]
    state.losses = losses
    bar = tqdm(
        total=epochs * batches_per_epoch,
        initial=done,
        disable=None if progress is None else not progress,  # None: only on a terminal
        unit="batch",
        leave=False,
        file=sys.stderr,
    )
    for epoch in range(state.epoch, epochs + 1):
        if state.batch == 0:  # a new epoch; else resumed inside this one (state's order, sums)
            state.perm = _check_permutation(order(epoch), n, epoch)
            state.loss_sum, state.wrong = 0.0, 0
        perm, loss_sum, wrong, skip = state.perm, state.loss_sum, state.wrong, state.batch
        for batch, start in enumerate(range(skip * batch_size, n, batch_size), start=skip + 1):
            idx = perm[start : start + batch_size]
            params, loss, yhat = step(params, x[idx], y[idx], lr)
            done += 1
            if not np.isfinite(loss):
                raise DivergenceError(epoch, batch, done, loss)
            losses[done - 1] = loss
            loss_sum += loss * len(idx)
            wrong += int(np.count_nonzero(yhat.argmax(axis=1) != labels[idx]))
            state.after_batch(batch, done, params, loss_sum, wrong)
            if on_batch is not None:
                on_batch(done, loss)
            bar.set_postfix_str(f"epoch {epoch}/{epochs} loss {loss:.4f}", refresh=False)
            bar.update()
        metrics = {"epoch": float(epoch), "train_loss": loss_sum / n, "train_error": wrong / n}
        for name, (x_e, y_e) in (evals or {}).items():
            metrics[f"{name}_loss"], metrics[f"{name}_error"] = loss_and_error(params, x_e, y_e)
        history.append(metrics)
        state.epoch, state.batch, state.perm = epoch + 1, 0, None
        if on_epoch is not None:
            on_epoch(epoch, metrics)
    bar.close()
    return TrainResult(params=params, batch_losses=losses[:done], history=history)
