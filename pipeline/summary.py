"""`python -m pipeline.summary`: what `make repro` prints at the end (metrics, store, UI)."""

from __future__ import annotations

import json

from pipeline import paths, runtime
from pipeline.config import load_params
from pipeline.reports.summary import summary_text
from pipeline.tracking.store import redact


def main() -> int:
    runtime.enter_project()
    cfg, _ = load_params()
    outputs = paths.Outputs()
    metrics: dict[str, float] = {}
    for path in (outputs.train_metrics, outputs.test_metrics):
        if path.is_file():
            metrics |= json.loads(path.read_text(encoding="utf-8"))
    uri = runtime.environment().store_uri(cfg.tracking.uri)
    print(summary_text(metrics, store_uri=redact(uri), experiment=cfg.tracking.experiment))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
