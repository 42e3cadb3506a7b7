"""`python -m pipeline.compare SWEEP`: compare a sweep's runs across seeds.

Reads the sweep's runs (and each run's test predictions) from MLflow, writes
experiments/SWEEP/report.md with its figures and comparison.json (see `pipeline.reports.compare`
for what the report holds), logs them and the headline numbers to the sweep's parent run, and
prints the report.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

from pipeline import runtime
from pipeline.reports.compare import CompareError, compare
from pipeline.tracking.store import TrackingError, check_reachable


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("sweep", help="the sweep's name (tracking.sweep)")
    parser.add_argument("--experiment", default="zhang-cnn", help="MLflow experiment name")
    parser.add_argument("--uri", default=None, help="tracking URI (default: as training)")
    parser.add_argument("--out", type=Path, default=None, help="default: experiments/SWEEP")
    args = parser.parse_args(argv)
    try:
        runtime.enter_project()
    except runtime.NotInProject as exc:
        print(f"compare failed: {exc}", file=sys.stderr)
        return 1
    # One progress bar per downloaded predictions file would bury the report on stderr.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    env = runtime.environment()
    uri = args.uri or env.store_uri(None)
    try:
        check_reachable(uri)
        text = compare(
            MlflowClient(uri),
            args.experiment,
            args.sweep,
            args.out or Path("experiments") / args.sweep,
        )
    except (CompareError, TrackingError) as exc:
        print(f"compare failed: {exc}", file=sys.stderr)
        return 1
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
