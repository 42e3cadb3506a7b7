"""Compare a sweep's settings across seeds (the report of `python -m pipeline.compare SWEEP`).

Reads the sweep's parent and child runs, and each finished run's test predictions (its artifact
`predictions/test.csv`), from MLflow; `sweep_analysis.analyse` groups them into settings x
replicates (pairs of seeds) and applies the statistics (`stats`); `sweep_report` renders the
report and its figures. Writes experiments/SWEEP/ report.md (also printed), errors.png,
curves.png, paired.png (when a setting was compared with the best), seeds.png (for crossed init
x order seeds) and comparison.json (every number), logs them to the parent run, and the headline
numbers as the parent's metrics and tags. Failed or killed jobs are named in the report.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
from mlflow.entities import Metric, Run, RunTag
from mlflow.tracking import MlflowClient

from pipeline.files import atomic_write_bytes
from pipeline.reports import stats, sweep_report
from pipeline.reports.sweep_analysis import (
    CHOOSE_ON,
    PAIRED_ON,
    Analysis,
    CompareError,
    Predictions,
    analyse,
    group,
    label,
    varied_params,
)
from pipeline.tracking.store import redact
from pipeline.tracking.sweeps import children as sweeps_children
from pipeline.tracking.sweeps import latest_per_job

PREDICTIONS = "predictions/test.csv"  # each run's artifact: actual, predicted per test image


def find_sweep(client: MlflowClient, experiment: str, sweep: str) -> tuple[Run, list[Run]]:
    """The sweep's parent run and its child runs (any status): the latest run of each job, so
    that a job the sweep ran again (resumed, or `train.resume=never`) counts once."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise CompareError(f"no MLflow experiment {experiment!r} in {redact(client.tracking_uri)}")
    parents = client.search_runs(
        [exp.experiment_id],
        f"tags.sweep = '{sweep}' and tags.sweep_role = 'parent'",
        order_by=["attributes.start_time DESC"],
    )
    if not parents:
        known = client.search_runs([exp.experiment_id], "tags.sweep_role = 'parent'")
        names = sorted({r.data.tags["sweep"] for r in known})
        raise CompareError(f"unknown sweep {sweep!r}; known sweeps: {names or 'none'}")
    parent = parents[0]  # the latest sweep of that name
    children = list(latest_per_job(sweeps_children(client, parent)).values())
    if not children:
        raise CompareError(f"sweep {sweep!r} has no runs (empty sweep, or no job started)")
    return parent, children


def finished(sweep: str, children: list[Run]) -> list[Run]:
    """The sweep's finished runs; CompareError if none finished."""
    done = [r for r in children if r.info.status == "FINISHED"]
    if not done:
        raise CompareError(f"sweep {sweep!r}: none of its {len(children)} runs finished")
    return done


def rank(done: list[Run]) -> Analysis:
    """The finished runs by setting, and the best setting (lowest mean validation error), as
    the report chooses it; without the per-image predictions (no McNemar tests)."""
    keys = varied_params(done) or ["train.lr"]
    return analyse(group(done, keys), keys, {})


def compare(client: MlflowClient, experiment: str, sweep: str, out_dir: Path) -> str:
    """Write the report (and its figures) to out_dir, log them to the parent run; return it."""
    parent, children = find_sweep(client, experiment, sweep)
    done = finished(sweep, children)
    failed = [r for r in children if r.info.status != "FINISHED"]
    keys = varied_params(done) or ["train.lr"]
    groups = group(done, keys)
    a = analyse(groups, keys, {r.info.run_id: load_predictions(client, r) for r in done})
    out_dir.mkdir(parents=True, exist_ok=True)
    written = ["report.md", "errors.png", "curves.png"]
    sweep_report.errors_figure(out_dir / "errors.png", a)
    sweep_report.curves_figure(out_dir / "curves.png", keys, _val_curves(client, groups))
    if any(v.test for v in a.versus):
        sweep_report.paired_figure(out_dir / "paired.png", a)
        written.append("paired.png")
    if a.variance:
        sweep_report.seeds_figure(out_dir / "seeds.png", a)
        written.append("seeds.png")
    text = sweep_report.report(sweep, parent, children, done, failed, a, written)
    atomic_write_bytes(out_dir / "report.md", text.encode())
    numbers = to_json(sweep, parent, a)
    atomic_write_bytes(out_dir / "comparison.json", (json.dumps(numbers, indent=1) + "\n").encode())
    for name in [*written, "comparison.json"]:
        client.log_artifact(parent.info.run_id, str(out_dir / name), "comparison")
    _log_headline(client, parent.info.run_id, a)
    return text


