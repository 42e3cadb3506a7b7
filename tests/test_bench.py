"""The benchmark's plumbing on a tiny prepared file, and the PyTorch twin where torch exists."""

from __future__ import annotations

import numpy as np
import pytest
import synthetic

from pipeline.bench import __main__ as bench
from pipeline.data.prepared import prepare_arrays, read_prepared
from pipeline.files import save_npz
from pipeline.model import cnn, sgd


@pytest.fixture
def tiny_prepared_file(tmp_path):
    path = tmp_path / "mnist.npz"
    files = synthetic.idx_files(synthetic.arrays(n_train=120, n_test=30))
    save_npz(path, prepare_arrays(files, val_size=20, split_seed=0))
    return path


def test_bench_json_keys(tiny_prepared_file, capsys):
    args = ["--repeats", "2", "--profile-batches", "2", "--no-torch", "--json", "--default-malloc"]
    out = bench.main(["--data", str(tiny_prepared_file), "--threads", "2", *args])
    for key in ("epoch_s_float32", "epoch_s_float64", "test_error_float32", "test_error_float64"):
        assert key in out
    assert len(out["all_epoch_s_float32"]) == 2
    assert set(out["breakdown_ms_per_batch_float64"]) == set(bench.GROUPS)
    # What ran: the CPU, its SIMD level and the paths taken, the threads, the peak memory.
    assert out["threads"] == 2 and out["cpu"] and out["cpu_simd"] and "numpy" in out["simd"]
    assert isinstance(out["portable"], bool) and out["max_rss_mib_numpy"] > 0
    assert capsys.readouterr().out.startswith("{")


def test_load_reads_every_training_image_through_the_one_reader(tiny_prepared_file):
    train, test = bench.load(tiny_prepared_file)
    expected = read_prepared(tiny_prepared_file).split("train")
    assert len(train) == 120 and len(test) == 30  # the validation split included
    np.testing.assert_array_equal(train.x.array(np.float32), expected.x.array(np.float32))
    assert train.x.pixels.dtype == np.uint8  # kept as stored, converted per batch


def test_torch_thread_counts_go_up_to_the_cores():
    assert bench.torch_thread_counts(1) == [1]
    assert bench.torch_thread_counts(2) == [1, 2]
    assert bench.torch_thread_counts(6) == [1, 2, 4, 6]


def test_torch_twin_trains_like_numpy():
    pytest.importorskip("torch", reason="PyTorch is optional: pip install torch==2.13.0")
    from pipeline.bench import torch_twin

    rng = np.random.default_rng(0)
    x = rng.random((30, 28, 28))
    y = np.eye(10)[rng.integers(0, 10, 30)]
    params = cnn.init_params(np.random.default_rng(1))
    perm = rng.permutation(30)
    theirs, _ = torch_twin.train_epoch(params, x, y, perm, batch_size=8, lr=1.0)
    ours = sgd.train(params, x, y, epochs=1, batch_size=8, lr=1.0, order=lambda e: perm)
    for name in cnn.PARAM_NAMES:
        np.testing.assert_allclose(theirs[name], ours.params[name], rtol=1e-10, atol=1e-12)
