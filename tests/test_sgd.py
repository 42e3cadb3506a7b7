"""SGD step and training loop, determinism, callbacks, divergence; the plan; batched inference."""

from __future__ import annotations

import numpy as np
import pytest
from cnn_helpers import loss_and_grads, loss_and_grads_in_parts
from numpy.lib.stride_tricks import sliding_window_view

from pipeline.data.prepared import Images
from pipeline.model import cnn, inference, sgd
from pipeline.model.plan import make_generators, shuffled


def templates_data(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """n images of 10 classes, digit-like: one smooth random blob per class (15% of the pixels
    on, the rest 0) with multiplicative noise, values in [0, 1]; y one-hot (n, 10)."""
    rng = np.random.default_rng(seed)
    smooth = sliding_window_view(rng.random((10, 34, 34)), (7, 7), axis=(1, 2)).mean(axis=(-2, -1))
    templates = smooth > np.quantile(smooth, 0.85, axis=(1, 2), keepdims=True)  # (10, 28, 28)
    labels = np.arange(n) % 10
    x = templates[labels] * (1 - 0.2 * rng.random((n, 28, 28)))
    return x, np.eye(10)[labels]


EVALS = {"val": templates_data(9, 23)}


def run(seed: int = 0, dtype=np.float64, n: int = 30, **kw) -> sgd.TrainResult:
    x, y = templates_data(1, n)
    init_rng, shuffle_rng = make_generators(seed)
    params = cnn.init_params(init_rng, dtype)
    kw = {"epochs": 2, "batch_size": 10, "lr": 1.0, "order": shuffled(shuffle_rng, n), **kw}
    return sgd.train(params, x.astype(dtype), y.astype(dtype), **kw)


def test_make_generators_is_deterministic_and_independent():
    a_init, a_shuf = make_generators(3)
    b_init, b_shuf = make_generators(3)
    assert a_init.random() == b_init.random()
    assert a_shuf.random() == b_shuf.random()
    c_init, c_shuf = make_generators(3)
    assert c_init.random() != c_shuf.random()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_same_seed_same_bytes_for_any_thread_count_other_seed_other_weights(dtype):
    # Batches of 10 in parts of 5 and 5: one, two and three threads run the parts in other
    # threads and other groupings; the sums are taken in part order all the same.
    one, two, three = (run(0, dtype, threads=t, evals=EVALS) for t in (1, 2, 3))
    other = run(1, dtype, threads=2)
    for res in (two, three):
        for name in cnn.PARAM_NAMES:
            assert res.params[name].tobytes() == one.params[name].tobytes(), name
        assert res.batch_losses.tobytes() == one.batch_losses.tobytes()
        assert res.history == one.history  # train and evaluation metrics, to the last bit
    for name in cnn.PARAM_NAMES:
        assert not np.array_equal(one.params[name], other.params[name]) or name.startswith("b")


def test_stored_bytes_train_exactly_like_the_images_they_stand_for():
    # uint8 images with scale 255, converted per batch, are the images x/255 converted upfront;
    # rows select a split without copying it.
    x, y = templates_data(1, 30)
    pixels = np.round(x * 255).astype(np.uint8)
    rows = np.arange(40)[::-1][:30]  # split of a bigger array, in another order
    stored = np.zeros((40, 28, 28), np.uint8)
    stored[rows] = pixels
    params = cnn.init_params(np.random.default_rng(0), np.float32)
    orders = {1: np.arange(30), 2: np.arange(30)[::-1]}
    kw = {"epochs": 2, "batch_size": 7, "lr": 1.0, "order": orders.__getitem__}
    as_floats = sgd.train(params, pixels.astype(np.float32) / np.float32(255), y, **kw)
    as_stored = sgd.train(params, Images(stored, rows, 255), y.astype(np.uint8), **kw)
    for name in cnn.PARAM_NAMES:
        assert as_stored.params[name].tobytes() == as_floats.params[name].tobytes(), name


def test_overfits_50_samples():
    # Per-sample updates (batch size 1, as in the paper): the sigmoid/MSE net first sits on the
    # all-zeros plateau (loss ~0.45), then memorises the 50 samples.
    x, y = templates_data(2, 50)
    init_rng, shuffle_rng = make_generators(0)
    order = shuffled(shuffle_rng, len(x))
    res = sgd.train(cnn.init_params(init_rng), x, y, epochs=20, batch_size=1, lr=1.0, order=order)
    loss, err = inference.loss_and_error(res.params, x, y)
    assert err == 0.0
    assert loss < 0.05 < res.batch_losses[0]


def test_partial_last_batch_is_a_smaller_batch_with_its_own_mean():
    x, y = templates_data(3, 23)
    perm = np.random.default_rng(0).permutation(23)
    params = cnn.init_params(np.random.default_rng(0))
    res = sgd.train(params, x, y, epochs=1, batch_size=10, lr=0.5, order=lambda e: perm)
    assert res.batch_losses.shape == (3,)
    p = params
    for start, loss in zip((0, 10, 20), res.batch_losses, strict=True):
        idx = perm[start : start + 10]  # the last one holds 3 samples (parts of 2 and 1)
        batch_loss, g = loss_and_grads_in_parts(p, x[idx], y[idx], sgd.PARTS)
        assert batch_loss == loss
        # The parts add up to the batch mean (up to the order of the sums).
        whole_loss, whole = loss_and_grads(p, x[idx], y[idx])
        assert batch_loss == pytest.approx(whole_loss, rel=1e-14)
        for name in cnn.PARAM_NAMES:
            np.testing.assert_allclose(g[name], whole[name], rtol=1e-12, atol=1e-16)
        p = cnn.sgd_update(p, g, 0.5)
    for name in cnn.PARAM_NAMES:
        assert p[name].tobytes() == res.params[name].tobytes()


def test_order_hook_callbacks_and_metrics():
    x, y = templates_data(4, 20)
    orders = {1: np.arange(20), 2: np.arange(20)[::-1]}
    batches, epochs = [], []
    res = sgd.train(
        cnn.init_params(np.random.default_rng(0)),
        x,
        y,
        epochs=2,
        batch_size=8,
        lr=1.0,
        order=orders.__getitem__,
        evals={"val": (x[:5], y[:5])},
        on_batch=lambda step, loss: batches.append((step, loss)),
        on_epoch=lambda epoch, m: epochs.append((epoch, m)),
    )
    assert [s for s, _ in batches] == [1, 2, 3, 4, 5, 6]
    assert [loss for _, loss in batches] == res.batch_losses.tolist()
    assert [e for e, _ in epochs] == [1, 2]
    m = epochs[0][1]
    assert set(m) == {"epoch", "train_loss", "train_error", "val_loss", "val_error"}
    weights = np.array([8, 8, 4])  # batch sizes: the epoch's loss is a sample-weighted mean
    assert m["train_loss"] == pytest.approx(weights @ res.batch_losses[:3] / 20)
    assert res.history == [m for _, m in epochs]
    # The first batch of epoch 1 is samples 0-7, given by the hook.
    first = sgd.step(cnn.init_params(np.random.default_rng(0)), x[:8], y[:8], 1.0)
    assert res.batch_losses[0] == first.loss


def test_order_must_be_a_permutation():
    x, y = templates_data(4, 10)
    p = cnn.init_params(np.random.default_rng(0))
    with pytest.raises(ValueError, match="permutation"):
        sgd.train(p, x, y, epochs=1, batch_size=5, lr=1.0, order=lambda e: np.zeros(10, int))


def test_divergence_raises_naming_epoch_and_batch():
    x, y = templates_data(5, 30)
    x[17, 3, 3] = np.nan  # sample 17 sits in batch 2 of epoch 1 (batches of 10, identity order)
    p = cnn.init_params(np.random.default_rng(0))
    with pytest.raises(sgd.DivergenceError, match=r"epoch 1, batch 2") as info:
        sgd.train(p, x, y, epochs=1, batch_size=10, lr=1.0, order=lambda e: np.arange(30))
    assert (info.value.epoch, info.value.batch, info.value.step) == (1, 2, 2)


def test_infinite_learning_rate_diverges():
    # The loss is bounded (sigmoid outputs), so only non-finite weights make it diverge.
    with np.errstate(invalid="ignore"), pytest.raises(sgd.DivergenceError, match="epoch 1"):
        run(0, np.float64, epochs=3, lr=np.inf)


def test_predict_error_rate_and_confusion_matrix():
    x, _ = templates_data(6, 30)
    p = cnn.init_params(np.random.default_rng(0))
    proba = inference.predict_proba(p, x, batch_size=7)  # batches of 7, 7, 7, 7, 2
    np.testing.assert_allclose(proba, cnn.forward(p, x)[0], rtol=1e-14)
    pred = inference.predict(p, x, batch_size=7)
    np.testing.assert_array_equal(pred, proba.argmax(axis=1))
    assert inference.error_rate(np.array([1, 2, 3, 4]), np.array([1, 2, 0, 0])) == 0.5
    cm = inference.confusion_matrix(np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 2, 0]), 3)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 1, 0], [1, 0, 2]])  # rows = true labels


