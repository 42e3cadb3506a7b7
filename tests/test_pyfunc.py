"""The logged model takes what users have (float32, float64, uint8; three shapes), refuses the
rest with a short message, and models logged before the current layout still load."""

from __future__ import annotations

import pickle

import mlflow
import numpy as np
import pytest

from pipeline.model import cnn
from pipeline.model.inference import predict
from pipeline.model.weights import save_weights
from pipeline.tracking import pyfunc, runs


@pytest.fixture
def model(experiment, tmp_path):
    """A pyfunc model of random weights, logged to a real store and loaded back."""
    _, exp_id, _ = experiment
    params = cnn.init_params(np.random.default_rng(0))
    save_weights(tmp_path / "weights.npz", params)
    with runs.run(exp_id, run_name="model") as r:
        uri = pyfunc.log_model(tmp_path / "weights.npz")
    assert uri == f"runs:/{r.info.run_id}/model" or uri.startswith("models:/")
    return mlflow.pyfunc.load_model(uri), params


def test_every_accepted_input_predicts_like_the_pipeline(model):
    loaded, params = model
    raw = np.random.default_rng(1).integers(0, 256, (7, 28, 28), dtype=np.uint8)
    expected = predict(params, raw / 255.0)
    for images in (
        raw,  # bytes, as MNIST stores them
        raw.astype(np.int64),  # what a JSON request of integers becomes
        raw / 255.0,
        (raw / 255.0).astype(np.float32),
        (raw / 255.0).reshape(7, 1, 28, 28),  # channel axis
        (raw / 255.0).reshape(7, 784),  # rows, as `mlflow models predict` sends them
    ):
        got = loaded.predict(images)
        assert got.dtype == np.int64 and got.tolist() == expected.tolist(), images.dtype


@pytest.mark.parametrize(
    ("images", "says"),
    [
        (np.full((2, 28, 28), 200.0), "float pixels must be in [0, 1]; got [200, 200]"),
        (np.full((2, 28, 28), 300), "integer pixels must be in [0, 255]"),
        (np.zeros((2, 27, 27)), "got shape (2, 27, 27)"),
        (np.array([["a"] * 784]), "got dtype <U1"),
        (np.full((1, 784), np.nan), "got NaN or infinity"),
    ],
)
def test_anything_else_gets_a_short_message_saying_what_is_accepted(model, images, says):
    loaded, _ = model
    with pytest.raises(Exception) as info:
        loaded.predict(images)
    text = str(info.value)
    assert says in text and len(text) < 400, text


def test_models_logged_before_the_layout_change_still_load():
    import pipeline.serving

    # A model logged by the old layout pickles its class as pipeline.serving.ZhangCNN.
    blob = pickle.dumps(pipeline.serving.ZhangCNN())
    assert b"pipeline.tracking.pyfunc" in blob or b"pipeline.serving" in blob
    old = blob.replace(b"pipeline.tracking.pyfunc", b"pipeline.serving".ljust(24, b" ")[:24])
    assert isinstance(pickle.loads(blob), pyfunc.ZhangCNN)
    del old