def _val_curves(client: MlflowClient, groups: dict) -> dict[tuple, list[list[float]]]:
    """Per setting, each run's validation error per epoch."""
    return {
        g: [
            [
                m.value
                for m in sorted(
                    client.get_metric_history(r.info.run_id, "val_error"), key=lambda m: m.step
                )
            ]
            for r in reps.values()
        ]
        for g, reps in groups.items()
    }


def load_predictions(client: MlflowClient, run: Run) -> Predictions | None:
    """A run's test predictions (actual (N,), predicted (N,)); None if it logged none (runs
    from before the artifact existed)."""
    names = {f.path for f in client.list_artifacts(run.info.run_id, "predictions")}
    if PREDICTIONS not in names:
        return None
    with tempfile.TemporaryDirectory(prefix="pipeline-compare-") as tmp:
        path = client.download_artifacts(run.info.run_id, PREDICTIONS, tmp)
        table = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.int64, ndmin=2)  # (N, 2)
    return table[:, 0], table[:, 1]


def _log_headline(client: MlflowClient, run_id: str, a: Analysis) -> None:
    """The comparison's headline numbers as the parent run's metrics and tags."""
    best = a.summaries[a.best]
    metrics = {f"best_{m}": s.mean for m, s in best.items()}
    metrics["indistinguishable_settings"] = len(a.indistinguishable)
    if a.smallest is not None and a.smallest.seeds is not None:
        metrics["seeds_needed"] = a.smallest.seeds
    for split in a.variance.values():
        if PAIRED_ON in split and len(a.variance) == 1:
            shares = split[PAIRED_ON].shares
            for name, share in zip(("init", "order", "interaction"), shares, strict=True):
                if math.isfinite(share):
                    metrics[f"variance_share_{name}"] = share
    tags = {
        "best_setting": label(a.keys, a.best),
        "indistinguishable": "; ".join(label(a.keys, g) for g in a.indistinguishable),
        "seeds_needed": sweep_report.seeds_line(a),
    }
    now = int(1000 * time.time())
    client.log_batch(
        run_id,
        metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
        tags=[RunTag(k, v[:5000]) for k, v in tags.items()],
    )


def to_json(sweep: str, parent: Run, a: Analysis) -> dict:
    """Every number of the report, for machines (NaN as null)."""

    def clean(x):
        if isinstance(x, float):
            return x if math.isfinite(x) else None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, list | tuple):
            return [clean(v) for v in x]
        return x

    def setting(g: tuple) -> dict:
        return dict(zip(a.keys, g, strict=True))

    return clean(
        {
            "sweep": sweep,
            "parent_run_id": parent.info.run_id,
            "chosen_on": CHOOSE_ON,
            "paired_on": PAIRED_ON,
            "alpha": stats.ALPHA,
            "interval": "95%, Student's t over replicates on the logit scale, back-transformed",
            "settings": [
                {
                    "setting": setting(g),
                    "replicates": [list(r) for r in a.groups[g]],
                    **{m: vars(s) for m, s in a.summaries[g].items()},
                }
                for g in a.groups
            ],
            "best": setting(a.best),
            "versus_best": [
                {
                    "setting": setting(v.setting),
                    "shared": [list(r) for r in v.shared],
                    "only_best": [list(r) for r in v.only_best],
                    "only_this": [list(r) for r in v.only_this],
                    "paired": vars(v.test) if v.test else None,
                    "why_not": v.why_not,
                    "p_t_holm": v.p_t_holm,
                    "p_wilcoxon_holm": v.p_w_holm,
                    "seeds_for_80_power": v.seeds,
                    "mcnemar": [
                        {"replicate": list(rep), "only_best": m[0], "only_this": m[1], "p": m[2]}
                        if isinstance(m, tuple)
                        else {"replicate": list(rep), "why_not": m}
                        for rep, m in v.mcnemar.items()
                    ],
                }
                for v in a.versus
            ],
            "indistinguishable": [setting(g) for g in a.indistinguishable],
            "seeds_needed": sweep_report.seeds_line(a),
            "variance": [
                {"setting": setting(g), "metric": m, **vars(tw), "shares": list(tw.shares)}
                for g, split in a.variance.items()
                for m, tw in split.items()
            ],
        }
    )
