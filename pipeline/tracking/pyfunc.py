"""The trained network as an MLflow pyfunc model.

`mlflow.pyfunc.load_model(uri).predict(images)` takes what users have (`ACCEPTS`: float32 or
float64 pixels in [0, 1] or bytes in [0, 255]; (N, 28, 28), (N, 1, 28, 28) or (N, 784)) and
returns the predicted digits (N,) as int64; anything else gets a short error saying that. The
weights travel as an artifact (`weights.npz`, the same file the train stage writes) and the
`pipeline` package travels as model code, so the model loads in any environment that has
NumPy, including `mlflow models predict --env-manager local` offline.
Models logged before the package's current layout name `pipeline.serving.ZhangCNN`, which
re-exports this class, so they stay loadable.
"""

from pathlib import Path

import mlflow
import numpy as np

import pipeline
from pipeline.model.weights import load_weights

ACCEPTS = (
    "images as float32 or float64 pixels in [0, 1], or as bytes (uint8, or any integers) in "
    "[0, 255], shaped (N, 28, 28), (N, 1, 28, 28) or (N, 784)"
)


class InputError(ValueError):
    """Model input the network cannot take; the message says what it accepts."""


def as_images(model_input: object) -> np.ndarray:
    """What users pass -> images (N, 28, 28), float64 in [0, 1] (bytes divided by 255).

    Raises InputError, saying what is accepted, for anything else: other shapes, strings,
    NaN, floats outside [0, 1] (pixels 0-255 as floats are refused, not silently misread).
    """
    x = np.asarray(model_input)
    if x.dtype.kind in "iu":
        if x.size and (x.min() < 0 or x.max() > 255):
            raise InputError(f"integer pixels must be in [0, 255]; got [{x.min()}, {x.max()}]")
        x = x.astype(np.float64) / 255.0  # exactly the pipeline's x/255
    elif x.dtype.kind == "f":
        if not np.isfinite(x).all():
            raise InputError("pixels must be finite numbers; got NaN or infinity")
        if x.size and (x.min() < 0 or x.max() > 1):
            raise InputError(
                f"float pixels must be in [0, 1]; got [{x.min():g}, {x.max():g}] "
                "(bytes: pass them as uint8, or divide by 255)"
            )
    else:
        raise InputError(f"expected {ACCEPTS}; got dtype {x.dtype}")
    if (x.ndim == 4 and x.shape[1:] == (1, 28, 28)) or (x.ndim == 2 and x.shape[1:] == (784,)):
        x = x.reshape(len(x), 28, 28)  # (N, 1, 28, 28) or row-major (N, 784) -> (N, 28, 28)
    if x.ndim != 3 or x.shape[1:] != (28, 28):
        raise InputError(f"expected {ACCEPTS}; got shape {x.shape}")
    return x


class ZhangCNN(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper: predict(images) -> digits (N,) int64."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.params = load_weights(Path(context.artifacts["weights"]))

    # The np.ndarray hint keeps MLflow from inferring a schema from type hints (it warns
    # otherwise); inputs are checked here, by `as_images`, not by an MLflow signature.
    def predict(self, context, model_input: np.ndarray, params=None) -> np.ndarray:
        from pipeline.model.inference import predict

        x = as_images(model_input).astype(self.params["W"].dtype, copy=False)
        return predict(self.params, x)


def log_model(weights_path: Path) -> str:
    """Log the pyfunc model under the active run as `model`; returns its model URI.

    No MLflow signature: a tensor signature fixes one dtype and shape, and MLflow then refuses
    float32 or uint8 images with a long schema dump before `predict` sees them. `as_images`
    checks the input instead; what it accepts is in the model's metadata.
    """
    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=ZhangCNN(),
        artifacts={"weights": str(weights_path)},
        code_paths=[str(Path(pipeline.__file__).parent)],
        metadata={"input": ACCEPTS, "output": "predicted digits (N,) int64"},
        pip_requirements=[f"numpy=={np.__version__}", f"mlflow=={mlflow.__version__}"],
    )
    return info.model_uri
