"""The CNN of Zhang (2016) as pure functions over a dict of named parameters.

Architecture (paper, section 1): 1x28x28 -> C1: 6 true convolutions 5x5 'valid' + sigmoid
(6x24x24) -> S1: 2x2 mean pool (6x12x12) -> C2: 12 maps, each the sum over the 6 S1 maps of true
convolutions, + sigmoid (12x8x8) -> S2: 2x2 mean pool (12x4x4) -> F: column-scan flatten (192)
-> FC: sigmoid(W f + b) (10). Loss: eq. (13) per sample, averaged over the batch, so every
gradient here is a batch mean and batch size 1 gives exactly the paper's update, eqs. (65)-(70).

Parameters (fixed names, paper symbols): ``k1`` (1, 6, 5, 5) = k^1_{1,p}; ``b1`` (6,);
``k2`` (6, 12, 5, 5) = k^2_{p,q}; ``b2`` (12,); ``W`` (10, 192); ``b`` (10,). Kernels are indexed
[map_in, map_out, u, v] with u, v = -2..2 stored at 0..4; a stored ``k`` means what it means in
the paper: true convolution, eq. (5) and (8), i.e. the kernel flipped relative to
cross-correlation.

Layout: public functions take images (N, 28, 28) and return (N, 10). Internally every map array
has shape (C, H, W, N), batch innermost: each (W, N) row is one contiguous run, so a window copy
moves runs of OW*N values and the pooling adds runs of W*N. The order of the two outer axes in
memory varies. Each convolution is one batched matrix product with one matrix per output row, so
its sigmoid output is a transposed view of an (H, C, W, N) C-contiguous array (no pass to reorder
it), and what is computed from it elementwise (the pooled maps, the errors dz) keeps that memory
order; the input (`to_internal`), `full_conv`'s dx and `unflatten`'s output are C-contiguous
(C, H, W, N). Functions index by shape only: their reshapes split axes (always a view) or merge
them (a copy where the memory order needs one), so no result depends on the order. The
convolution layer is a pure ``conv_sigmoid_forward(x, k, b) -> (a, cache)`` /
``conv_backward(dz, cache, k)`` pair; pooling, flatten and the FC layer need nothing cached
beyond their inputs and outputs. The dtype of the parameters (float32 or float64) is the dtype of
all the arithmetic.

Determinism: no step depends on timing or on addresses; the matrix products depend on the BLAS
thread count. With one BLAS thread (``OPENBLAS_NUM_THREADS=1``: exported by the Makefile, set by
``pipeline.runtime`` for entry points) the same inputs give byte-identical results, and two
threads on two shared cores were up to 2.4x slower whenever another process was busy.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

Params = dict[str, np.ndarray]
Lap = Callable[[str], None]  # called after each stage with its name (profiling hook)

KERNEL = 5  # u, v = -2..2
SHAPES: dict[str, tuple[int, ...]] = {
    "k1": (1, 6, KERNEL, KERNEL),
    "b1": (6,),
    "k2": (6, 12, KERNEL, KERNEL),
    "b2": (12,),
    "W": (10, 192),
    "b": (10,),
}
PARAM_NAMES = tuple(SHAPES)
N_PARAMS = 3898  # (25 + 1) * 6 + (25 * 6 + 1) * 12 + 10 * 192 + 10, section 1.1


def no_lap(_: str) -> None:
    """The default `Lap`: no profiling."""


# --------------------------------------------------------------------------- initialisation


def init_params(rng: np.random.Generator, dtype: type = np.float64) -> Params:
    """Draw the initial parameters, eqs. (1)-(3); all biases are zero.

    Inputs:
    - rng: the generator to draw from (k1, then k2, then W, each in C order).
    - dtype: np.float32 or np.float64. The draws are float64, rounded once to `dtype`, so the
      float32 and float64 nets start from the same weights up to float32 rounding.

    Returns: dict with the shapes of `SHAPES`.
    """
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")

    def uniform(shape: tuple[int, ...], fan: int) -> np.ndarray:
        bound = np.sqrt(6.0 / fan)
        return rng.uniform(-bound, bound, size=shape).astype(dtype)

    return {
        "k1": uniform(SHAPES["k1"], (1 + 6) * KERNEL**2),  # eq. (1)
        "b1": np.zeros(SHAPES["b1"], dtype),
        "k2": uniform(SHAPES["k2"], (6 + 12) * KERNEL**2),  # eq. (2)
        "b2": np.zeros(SHAPES["b2"], dtype),
        "W": uniform(SHAPES["W"], 192 + 10),  # eq. (3)
        "b": np.zeros(SHAPES["b"], dtype),
    }


# --------------------------------------------------------------------------- elementwise


def _sigmoid_of_negated_(zneg: np.ndarray) -> np.ndarray:
    """In place: zneg (holding -z) becomes σ(z) = 1 / (1 + exp(-z)), eq. (4). Three passes, no
    temporaries; an overflow of exp(-z) correctly gives 0."""
    with np.errstate(over="ignore"):
        np.exp(zneg, out=zneg)
    zneg += 1.0
    return np.reciprocal(zneg, out=zneg)


# --------------------------------------------------------------------------- convolution


class ConvCache(NamedTuple):
    cols: np.ndarray  # (OH, C*KH*KW + 1, OW*N) C-contiguous: input windows, a row of ones
    a: np.ndarray  # (Q, OH, OW, N) sigmoid output, laid out (OH, Q, OW, N): a transposed view


def im2col(x: np.ndarray, kh: int, kw: int) -> np.ndarray:
    """Copy every kh x kw 'valid' window of x into a column, one matrix per output row, and
    append a row of ones (it carries the bias through the same product, and gives db in dk's).

    One matrix per output row (rather than one (C*kh*kw, OH*OW*N) matrix) keeps each product's
    operands in cache: 1.4-2.7x faster for the first layer's (6, 25) kernel matrix.

    Inputs: x (C, H, W, N).
    Returns: cols (OH, C*kh*kw + 1, OW*N), cols[s, (c, i, j), (t, n)] = x[c, s+i, t+j, n] and
    cols[s, -1] = 1, with OH = H-kh+1, OW = W-kw+1.
    """
    c, h, w, n = x.shape
    oh, ow = h - kh + 1, w - kw + 1
    win = sliding_window_view(x, (kh, kw), axis=(1, 2))  # (C, OH, OW, N, KH, KW), a view
    cols = np.empty((oh, c * kh * kw + 1, ow * n), x.dtype)
    # The copy moves contiguous runs of OW*N values: (t, n) are adjacent in x.
    np.copyto(cols[:, :-1].reshape(oh, c, kh, kw, ow, n), win.transpose(1, 0, 4, 5, 2, 3))
    cols[:, -1] = 1.0
    return cols


def conv_sigmoid_forward(
    x: np.ndarray, k: np.ndarray, b: np.ndarray
) -> tuple[np.ndarray, ConvCache]:
    """A convolution layer: σ(sum_p x_p * k_{p,q} + b_q), eqs. (4)-(5) and (7)-(8).

    True convolution: out(i, j) = sum_{u,v} x(i-u, j-v) k(u, v), u, v = -2..2, which on 'valid'
    windows is cross-correlation with the kernel rotated 180 degrees.

    Inputs: x (C, H, W, N), any order of the outer axes as long as (W, N) rows are contiguous;
    k (C, Q, KH, KW); b (Q,).
    Returns: a (Q, OH, OW, N), a transposed view of an (OH, Q, OW, N) C-contiguous array, and the
    cache (which holds the same `a`).
    """
    c, q, kh, kw = k.shape
    _, h, w, n = x.shape
    oh, ow = h - kh + 1, w - kw + 1
    cols = im2col(x, kh, kw)  # (OH, C*KH*KW + 1, OW*N)
    # [-rot180(k) | -b] as a (Q, C*KH*KW + 1) matrix: the product then holds -z, ready for exp.
    kmat = np.empty((q, c * kh * kw + 1), k.dtype)
    kmat[:, :-1] = -k[:, :, ::-1, ::-1].transpose(1, 0, 2, 3).reshape(q, c * kh * kw)
    kmat[:, -1] = -b
    zneg = kmat @ cols  # (OH, Q, OW*N), C-contiguous: one product per output row
    # σ in place, then only the view is transposed: no pass over memory to reorder the maps.
    a = _sigmoid_of_negated_(zneg).transpose(1, 0, 2)  # (Q, OH, OW*N), memory (OH, Q, OW*N)
    a = a.reshape(q, oh, ow, n)  # (Q, OH, OW, N): splits the contiguous last axis, a view
    return a, ConvCache(cols=cols, a=a)


def conv_backward(
    dz: np.ndarray, cache: ConvCache, k: np.ndarray, need_dx: bool = True
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Gradients of a convolution layer from its error before the sigmoid.

    dk_{p,q} = rot180(x_p) * dz_q, eqs. (36)-(40) and (56)-(59); db_q = sum dz_q, eqs. (45) and
    (64); dx_p = sum_q dz_q * rot180(k_{p,q}) as a 'full' convolution, eqs. (49)-(51).

    Inputs: dz (Q, OH, OW, N), eq. (37) / (57), with contiguous (OW, N) rows, either order of the
    outer axes; cache from `conv_sigmoid_forward`; k (C, Q, KH, KW); need_dx: False skips dx (the
    first layer needs no input gradient).
    Returns: dx (C, H, W, N) C-contiguous, or None; dk (C, Q, KH, KW); db (Q,).
    """
    c, q, kh, kw = k.shape
    _, oh, ow, n = dz.shape
    # (Q, OH, OW*N) merges the contiguous (OW, N): a view; transposed: (OH, Q, OW*N), a view.
    dz_rows = dz.reshape(q, oh, ow * n).transpose(1, 0, 2)
    # One product per output row, summed: [d rot180(k) | db] thanks to the row of ones.
    dkb = (dz_rows @ cache.cols.transpose(0, 2, 1)).sum(axis=0)  # (Q, C*KH*KW + 1)
    # cols holds windows of x: rotate the cross-correlation gradient back to the kernel's.
    dk = dkb[:, :-1].reshape(q, c, kh, kw).transpose(1, 0, 2, 3)[:, :, ::-1, ::-1]  # (C, Q, KH, KW)
    dx = full_conv(dz, k) if need_dx else None
    return dx, np.ascontiguousarray(dk), dkb[:, -1].copy()  # (C, Q, KH, KW), (Q,)


@functools.lru_cache(maxsize=8)
def _band_index(c: int, q: int, kh: int, kw: int, oh: int) -> np.ndarray:
    """Gather index building `full_conv`'s banded matrix from k.ravel() plus one trailing zero.

    Returns: idx (KW*C*H, Q*OH) int, H = OH+KH-1: entry [(j, p, s), (q, r)] points at
    k[p, q, KH-1-(s-r), KW-1-j] when 0 <= s-r < KH, else at the zero after k.
    """
    h = oh + kh - 1
    j, p, s, qq, r = np.ix_(range(kw), range(c), range(h), range(q), range(oh))
    i = s - r  # kernel row of the cross-correlation kernel that links dz row r to dx row s
    flat = ((p * q + qq) * kh + (kh - 1 - i)) * kw + (kw - 1 - j)
    idx = np.where((i >= 0) & (i < kh), flat, c * q * kh * kw)  # (KW, C, H, Q, OH)
    idx = idx.reshape(kw * c * h, q * oh)
    idx.flags.writeable = False  # shared by every call through the cache
    return idx


def full_conv(dz: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Error on the input maps: dx_p = sum_q dz_q * rot180(k_{p,q}), 'full' size, eqs. (49)-(51).

    In cross-correlation form, dx[p, s, t] = sum_{q,r,u} dz[q, r, u] kc[q, p, s-r, t-u] with
    kc[q, p, i, j] = k[p, q, KH-1-i, KW-1-j] (the forward pass's kernel, `kmat` without its
    sign), zero outside 0 <= s-r < KH, 0 <= t-u < KW. Rows are done by one product with a banded
    matrix (it contracts q and r, for every column tap j at once), columns by adding the KW taps'
    shares into dx, tap j shifted j columns right: an overlap-add of plain slices. Every
    intermediate is small (1/5 of a per-tap col2im canvas) and there is no window copy.

    Inputs: dz (Q, OH, OW, N) with contiguous (OW, N) rows; k (C, Q, KH, KW).
    Returns: dx (C, OH+KH-1, OW+KW-1, N), C-contiguous.
    """
    c, q, kh, kw = k.shape
    _, oh, ow, n = dz.shape
    h, w = oh + kh - 1, ow + kw - 1
    k_and_zero = np.concatenate((k.ravel(), np.zeros(1, k.dtype)))  # keeps k's dtype
    band = k_and_zero[_band_index(c, q, kh, kw, oh)]  # (KW*C*H, Q*OH)
    # (Q*OH, OW*N): a small copy when dz is laid out (OH, Q, OW, N), as the network's is.
    dz_mat = dz.reshape(q * oh, ow * n)
    # taps[j, p, s, u] = sum_{q,r} band[(j, p, s), (q, r)] dz[q, r, u]: column tap j's share of
    # dx[p, s, u + j].
    taps = (band @ dz_mat).reshape(kw, c, h, ow, n)  # (KW*C*H, OW*N) -> (KW, C, H, OW, N)
    dx = np.empty((c, h, w, n), dz.dtype)
    dx[:, :, :ow] = taps[0]
    dx[:, :, ow:] = 0.0
    # Tap by tap, as a sum over j starting from tap 0: the same additions, in the same order, as
    # summing KW zero-padded shifted copies.
    for j in range(1, kw):
        dx[:, :, j : j + ow] += taps[j]  # (C, H, OW, N), runs of OW*N contiguous values
    return dx


# --------------------------------------------------------------------------- pooling


def pool_forward(c: np.ndarray) -> np.ndarray:
    """2x2 mean pooling, eqs. (6) and (9): S(i, j) = 1/4 sum_{u,v=0,1} C(2i-u, 2j-v).

    Inputs: c (Q, H, W, N), H and W even.
    Returns: s (Q, H/2, W/2, N).
    """
    q, h, w, n = c.shape
    rows = c.reshape(q, h // 2, 2, w, n)  # (Q, H/2, 2, W, N)
    s = rows[:, :, 0] + rows[:, :, 1]  # (Q, H/2, W, N): adds contiguous runs of W*N
    s = s.reshape(q, h // 2, w // 2, 2, n)  # (Q, H/2, W/2, 2, N)
    out = s[:, :, :, 0] + s[:, :, :, 1]  # (Q, H/2, W/2, N)
    out *= 0.25
    return out


def pool_backward(ds: np.ndarray) -> np.ndarray:
    """Upsampling of the error through mean pooling, eqs. (32) and (52):
    dC(i, j) = 1/4 dS(ceil(i/2), ceil(j/2)).

    Inputs: ds (Q, H/2, W/2, N).
    Returns: dc (Q, H, W, N).
    """
    q, h2, w2, n = ds.shape
    up = np.broadcast_to((0.25 * ds)[:, :, None, :, None], (q, h2, 2, w2, 2, n))
    return up.reshape(q, 2 * h2, 2 * w2, n)  # (Q, H, W, N)


def pool_sigmoid_backward(ds: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Error before the sigmoid of the layer under a pooling: dC_σ = upsample(dS) ⊙ a(1-a),
    eqs. (32)+(37) and (52)+(57), with the sigmoid derivative taken from the cached output a.

    Inputs: ds (Q, H/2, W/2, N); a (Q, H, W, N).
    Returns: dz (Q, H, W, N).
    """
    q, h, w, n = a.shape
    dz = 1.0 - a
    dz *= a  # a(1-a)
    # Broadcast the quarter error over each 2x2 block instead of materialising the upsample.
    blocks = dz.reshape(q, h // 2, 2, w // 2, 2, n)  # a view of dz
    blocks *= (0.25 * ds)[:, :, None, :, None]
    return dz


# --------------------------------------------------------------------------- flatten


def flatten(s: np.ndarray) -> np.ndarray:
    """F of eq. (10): scan each map column by column, then concatenate the maps in order.

    Inputs: s (Q, H, W, N).
    Returns: f (Q*H*W, N), f[q*H*W + j*H + i] = s[q, i, j].
    """
    q, h, w, n = s.shape
    return s.transpose(0, 2, 1, 3).reshape(q * h * w, n)  # (Q, W, H, N) -> (Q*W*H, N)


def unflatten(f: np.ndarray, q: int = 12, h: int = 4, w: int = 4) -> np.ndarray:
    """F^{-1} of eqs. (11) and (31): the inverse of `flatten`.

    Inputs: f (Q*H*W, N).
    Returns: s (Q, H, W, N).
    """
    n = f.shape[1]
    return np.ascontiguousarray(f.reshape(q, w, h, n).transpose(0, 2, 1, 3))  # (Q, H, W, N)


# --------------------------------------------------------------------------- fully connected


def fc_forward(f: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
    """ŷ = σ(W f + b), eq. (12).

    Inputs: f (F, N); W (10, F); b (10,).
    Returns: yhat (10, N).
    """
    zneg = (-W) @ f  # (10, N)
    zneg -= b[:, None]
    return _sigmoid_of_negated_(zneg)


def loss_and_delta(yhat: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Batch-mean loss, eq. (13), and the output error Δŷ of eqs. (17)/(23), also a batch mean.

    Inputs: yhat (10, N); y (10, N) one-hot.
    Returns: loss = mean_n 1/2 sum_i (ŷ - y)^2; dy (10, N) = (ŷ - y) ŷ(1-ŷ) / N.
    """
    n = yhat.shape[1]
    e = yhat - y  # (10, N), ŷ - y
    loss = 0.5 * float(np.vdot(e, e)) / n
    dy = 1.0 - yhat
    dy *= yhat
    dy *= e
    dy *= 1.0 / n
    return loss, dy


def fc_backward(
    dy: np.ndarray, f: np.ndarray, W: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of the FC layer: ΔW = Δŷ f^T, eq. (19); Δb = Δŷ, eq. (24); Δf = W^T Δŷ, eq. (30).

    Inputs: dy (10, N) error before the sigmoid; f (F, N); W (10, F).
    Returns: dW (10, F), db (10,), df (F, N); each summed over the batch (dy already holds 1/N).
    """
    return dy @ f.T, dy.sum(axis=1), W.T @ dy


# --------------------------------------------------------------------------- whole network


class ForwardCache(NamedTuple):
    c1: ConvCache  # C1: windows of the image, σ output (6, 24, 24, N)
    c2: ConvCache  # C2: windows of S1, σ output (12, 8, 8, N)
    f: np.ndarray  # (192, N) flattened S2
    yhat: np.ndarray  # (10, N)


def to_internal(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Images (N, H, W) -> one input map in the internal layout (1, H, W, N) of `dtype`."""
    n, h, w = x.shape
    return np.ascontiguousarray(x.transpose(1, 2, 0), dtype=dtype).reshape(1, h, w, n)


def forward(params: Params, x: np.ndarray, lap: Lap = no_lap) -> tuple[np.ndarray, ForwardCache]:
    """Forward pass, eqs. (4)-(12).

    Inputs: params (see module docstring); x (N, 28, 28) in [0, 1]; lap: optional profiling hook
    called with each stage's name when it ends.
    Returns: yhat (N, 10) (a transposed view) and the cache for `backward`.
    """
    dtype = params["W"].dtype
    x_int = to_internal(x, dtype)  # (1, 28, 28, N)
    lap("input")
    a1, c1 = conv_sigmoid_forward(x_int, params["k1"], params["b1"])  # (6, 24, 24, N)
    lap("conv1_fwd")
    s1 = pool_forward(a1)  # (6, 12, 12, N)
    lap("pool1_fwd")
    a2, c2 = conv_sigmoid_forward(s1, params["k2"], params["b2"])  # (12, 8, 8, N)
    lap("conv2_fwd")
    f = flatten(pool_forward(a2))  # (192, N)
    lap("pool2_fwd")
    yhat = fc_forward(f, params["W"], params["b"])  # (10, N)
    lap("fc_fwd")
    return yhat.T, ForwardCache(c1=c1, c2=c2, f=f, yhat=yhat)


def backward(
    params: Params, cache: ForwardCache, y: np.ndarray, lap: Lap = no_lap
) -> tuple[float, Params]:
    """Loss and batch-mean gradients of every parameter, eqs. (13)-(64).

    Inputs: params; cache from `forward`; y (N, 10) one-hot targets; lap: profiling hook.
    Returns: loss (eq. (13), batch mean) and grads with the same names and shapes as params.
    """
    dtype = params["W"].dtype
    loss, dy = loss_and_delta(cache.yhat, np.asarray(y, dtype).T)  # (10, N)
    dW, db, df = fc_backward(dy, cache.f, params["W"])  # eqs. (19), (24), (30)
    lap("fc_bwd")
    ds2 = unflatten(df)  # (12, 4, 4, N), eq. (31)
    dz2 = pool_sigmoid_backward(ds2, cache.c2.a)  # (12, 8, 8, N), eqs. (32), (37)
    lap("pool2_bwd")
    ds1, dk2, db2 = conv_backward(dz2, cache.c2, params["k2"])  # eqs. (40), (45), (51)
    lap("conv2_bwd")
    dz1 = pool_sigmoid_backward(ds1, cache.c1.a)  # (6, 24, 24, N), eqs. (52), (57)
    lap("pool1_bwd")
    _, dk1, db1 = conv_backward(dz1, cache.c1, params["k1"], need_dx=False)  # eqs. (59), (64)
    lap("conv1_bwd")
    return loss, {"k1": dk1, "b1": db1, "k2": dk2, "b2": db2, "W": dW, "b": db}


def sgd_update(params: Params, grads: Params, lr: float) -> Params:
    """Plain SGD, eqs. (65)-(70): p <- p - α Δp. Returns new arrays; the inputs are unchanged."""
    return {name: p - p.dtype.type(lr) * grads[name] for name, p in params.items()}
