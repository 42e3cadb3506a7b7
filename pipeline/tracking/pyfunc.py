"""The trained network as an MLflow pyfunc model.

`mlflow.pyfunc.load_model(uri).predict(images)` takes images (N, 28, 28) (or (N, 784) rows, as
`mlflow models predict` passes them) with pixels in [0, 1], and returns the predicted digits
(N,) as int64. The weights travel as an artifact (`weights.npz`, the same file the train stage
writes) and the `pipeline` package travels as model code, so the model loads in any
environment that has NumPy, including `mlflow models predict --env-manager local` offline.
Models logged before the package's current layout name `pipeline.serving.ZhangCNN`, which
re-exports this class, so they stay loadable.
"""

from pathlib import Path

import mlflow
import numpy as np
from mlflow.models import ModelSignature
from mlflow.types import Schema, TensorSpec

import pipeline
from pipeline.model.weights import load_weights


class ZhangCNN(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper: predict(images) -> digits."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.params = load_weights(Path(context.artifacts["weights"]))

    # The np.ndarray hint tells MLflow not to infer a schema from hints (it warns otherwise);
    # the explicit tensor SIGNATURE below validates the inputs.
    def predict(self, context, model_input: np.ndarray, params=None) -> np.ndarray:
        from pipeline.model.inference import predict

        x = np.asarray(model_input, dtype=self.params["W"].dtype)
        x = x.reshape(len(x), 28, 28)  # (N, 784) rows or (N, 28, 28) images -> (N, 28, 28)
        return predict(self.params, x)


SIGNATURE = ModelSignature(
    inputs=Schema([TensorSpec(np.dtype(np.float64), (-1, 28, 28))]),
    outputs=Schema([TensorSpec(np.dtype(np.int64), (-1,))]),
)


def log_model(weights_path: Path, input_example: np.ndarray | None = None) -> str:
    """Log the pyfunc model under the active run as `model`; returns its model URI."""
    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=ZhangCNN(),
        artifacts={"weights": str(weights_path)},
        code_paths=[str(Path(pipeline.__file__).parent)],
        signature=SIGNATURE,
        input_example=input_example,
        pip_requirements=[f"numpy=={np.__version__}", f"mlflow=={mlflow.__version__}"],
    )
    return info.model_uri