def test_progress_bar_only_on_a_terminal_or_when_asked(capsys):
    x, y = templates_data(4, 10)
    p = cnn.init_params(np.random.default_rng(0))
    sgd.train(p, x, y, epochs=1, batch_size=5, lr=1.0, order=lambda e: np.arange(10))
    assert capsys.readouterr().err == ""  # pytest's stderr is not a terminal
    sgd.train(p, x, y, epochs=1, batch_size=5, lr=1.0, order=lambda e: np.arange(10), progress=True)
    assert "/2 [" in capsys.readouterr().err  # tqdm drew the bar (and cleared it at the end)


def test_step_is_forward_backward_update_and_skips_a_non_finite_loss():
    p = cnn.init_params(np.random.default_rng(0))
    x, y = templates_data(7, 6)
    laps = []
    out = sgd.step(p, x, y, 0.5, laps.append)
    loss, grads = loss_and_grads_in_parts(p, x, y, sgd.PARTS)  # 6 samples: parts of 3 and 3
    assert out.loss == loss and laps[-1] == "sgd" and "conv1_fwd" in laps
    by_part = [cnn.forward(p, x[rows])[0] for rows in np.array_split(np.arange(6), sgd.PARTS)]
    np.testing.assert_array_equal(out.yhat, np.concatenate(by_part))
    for name in cnn.PARAM_NAMES:
        assert out.params[name].tobytes() == (p[name] - 0.5 * grads[name]).tobytes()
    x[0, 0, 0] = np.nan
    bad = sgd.step(p, x, y, 0.5)
    assert np.isnan(bad.loss) and bad.params is p  # the caller stops before any update


def test_shuffled_order_draws_one_permutation_per_epoch_in_sequence():
    order = shuffled(np.random.default_rng(5), 7)
    reference = np.random.default_rng(5)
    for epoch in (1, 2, 3):
        np.testing.assert_array_equal(order(epoch), reference.permutation(7))
