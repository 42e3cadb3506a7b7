"""A run's plan (pipeline.model.plan): default mode from the seed's generators, toolbox mode from
the toolbox's check values; which images each trains and is evaluated on."""

from __future__ import annotations

import numpy as np
import pytest
from configs import tree

from pipeline.config import ConfigError, validate
from pipeline.data.prepared import Prepared, one_hot
from pipeline.model import cnn
from pipeline.model.plan import make_generators, make_plan

FIRST_BATCH = [4095, 28898, 20310, 20066, 2841, 31199, 26536, 42447, 40700, 22963]  # 1-based


@pytest.fixture(scope="module")
def full_size() -> Prepared:
    """MNIST's 60,000 + 10,000 shape (images of their index's last digit: only order matters)."""
    labels = np.arange(60_000, dtype=np.uint8) % 10
    images = np.broadcast_to(labels[:, None, None], (60_000, 28, 28)).astype(np.uint8)
    return Prepared(
        {
            "train_images": images,
            "train_labels": labels,
            "train_onehot": one_hot(labels),
            "val_index": np.arange(0, 60_000, 6, dtype=np.int64),
            "test_images": images[:10],
            "test_labels": labels[:10],
            "test_onehot": one_hot(labels[:10]),
        }
    )


def test_toolbox_plan_starts_from_the_check_values(full_size):
    p = make_plan(prepared=full_size, seed=0, rng="toolbox", dtype=np.float64, subset=None)
    assert p.params0["k1"][0, 0, 0, 0] == 0.12754906917710679
    assert p.params0["k1"][0, 0, 1, 0] == 0.095527748426783909
    assert p.params0["W"][0, 0] == -0.097759571660191599
    assert p.params0["W"][1, 0] == 0.0049536754837886821
    assert p.params0["W"][0, 1] == -0.054559359156731789
    assert (p.order(1)[:10] + 1).tolist() == FIRST_BATCH
    assert len(p.fit) == 60_000 and p.val is None  # every image, the validation split included
    presented, natural = p.fit.x.batch([7], np.float64)[0], p.test_natural.x.array(np.float64)[7]
    np.testing.assert_array_equal(presented, natural.T)  # presented transposed
    assert np.shares_memory(p.fit.x.pixels, full_size.arrays["train_images"])  # a view


def test_default_plan_uses_the_seeds_generators_and_the_fit_split(full_size):
    p = make_plan(prepared=full_size, seed=3, rng="default", dtype=np.float32, subset=None)
    init_rng, order_rng = make_generators(3)
    expected = cnn.init_params(init_rng, np.float32)
    assert all(p.params0[k].tobytes() == expected[k].tobytes() for k in cnn.PARAM_NAMES)
    np.testing.assert_array_equal(p.order(1), order_rng.permutation(50_000))
    assert len(p.fit) == 50_000 and len(p.val) == 10_000
    # The splits hold the file's bytes and their rows (no copy); batches come in the dtype asked.
    assert p.fit.x.pixels is p.val.x.pixels is full_size.arrays["train_images"]
    assert len(np.intersect1d(p.fit.x.rows, p.val.x.rows)) == 0
    assert p.fit.x.batch(np.arange(3), np.float32).dtype == np.float32
    assert p.test is p.test_natural and p.to_saved(p.params0) == p.params0
    small = make_plan(prepared=full_size, seed=3, rng="default", dtype=np.float32, subset=100)
    assert len(small.fit) == 100 and len(small.order(1)) == 100


def test_init_and_order_seeds_take_one_stream_each_from_their_own_seed(full_size):
    def plan(seed, **seeds):
        return make_plan(
            prepared=full_size, seed=seed, rng="default", dtype=np.float32, subset=100, **seeds
        )

    # Both null, or both equal to seed: the run `seed` always gave (SeedSequence(seed).spawn(2)).
    for same in (plan(3), plan(3, init_seed=3, order_seed=3), plan(5, init_seed=3, order_seed=3)):
        init_seq, order_seq = np.random.SeedSequence(3).spawn(2)
        expected = cnn.init_params(np.random.default_rng(init_seq), np.float32)
        assert all(same.params0[k].tobytes() == expected[k].tobytes() for k in cnn.PARAM_NAMES)
        np.testing.assert_array_equal(
            same.order(1), np.random.default_rng(order_seq).permutation(100)
        )
    # init 1 with order 2: seed 1's initial weights, seed 2's sample order.
    mixed, one, two = plan(0, init_seed=1, order_seed=2), plan(1), plan(2)
    assert all(mixed.params0[k].tobytes() == one.params0[k].tobytes() for k in cnn.PARAM_NAMES)
    assert not np.array_equal(mixed.params0["k1"], two.params0["k1"])
    for epoch in (1, 2):
        np.testing.assert_array_equal(mixed.order(epoch), two.order(epoch))
    np.testing.assert_array_equal(plan(0, order_seed=2).params0["W"], plan(0).params0["W"])


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"train.rng": "toolbox", "train.batch_size": 7}, "train.batch_size"),
        ({"train.rng": "toolbox", "data.subset": 100}, "data.subset"),
        ({"train.rng": "toolbox", "seed": 2**32}, "seed"),
        ({"train.rng": "matlab"}, "train.rng"),
        ({"train.rng": "toolbox", "train.init_seed": 1}, "train.init_seed"),
        ({"train.rng": "toolbox", "train.order_seed": 1}, "train.order_seed"),
        ({"train.order_seed": -1}, "train.order_seed"),
    ],
)
def test_replay_constraints_name_the_key(values, key):
    with pytest.raises(ConfigError, match=f"^{key}: "):
        validate(tree(**values))
