"""The vectorised network against independent oracles: the paper's loops, finite differences
(per layer against a random upstream gradient, and for the whole network), hand-worked arrays."""

from __future__ import annotations

import numpy as np
import paper_loops
import pytest
from cnn_helpers import count_params, loss_and_grads, sigmoid
from gradient_check import eval_numerical_gradient, eval_numerical_gradient_array, rel_error
from numpy.lib.array_utils import byte_bounds

from pipeline.model import cnn


def random_batch(seed: int, n: int, dtype=np.float64) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.random((n, 28, 28)).astype(dtype)
    y = np.eye(10, dtype=dtype)[rng.integers(0, 10, n)]
    return x, y


@pytest.fixture(scope="module")
def params() -> cnn.Params:
    p = cnn.init_params(np.random.default_rng(1))
    # Non-zero biases, so that the bias paths are exercised too.
    rng = np.random.default_rng(2)
    for name in ("b1", "b2", "b"):
        p[name] = rng.uniform(-0.5, 0.5, p[name].shape)
    return p


def as_lists(p: cnn.Params) -> dict:
    return {name: v.tolist() for name, v in p.items()}


# --------------------------------------------------------------------------- paper's loops


@pytest.fixture(scope="module")
def oracle(params):
    """Per-sample forward results and gradients of the loop transcription, for 3 samples."""
    x, y = random_batch(3, 3)
    plist = as_lists(params)
    fws = [paper_loops.forward(plist, img.tolist()) for img in x]
    grads = [
        paper_loops.backward(plist, img.tolist(), fw, t.tolist())
        for img, fw, t in zip(x, fws, y, strict=True)
    ]
    return x, y, fws, grads


def test_forward_equals_paper_loops(params, oracle):
    x, y, fws, _ = oracle
    yhat, cache = cnn.forward(params, x)
    np.testing.assert_allclose(yhat, [fw["yhat"] for fw in fws], rtol=0, atol=1e-12)
    # Intermediate maps, internal layout (C, H, W, N) -> (N, C, H, W).
    np.testing.assert_allclose(
        cache.c1.a.transpose(3, 0, 1, 2), [fw["C1"] for fw in fws], atol=1e-12
    )
    np.testing.assert_allclose(
        cache.c2.a.transpose(3, 0, 1, 2), [fw["C2"] for fw in fws], atol=1e-12
    )
    np.testing.assert_allclose(cache.f.T, [fw["f"] for fw in fws], atol=1e-12)
    s1 = cnn.pool_forward(cache.c1.a).transpose(3, 0, 1, 2)
    np.testing.assert_allclose(s1, [fw["S1"] for fw in fws], atol=1e-12)
    loss, _ = cnn.backward(params, cache, y)
    expected = np.mean(
        [paper_loops.loss(fw["yhat"], t.tolist()) for fw, t in zip(fws, y, strict=True)]
    )
    assert loss == pytest.approx(expected, rel=1e-12)


def test_batch_gradients_equal_mean_of_paper_per_sample_gradients(params, oracle):
    x, y, _, grads = oracle
    _, g = loss_and_grads(params, x, y)
    for name in cnn.PARAM_NAMES:
        expected = np.mean([np.asarray(gs[name]) for gs in grads], axis=0)
        np.testing.assert_allclose(g[name], expected, rtol=1e-12, atol=1e-12, err_msg=name)


def test_batch_size_one_is_the_papers_update(params, oracle):
    x, y, _, grads = oracle
    lr = 0.7
    _, g = loss_and_grads(params, x[:1], y[:1])
    new = cnn.sgd_update(params, g, lr)
    for name in cnn.PARAM_NAMES:  # eqs. (65)-(70) with the loops' gradient
        expected = params[name] - lr * np.asarray(grads[0][name])
        np.testing.assert_allclose(new[name], expected, rtol=1e-12, atol=1e-12, err_msg=name)


