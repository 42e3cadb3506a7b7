"""`python -m pipeline.register SWEEP [--name zhang-cnn]`: register a sweep's best model.

The best setting of the sweep (lowest mean validation error over seeds, as `pipeline.compare`
chooses it) and within it the run with the lowest validation error: its model becomes a version
of the registered model NAME, tagged with the sweep, setting, errors, git commit and data hash.
The alias `champion` moves to it only if it beats the current champion's validation error; the
command says which happened. Then `models:/NAME@champion` loads and serves it (see
`pipeline.tracking.registry`).
"""

from __future__ import annotations

import argparse
import sys

from mlflow.tracking import MlflowClient

from pipeline import runtime
from pipeline.reports.compare import CompareError
from pipeline.tracking.registry import RegistryError, register_best
from pipeline.tracking.store import TrackingError, check_reachable, redact


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("sweep", help="the sweep's name (tracking.sweep)")
    parser.add_argument("--name", default="zhang-cnn", help="registered model name")
    parser.add_argument("--experiment", default="zhang-cnn", help="MLflow experiment name")
    parser.add_argument("--uri", default=None, help="tracking URI (default: as training)")
    args = parser.parse_args(argv)
    uri = args.uri or runtime.environment().store_uri(None)
    try:
        check_reachable(uri)
        done = register_best(
            MlflowClient(uri, registry_uri=uri),
            experiment=args.experiment,
            sweep=args.sweep,
            name=args.name,
        )
    except (CompareError, RegistryError, TrackingError) as exc:
        print(f"register failed: {exc}", file=sys.stderr)
        return 1
    print(done.message)
    print(
        f"load: mlflow.pyfunc.load_model('models:/{done.name}@champion') with "
        f"MLFLOW_TRACKING_URI={redact(uri)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
