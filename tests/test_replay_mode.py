"""train.rng=toolbox end to end: the run starts from the toolbox's check values, takes its
samples in the toolbox's order, and its saved weights take natural images."""

from __future__ import annotations

import sys

import numpy as np
import project
import pytest
from mlflow.tracking import MlflowClient

from pipeline import toolbox
from pipeline.config import ConfigError, validate
from pipeline.dataset import load_prepared, save_npz_deterministic
from pipeline.prepare import one_hot
from pipeline.train import plan
from pipeline.training import error_rate, predict

FIRST_BATCH = [4095, 28898, 20310, 20066, 2841, 31199, 26536, 42447, 40700, 22963]  # 1-based


@pytest.fixture(scope="module")
def full_size(tmp_path_factory):
    """A prepared file with MNIST's 60,000 + 10,000 shape (blank images: only order matters)."""
    path = tmp_path_factory.mktemp("replay") / "prepared.npz"
    labels = np.arange(60_000, dtype=np.uint8) % 10
    save_npz_deterministic(path, {
        "train_images": np.zeros((60_000, 28, 28), np.uint8), "train_labels": labels,
        "train_onehot": one_hot(labels), "val_index": np.arange(0, 60_000, 6, dtype=np.int64),
        "test_images": np.zeros((10, 28, 28), np.uint8), "test_labels": labels[:10],
        "test_onehot": one_hot(labels[:10]),
    })  # fmt: skip
    return path


def test_toolbox_plan_starts_from_the_check_values(full_size):
    cfg = validate({"seed": 0, "train": {"rng": "toolbox", "epochs": 1},
                    "data": {"prepared": str(full_size)}})  # fmt: skip
    p = plan(cfg)
    assert p.params0["k1"][0, 0, 0, 0] == 0.12754906917710679
    assert p.params0["k1"][0, 0, 1, 0] == 0.095527748426783909
    assert p.params0["W"][0, 0] == -0.097759571660191599
    assert p.params0["W"][1, 0] == 0.0049536754837886821
    assert p.params0["W"][0, 1] == -0.054559359156731789
    assert (p.order["order"](1)[:10] + 1).tolist() == FIRST_BATCH
    assert len(p.fit) == 60_000 and p.val is None  # every image, the validation split included


def test_default_plan_is_unchanged_by_the_replay_code(full_size):
    cfg = validate({"seed": 0, "data": {"prepared": str(full_size)}})
    p = plan(cfg)
    assert len(p.fit) == 50_000 and len(p.val) == 10_000 and "shuffle_rng" in p.order


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"train": {"rng": "toolbox", "batch_size": 7}}, "train.batch_size"),
        ({"train": {"rng": "toolbox"}, "data": {"subset": 100}}, "data.subset"),
        ({"train": {"rng": "matlab"}}, "train.rng"),
    ],
)
def test_replay_constraints_name_the_key(override, key):
    with pytest.raises(ConfigError, match=f"^{key}: "):
        validate(override)


def test_hydra_single_run_in_replay_mode_logs_batch_losses(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    root = project.make(tmp_path / "repo", uri)
    e = project.env(uri)
    project.run(["dvc", "repro", "prepare"], root, e)
    project.run([sys.executable, "-m", "pipeline.train", "train.rng=toolbox", "seed=0",
                 "train.epochs=100", "tracking.log_model=false"], root, e)  # fmt: skip
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("zhang-cnn").experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["train.rng"] == "toolbox"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "batch_loss")]
    assert sorted(steps) == list(range(1, 100 * 60 // 10 + 1))  # all 60 images, batches of 10
    # Trained on transposed images, saved for natural ones: the logged test error is the
    # saved weights' error on natural images, and those weights fail on transposed images.
    weights = dict(np.load(next(root.glob("outputs/*/*/models/weights.npz"))))
    test = load_prepared(root / "data/prepared/tiny.npz").test
    natural = error_rate(predict(weights, test.x), test.labels)
    assert run.data.metrics["test_error"] == natural < 0.3
    assert error_rate(predict(weights, toolbox.present(test.x)), test.labels) > natural + 0.3
