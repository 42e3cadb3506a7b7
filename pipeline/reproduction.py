"""`python -m pipeline.reproduction`: the reproduction report of the toolbox's run.

Reads the runs of the sweeps `toolbox_replay` and `toolbox_100` from MLflow (run them first;
`make reproduction` does all three steps) and writes experiments/toolbox_replay/report.md with
its figures (see `pipeline.reports.reproduction`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

from pipeline import runtime
from pipeline.data.prepared import read_prepared
from pipeline.files import DataError
from pipeline.reports.compare import CompareError
from pipeline.reports.reproduction import collect, plateau_outputs, write_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--experiment", default="zhang-cnn")
    parser.add_argument("--out", type=Path, default=Path("experiments/toolbox_replay"))
    parser.add_argument("--prepared", type=Path, default=Path("data/prepared/mnist.npz"))
    args = parser.parse_args(argv)
    try:
        runtime.enter_project()
    except runtime.NotInProject as exc:
        print(f"reproduction failed: {exc}", file=sys.stderr)
        return 1
    try:
        client = MlflowClient(runtime.environment().store_uri(None))
        runs, long, schedule = collect(client, args.experiment)
    except CompareError as exc:
        print(f"reproduction failed: {exc}; run `make reproduction`", file=sys.stderr)
        return 1
    try:
        outputs = plateau_outputs(read_prepared(args.prepared), **schedule)
    except DataError as exc:
        print(f"reproduction: no plateau table ({exc})", file=sys.stderr)
        outputs = None
    print(write_report(runs, long, args.out, outputs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
