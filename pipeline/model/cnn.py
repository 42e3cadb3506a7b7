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
has shape (C, H, W, N), batch innermost, laid out in memory as (H, C, W, N): one image row of
every map, then the next row. Functions index by shape only (their reshapes split axes, always a
view, or merge them, a copy where the memory order needs one), so no result depends on the order.

Convolution, `conv_sigmoid_forward`: the input's rows are copied once with their KW column
windows side by side (`width_windows`: (H, C*KW + 1, OW, N), the last of each row's C*KW + 1
lines all ones); the KH rows under a few output rows are then consecutive lines of that copy, so
each product's right-hand matrix is a view into it (`row_windows`), no KH x KW im2col copy. One
product computes `ROWS` output rows at once against a banded kernel matrix (`conv_matrix`:
[-rot180(k) | -b], zeros off the band), which keeps BLAS's kernels busier than one short product
per row; the products hold -z, so the sigmoid runs in place, eq. (4). The kernel gradient, eqs.
(36)-(40), (56)-(59), is the same windows against the error; the bias gradient comes out of the
ones lines, eqs. (45), (64). The input error, eqs. (49)-(51), is a product with the kernel
(`back_matrix`) over windows of the zero-padded error rows, then a sum of KW shifted column taps.

The network (`forward`, `backward`) builds the matrices once per batch (`operands`) and folds each
pooling's 1/4 into the next layer's matrices, which scales products exactly (a power of two):
the pooled maps are kept as sums of four (`pool_sum`), and the errors coming back through a
pooling arrive already quartered. The dtype of the parameters (float32 or float64) is the dtype
of all the arithmetic.

Determinism: no step depends on timing or on addresses; the matrix products depend on the BLAS
thread count. With one BLAS thread (``OPENBLAS_NUM_THREADS=1``: exported by the Makefile, set by
``pipeline.runtime`` for entry points) the same inputs give byte-identical results in any thread.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

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
    return np.divide(1.0, zneg, out=zneg)  # as np.reciprocal, in half the time


# --------------------------------------------------------------------------- convolution

# Output rows per product: 4 of the first layer's 24 (a (24, 48) banded kernel matrix) and 2 of
# the second's 8, and 2 input rows per product of the input error. Measured on 13-image parts,
# float32 and float64, against one product per row: 1.5-2.3x faster first-layer products, 1.1-1.4x
# second-layer ones, although the zeros off the band add 20-60% to the arithmetic.
ROWS = {"conv1": 4, "conv2": 2, "back2": 2}


def _rows_per_product(oh: int, preferred: int) -> int:
    """The largest divisor of oh that is at most `preferred`."""
    return max(g for g in range(1, min(oh, preferred) + 1) if oh % g == 0)


def width_windows(x: np.ndarray, kw: int) -> np.ndarray:
    """Each input row with its kw column windows side by side, and a line of ones per row.

    Inputs: x (C, H, W, N), any memory order.
    Returns: xw (H, C*kw + 1, OW, N) C-contiguous, OW = W - kw + 1: xw[h, c*kw + j, t, n] =
    x[c, h, t + j, n] and xw[h, C*kw] = 1 (it carries the bias through the products).
    """
    c, h, w, n = x.shape
    ow = w - kw + 1
    xw = np.empty((h, c * kw + 1, ow, n), x.dtype)
    taps = xw[:, : c * kw].reshape(h, c, kw, ow, n)  # a view
    rows = x.transpose(1, 0, 2, 3)  # (H, C, W, N)
    for j in range(kw):  # runs of OW*N contiguous values when x is laid out (H, C, W, N)
        taps[:, :, j] = rows[:, :, j : j + ow]
    xw[:, c * kw] = 1.0
    return xw


