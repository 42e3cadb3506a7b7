"""Replay of the DeepLearnToolbox's draws under Octave 7: check values from Octave, loop
transcriptions of cnnsetup and randperm, hand-worked presentation, and the fit with `cnn`."""

from __future__ import annotations

import numpy as np
import pytest
from cnn_helpers import count_params, sigmoid

from pipeline.model import cnn, sgd, toolbox

# Octave 7, rand('state', 0), DeepLearnToolbox's test_example_CNN (1-based MATLAB indices).
K1_11, K1_21 = 0.12754906917710679, 0.095527748426783909  # net.layers{2}.k{1}{1}(1,1), (2,1)
FFW_11, FFW_21, FFW_12 = -0.097759571660191599, 0.0049536754837886821, -0.054559359156731789
FIRST_BATCH_1BASED = [4095, 28898, 20310, 20066, 2841, 31199, 26536, 42447, 40700, 22963]


@pytest.fixture(scope="module")
def seed0() -> tuple[cnn.Params, sgd.Order]:
    return toolbox.replay(0, 60000)


# --------------------------------------------------------------------------- check values


def test_init_check_values_seed0(seed0):
    params, _ = seed0
    # Exact: the same doubles as Octave prints with 17 significant digits.
    assert params["k1"][0, 0, 0, 0] == K1_11
    assert params["k1"][0, 0, 1, 0] == K1_21
    assert params["W"][0, 0] == FFW_11
    assert params["W"][1, 0] == FFW_21
    assert params["W"][0, 1] == FFW_12


def test_first_batch_check_values_seed0(seed0):
    _, order = seed0
    perm = order(1)  # (60000,)
    assert (perm[:10] + 1).tolist() == FIRST_BATCH_1BASED
    assert np.array_equal(np.sort(perm), np.arange(60000))


# --------------------------------------------------------------------------- the stream


def test_stream_is_randomstate_of_a_one_element_list():
    a = toolbox.octave_stream(5).draw(4)
    assert np.array_equal(a, np.random.RandomState([5]).random_sample(4))
    assert not np.array_equal(a, np.random.RandomState(5).random_sample(4))


def test_rand_fills_column_major():
    m = toolbox.octave_stream(1).rand(2, 3)  # (2, 3)
    r = toolbox.octave_stream(1).draw(6)
    assert np.array_equal(m, [[r[0], r[2], r[4]], [r[1], r[3], r[5]]])


def test_stream_skips_exact_zeros_like_octave():
    raw = iter([0.5, 0.0, 0.25, 0.0, 0.0, 0.75, 0.125])
    stream = toolbox.OctaveStream(lambda count: np.array([next(raw) for _ in range(count)]))
    assert stream.draw(3).tolist() == [0.5, 0.25, 0.75]
    assert stream.draw(1).tolist() == [0.125]
    assert stream.drawn == 4


@pytest.mark.parametrize("seed", [-1, 2**32])
def test_seed_out_of_range_raises(seed):
    with pytest.raises(ValueError, match="seed"):
        toolbox.octave_stream(seed)


# --------------------------------------------------------------------------- initialisation


def cnnsetup_loops(stream: toolbox.OctaveStream) -> tuple[list, np.ndarray]:
    """cnnsetup.m line by line: k{i}{j} per layer (j outer, i inner), then ffW."""
    layers = []
    inputmaps = 1
    for outputmaps in (6, 12):
        fan_out = outputmaps * 5**2
        k = [[None] * outputmaps for _ in range(inputmaps)]
        for j in range(outputmaps):
            fan_in = inputmaps * 5**2
            for i in range(inputmaps):
                k[i][j] = (stream.rand(5, 5) - 0.5) * 2 * np.sqrt(6 / (fan_in + fan_out))
        layers.append(np.array(k))  # (maps_in, maps_out, 5, 5)
        inputmaps = outputmaps
    ffW = (stream.rand(10, 192) - 0.5) * 2 * np.sqrt(6 / (10 + 192))
    return layers, ffW


