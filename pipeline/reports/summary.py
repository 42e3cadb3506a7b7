"""`make repro`'s closing words: the results and how to look at them."""

from __future__ import annotations

from collections.abc import Mapping

KEYS = ("epochs", "train_loss", "val_loss", "val_error", "test_loss", "test_error")


def summary_text(metrics: Mapping[str, float], *, store_uri: str, experiment: str) -> str:
    """The run's metrics (errors in percent), the store, and the commands to look further."""
    lines = ["", "Results (dvc metrics show):"]
    for key in KEYS:
        if key in metrics:
            value = metrics[key]
            shown = f"{value:.2%}" if key.endswith("error") else f"{value:g}"
            lines.append(f"  {key:<11} {shown}")
    lines += [
        "",
        f"MLflow store: {store_uri}  (experiment '{experiment}')",
        "Open the MLflow UI (lean server, about 460 MB):  make ui   -> http://127.0.0.1:5000",
        "Plots, offline:  .venv/bin/dvc plots show  -> dvc_plots/index.html",
    ]
    return "\n".join(lines)