def row_windows(lines: np.ndarray, rows: int, kh: int) -> np.ndarray:
    """The lines under `rows` consecutive output rows, for every such group, as one read-only
    view: `lines` (H, L, M) holds L lines per input row (C-contiguous); group g covers input rows
    g*rows .. g*rows + rows + kh - 2, i.e. consecutive lines.

    Returns: (H', (rows + kh - 1) * L, M) with H' = (H - kh + 1) / rows; the same view as
    ``sliding_window_view(lines.reshape(H*L, M), (rows+kh-1)*L, axis=0)[::rows*L]`` moved to
    (group, line, M), which costs 19 us a call in argument checks against 0.4 here (a dozen
    calls a batch). The strides are the array's own.
    """
    h, per_row, m = lines.shape
    flat = lines.reshape(h * per_row, m)  # a view: lines is C-contiguous
    s_line, s_col = flat.strides
    shape = ((h - kh + 1) // rows, (rows + kh - 1) * per_row, m)
    view = np.ndarray(shape, flat.dtype, flat, 0, (rows * per_row * s_line, s_line, s_col))
    view.flags.writeable = False  # overlapping windows: a write would change several
    return view


@functools.lru_cache(maxsize=16)
def _band_index(c: int, q: int, kh: int, kw: int, rows: int) -> np.ndarray:
    """Gather index building `conv_matrix` from [k.ravel(), b, 0].

    Returns: idx (rows*Q, (rows+KH-1)*(C*KW+1)) int: entry [(a, q), (r, c, j)] points at
    k[c, q, KH-1-(r-a), KW-1-j] when 0 <= r - a < KH (rot180: the product cross-correlates),
    [(a, q), (a, C*KW)] at b[q] (the ones line of output row a's first input row), else at 0.
    """
    line = c * kw + 1
    zero = c * q * kh * kw + q
    a, qq, r, cc, j = np.ix_(range(rows), range(q), range(rows + kh - 1), range(c), range(kw))
    i = r - a
    flat = ((cc * q + qq) * kh + (kh - 1 - i)) * kw + (kw - 1 - j)
    taps = np.where((i >= 0) & (i < kh), flat, zero)  # (rows, Q, rows+KH-1, C, KW)
    ones = np.where(np.arange(rows + kh - 1)[None, None, :] == np.arange(rows)[:, None, None], 0, 1)
    bias = np.where(ones == 0, c * q * kh * kw + np.arange(q)[None, :, None], zero)
    idx = np.concatenate(
        (taps.reshape(rows, q, rows + kh - 1, c * kw), bias[..., None]), axis=3
    )  # (rows, Q, rows+KH-1, C*KW+1)
    idx = idx.reshape(rows * q, (rows + kh - 1) * line)
    idx.flags.writeable = False  # shared by every call through the cache
    return idx


def conv_matrix(k: np.ndarray, b: np.ndarray, rows: int, scale: float = 1.0) -> np.ndarray:
    """The banded matrix [-scale * rot180(k) | -b] of a product computing `rows` output rows.

    Inputs: k (C, Q, KH, KW); b (Q,); scale: a power of two when the input windows hold the
    input times 1/scale (pooled sums of four: 1/4), so that the product is exactly the layer's.
    Returns: (rows*Q, (rows+KH-1)*(C*KW+1)), rows of (output row a, map q), columns of the
    windows' lines (`row_windows`); the products hold -z (eqs. (5), (8)).
    """
    c, q, kh, kw = k.shape
    values = np.concatenate((-(k.dtype.type(scale) * k).ravel(), -b, np.zeros(1, k.dtype)))
    return values[_band_index(c, q, kh, kw, rows)]


class ConvCache(NamedTuple):
    cols: np.ndarray  # (OH/rows, (rows+KH-1)*(C*KW+1), OW*N) read-only view: the input windows
    a: np.ndarray  # (Q, OH, OW, N) sigmoid output, laid out (OH, Q, OW, N)
    rows: int  # output rows per product


def conv_rows_sigmoid(
    xw: np.ndarray, kmat: np.ndarray, kh: int, rows: int
) -> tuple[np.ndarray, ConvCache]:
    """σ of a convolution from its width windows and banded matrix, eqs. (4)-(5), (7)-(8).

    Inputs: xw (H, C*KW + 1, OW, N) from `width_windows`; kmat from `conv_matrix` (Q from its
    rows); kh the kernel height; rows the output rows per product (it divides OH = H - kh + 1).
    Returns: a (Q, OH, OW, N), a transposed view of an (OH, Q, OW, N) C-contiguous array (the
    order the products come out in), and the cache.
    """
    h, line, ow, n = xw.shape
    oh, q = h - kh + 1, kmat.shape[0] // rows
    cols = row_windows(xw.reshape(h, line, ow * n), rows, kh)  # (OH/rows, lines, OW*N)
    zneg = np.matmul(kmat, cols)  # (OH/rows, rows*Q, OW*N) = (OH, Q, OW*N) in memory
    a = _sigmoid_of_negated_(zneg).reshape(oh, q, ow, n).transpose(1, 0, 2, 3)
    return a, ConvCache(cols=cols, a=a, rows=rows)


@functools.lru_cache(maxsize=16)
def _kernel_grad_index(c: int, q: int, kh: int, kw: int, rows: int) -> np.ndarray:
    """Gather index reading (dk, db) out of the products' sum `dkb` (rows*Q, lines), flattened.

    Returns: idx (rows, C*Q*KH*KW + Q) int: for output row a of a group, entry (c, q, u, v)
    points at dkb[(a, q), (a + KH-1-u, c, KW-1-v)] (the kernel's place in `conv_matrix`), and
    entry C*Q*KH*KW + q at dkb[(a, q), (a, C*KW)] (the bias's); summing over a gives dk, db.
    """
    line = c * kw + 1
    width = (rows + kh - 1) * line
    a, cc, qq, u, v = np.ix_(range(rows), range(c), range(q), range(kh), range(kw))
    taps = (a * q + qq) * width + (a + kh - 1 - u) * line + cc * kw + (kw - 1 - v)
    ar, qb = np.ix_(range(rows), range(q))
    bias = (ar * q + qb) * width + ar * line + c * kw
    idx = np.concatenate((taps.reshape(rows, -1), bias), axis=1)
    idx.flags.writeable = False
    return idx


def conv_kernel_grads(
    dz: np.ndarray, cache: ConvCache, c: int, kh: int, kw: int, scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """dk_{p,q} = rot180(x_p) * dz_q, eqs. (36)-(40), (56)-(59); db_q = sum dz_q, eqs. (45), (64).

    Inputs: dz (OH, Q, OW*N) C-contiguous, the error before the sigmoid; cache from
    `conv_rows_sigmoid`; c, kh, kw the kernel's input maps and size; scale: `conv_matrix`'s.
    Returns: dk (C, Q, KH, KW), db (Q,).
    """
    oh, q, own = dz.shape
    rows = cache.rows
    # One product per group of output rows, summed: the windows against the error.
    dkb = np.matmul(dz.reshape(oh // rows, rows * q, own), cache.cols.transpose(0, 2, 1))
    dkb = dkb.sum(axis=0)  # (rows*Q, lines)
    both = dkb.ravel()[_kernel_grad_index(c, q, kh, kw, rows)].sum(axis=0)  # over a
    dk = both[: c * q * kh * kw].reshape(c, q, kh, kw)
    if scale != 1.0:
        dk *= dk.dtype.type(scale)
    return dk, both[c * q * kh * kw :]


@functools.lru_cache(maxsize=16)
def _back_index(c: int, q: int, kh: int, kw: int, rows: int) -> np.ndarray:
    """Gather index building `back_matrix` from [k.ravel(), 0].

    Returns: idx (rows*KW*C, (rows+KH-1)*Q) int: entry [(a, j, p), (r, q)] points at
    k[p, q, r - a, KW-1-j] when 0 <= r - a < KH, else at the zero after k.
    """
    a, j, p, r, qq = np.ix_(range(rows), range(kw), range(c), range(rows + kh - 1), range(q))
    i = r - a
    flat = ((p * q + qq) * kh + i) * kw + (kw - 1 - j)
    idx = np.where((i >= 0) & (i < kh), flat, c * q * kh * kw)
    idx = idx.reshape(rows * kw * c, (rows + kh - 1) * q)
    idx.flags.writeable = False
    return idx


def back_matrix(k: np.ndarray, rows: int, scale: float = 1.0) -> np.ndarray:
    """The banded matrix of `input_error`: (rows*KW*C, (rows+KH-1)*Q) from k (C, Q, KH, KW),
    times scale (a power of two: exact)."""
    c, q, kh, kw = k.shape
    values = np.concatenate(((k.dtype.type(scale) * k).ravel(), np.zeros(1, k.dtype)))
    return values[_back_index(c, q, kh, kw, rows)]


def pad_rows(dz: np.ndarray, kh: int) -> np.ndarray:
    """A buffer for an error with kh-1 zero rows above and below: (OH + 2(kh-1), Q, OW, N),
    whose rows kh-1 .. kh-1+OH-1 are to hold the error, laid out (OH, Q, OW, N).

    Inputs: dz, an array of the error's shape (Q, OH, OW, N), for its shape and dtype only."""
    q, oh, ow, n = dz.shape
    padded = np.empty((oh + 2 * (kh - 1), q, ow, n), dz.dtype)
    padded[: kh - 1] = 0.0
    padded[kh - 1 + oh :] = 0.0
    return padded


def input_error(padded: np.ndarray, back: np.ndarray, c: int, kw: int, rows: int) -> np.ndarray:
    """dx_p = sum_q dz_q * rot180(k_{p,q}) ('full' size), eqs. (49)-(51).

    In cross-correlation form dx[p, s, t] = sum_{q,r,u} dz[q, r, u] k[p, q, KH-1-(s-r), KW-1-(t-u)]
    (zero outside the kernel). Rows: each product takes the padded error rows under `rows` rows
    of dx (`row_windows`) against `back_matrix`, contracting q and the kernel rows for every
    column tap j at once; columns: the KW taps' shares are added into dx, tap j shifted j columns
    right (an overlap-add of plain slices, tap 0 first).

    Inputs: padded (OH + 2(KH-1), Q, OW, N) from `pad_rows`, the error in its middle rows;
    back (rows*KW*C, (rows+KH-1)*Q) from `back_matrix`; c the input maps; kw the kernel width;
    rows the rows of dx per product (it divides H = OH + KH - 1).
    Returns: dx (C, H, W, N), a transposed view of an (H, C, W, N) C-contiguous array.
    """
    hp, q, ow, n = padded.shape
    kh = back.shape[1] // q - rows + 1
    h, w = hp - kh + 1, ow + kw - 1
    wins = row_windows(padded.reshape(hp, q, ow * n), rows, kh)  # (H/rows, lines, OW*N)
    taps = np.matmul(back, wins).reshape(h, kw, c, ow, n)  # tap j's share of dx[p, s, u + j]
    dx = np.empty((h, c, w, n), padded.dtype)
    dx[:, :, :ow] = taps[:, 0]
    dx[:, :, ow:] = 0.0
    for j in range(1, kw):  # runs of OW*N contiguous values
        dx[:, :, j : j + ow] += taps[:, j]
    return dx.transpose(1, 0, 2, 3)


def conv_sigmoid_forward(
    x: np.ndarray, k: np.ndarray, b: np.ndarray
) -> tuple[np.ndarray, ConvCache]:
    """A convolution layer: σ(sum_p x_p * k_{p,q} + b_q), eqs. (4)-(5) and (7)-(8).

    True convolution: out(i, j) = sum_{u,v} x(i-u, j-v) k(u, v), u, v = -2..2, which on 'valid'
    windows is cross-correlation with the kernel rotated 180 degrees.

    Inputs: x (C, H, W, N), any memory order; k (C, Q, KH, KW); b (Q,).
    Returns: a (Q, OH, OW, N), a transposed view of an (OH, Q, OW, N) C-contiguous array, and the
    cache (which holds the same `a`).
    """
    kh, kw = k.shape[2:]
    rows = _rows_per_product(x.shape[1] - kh + 1, ROWS["conv1"])
    return conv_rows_sigmoid(width_windows(x, kw), conv_matrix(k, b, rows), kh, rows)


def conv_backward(
    dz: np.ndarray, cache: ConvCache, k: np.ndarray, need_dx: bool = True
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Gradients of a convolution layer from its error before the sigmoid.

    dk_{p,q} = rot180(x_p) * dz_q, eqs. (36)-(40) and (56)-(59); db_q = sum dz_q, eqs. (45) and
    (64); dx_p = sum_q dz_q * rot180(k_{p,q}) as a 'full' convolution, eqs. (49)-(51).

    Inputs: dz (Q, OH, OW, N), eq. (37) / (57), any memory order; cache from
    `conv_sigmoid_forward`; k (C, Q, KH, KW); need_dx: False skips dx (the first layer needs no
    input gradient).
    Returns: dx (C, H, W, N) or None; dk (C, Q, KH, KW); db (Q,).
    """
    c, q, kh, kw = k.shape
    _, oh, ow, n = dz.shape
    padded = pad_rows(dz, kh)
    rows_dz = padded[kh - 1 : kh - 1 + oh]  # (OH, Q, OW, N), C-contiguous
    rows_dz[...] = dz.transpose(1, 0, 2, 3)
    dk, db = conv_kernel_grads(rows_dz.reshape(oh, q, ow * n), cache, c, kh, kw)
    if not need_dx:
        return None, dk, db
    rows = _rows_per_product(oh + kh - 1, ROWS["back2"])
    return input_error(padded, back_matrix(k, rows), c, kw, rows), dk, db


def full_conv(dz: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Error on the input maps: dx_p = sum_q dz_q * rot180(k_{p,q}), 'full' size, eqs. (49)-(51).

    Inputs: dz (Q, OH, OW, N), any memory order; k (C, Q, KH, KW).
    Returns: dx (C, OH+KH-1, OW+KW-1, N), laid out (H, C, W, N) (`input_error`).
    """
    c, _, kh, kw = k.shape
    oh = dz.shape[1]
    padded = pad_rows(dz, kh)
    padded[kh - 1 : kh - 1 + oh] = dz.transpose(1, 0, 2, 3)
    rows = _rows_per_product(oh + kh - 1, ROWS["back2"])
    return input_error(padded, back_matrix(k, rows), c, kw, rows)


# --------------------------------------------------------------------------- pooling


def pool_sum(c: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Sums of 2x2 blocks: 4 times the mean pooling of eqs. (6) and (9).

    Inputs: c (Q, H, W, N), H and W even, any memory order; out: optional (Q, H/2, W/2, N).
    Returns: s (Q, H/2, W/2, N), laid out like c (or `out`).
    """
    q, h, w, n = c.shape
    rows = c.reshape(q, h // 2, 2, w, n)  # a view: splits H
    s = rows[:, :, 0] + rows[:, :, 1]  # (Q, H/2, W, N): whole rows added
    s = s.reshape(q, h // 2, w // 2, 2, n)  # (Q, H/2, W/2, 2, N)
    return np.add(s[:, :, :, 0], s[:, :, :, 1], out=out)


def pool_forward(c: np.ndarray) -> np.ndarray:
    """2x2 mean pooling, eqs. (6) and (9): S(i, j) = 1/4 sum_{u,v=0,1} C(2i-u, 2j-v).

    Inputs: c (Q, H, W, N), H and W even.
    Returns: s (Q, H/2, W/2, N).
    """
    out = pool_sum(c)
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


def pool_sigmoid_backward(
    ds: np.ndarray, a: np.ndarray, scale: float = 0.25, out: np.ndarray | None = None
) -> np.ndarray:
    """Error before the sigmoid of the layer under a pooling: dC_σ = upsample(dS) ⊙ a(1-a),
    eqs. (32)+(37) and (52)+(57), with the sigmoid derivative taken from the cached output a.

    Inputs: ds (Q, H/2, W/2, N); a (Q, H, W, N), any memory order; scale: the pooling's 1/4
    (1 when ds comes already quartered); out: optional (Q, H, W, N) to write into.
    Returns: dz (Q, H, W, N), laid out like a (or `out`).
    """
    q, h, w, n = a.shape
    dz = np.subtract(1.0, a, out=out)
    dz *= a  # a(1-a)
    if scale != 1.0:
        ds = a.dtype.type(scale) * ds
    # Broadcast the error over each 2x2 block instead of materialising the upsample.
    blocks = dz.reshape(q, h // 2, 2, w // 2, 2, n)  # a view of dz
    blocks *= ds[:, :, None, :, None]
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


# The network keeps S2 laid out (H, Q, W) = (4, 12, 4), as the second layer's rows come out of
# its products: feature line (i, q, j) is entry FLAT[i, q, j] = q*16 + j*4 + i of `flatten`'s f.
S2_LINES = (
    np.arange(12)[None, :, None] * 16
    + np.arange(4)[None, None, :] * 4
    + np.arange(4)[:, None, None]
).ravel()  # (192,)


# --------------------------------------------------------------------------- fully connected


def fc_forward(f: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
    """ŷ = σ(W f + b), eq. (12).

    Inputs: f (F, N); W (10, F); b (10,).
    Returns: yhat (10, N).
    """
    zneg = (-W) @ f  # (10, N)
    zneg -= b[:, None]
    return _sigmoid_of_negated_(zneg)


def loss_and_delta(
    yhat: np.ndarray, y: np.ndarray, batch_size: int | None = None
) -> tuple[float, np.ndarray]:
    """Batch-mean loss, eq. (13), and the output error Δŷ of eqs. (17)/(23), also a batch mean.

    Inputs: yhat (10, N); y (10, N) one-hot; batch_size: the B of the mean (default N; a part of
    a batch passes the whole batch's size, and the parts' results add up to the batch's).
    Returns: loss = 1/B sum_n 1/2 sum_i (ŷ - y)^2; dy (10, N) = (ŷ - y) ŷ(1-ŷ) / B.
    """
    n = yhat.shape[1] if batch_size is None else batch_size
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


class Operands(NamedTuple):
    """The parameters as the network's products take them, built once per batch (`operands`)."""

    k1: np.ndarray  # (ROWS conv1 * 6, ...) `conv_matrix` of k1, b1
    k2: np.ndarray  # `conv_matrix` of k2/4, b2 (its input windows hold pooled sums of four)
    back2: np.ndarray  # `back_matrix` of k2/4: the input error comes out quartered for pool 1
    fc: np.ndarray  # (10, 193) [-W/4 | -b], W's columns in S2's line order (`S2_LINES`)
    fc_t: np.ndarray  # (192, 10) (W/4)^T in that order: the error comes out quartered


def operands(params: Params) -> Operands:
    """Build the network's matrices from params (small: a few thousand numbers)."""
    quarter = params["W"].dtype.type(0.25)
    w_lines = quarter * params["W"][:, S2_LINES]  # (10, 192)
    h1 = _rows_per_product(24, ROWS["conv1"])
    h2 = _rows_per_product(8, ROWS["conv2"])
    return Operands(
        k1=conv_matrix(params["k1"], params["b1"], h1),
        k2=conv_matrix(params["k2"], params["b2"], h2, scale=0.25),
        back2=back_matrix(params["k2"], _rows_per_product(12, ROWS["back2"]), scale=0.25),
        fc=np.concatenate((-w_lines, -params["b"][:, None]), axis=1),
        fc_t=np.ascontiguousarray(w_lines.T),
    )


class ForwardCache(NamedTuple):
    ops: Operands  # the matrices the pass used, for `backward`
    c1: ConvCache  # C1: windows of the image, σ output (6, 24, 24, N)
    c2: ConvCache  # C2: windows of the pooled sums of C1, σ output (12, 8, 8, N)
    s2: np.ndarray  # (193, N): S2 as sums of four, lines in `S2_LINES` order, then ones
    yhat: np.ndarray  # (10, N)

    @property
    def f(self) -> np.ndarray:
        """F of eq. (10), (192, N): S2 in `flatten`'s order (a copy; for checks)."""
        f = np.empty_like(self.s2[:192])
        f[S2_LINES] = 0.25 * self.s2[:192]
        return f


def to_internal(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Images (N, H, W) -> one input map in the internal layout (1, H, W, N) of `dtype`."""
    n, h, w = x.shape
    return np.ascontiguousarray(x.transpose(1, 2, 0), dtype=dtype).reshape(1, h, w, n)


def forward(
    params: Params, x: np.ndarray, lap: Lap = no_lap, ops: Operands | None = None
) -> tuple[np.ndarray, ForwardCache]:
    """Forward pass, eqs. (4)-(12).

    Inputs: params (see module docstring); x (N, 28, 28) in [0, 1] (any real dtype); lap:
    optional profiling hook called with each stage's name when it ends; ops: `operands(params)`,
    when the caller already has them (a batch's parts share them).
    Returns: yhat (N, 10) (a transposed view) and the cache for `backward`.
    """
    ops = operands(params) if ops is None else ops
    dtype = params["W"].dtype
    n = x.shape[0]
    x_int = to_internal(x, dtype)  # (1, 28, 28, N)
    lap("input")
    h1 = ops.k1.shape[0] // 6
    a1, c1 = conv_rows_sigmoid(width_windows(x_int, KERNEL), ops.k1, KERNEL, h1)  # (6, 24, 24, N)
    lap("conv1_fwd")
    s1 = pool_sum(a1)  # (6, 12, 12, N) = 4 S1, laid out (12, 6, 12, N)
    lap("pool1_fwd")
    h2 = ops.k2.shape[0] // 12
    a2, c2 = conv_rows_sigmoid(width_windows(s1, KERNEL), ops.k2, KERNEL, h2)  # (12, 8, 8, N)
    lap("conv2_fwd")
    s2 = np.empty((193, n), dtype)  # 4 S2 in its rows' order (4, 12, 4), then a line of ones
    pool_sum(a2, out=s2[:192].reshape(4, 12, 4, n).transpose(1, 0, 2, 3))
    s2[192] = 1.0
    lap("pool2_fwd")
    yhat = _sigmoid_of_negated_(ops.fc @ s2)  # (10, N), eq. (12): W f + b from 4 S2
    lap("fc_fwd")
    return yhat.T, ForwardCache(ops=ops, c1=c1, c2=c2, s2=s2, yhat=yhat)


def backward(
    params: Params,
    cache: ForwardCache,
    y: np.ndarray,
    lap: Lap = no_lap,
    batch_size: int | None = None,
) -> tuple[float, Params]:
    """Loss and batch-mean gradients of every parameter, eqs. (13)-(64).

    Inputs: params; cache from `forward`; y (N, 10) one-hot targets (any real dtype); lap:
    profiling hook; batch_size: the number of samples the mean is over (default N; see
    `loss_and_delta`).
    Returns: loss (eq. (13), batch mean) and grads with the same names and shapes as params.
    """
    dtype = params["W"].dtype
    ops = cache.ops
    n = cache.yhat.shape[1]
    loss, dy = loss_and_delta(cache.yhat, np.asarray(y, dtype).T, batch_size)  # (10, N)
    dwb = dy @ cache.s2.T  # (10, 193): [4 dW in S2's line order | db], eqs. (19), (24)
    dW = np.empty_like(params["W"])
    dW[:, S2_LINES] = dwb[:, :192]
    dW *= dtype.type(0.25)
    ds2 = ops.fc_t @ dy  # (192, N) = dS2/4 in S2's line order, eqs. (30)-(31)
    lap("fc_bwd")
    padded = pad_rows(cache.c2.a, KERNEL)  # (16, 12, 8, N): dz2 in rows 4..11
    dz2 = padded[KERNEL - 1 : KERNEL - 1 + 8].transpose(1, 0, 2, 3)  # (12, 8, 8, N)
    ds2 = ds2.reshape(4, 12, 4, n).transpose(1, 0, 2, 3)  # (12, 4, 4, N)
    pool_sigmoid_backward(ds2, cache.c2.a, scale=1.0, out=dz2)  # eqs. (32), (37)
    lap("pool2_bwd")
    dz2_rows = padded[KERNEL - 1 : KERNEL - 1 + 8].reshape(8, 12, 8 * n)
    dk2, db2 = conv_kernel_grads(dz2_rows, cache.c2, 6, KERNEL, KERNEL, scale=0.25)  # (40), (45)
    h3 = ops.back2.shape[0] // (KERNEL * 6)
    ds1 = input_error(padded, ops.back2, 6, KERNEL, h3)  # (6, 12, 12, N) = dS1/4, eq. (51)
    lap("conv2_bwd")
    dz1 = pool_sigmoid_backward(ds1, cache.c1.a, scale=1.0)  # (6, 24, 24, N), eqs. (52), (57)
    lap("pool1_bwd")
    dz1_rows = dz1.transpose(1, 0, 2, 3).reshape(24, 6, 24 * n)  # a view: laid out like a1
    dk1, db1 = conv_kernel_grads(dz1_rows, cache.c1, 1, KERNEL, KERNEL)  # eqs. (59), (64)
    lap("conv1_bwd")
    return loss, {"k1": dk1, "b1": db1, "k2": dk2, "b2": db2, "W": dW, "b": dwb[:, 192].copy()}


def sgd_update(params: Params, grads: Params, lr: float) -> Params:
    """Plain SGD, eqs. (65)-(70): p <- p - α Δp. Returns new arrays; the inputs are unchanged."""
    return {name: p - p.dtype.type(lr) * grads[name] for name, p in params.items()}