def test_init_equals_cnnsetup_loops():
    params = toolbox.init_params(toolbox.octave_stream(7))
    (k1, k2), ffW = cnnsetup_loops(toolbox.octave_stream(7))
    assert np.array_equal(params["k1"], k1)
    assert np.array_equal(params["k2"], k2)
    assert np.array_equal(params["W"], ffW)


def test_init_draws_3870_numbers():
    stream = toolbox.octave_stream(0)
    toolbox.init_params(stream)
    assert stream.drawn == toolbox.N_INIT_DRAWS == 3870
    reference = toolbox.octave_stream(0)
    reference.draw(3870)
    assert np.array_equal(stream.draw(5), reference.draw(5))


def test_init_bounds_and_zero_biases(seed0):
    params, _ = seed0
    for name, fan in (("k1", (1 + 6) * 25), ("k2", (6 + 12) * 25), ("W", 10 + 192)):
        bound = np.sqrt(6 / fan)
        assert np.abs(params[name]).max() < bound
        assert np.abs(params[name]).max() > 0.95 * bound  # the whole range is used
    for name in ("b1", "b2", "b"):
        assert not params[name].any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_shapes_and_dtype_match_cnn_init_params(dtype):
    ours = toolbox.init_params(toolbox.octave_stream(0), dtype)
    theirs = cnn.init_params(np.random.default_rng(0), dtype)
    assert list(ours) == list(theirs)
    for name in theirs:
        assert ours[name].shape == theirs[name].shape
        assert ours[name].dtype == theirs[name].dtype
    assert count_params(ours) == cnn.N_PARAMS


def test_float32_is_float64_rounded_once():
    p32 = toolbox.init_params(toolbox.octave_stream(0), np.float32)
    p64 = toolbox.init_params(toolbox.octave_stream(0), np.float64)
    for name in p64:
        assert np.array_equal(p32[name], p64[name].astype(np.float32))


# --------------------------------------------------------------------------- randperm


def randperm_loop(r: list[float], n: int) -> list[int]:
    """randperm.cc's Knuth shuffle, one swap at a time."""
    p = list(range(n))
    for i in range(n):
        k = i + int(np.floor(r[i] * (n - i)))
        p[i], p[k] = p[k], p[i]
    return p


@pytest.mark.parametrize("n", [0, 1, 2, 7, 50, 333])
def test_randperm_equals_loop_and_is_a_permutation(n):
    perm = toolbox.randperm(toolbox.octave_stream(3), n)
    r = toolbox.octave_stream(3).draw(n).tolist()
    assert perm.tolist() == randperm_loop(r, n)
    assert perm.dtype == np.int64
    assert sorted(perm.tolist()) == list(range(n))


def test_randperm_hand_worked():
    # n = 4, r = [0.9, 0.1, 0.6, 0.3]: targets 0+3, 1+0, 2+1, 3+0.
    # [0,1,2,3] -swap 0,3-> [3,1,2,0] -swap 1,1-> same -swap 2,3-> [3,1,0,2] -swap 3,3-> same.
    raw = iter([0.9, 0.1, 0.6, 0.3])
    stream = toolbox.OctaveStream(lambda count: np.array([next(raw) for _ in range(count)]))
    assert toolbox.randperm(stream, 4).tolist() == [3, 1, 0, 2]


# --------------------------------------------------------------------------- epoch orders


def test_orders_follow_the_init_in_one_stream():
    params, order = toolbox.replay(4, 100)
    stream = toolbox.octave_stream(4)
    assert np.array_equal(params["W"], toolbox.init_params(stream)["W"])
    assert np.array_equal(order(1), toolbox.randperm(stream, 100))
    assert np.array_equal(order(2), toolbox.randperm(stream, 100))


@pytest.mark.parametrize("asks", [[0], [2], [1, 1], [1, 3], [1, 2, 1]])
def test_orders_refuse_out_of_order_epochs(asks):
    order = toolbox.epoch_orders(toolbox.octave_stream(0), 10)
    *fine, bad = asks
    for epoch in fine:
        order(epoch)
    with pytest.raises(ValueError, match="in sequence"):
        order(bad)