def test_batch_gradient_is_mean_of_vectorised_per_sample_gradients(params):
    x, y = random_batch(4, 7)
    loss, g = loss_and_grads(params, x, y)
    singles = [loss_and_grads(params, x[i : i + 1], y[i : i + 1]) for i in range(7)]
    assert loss == pytest.approx(np.mean([s[0] for s in singles]), rel=1e-13)
    for name in cnn.PARAM_NAMES:
        np.testing.assert_allclose(
            g[name], np.mean([s[1][name] for s in singles], axis=0), rtol=1e-11, atol=1e-15
        )


# --------------------------------------------------------------------------- per-layer gradients
# CS231n style: a seeded random upstream gradient dout, f(x) = sum(forward(x) * dout), and each
# backward op's result against central differences of f in float64. Sizes are small and
# unequal (C != Q, H != W, KH != KW, N > 1) so that a swapped axis cannot pass.

TOL = 1e-7  # largest elementwise relative error, `rel_error`


def rows_layout(a: np.ndarray) -> np.ndarray:
    """The same values as a (C, H, W, N) array laid out (H, C, W, N), as the network's are."""
    return np.ascontiguousarray(a.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)


@pytest.mark.parametrize("layout", ["C", "rows"])
def test_conv_backward_against_finite_differences(layout):
    rng = np.random.default_rng(10)
    x = rng.standard_normal((2, 7, 9, 3))  # (C, H, W, N)
    k = 0.5 * rng.standard_normal((2, 3, 3, 4))  # (C, Q, KH, KW)
    b = rng.standard_normal(3)  # (Q,)
    dout = rng.standard_normal((3, 5, 6, 3))  # (Q, OH, OW, N), upstream gradient of a
    a, cache = cnn.conv_sigmoid_forward(x, k, b)
    dz = dout * a * (1 - a)  # through the sigmoid, eq. (37)
    dz = np.ascontiguousarray(dz) if layout == "C" else rows_layout(dz)
    dx, dk, db = cnn.conv_backward(dz, cache, k)

    def forward_of(x_, k_, b_):
        return cnn.conv_sigmoid_forward(x_, k_, b_)[0]

    num_dx = eval_numerical_gradient_array(lambda v: forward_of(v, k, b), x, dout)
    num_dk = eval_numerical_gradient_array(lambda v: forward_of(x, v, b), k, dout)
    num_db = eval_numerical_gradient_array(lambda v: forward_of(x, k, v), b, dout)
    assert rel_error(dx, num_dx) < TOL  # full_conv, eq. (51)
    assert rel_error(dk, num_dk) < TOL  # eqs. (40), (59)
    assert rel_error(db, num_db) < TOL  # eqs. (45), (64)
    # The first layer skips dx; dk and db do not change.
    no_dx, dk1, db1 = cnn.conv_backward(dz, cache, k, need_dx=False)
    assert no_dx is None
    np.testing.assert_array_equal(dk1, dk)
    np.testing.assert_array_equal(db1, db)


def test_pool_backward_against_finite_differences():
    rng = np.random.default_rng(11)
    c = rng.standard_normal((3, 6, 8, 2))  # (Q, H, W, N)
    dout = rng.standard_normal((3, 3, 4, 2))  # (Q, H/2, W/2, N)
    num = eval_numerical_gradient_array(cnn.pool_forward, c, dout)
    assert rel_error(cnn.pool_backward(dout), num) < TOL  # eq. (32)


@pytest.mark.parametrize("layout", ["C", "rows"])
def test_pool_sigmoid_backward_against_finite_differences(layout):
    rng = np.random.default_rng(12)
    z = rng.standard_normal((3, 6, 8, 2))  # (Q, H, W, N), before the sigmoid
    dout = rng.standard_normal((3, 3, 4, 2))  # (Q, H/2, W/2, N)
    a = sigmoid(z)
    a = np.ascontiguousarray(a) if layout == "C" else rows_layout(a)
    num = eval_numerical_gradient_array(lambda v: cnn.pool_forward(sigmoid(v)), z, dout)
    assert rel_error(cnn.pool_sigmoid_backward(dout, a), num) < TOL  # eqs. (32)+(37)


