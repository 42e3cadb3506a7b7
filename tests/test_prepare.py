"""The prepare stage: parsing, the validation split, one-hot labels, byte-identical output."""

import numpy as np
import pytest
import synthetic

from pipeline.dataset import load_prepared, save_npz_deterministic
from pipeline.idx import IdxFormatError
from pipeline.integrity import DataError
from pipeline.prepare import one_hot, prepare_arrays, validation_index


def test_one_hot_hand_worked():
    np.testing.assert_array_equal(one_hot(np.array([2, 0]), classes=3), [[0, 0, 1], [1, 0, 0]])


def test_validation_split_is_sorted_disjoint_and_seeded():
    a = validation_index(100, 20, split_seed=0)
    assert len(a) == 20 and len(np.unique(a)) == 20 and np.all(np.diff(a) > 0)
    np.testing.assert_array_equal(a, validation_index(100, 20, split_seed=0))
    assert not np.array_equal(a, validation_index(100, 20, split_seed=1))
    assert len(validation_index(100, 0, split_seed=0)) == 0


def test_prepared_file_is_byte_identical_and_loads_exactly(tmp_path):
    arrs = synthetic.arrays(n_train=12, n_test=5)
    prepared = prepare_arrays(synthetic.idx_files(arrs), val_size=4, split_seed=3)
    save_npz_deterministic(tmp_path / "a.npz", prepared)
    save_npz_deterministic(tmp_path / "b.npz", prepare_arrays(
        synthetic.idx_files(arrs), val_size=4, split_seed=3))  # fmt: skip
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()

    data = load_prepared(tmp_path / "a.npz", np.float64)
    val = validation_index(12, 4, 3)
    fit = np.setdiff1d(np.arange(12), val)
    np.testing.assert_array_equal(data.val.x, arrs["train_images"][val] / 255.0)
    np.testing.assert_array_equal(data.fit.x, arrs["train_images"][fit] / 255.0)
    np.testing.assert_array_equal(data.test.labels, arrs["test_labels"])
    np.testing.assert_array_equal(data.fit.y.argmax(1), arrs["train_labels"][fit])
    assert data.fit.x.dtype == np.float64 and data.fit.x.max() <= 1.0
    assert load_prepared(tmp_path / "a.npz", "float32").test.x.dtype == np.float32


def test_counts_that_disagree_are_refused():
    files = synthetic.idx_files(synthetic.arrays())
    files["test_labels"] = synthetic.idx_files(synthetic.arrays(n_test=4))["test_labels"]
    with pytest.raises(IdxFormatError, match="5 images but 4 labels"):
        prepare_arrays(files, val_size=2, split_seed=0)


def test_validation_larger_than_training_is_refused():
    files = synthetic.idx_files(synthetic.arrays(n_train=6))
    with pytest.raises(DataError, match="val_size=6 leaves no training images"):
        prepare_arrays(files, val_size=6, split_seed=0)


def test_missing_prepared_file_says_how_to_make_it(tmp_path):
    with pytest.raises(DataError, match="dvc repro prepare"):
        load_prepared(tmp_path / "nope.npz")