def test_replay_trains_with_sgd_train():
    n = 100
    params, order = toolbox.replay(0, n)
    rng = np.random.default_rng(0)
    x = toolbox.present(rng.random((n, 28, 28)))  # (n, 28, 28)
    y = np.eye(10)[rng.integers(0, 10, n)]  # (n, 10)
    result = sgd.train(params, x, y, epochs=2, batch_size=50, lr=1.0, order=order)
    assert result.batch_losses.shape == (4,)
    assert np.all(np.isfinite(result.batch_losses))


# --------------------------------------------------------------------------- presentation


def test_present_hand_worked():
    natural = np.array([[[1, 2, 3], [4, 5, 6]]])  # (1, 2, 3): rows 1 2 3 / 4 5 6
    assert toolbox.present(natural).tolist() == [[[1, 4], [2, 5], [3, 6]]]  # (1, 3, 2)


def test_present_is_matlab_reshape_of_row_major_rows():
    natural = np.arange(2 * 4 * 4).reshape(2, 4, 4)  # (N, H, W)
    rows = natural.reshape(2, 16)  # train_x: one row-major pixel row per image
    # reshape(train_x', 4, 4, N): fill column-major.
    matlab = rows.T.reshape(4, 4, 2, order="F").transpose(2, 0, 1)  # (N, 4, 4)
    assert np.array_equal(toolbox.present(natural), matlab)


# --------------------------------------------------------------------------- conventions


def convn_valid_loops(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """MATLAB's convn(x, k, 'valid'), 2-D: C(s, t) = sum_{u,v} x(s + 4 - u, t + 4 - v) k(u, v)."""
    kh, kw = k.shape
    out = np.zeros((x.shape[0] - kh + 1, x.shape[1] - kw + 1))
    for s in range(out.shape[0]):
        for t in range(out.shape[1]):
            for u in range(kh):
                for v in range(kw):
                    out[s, t] += x[s + kh - 1 - u, t + kw - 1 - v] * k[u, v]
    return out


def test_toolbox_convn_is_our_conv(seed0):
    # The toolbox's first layer, sigm(convn(x, k{1}{j}, 'valid') + b{j}), equals cnn's with the
    # stored kernels used as they are.
    params, _ = seed0
    x = np.random.default_rng(5).random((1, 12, 12))  # (N, H, W)
    a, _ = cnn.conv_sigmoid_forward(cnn.to_internal(x, np.float64), params["k1"], params["b1"])
    for j in range(6):
        expected = sigmoid(convn_valid_loops(x[0], params["k1"][0, j]))  # (8, 8)
        np.testing.assert_allclose(a[j, :, :, 0], expected, rtol=0, atol=1e-14)


def test_toolbox_feature_vector_is_cnn_flatten():
    # net.fv = [fv; reshape(a{j}, 16, N)] for j = 1..12: column-major per map, maps in order.
    s = np.random.default_rng(6).random((12, 4, 4, 3))  # (Q, H, W, N)
    fv = np.concatenate([s[q].reshape(16, 3, order="F") for q in range(12)])  # (192, N)
    assert np.array_equal(cnn.flatten(s), fv)


def test_params_run_through_cnn_forward(seed0):
    params, _ = seed0
    x = toolbox.present(np.random.default_rng(8).random((4, 28, 28)))
    yhat, _ = cnn.forward(params, x)
    assert yhat.shape == (4, 10)
    assert np.all((yhat > 0) & (yhat < 1))


def test_to_natural_gives_the_same_network_on_natural_images():
    rng = np.random.default_rng(3)
    params = {k: v + 0.3 * rng.normal(size=v.shape) for k, v in cnn.init_params(rng).items()}
    x = rng.random((7, 28, 28))
    presented, _ = cnn.forward(params, toolbox.present(x))
    natural, _ = cnn.forward(toolbox.to_natural(params), x)
    np.testing.assert_allclose(natural, presented, rtol=0, atol=1e-14)
    # and it is not the identity: the same params on natural images give another output
    assert np.abs(cnn.forward(params, x)[0] - presented).max() > 1e-3