def test_fc_backward_against_finite_differences():
    rng = np.random.default_rng(13)
    f = rng.standard_normal((7, 4))  # (F, N)
    W = 0.5 * rng.standard_normal((5, 7))
    b = rng.standard_normal(5)
    dout = rng.standard_normal((5, 4))  # upstream gradient of yhat
    yhat = cnn.fc_forward(f, W, b)
    dy = dout * yhat * (1 - yhat)  # through the sigmoid, as eq. (17)
    dW, db, df = cnn.fc_backward(dy, f, W)
    num_dW = eval_numerical_gradient_array(lambda v: cnn.fc_forward(f, v, b), W, dout)
    num_db = eval_numerical_gradient_array(lambda v: cnn.fc_forward(f, W, v), b, dout)
    num_df = eval_numerical_gradient_array(lambda v: cnn.fc_forward(v, W, b), f, dout)
    assert rel_error(dW, num_dW) < TOL  # eq. (19)
    assert rel_error(db, num_db) < TOL  # eq. (24)
    assert rel_error(df, num_df) < TOL  # eq. (30)


def test_loss_and_delta_against_finite_differences():
    # The loss is the scalar itself (no upstream gradient): dy is its gradient with respect to
    # the FC layer's input to the sigmoid, eqs. (17)/(23), batch mean included.
    rng = np.random.default_rng(14)
    z = rng.standard_normal((10, 4))  # (10, N) before the sigmoid
    y = np.eye(10)[:, rng.integers(0, 10, 4)]  # (10, N) one-hot columns
    loss, dy = cnn.loss_and_delta(sigmoid(z), y)
    num = eval_numerical_gradient(lambda v: cnn.loss_and_delta(sigmoid(v), y)[0], z)
    assert rel_error(dy, num) < TOL
    e = sigmoid(z) - y
    assert loss == pytest.approx(0.5 * np.sum(e**2) / 4, rel=1e-14)  # eq. (13), batch mean


def test_unflatten_is_the_gradient_of_flatten():
    # flatten permutes entries, so its backward is its inverse: eqs. (11) and (31).
    rng = np.random.default_rng(15)
    s = rng.standard_normal((3, 4, 5, 2))  # (Q, H, W, N)
    dout = rng.standard_normal((60, 2))  # (Q*H*W, N)
    num = eval_numerical_gradient_array(cnn.flatten, s, dout)
    assert rel_error(cnn.unflatten(dout, 3, 4, 5), num) < TOL
    np.testing.assert_array_equal(cnn.unflatten(cnn.flatten(s), 3, 4, 5), s)
    np.testing.assert_array_equal(cnn.flatten(cnn.unflatten(dout, 3, 4, 5)), dout)


# --------------------------------------------------------------------------- whole network


@pytest.mark.slow
def test_central_finite_differences_every_parameter(params):
    x, y = random_batch(5, 2)
    _, g = loss_and_grads(params, x, y)
    h = 1e-5
    for name in cnn.PARAM_NAMES:
        num = np.empty_like(params[name])
        for i in np.ndindex(params[name].shape):
            p = {k: v.copy() for k, v in params.items()}
            p[name][i] += h
            lp = loss_and_grads(p, x, y)[0]
            p[name][i] -= 2 * h
            lm = loss_and_grads(p, x, y)[0]
            num[i] = (lp - lm) / (2 * h)
        rel = np.linalg.norm(g[name] - num) / (np.linalg.norm(g[name]) + np.linalg.norm(num))
        assert rel < 1e-6, (name, rel)


# --------------------------------------------------------------------------- hand-worked and layout


def test_conv_products_read_overlapping_windows_of_one_width_window_copy():
    # The layout `ConvCache` documents: `a` (Q, OH, OW, N) over (OH, Q, OW, N) memory, the order
    # in which the products come out (the sigmoid needs no reordering pass); `cols` overlapping
    # read-only views into one (H, C*KW + 1, OW, N) copy of the input (KW windows a row, not
    # KH*KW), one view per group of `rows` output rows.
    rng = np.random.default_rng(16)
    x = rng.random((2, 12, 9, 3))  # (C, H, W, N)
    a, cache = cnn.conv_sigmoid_forward(x, rng.random((2, 4, 5, 5)), rng.random(4))
    assert a.shape == (4, 8, 5, 3) and cache.a is a
    assert a.transpose(1, 0, 2, 3).flags.c_contiguous
    assert cache.rows == 4 and cache.cols.shape == (2, (4 + 4) * 11, 5 * 3)
    assert np.shares_memory(cache.cols[0], cache.cols[1]) and not cache.cols.flags.writeable
    low, high = byte_bounds(cache.cols)
    assert high - low == 12 * 11 * 5 * 3 * x.itemsize  # all of the copy, nothing more


