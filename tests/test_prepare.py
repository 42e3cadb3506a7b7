"""The prepare stage: parsing, the validation split, one-hot labels, byte-identical output."""

import numpy as np
import pytest
import synthetic

from pipeline.data.idx import IdxFormatError
from pipeline.data.prepared import (
    one_hot,
    prepare_arrays,
    read_prepared,
    validation_index,
)
from pipeline.files import DataError, save_npz


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
    save_npz(tmp_path / "a.npz", prepared)
    again = prepare_arrays(synthetic.idx_files(arrs), val_size=4, split_seed=3)
    save_npz(tmp_path / "b.npz", again)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()

    data = read_prepared(tmp_path / "a.npz")
    val = validation_index(12, 4, 3)
    fit = np.setdiff1d(np.arange(12), val)
    split = {part: data.split(part) for part in ("fit", "val", "test", "train")}
    x = {part: s.x.array(np.float64) for part, s in split.items()}
    np.testing.assert_array_equal(x["val"], arrs["train_images"][val] / 255.0)
    np.testing.assert_array_equal(x["fit"], arrs["train_images"][fit] / 255.0)
    np.testing.assert_array_equal(x["train"], arrs["train_images"] / 255.0)
    np.testing.assert_array_equal(split["test"].labels, arrs["test_labels"])
    np.testing.assert_array_equal(split["fit"].y.argmax(1), arrs["train_labels"][fit])
    assert x["fit"].dtype == np.float64 and x["fit"].max() <= 1.0
    # float32: the nearest float32 of x/255, as if every image had been converted at once.
    x32 = split["fit"].x.batch(np.array([2, 0]), "float32")
    assert x32.dtype == np.float32
    expected = arrs["train_images"][fit][[2, 0]].astype(np.float32) / np.float32(255)
    assert x32.tobytes() == expected.tobytes()
    # The splits refer to the file's arrays: the stored bytes, once.
    assert split["fit"].x.pixels is split["val"].x.pixels is data.arrays["train_images"]
    assert split["fit"].x.pixels.dtype == np.uint8 and split["fit"].y.dtype == np.uint8
    assert len(split["fit"].x.head(3)) == 3
    assert (
        data.n_val == 4
        and len(split["fit"].head(3)) == 3
        and split["fit"].head(None) is split["fit"]
    )


def test_counts_that_disagree_are_refused():
    files = synthetic.idx_files(synthetic.arrays())
    files["test_labels"] = synthetic.idx_files(synthetic.arrays(n_test=4))["test_labels"]
    with pytest.raises(IdxFormatError, match="5 images but 4 labels"):
        prepare_arrays(files, val_size=2, split_seed=0)


def test_validation_larger_than_training_is_refused():
    files = synthetic.idx_files(synthetic.arrays(n_train=6))
    with pytest.raises(DataError, match="val_size=6 leaves no training images"):
        prepare_arrays(files, val_size=6, split_seed=0)


def test_missing_or_incomplete_prepared_file_says_how_to_make_it(tmp_path):
    with pytest.raises(DataError, match="not found: prepare it with `dvc repro prepare`"):
        read_prepared(tmp_path / "nope.npz")
    save_npz(tmp_path / "partial.npz", {"train_images": np.zeros((2, 28, 28), np.uint8)})
    with pytest.raises(
        DataError, match=r"partial\.npz: unreadable or incomplete.*dvc repro prepare"
    ):
        read_prepared(tmp_path / "partial.npz")
