"""Replay of the random draws of the MATLAB DeepLearnToolbox CNN (the code Zhang's paper follows)
as run under GNU Octave 7 after ``rand('state', seed)``: initial parameters and epoch orders.

What the toolbox does (``test_example_CNN.m``, ``cnnsetup.m``, ``cnntrain.m``), in stream order:
1. ``cnnsetup``: conv layer 1 (1 -> 6 maps), then conv layer 2 (6 -> 12 maps); in each, for
   every output map j (outer loop) and input map i (inner loop), one kernel
   ``k{i}{j} = (rand(5) - 0.5) * 2 * sqrt(6 / (fan_in + fan_out))`` with
   fan_in = maps_in * 25, fan_out = maps_out * 25; then
   ``ffW = (rand(10, 192) - 0.5) * 2 * sqrt(6 / (10 + 192))``. Biases are 0. 3,870 draws.
2. ``cnntrain``: each epoch, ``kk = randperm(60000)``; batch l (from 0) is kk[50 l : 50 (l+1)].

The random stream: Octave's ``rand('state', s)`` seeds its Mersenne Twister by ``init_by_array``
with the one-element key [s], and each uniform double is built from two 32-bit words exactly as
``numpy.random.RandomState.random_sample`` builds it, except that Octave redraws an exact 0.0
(``OctaveStream`` drops those; it happens with probability 2**-53 per number). Only the legacy
``RandomState([s])`` reproduces this stream (``RandomState(s)`` seeds by ``init_genrand``, a
different stream; Generators use other algorithms), so this module is the one place where the
project uses it. ``rand(r, c)`` fills its r x c matrix column-major.

Parameter mapping (see `pipeline.model.cnn` for the names and shapes):
- Kernels: the toolbox convolves with ``convn(a, k{i}{j}, 'valid')``, a true convolution, which
  is the convention of the paper and of `cnn` (eq. (5), (8)). So the stored kernel is our kernel:
  k1[i, j] / k2[i, j] = k{i+1}{j+1} (map_in i, map_out j), row u and column v alike, provided
  the images are presented as the toolbox sees them (`present`).
- FC: the toolbox's feature vector stacks the 12 S2 maps, each flattened column-major by
  ``reshape``, which is `cnn.flatten`'s column scan (eq. (10)); so W = ffW, shape (10, 192).
- Images: ``reshape(train_x', 28, 28, 60000)`` refills each row-major 784-pixel row
  column-major, so the toolbox trains (and tests) on the transpose of every natural image; pixels
  are ``double(x) / 255`` (what `pipeline.data.prepared.Images` gives in float64) and targets
  one-hot.

Batches: the toolbox asserts that the batch size divides N; `sgd.train` would also accept a
short last batch, which the toolbox never trains on, so a faithful replay uses N divisible by the
batch size (60,000 / 50).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from pipeline.data.prepared import Images
from pipeline.model import cnn

KERNEL = cnn.KERNEL  # 5: rand(5) is a 5 x 5 kernel
CONV_MAPS = ((1, 6), (6, 12))  # (maps_in, maps_out) of conv layers 1 and 2, in draw order
N_INIT_DRAWS = (1 * 6 + 6 * 12) * KERNEL**2 + 10 * 192  # 3,870 numbers drawn by `init_params`
SEED_LIMIT = 2**32  # a seed is one 32-bit word of init_by_array's key


class OctaveStream:
    """Octave's uniform random stream after ``rand('state', seed)``: one shared, stateful source.

    Use `octave_stream` to make one. The toolbox draws initialisation first, then each epoch's
    permutation from the same stream, so draw in that order (or use `replay`).
    """

    def __init__(
        self, raw: Callable[[int], np.ndarray], source: np.random.RandomState | None = None
    ) -> None:
        """raw(count) -> (count,) float64 in [0, 1): the underlying double stream, zeros kept;
        source: the RandomState behind `raw`, when there is one (for `state` and `restore`)."""
        self._raw = raw
        self.source = source
        self.drawn = 0  # numbers handed out so far

    def state(self) -> dict[str, Any]:
        """Where the stream stands: the Mersenne Twister's state (624 words and a position,
        JSON-ready) and the count of numbers handed out."""
        if self.source is None:
            raise ValueError("this stream has no RandomState to save")
        mt = self.source.get_state(legacy=False)
        return {
            "key": mt["state"]["key"].tolist(),
            "pos": int(mt["state"]["pos"]),
            "has_gauss": int(mt["has_gauss"]),
            "gauss": float(mt["gauss"]),
            "drawn": self.drawn,
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Put the stream back where `state` (from `state()`) says it stood."""
        if self.source is None:
            raise ValueError("this stream has no RandomState to restore")
        self.source.set_state(
            {
                "bit_generator": "MT19937",
                "state": {"key": np.array(state["key"], dtype=np.uint32), "pos": state["pos"]},
                "has_gauss": state["has_gauss"],
                "gauss": state["gauss"],
            }
        )
        self.drawn = int(state["drawn"])

    def draw(self, count: int) -> np.ndarray:
        """The next `count` numbers of the stream, in order, as a (count,) float64 array in
        (0, 1). Octave's randu53 redraws a 0.0, so zeros of the raw stream are skipped."""
        out = self._raw(count)
        while np.any(out == 0.0):  # practically never: probability 2**-53 per number
            kept = out[out != 0.0]
            out = np.concatenate((kept, self._raw(count - kept.size)))
        self.drawn += count
        return out

    def rand(self, rows: int, cols: int) -> np.ndarray:
        """Octave's ``rand(rows, cols)``: the next rows*cols numbers filled column-major.

        Returns: (rows, cols) float64.
        """
        return self.draw(rows * cols).reshape(cols, rows).T  # column-major fill


