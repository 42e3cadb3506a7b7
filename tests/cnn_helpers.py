"""Test-side conveniences around `pipeline.model.cnn` that no pipeline code needs: they live here
so that the module the training loop imports holds only what it runs."""

from __future__ import annotations

import numpy as np

from pipeline.model import cnn


def sigmoid(z: np.ndarray) -> np.ndarray:
    """σ(z) = 1 / (1 + exp(-z)), eq. (4); an overflow of exp(-z) correctly gives 0."""
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-z))


def count_params(params: cnn.Params) -> int:
    """Total number of scalars in `params` (3,898 for this network, section 1.1)."""
    return sum(p.size for p in params.values())


def loss_and_grads(params: cnn.Params, x: np.ndarray, y: np.ndarray) -> tuple[float, cnn.Params]:
    """Batch-mean loss, eq. (13), and its gradients, eqs. (14)-(64), for images x (N, 28, 28)
    and one-hot targets y (N, 10): `cnn.forward` then `cnn.backward`."""
    _, cache = cnn.forward(params, x)
    return cnn.backward(params, cache, y)


def loss_and_grads_in_parts(
    params: cnn.Params, x: np.ndarray, y: np.ndarray, parts: int
) -> tuple[float, cnn.Params]:
    """What `sgd.step` computes for one batch, written out: the batch cut by np.array_split into
    `parts` consecutive parts (sizes differing by at most one, the longer first), each part's loss
    and gradient sums divided by the whole batch's size, added in part order."""
    n = len(x)
    total_loss, total = 0.0, None
    for rows in np.array_split(np.arange(n), min(parts, n)):
        _, cache = cnn.forward(params, x[rows])
        loss, grads = cnn.backward(params, cache, y[rows], batch_size=n)
        total_loss += loss
        total = grads if total is None else {k: total[k] + grads[k] for k in grads}
    return total_loss, total
