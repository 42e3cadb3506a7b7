"""DVC stage `evaluate`: the trained weights on the test set, for `dvc metrics` and `dvc plots`.

    python -m pipeline.evaluate [--params params.yaml]

Writes metrics/test.json (test_loss, test_error) and plots/confusion.csv (one row per test
image: actual, predicted). The numbers equal the test metrics the train stage logged to MLflow:
the same weights through the same `pipeline.model.inference.assess`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pipeline import interrupts, paths, runtime
from pipeline.config import ConfigError, load_params, stage_params
from pipeline.data.prepared import read_prepared
from pipeline.files import DataError, csv_bytes, json_bytes, write_together
from pipeline.model.inference import assess
from pipeline.model.weights import load_weights


def main(argv: list[str] | None = None) -> int:
    params_file = stage_params(argv, __doc__.split("\n")[0])
    outputs = paths.Outputs()
    with interrupts.raising():
        try:
            runtime.enter_project()
            cfg, _ = load_params(params_file)
            test_split = read_prepared(Path(cfg.data.prepared)).split("test")
            params = load_weights(outputs.weights)  # their dtype is the arithmetic's
            test = assess(params, test_split, threads=runtime.available_cores())
            pairs = zip(test_split.labels.tolist(), test.predictions.tolist(), strict=True)
            write_together(
                {
                    outputs.test_metrics: json_bytes(
                        {"test_loss": test.loss, "test_error": test.error}
                    ),
                    outputs.confusion_csv: csv_bytes(["actual", "predicted"], list(pairs)),
                }
            )
        except (ConfigError, DataError, runtime.NotInProject) as exc:
            print(f"evaluate failed: {exc}", file=sys.stderr)
            return 1
        except (interrupts.Interrupted, KeyboardInterrupt):
            print("evaluate interrupted: its outputs were not changed", file=sys.stderr)
            return 130
    print(f"evaluate: test error {test.error:.2%}, test loss {test.loss:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
