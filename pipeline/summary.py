"""`make repro`'s closing words: the results and how to look at them."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline import tracking
from pipeline.config import load_params


def main() -> int:
    cfg = load_params()
    metrics = {}
    for name in ("metrics/train.json", "metrics/test.json"):
        if Path(name).is_file():
            metrics |= json.loads(Path(name).read_text())
    print("\nResults (dvc metrics show):")
    for key in ("epochs", "train_loss", "val_loss", "val_error", "test_loss", "test_error"):
        if key in metrics:
            value = metrics[key]
            shown = f"{value:.2%}" if key.endswith("error") else f"{value:g}"
            print(f"  {key:<11} {shown}")
    uri = tracking.resolve_uri(cfg.tracking.uri)
    print(f"\nMLflow store: {uri}  (experiment '{cfg.tracking.experiment}')")
    print("Open the MLflow UI (lean server, about 460 MB):  make ui   -> http://127.0.0.1:5000")
    print("Plots, offline:  .venv/bin/dvc plots show  -> dvc_plots/index.html")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