def octave_stream(seed: int) -> OctaveStream:
    """The stream of Octave's ``rand('state', seed)``, seed an integer in [0, 2**32).

    ``RandomState([seed])`` (a one-element key for init_by_array) is Octave's seeding; the legacy
    RandomState is used only because it is the one NumPy generator with this stream.
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise TypeError(f"seed must be an integer, got {seed!r}")
    if not 0 <= seed < SEED_LIMIT:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    # The legacy RandomState on purpose: it is Octave's stream (module docstring).
    state = np.random.RandomState([int(seed)])
    return OctaveStream(state.random_sample, state)


# --------------------------------------------------------------------------- initialisation


def _scaled(r: np.ndarray, fan: int) -> np.ndarray:
    """(r - 0.5) * 2 * sqrt(6 / fan), evaluated left to right as MATLAB does (bit-identical)."""
    return (r - 0.5) * 2 * np.sqrt(6 / fan)


def conv_kernels(stream: OctaveStream, maps_in: int, maps_out: int) -> np.ndarray:
    """One conv layer of ``cnnsetup``: kernels k{i}{j} for j outer, i inner, each ``rand(5)``.

    Eqs. (1)-(2): U(+-sqrt(6 / ((maps_in + maps_out) * 25))).
    Returns: k (maps_in, maps_out, 5, 5) float64, k[i, j, u, v] = k{i+1}{j+1}(u+1, v+1).
    """
    r = stream.draw(maps_out * maps_in * KERNEL**2)
    # Draw order is (j, i, v, u): j outer, i inner, and rand(5) fills u (rows) fastest.
    r = r.reshape(maps_out, maps_in, KERNEL, KERNEL).transpose(1, 0, 3, 2)  # (I, J, U, V)
    fan = maps_in * KERNEL**2 + maps_out * KERNEL**2  # fan_in + fan_out
    return _scaled(r, fan)


def init_params(stream: OctaveStream, dtype: type = np.float64) -> cnn.Params:
    """The toolbox's initial parameters, drawn from `stream` in ``cnnsetup``'s order.

    Inputs:
    - stream: fresh from `octave_stream(seed)`; advanced by `N_INIT_DRAWS` (3,870) numbers.
    - dtype: np.float32 or np.float64. The values are computed in float64 as MATLAB does and
      rounded once to `dtype`, as `cnn.init_params` does.

    Returns: params with `cnn.SHAPES`: k1 (1, 6, 5, 5), k2 (6, 12, 5, 5), W (10, 192) = ffW
    (eq. (3): U(+-sqrt(6 / (10 + 192)))), and zero biases b1 (6,), b2 (12,), b (10,).
    """
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    k1, k2 = (conv_kernels(stream, maps_in, maps_out) for maps_in, maps_out in CONV_MAPS)
    n_out, n_f = cnn.SHAPES["W"]
    W = _scaled(stream.rand(n_out, n_f), n_out + n_f)  # (10, 192)
    return {
        "k1": k1.astype(dtype),
        "b1": np.zeros(cnn.SHAPES["b1"], dtype),
        "k2": k2.astype(dtype),
        "b2": np.zeros(cnn.SHAPES["b2"], dtype),
        "W": W.astype(dtype),
        "b": np.zeros(cnn.SHAPES["b"], dtype),
    }


# --------------------------------------------------------------------------- sample order


def randperm(stream: OctaveStream, n: int) -> np.ndarray:
    """Octave 7's ``randperm(n)`` (``libinterp/corefcn/randperm.cc``), 0-based.

    It draws r_0..r_(n-1), starts from p = 0..n-1, and for i = 0..n-1 swaps p[i] with
    p[i + floor(r_i (n - i))]. The targets are computed vectorised (same double arithmetic as
    Octave's, so the same integers); the swaps depend on each other, so they run as a Python loop
    over lists: 8-15 ms for n = 60,000 (the draws 0.2 ms), once per epoch, outside the batch loop.

    Returns: p (n,) int64, a permutation of range(n); the toolbox's 1-based kk is p + 1.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    r = stream.draw(n)  # (n,)
    left = n - np.arange(n, dtype=np.float64)  # n - i, exact in float64
    target = (np.arange(n) + np.floor(r * left).astype(np.int64)).tolist()
    p = list(range(n))
    for i, k in enumerate(target):
        p[i], p[k] = p[k], p[i]
    return np.array(p, dtype=np.int64)


class EpochOrders:
    """An `order` for `sgd.train`: epoch e (from 1) -> the toolbox's e-th ``randperm(n)``.

    Each call draws from `stream`, so the init must already have been drawn from it (see
    `replay`) and the epochs must be asked for as 1, 2, 3, ..., each once, as `sgd.train`
    does; anything else raises ValueError rather than hand out a permutation from the wrong
    place in the stream. `state`/`restore` save and put back the stream and the next epoch
    (a checkpoint).
    """

    KIND = "toolbox"

    def __init__(self, stream: OctaveStream, n: int) -> None:
        self.stream, self.n = stream, n
        self.expected = 1  # the next epoch to draw

    def __call__(self, epoch: int) -> np.ndarray:
        if epoch != self.expected:
            raise ValueError(
                f"toolbox epoch orders are drawn in sequence: asked for epoch {epoch}, "
                f"next is {self.expected}"
            )
        self.expected += 1
        return randperm(self.stream, self.n)

    def state(self) -> dict[str, Any]:
        return {"kind": self.KIND, "n": self.n, "next_epoch": self.expected, **self.stream.state()}

    def restore(self, state: Mapping[str, Any]) -> None:
        if state.get("kind") != self.KIND or state.get("n") != self.n:
            raise ValueError(f"not the state of toolbox orders of {self.n}: {state.get('kind')}")
        self.stream.restore(state)
        self.expected = int(state["next_epoch"])


def epoch_orders(stream: OctaveStream, n: int) -> EpochOrders:
    """An `order` for `sgd.train`: epoch e (from 1) -> the toolbox's e-th ``randperm(n)``, drawn
    from `stream` in sequence (see `EpochOrders`).

    Returns: order(epoch) -> (n,) int64 permutation of range(n).
    """
    return EpochOrders(stream, n)


def replay(seed: int, n: int, dtype: type = np.float64) -> tuple[cnn.Params, EpochOrders]:
    """The toolbox's run after ``rand('state', seed)``: initial params and the epoch order.

    Inputs: seed in [0, 2**32); n training samples (60,000 in the toolbox; the batch size should
    divide it); dtype of the params.
    Returns: (params, order) for `training.train(params, present(x), y, order=order, ...)`.
    """
    stream = octave_stream(seed)
    params = init_params(stream, dtype)
    return params, epoch_orders(stream, n)


# --------------------------------------------------------------------------- images


def present(images: np.ndarray | Images) -> np.ndarray | Images:
    """Natural images -> the toolbox's presentation: each image transposed.

    ``reshape(train_x', 28, 28, N)`` puts natural pixel (row r, column c), stored at r*28 + c,
    at (c, r). Apply to training and test images alike.

    Inputs: images (N, H, W) (or one (H, W) image), an array or `Images`.
    Returns: (N, W, H), a view: out[n, a, b] = images[n, b, a] (`Images` for `Images`).
    """
    if isinstance(images, Images):
        return images.transposed()
    images = np.asarray(images)
    if images.ndim < 2:
        raise ValueError(f"images must have at least 2 dimensions, got shape {images.shape}")
    return images.swapaxes(-1, -2)


def to_natural(params: cnn.Params) -> cnn.Params:
    """Parameters trained on presented (transposed) images -> the same network for natural ones.

    Transposing the input transposes every map: (I^T * k)(i, j) = (I * k^T)(j, i) for the true
    convolution of eq. (5), and likewise for eq. (8), so the kernels transpose (u <-> v). The S2
    maps are transposed too, so the column scan F (eq. (10)) of a presented map is the row scan
    of the natural one: W's 16 columns of each map are permuted (r, c) -> (c, r). Biases are
    unchanged. `cnn.forward(to_natural(p), x)` equals `cnn.forward(p, present(x))` up to
    rounding, so saved weights, `evaluate` and the pyfunc model all take natural images.
    """
    idx = np.arange(192).reshape(12, 4, 4)  # (Q, col, row): F's column-scan index of S2
    perm = idx.transpose(0, 2, 1).reshape(192)  # the same position in the transposed map
    return {
        "k1": np.ascontiguousarray(params["k1"].swapaxes(-1, -2)),  # (1, 6, 5, 5), u <-> v
        "b1": params["b1"].copy(),
        "k2": np.ascontiguousarray(params["k2"].swapaxes(-1, -2)),  # (6, 12, 5, 5)
        "b2": params["b2"].copy(),
        "W": np.ascontiguousarray(params["W"][:, perm]),  # (10, 192)
        "b": params["b"].copy(),
    }