def test_width_windows_hold_each_rows_column_windows_and_ones():
    x = np.arange(2 * 3 * 6 * 2, dtype=float).reshape(2, 3, 6, 2)  # (C, H, W, N)
    xw = cnn.width_windows(x, 4)  # (H, C*KW + 1, OW, N)
    assert xw.shape == (3, 9, 3, 2)
    for h, c, j, t, n in np.ndindex(3, 2, 4, 3, 2):
        assert xw[h, c * 4 + j, t, n] == x[c, h, t + j, n]
    assert (xw[:, 8] == 1).all()


def test_true_convolution_orientation():
    # 'valid' 5x5 on a 5x5 image: one output, sum_{u,v} I(i-u, j-v) k(u, v). k(u=-2, v=-2) = 1
    # picks I(i+2, j+2), the bottom-right pixel; cross-correlation would pick the top-left.
    img = np.arange(25.0).reshape(1, 5, 5, 1)
    k = np.zeros((1, 1, 5, 5))
    k[0, 0, 0, 0] = 1.0
    a, _ = cnn.conv_sigmoid_forward(img, k, np.zeros(1))
    assert a[0, 0, 0, 0] == sigmoid(np.float64(24.0))
    k = np.zeros((1, 1, 5, 5))
    k[0, 0, 1, 3] = 2.0  # u = -1, v = +1: I(i+1, j-1) -> pixel (3, 1) = 16
    a, _ = cnn.conv_sigmoid_forward(img, k, np.full(1, 0.5))
    assert a[0, 0, 0, 0] == sigmoid(np.float64(2 * 16 + 0.5))


def test_mean_pooling_hand_worked():
    c = np.array([[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12], [13, 14, 15, 16]], float)
    s = cnn.pool_forward(c.reshape(1, 4, 4, 1))[0, :, :, 0]
    np.testing.assert_array_equal(s, [[3.5, 5.5], [11.5, 13.5]])


def test_upsampling_hand_worked():
    ds = np.array([[4.0, 8.0], [12.0, 16.0]]).reshape(1, 2, 2, 1)
    dc = cnn.pool_backward(ds)[0, :, :, 0]
    np.testing.assert_array_equal(
        dc, [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]
    )  # eq. (32): dS(ceil(i/2), ceil(j/2)) / 4
    a = np.full((1, 4, 4, 1), 0.5)  # a(1-a) = 1/4
    np.testing.assert_array_equal(cnn.pool_sigmoid_backward(ds, a)[0, :, :, 0], dc / 4)


def test_flatten_scans_columns_then_maps():
    # Map q holds 100 q + 10 i + j: the column scan reads i fastest, then j, then q.
    q, i, j = np.meshgrid(np.arange(12), np.arange(4), np.arange(4), indexing="ij")
    s = (100 * q + 10 * i + j).astype(float)[..., None]  # (12, 4, 4, 1)
    f = cnn.flatten(s)[:, 0]
    np.testing.assert_array_equal(f[:8], [0, 10, 20, 30, 1, 11, 21, 31])
    np.testing.assert_array_equal(f[16:18], [100, 110])
    assert f[-1] == 1133
    np.testing.assert_array_equal(cnn.unflatten(cnn.flatten(s)), s)


