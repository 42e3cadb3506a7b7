"""DVC stage `evaluate`: the trained weights on the test set, for `dvc metrics` and `dvc plots`.

    python -m pipeline.evaluate [--params params.yaml]

Writes metrics/test.json (test_loss, test_error) and plots/confusion.csv (one row per test
image: actual, predicted). The numbers equal the test metrics the train stage logged to MLflow:
the same weights through the same `pipeline.model.inference.assess`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pipeline import paths
from pipeline.config import ConfigError, load_params, stage_params
from pipeline.data.prepared import read_prepared
from pipeline.files import DataError, write_csv, write_json
from pipeline.model.inference import assess
from pipeline.model.weights import load_weights


def main(argv: list[str] | None = None) -> int:
    params_file = stage_params(argv, __doc__.split("\n")[0])
    outputs = paths.Outputs()
    try:
        cfg, _ = load_params(params_file)
        test_split = read_prepared(Path(cfg.data.prepared)).split("test", cfg.train.dtype)
        params = load_weights(outputs.weights)
    except (ConfigError, DataError) as exc:
        print(f"evaluate failed: {exc}", file=sys.stderr)
        return 1
    test = assess(params, test_split)
    write_json(outputs.test_metrics, {"test_loss": test.loss, "test_error": test.error})
    write_csv(
        outputs.confusion_csv,
        ["actual", "predicted"],
        list(zip(test_split.labels.tolist(), test.predictions.tolist(), strict=True)),
    )
    print(f"evaluate: test error {test.error:.2%}, test loss {test.loss:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
