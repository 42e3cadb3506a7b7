"""Mini-batch SGD for `pipeline.model.cnn` (paper, section 3): one step, and the training loop.

`step` is the one place a batch is trained: forward, backward, update. The loop, the benchmark
and the reproduction report all call it.

Batches: each epoch visits every sample once, in the order given by `order(epoch)`, in
consecutive batches of `batch_size`. When `batch_size` does not divide the number of samples,
the last batch is smaller and is trained like the others: its loss and gradients are the mean
over its own samples, with the same learning rate.

Threads (`train(threads=...)`): `step` cuts every batch into `PARTS` parts of consecutive
samples (fewer when the batch is smaller), a function of the batch size alone. Each part's
forward and backward pass runs on one of the threads and yields the part's share of the batch
mean (its sums divided by the whole batch's size); the shares are added in part order. So the
weights are the same bytes for any number of threads, 1 included. Evaluations run their batches
on the same threads (`pipeline.model.inference`).

Determinism: nothing here draws random numbers; the order comes in from `order` (see
`pipeline.model.plan`). The same inputs and dtype give byte-identical weights on the same
machine whatever the thread count, with BLAS on one thread (see `pipeline.runtime`).

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

from pipeline.data.prepared import Images, as_images
from pipeline.model import cnn
from pipeline.model.inference import N_CLASSES, loss_and_error
from pipeline.model.parallel import parts, workers

OnBatch = Callable[[int, float], None]  # (step, loss): step counts updates from 1
OnEpoch = Callable[[int, dict[str, float]], None]  # (epoch from 1, metrics)
Order = Callable[[int], np.ndarray]  # epoch from 1 -> permutation of range(n)

# Parts per batch: one per core of a 2-core machine at any batch size. Each part's pass has a
# fixed cost (about 0.15 ms of calls that hold the GIL), so parts stay large: on 2 shared cores at
# batch 50 (two A/B runs), a float32 epoch took 2.7-3.2 s with 4 parts of 12-13 samples and
# 2.5-2.6 s with 2 parts of 25 (float64: no clear difference within the noise). It fixes the
# summation order of the gradients, so changing it changes the bytes of every trained weight; the
# thread count never does. More threads than parts still help the evaluations (batches of 100).
PARTS = 2


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
    params: cnn.Params,
    x: np.ndarray,
    y: np.ndarray,
    lr: float,
    lap: cnn.Lap = cnn.no_lap,
    *,
    threads: int = 1,
) -> Step:
    """One SGD step on one batch: forward, eqs. (4)-(12); backward, eqs. (13)-(64); update,
    eqs. (65)-(70).

    The batch is cut into `PARTS` parts (module docstring); each part's pass gives its loss and
    gradient sums divided by the batch size N, and the parts' results are added in part order.

    Inputs: params; x (N, 28, 28) images in [0, 1]; y (N, 10) one-hot (any real dtype: both are
    converted to the params' dtype); lr the learning rate α; lap: profiling hook called with each
    stage's name when it ends ("sgd" for the update); with a hook, the parts run one after
    another in this thread. threads: how many threads run the parts (the result is the same).
    Returns: Step. A NaN or infinite loss skips the update, so the caller can stop before it.
    """
    n = x.shape[0]
    ops = cnn.operands(params)  # the parts share the matrices built from params

    def part(rows: slice) -> tuple[np.ndarray, float, cnn.Params]:
        yhat, cache = cnn.forward(params, x[rows], lap, ops)
        loss, grads = cnn.backward(params, cache, y[rows], lap, batch_size=n)
        return yhat, loss, grads

    pool = workers(threads if lap is cnn.no_lap else 1)
    (yhat, loss, grads), *rest = pool.map(part, parts(n, PARTS))
    if rest:  # add the parts' shares in part order, whatever thread computed them
        yhat = np.concatenate([yhat, *(r[0] for r in rest)])  # (N, 10)
        for _, part_loss, part_grads in rest:
            loss += part_loss
            for name, g in grads.items():
                g += part_grads[name]
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
    evals: Mapping[str, tuple[np.ndarray | Images, np.ndarray]] | None = None,
    on_batch: OnBatch | None = None,
    on_epoch: OnEpoch | None = None,
    progress: bool | None = None,
    state: TrainState | None = None,
    threads: int = 1,
) -> TrainResult:
    """Train with plain mini-batch SGD, eqs. (65)-(70), on batch-mean gradients.

    Inputs:
    - params: initial parameters (`cnn.init_params`); not modified. Their dtype is the training
      dtype.
    - x (N, 28, 28): `Images` (e.g. a prepared split's uint8 bytes, converted to the params'
      dtype one batch at a time) or an array of images in [0, 1]; y (N, 10) one-hot targets,
      any real dtype (uint8 as stored).
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
    - threads: how many threads run the parts of each batch and the evaluations' batches; the
      results are the same bytes for any number (module docstring).

    Returns: TrainResult with the final params, every batch's loss, and per-epoch metrics:
    train_loss and train_error are the sample-weighted means over the epoch's batches, each
    measured before that batch's update; the evals' after the epoch.
    Raises DivergenceError when a batch's loss is NaN or infinite.
    """
    images = as_images(x)
    dtype = params["W"].dtype
    n = len(images)
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
            xb = images.batch(idx, dtype)  # (B, 28, 28): only this batch is converted
            params, loss, yhat = step(params, xb, y[idx], lr, threads=threads)
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
            metrics[f"{name}_loss"], metrics[f"{name}_error"] = loss_and_error(
                params, x_e, y_e, threads=threads
            )
        history.append(metrics)
        state.epoch, state.batch, state.perm = epoch + 1, 0, None
        if on_epoch is not None:
            on_epoch(epoch, metrics)
    bar.close()
    return TrainResult(params=params, batch_losses=losses[:done], history=history)
