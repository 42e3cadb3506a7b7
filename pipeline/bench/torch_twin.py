"""The same network and training in PyTorch (CPU, any thread count), timed by `pipeline.bench`.

Imported only where torch is importable; torch is never a dependency of the project. Same
architecture, same true convolution (torch's conv2d cross-correlates, so it gets rot180(k)), same
initial weights and sample order (passed in from NumPy), batch-mean loss of eq. (13), plain SGD.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.model import cnn


def to_torch(params: cnn.Params) -> dict[str, torch.Tensor]:
    """Paper parameters -> torch leaf tensors; kernels become conv2d's (out, in, KH, KW) rot180."""
    out = {}
    for name, p in params.items():
        if name in ("k1", "k2"):
            p = p[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)  # (Q, C, KH, KW), cross-correlation
        out[name] = torch.tensor(np.ascontiguousarray(p)).requires_grad_()
    return out


def to_numpy(tparams: dict[str, torch.Tensor]) -> cnn.Params:
    """Inverse of `to_torch`."""
    out = {}
    for name, t in tparams.items():
        p = t.detach().numpy()
        if name in ("k1", "k2"):
            p = p.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1]
        out[name] = np.ascontiguousarray(p)
    return out


def forward(tp: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """x (N, 1, 28, 28) -> ŷ (N, 10), eqs. (4)-(12)."""
    a1 = torch.sigmoid(F.conv2d(x, tp["k1"], tp["b1"]))  # (N, 6, 24, 24)
    s1 = F.avg_pool2d(a1, 2)  # (N, 6, 12, 12)
    a2 = torch.sigmoid(F.conv2d(s1, tp["k2"], tp["b2"]))  # (N, 12, 8, 8)
    s2 = F.avg_pool2d(a2, 2)  # (N, 12, 4, 4)
    f = s2.transpose(2, 3).reshape(x.shape[0], 192)  # column scan, eq. (10)
    return torch.sigmoid(f @ tp["W"].T + tp["b"])


def train_epoch(
    params: cnn.Params,
    x: np.ndarray,
    y: np.ndarray,
    perm: np.ndarray,
    batch_size: int,
    lr: float,
    threads: int = 1,
) -> tuple[cnn.Params, float]:
    """One epoch of SGD in the given sample order, on `threads` torch threads.

    Inputs: params (NumPy, the training dtype); x (N, 28, 28) and y (N, 10) already in that dtype.
    Returns: the trained params (NumPy) and the seconds spent in the training loop.
    """
    torch.set_num_threads(threads)
    tp = to_torch(params)
    xt = torch.from_numpy(x).unsqueeze(1)  # (N, 1, 28, 28)
    yt = torch.from_numpy(y)
    order = torch.from_numpy(perm.astype(np.int64))
    start = time.perf_counter()
    for i in range(0, x.shape[0], batch_size):
        idx = order[i : i + batch_size]
        yhat = forward(tp, xt[idx])
        loss = 0.5 * ((yhat - yt[idx]) ** 2).sum() / idx.shape[0]  # eq. (13), batch mean
        grads = torch.autograd.grad(loss, list(tp.values()))
        with torch.no_grad():
            for p, g in zip(tp.values(), grads, strict=True):
                p -= lr * g  # eqs. (65)-(70)
    seconds = time.perf_counter() - start
    return to_numpy(tp), seconds
