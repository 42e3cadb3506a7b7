"""The benchmark's plumbing on a tiny fake MNIST file, and the PyTorch twin where torch exists."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import bench, cnn, training


@pytest.fixture
def fake_mnist(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "mnist.npz"
    np.savez(
        path,
        train_images=rng.integers(0, 256, (120, 28, 28), dtype=np.uint8),
        train_labels=rng.integers(0, 10, 120, dtype=np.uint8),
        test_images=rng.integers(0, 256, (30, 28, 28), dtype=np.uint8),
        test_labels=rng.integers(0, 10, 30, dtype=np.uint8),
    )
    return str(path)


def test_bench_json_keys(fake_mnist, capsys):
    args = ["--repeats", "2", "--profile-batches", "2", "--no-torch", "--json", "--default-malloc"]
    out = bench.main(["--data", fake_mnist, *args])
    for key in ("epoch_s_float32", "epoch_s_float64", "test_error_float32", "test_error_float64"):
        assert key in out
    assert len(out["all_epoch_s_float32"]) == 2
    assert set(out["breakdown_ms_per_batch_float64"]) == set(bench.GROUPS)
    assert capsys.readouterr().out.startswith("{")


def test_load_scales_pixels_in_the_training_dtype(fake_mnist):
    data = bench.load(fake_mnist, np.dtype(np.float32))
    assert data["x"].dtype == np.float32 and data["x"].max() <= 1.0
    with np.load(fake_mnist) as raw:
        np.testing.assert_array_equal(data["x"], raw["train_images"].astype(np.float32) / 255)


def test_torch_twin_trains_like_numpy():
    pytest.importorskip("torch")
    from pipeline import bench_torch

    rng = np.random.default_rng(0)
    x = rng.random((30, 28, 28))
    y = np.eye(10)[rng.integers(0, 10, 30)]
    params = cnn.init_params(np.random.default_rng(1))
    perm = rng.permutation(30)
    theirs, _ = bench_torch.train_epoch(params, x, y, perm, batch_size=8, lr=1.0)
    ours = training.train(params, x, y, epochs=1, batch_size=8, lr=1.0, order=lambda e: perm)
    for name in cnn.PARAM_NAMES:
        np.testing.assert_allclose(theirs[name], ours.params[name], rtol=1e-10, atol=1e-12)