def test_full_convolution_matches_padded_valid_correlation():
    # dx_p = sum_q dz_q * rot180(k_pq) ('full') is a 'valid' cross-correlation of the
    # zero-padded dz with k itself; written here as an explicit sum over taps.
    rng = np.random.default_rng(6)
    dz = rng.standard_normal((3, 4, 5, 2))
    k = rng.standard_normal((2, 3, 5, 5))
    pad = np.pad(dz, ((0, 0), (4, 4), (4, 4), (0, 0)))
    expected = np.zeros((2, 8, 9, 2))
    for i in range(5):
        for j in range(5):
            expected += np.einsum("pq,qstn->pstn", k[:, :, i, j], pad[:, i : i + 8, j : j + 9])
    np.testing.assert_allclose(cnn.full_conv(dz, k), expected, rtol=1e-13, atol=1e-13)


# --------------------------------------------------------------------------- init and steps


def test_init_shapes_bounds_and_count():
    p = cnn.init_params(np.random.default_rng(0), np.float32)
    assert {k: v.shape for k, v in p.items()} == cnn.SHAPES
    assert count_params(p) == cnn.N_PARAMS == 3898
    assert all(v.dtype == np.float32 for v in p.values())
    for name, fan in (("k1", 7 * 25), ("k2", 18 * 25), ("W", 202)):
        bound = np.sqrt(6 / fan)
        assert np.abs(p[name]).max() <= bound
        assert np.abs(p[name]).max() > 0.9 * bound  # spread over the whole interval
    assert not any(p[b].any() for b in ("b1", "b2", "b"))
    with pytest.raises(ValueError, match="dtype"):
        cnn.init_params(np.random.default_rng(0), np.int32)


@pytest.mark.parametrize("seed", range(5))
def test_loss_at_init_is_near_the_half_output_value(seed):
    # With every output at 1/2 the loss is 1/2 (9/4 + 1/4) = 1.25. On MNIST, seeds 0-4 give
    # 1.13-1.48 at init (the random W shifts the outputs); random images give the same.
    p = cnn.init_params(np.random.default_rng(seed))
    loss, _ = loss_and_grads(p, *random_batch(seed, 50))
    assert 1.0 <= loss <= 1.8


def test_one_step_lowers_the_loss_on_its_batch():
    p = cnn.init_params(np.random.default_rng(0))
    x, y = random_batch(7, 50)
    loss, g = loss_and_grads(p, x, y)
    after, _ = loss_and_grads(cnn.sgd_update(p, g, 1.0), x, y)
    assert after < loss


def test_float32_agrees_with_float64_after_a_step():
    p64 = cnn.init_params(np.random.default_rng(0), np.float64)
    p32 = cnn.init_params(np.random.default_rng(0), np.float32)
    x, y = random_batch(8, 20)
    l64, g64 = loss_and_grads(p64, x, y)
    l32, g32 = loss_and_grads(p32, x.astype(np.float32), y.astype(np.float32))
    assert l32 == pytest.approx(l64, rel=1e-5)
    n64, n32 = cnn.sgd_update(p64, g64, 1.0), cnn.sgd_update(p32, g32, 1.0)
    for name in cnn.PARAM_NAMES:
        assert n32[name].dtype == np.float32
        np.testing.assert_allclose(n32[name], n64[name], rtol=1e-4, atol=1e-6, err_msg=name)


def test_sgd_update_is_pure():
    p = cnn.init_params(np.random.default_rng(0))
    before = {k: v.copy() for k, v in p.items()}
    cnn.sgd_update(p, p, 0.5)
    assert all(np.array_equal(p[k], before[k]) for k in p)


def test_float32_stays_float32_everywhere():
    # A silent promotion to float64 doubles the bytes moved without changing any result by
    # much: check the dtype of every array the network returns or caches.
    p = cnn.init_params(np.random.default_rng(0), np.float32)
    x, y = random_batch(9, 4, np.float32)
    yhat, cache = cnn.forward(p, x)
    arrays = [yhat, cache.c1.cols, cache.c1.a, cache.c2.cols, cache.c2.a, cache.s2, cache.yhat]
    arrays += list(cache.ops)
    _, g = cnn.backward(p, cache, y)
    dz = np.ones((12, 8, 8, 4), np.float32)
    arrays += [*g.values(), cnn.full_conv(dz, p["k2"]), cnn.pool_backward(dz)]
    assert all(a.dtype == np.float32 for a in arrays), [a.dtype for a in arrays]
