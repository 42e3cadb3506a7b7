"""Compare a sweep's runs across seeds (the report of `python -m pipeline.compare SWEEP`).

Reads the sweep's parent and child runs from MLflow, groups the finished children by every
parameter that varies across them except `seed` (for the usual sweep: the learning rate), and
prints, per group, validation and test error as mean, standard deviation and 95% confidence
interval over seeds (Student's t), and the best setting, chosen on validation error (test error
is reported, never used to choose). Writes experiments/SWEEP/report.md with two PNGs (error
against the swept parameter with error bars; validation curves per setting) and logs them to
the parent run. Failed or killed jobs are named in the report.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import scipy.stats
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from pipeline.files import atomic_write_bytes
from pipeline.reports.figures import save
from pipeline.tracking.store import redact

METRICS = ("val_error", "test_error")


class CompareError(LookupError):
    """The sweep cannot be compared (unknown name, no runs); the message says why."""


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    std: float  # sample standard deviation (n - 1); nan for n = 1
    ci95: float  # half-width of the 95% confidence interval of the mean; nan for n = 1


def summarize(values: list[float]) -> Summary:
    """Mean, standard deviation and 95% t confidence half-width of `values`."""
    n = len(values)
    mean = statistics.fmean(values)
    if n < 2:
        return Summary(n, mean, math.nan, math.nan)
    std = statistics.stdev(values)
    t = scipy.stats.t.ppf(0.975, n - 1)  # two-sided 95% quantile of Student's t
    return Summary(n, mean, std, float(t) * std / math.sqrt(n))


def find_sweep(client: MlflowClient, experiment: str, sweep: str) -> tuple[Run, list[Run]]:
    """The sweep's parent run and its child runs (any status)."""
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
    children = client.search_runs(
        [exp.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    if not children:
        raise CompareError(f"sweep {sweep!r} has no runs (empty sweep, or no job started)")
    return parent, children


def varied_params(runs: list[Run]) -> list[str]:
    """Params whose value differs across runs, seed excluded (the grouping keys)."""
    keys = sorted(set().union(*(r.data.params for r in runs)))
    return [k for k in keys if k != "seed" and len({r.data.params.get(k) for r in runs}) > 1]


def _number(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def group(runs: list[Run], keys: list[str]) -> dict[tuple, list[Run]]:
    groups: dict[tuple, list[Run]] = defaultdict(list)
    for r in runs:
        groups[tuple(_number(r.data.params.get(k, "")) for k in keys)].append(r)
    # numbers in numeric order; text (a non-numeric param) after them, alphabetically
    return dict(sorted(groups.items(), key=lambda kv: [(isinstance(v, str), v) for v in kv[0]]))


class Ranking(NamedTuple):
    keys: list[str]  # the swept params (seed excluded)
    groups: dict[tuple, list[Run]]  # finished runs per setting
    stats: dict[tuple, dict[str, Summary]]  # per setting, per metric in METRICS
    best: tuple  # the setting with the lowest mean validation error


def rank(done: list[Run]) -> Ranking:
    """Group finished runs by setting and choose the best on mean validation error (test error
    is reported, never used to choose)."""
    keys = varied_params(done) or ["train.lr"]
    groups = group(done, keys)
    stats = {
        g: {m: summarize([r.data.metrics[m] for r in rs if m in r.data.metrics]) for m in METRICS}
        for g, rs in groups.items()
    }
    best = min(stats, key=lambda g: stats[g]["val_error"].mean)
    return Ranking(keys, groups, stats, best)


def finished(sweep: str, children: list[Run]) -> list[Run]:
    """The sweep's finished runs; CompareError if none finished."""
    done = [r for r in children if r.info.status == "FINISHED"]
    if not done:
        raise CompareError(f"sweep {sweep!r}: none of its {len(children)} runs finished")
    return done


def compare(client: MlflowClient, experiment: str, sweep: str, out_dir: Path) -> str:
    """Write the report (and its figures) to out_dir, log them to the parent run; return it."""
    parent, children = find_sweep(client, experiment, sweep)
    done = finished(sweep, children)
    failed = [r for r in children if r.info.status != "FINISHED"]
    keys, groups, stats, best = rank(done)
    out_dir.mkdir(parents=True, exist_ok=True)
    _errors_figure(out_dir / "errors.png", keys, stats)
    _curves_figure(out_dir / "curves.png", client, keys, groups)
    text = _report(sweep, parent, children, done, failed, keys, groups, stats, best)
    atomic_write_bytes(out_dir / "report.md", text.encode())
    for name in ("report.md", "errors.png", "curves.png"):
        client.log_artifact(parent.info.run_id, str(out_dir / name), "comparison")
    return text


def _fmt(s: Summary, pct: bool = True) -> str:
    k = 100 if pct else 1
    if s.n < 2:
        return f"{k * s.mean:.2f} (n=1)"
    return f"{k * s.mean:.2f} ± {k * s.ci95:.2f} (sd {k * s.std:.2f}, n={s.n})"


def label(keys: list[str], g: tuple) -> str:
    """A setting as text: `train.lr=0.3` (several keys: comma-separated)."""
    return ", ".join(
        f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in zip(keys, g, strict=True)
    )


def _report(sweep, parent, children, done, failed, keys, groups, stats, best) -> str:
    seeds = sorted({int(r.data.params.get("seed", 0)) for r in done})
    lines = [
        f"# Sweep `{sweep}`",
        "",
        f"MLflow parent run `{parent.info.run_id}` (experiment id {parent.info.experiment_id}); "
        f"{len(done)} of {len(children)} runs finished; seeds {seeds}.",
        "",
        f"Command: `{parent.data.tags.get('command', '?')}`",
        "",
        "Error in percent: mean ± 95% confidence half-width over seeds (Student's t), with the "
        "standard deviation and the number of seeds.",
        "",
        f"| {' | '.join(keys)} | validation error | test error |",
        f"|{'---|' * (len(keys) + 2)}",
    ]
    for g in groups:
        cells = [f"{v:g}" if isinstance(v, float) else str(v) for v in g]
        mark = " **(best)**" if g == best else ""
        lines.append(
            f"| {' | '.join(cells)}{mark} | {_fmt(stats[g]['val_error'])} | "
            f"{_fmt(stats[g]['test_error'])} |"
        )
    lines += [
        "",
        f"Best setting, chosen on mean validation error: **{label(keys, best)}**: validation "
        f"{_fmt(stats[best]['val_error'])}, test {_fmt(stats[best]['test_error'])}.",
        "",
        "![error against the swept setting](errors.png)",
        "",
        "![validation error per epoch, mean over seeds](curves.png)",
        "",
    ]
    if failed:
        lines += ["## Runs that did not finish", ""]
        lines += [
            f"- `{r.data.tags.get('overrides', '?')}`: {r.info.status} (run `{r.info.run_id}`)"
            for r in failed
        ]
        lines.append("")
    return "\n".join(lines)


def _errors_figure(path: Path, keys: list[str], stats: dict) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    xs = list(stats)
    numeric = len(keys) == 1 and all(isinstance(g[0], float) for g in xs)
    pos = [g[0] for g in xs] if numeric else list(range(len(xs)))
    for metric, marker in zip(METRICS, ("o", "s"), strict=True):
        mean = [100 * stats[g][metric].mean for g in xs]
        err = [100 * np.nan_to_num(stats[g][metric].ci95) for g in xs]
        ax.errorbar(pos, mean, yerr=err, marker=marker, capsize=4, label=metric.replace("_", " "))
    if numeric and min(pos) > 0:
        ax.set_xscale("log")
    if not numeric:
        ax.set_xticks(pos, [label(keys, g) for g in xs], rotation=30, ha="right", fontsize=7)
    ax.set(xlabel=keys[0] if numeric else "setting", ylabel="error (%), mean ± 95% CI")
    ax.legend()
    save(fig, path)


def _curves_figure(path: Path, client: MlflowClient, keys: list[str], groups: dict) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for g, runs in groups.items():
        curves = []
        for r in runs:
            hist = sorted(
                client.get_metric_history(r.info.run_id, "val_error"), key=lambda m: m.step
            )
            curves.append([m.value for m in hist])
        n = min(len(c) for c in curves)
        if n == 0:
            continue
        mean = 100 * np.mean([c[:n] for c in curves], axis=0)
        ax.plot(range(1, n + 1), mean, marker="o", label=label(keys, g))
    ax.set(xlabel="epoch", ylabel="validation error (%), mean over seeds")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize=8)
    save(fig, path)
