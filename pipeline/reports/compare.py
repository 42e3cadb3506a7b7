"""Compare a sweep's settings across seeds (the report of `python -m pipeline.compare SWEEP`).

Reads the sweep's parent and child runs from MLflow. A run's *setting* is every parameter that
varies across the finished runs except its seeds (for the usual sweep: the learning rate); its
*replicate* is its pair of seeds, (initialisation, sample order): `seed` for both unless
`train.init_seed` / `train.order_seed` say otherwise. Two runs with the same replicate start
from the same weights and see the images in the same order, and every run is tested on the same
images, so settings are compared paired: seed by seed, and within a seed image by image.

The report (experiments/SWEEP/report.md, also printed; the statistics in
`pipeline.reports.stats`):
- per setting, validation and test error over replicates: mean, standard deviation and a 95%
  interval within [0, 100]% (Student's t on the logit scale, back-transformed);
- the best setting, chosen on mean validation error (test error is never used to choose);
- every other setting against the best on test error, paired by replicate: the mean difference
  with its 95% t interval, the paired t-test and the exact Wilcoxon signed-rank test with
  Holm-adjusted p-values across settings, the settings not distinguishable from the best at 5%,
  and the seeds a paired t-test would need to resolve the smallest difference shown;
- per replicate, McNemar's exact test on the two runs' test predictions (each run's artifact
  `predictions/test.csv`);
- when the replicates cross two or more init seeds with two or more order seeds: the share of
  the variance from each (`stats.two_way`);
- figures: errors.png, paired.png, curves.png, and seeds.png for a crossed design.
The same files and comparison.json (every number) are logged to the parent run, the headline
numbers also as its metrics and tags. Failed or killed jobs are named in the report.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from mlflow.entities import Metric, Run, RunTag
from mlflow.tracking import MlflowClient

from pipeline.files import atomic_write_bytes
from pipeline.reports import stats
from pipeline.reports.figures import save

METRICS = ("val_error", "test_error")
CHOOSE_ON, PAIRED_ON = "val_error", "test_error"
SEED_KEYS = ("seed", "train.init_seed", "train.order_seed")  # replicates, not settings
PREDICTIONS = "predictions/test.csv"  # each run's artifact: actual, predicted per test image
Replicate = tuple[int, int]  # (init seed, order seed)


class CompareError(LookupError):
    """The sweep cannot be compared (unknown name, no runs); the message says why."""


def find_sweep(client: MlflowClient, experiment: str, sweep: str) -> tuple[Run, list[Run]]:
    """The sweep's parent run and its child runs (any status)."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise CompareError(f"no MLflow experiment {experiment!r} in {client.tracking_uri}")
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
    """Params whose value differs across runs, seeds excluded (the grouping keys)."""
    keys = sorted(set().union(*(r.data.params for r in runs)))
    return [k for k in keys if k not in SEED_KEYS and len({r.data.params.get(k) for r in runs}) > 1]


def replicate(run: Run) -> Replicate:
    """The run's (init seed, order seed): `seed` where train.init_seed / order_seed are null."""
    params = run.data.params
    seed = int(params.get("seed", 0))

    def own(key: str) -> int:
        value = params.get(key)
        return seed if value in (None, "None", "") else int(value)

    return own("train.init_seed"), own("train.order_seed")


def replicate_label(rep: Replicate) -> str:
    return f"seed {rep[0]}" if rep[0] == rep[1] else f"init {rep[0]}, order {rep[1]}"


def _number(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def group(runs: list[Run], keys: list[str]) -> dict[tuple, dict[Replicate, Run]]:
    """Runs by setting (values of `keys`), then by replicate (the latest run of a replicate)."""
    groups: dict[tuple, dict[Replicate, Run]] = defaultdict(dict)
    for r in sorted(runs, key=lambda r: r.info.start_time or 0):
        groups[tuple(_number(r.data.params.get(k, "")) for k in keys)][replicate(r)] = r
    # numbers in numeric order; text (a non-numeric param) after them, alphabetically
    ordered = sorted(groups.items(), key=lambda kv: [(isinstance(v, str), v) for v in kv[0]])
    return {g: dict(sorted(reps.items())) for g, reps in ordered}


# --------------------------------------------------------------------------- the analysis


@dataclass(frozen=True)
class RateSummary:
    """An error rate over replicates; low/high: the 95% logit-t interval (None when n = 1)."""

    n: int
    mean: float
    sd: float
    low: float | None
    high: float | None


def summarize(values: list[float], n_images: int | None) -> RateSummary:
    n, mean, sd = stats.mean_sd(np.array(values))
    if n < 2:
        return RateSummary(n, mean, sd, None, None)
    low, high = stats.rate_interval(np.array(values), n_images=n_images)
    return RateSummary(n, mean, sd, low, high)


@dataclass
class Versus:
    """One setting against the best, paired by replicate, on test error (other - best)."""

    setting: tuple
    shared: list[Replicate]
    only_best: list[Replicate]  # the best ran these, this setting did not (or did not finish)
    only_this: list[Replicate]
    diffs: list[float] = field(default_factory=list)  # per shared replicate, in its order
    test: stats.Paired | None = None
    why_not: str | None = None  # why there is no test
    p_t_holm: float | None = None
    p_w_holm: float | None = None
    seeds: int | None = None  # for 80% power at 5%, at this difference and spread
    seeds_why_not: str | None = None
    mcnemar: dict[Replicate, tuple[int, int, float] | str] = field(default_factory=dict)


@dataclass
class Analysis:
    keys: list[str]
    groups: dict[tuple, dict[Replicate, Run]]
    summaries: dict[tuple, dict[str, RateSummary]]
    best: tuple
    versus: list[Versus]
    indistinguishable: list[tuple]  # the best and every setting a test could not tell from it
    smallest: Versus | None  # the tested setting with the smallest difference from the best
    variance: dict[tuple, dict[str, stats.TwoWay]]  # crossed designs: setting -> metric -> split
    variance_notes: dict[tuple, str]
    n_test: int | None  # test images, from the predictions


def _values(reps: dict[Replicate, Run], metric: str) -> dict[Replicate, float]:
    return {rep: r.data.metrics[metric] for rep, r in reps.items() if metric in r.data.metrics}


def analyse(
    groups: dict[tuple, dict[Replicate, Run]],
    keys: list[str],
    predictions: dict[str, tuple[np.ndarray, np.ndarray] | None],
) -> Analysis:
    """Everything the report says, from the runs grouped by setting and replicate and each
    run's test predictions (run id -> (actual, predicted), None where not logged)."""
    sizes = {len(p[0]) for p in predictions.values() if p is not None}
    n_test = sizes.pop() if len(sizes) == 1 else None
    summaries = {}
    for g, reps in groups.items():
        n_val = {int(r.data.params.get("data.val_size", 0)) for r in reps.values()}
        n_images = {"val_error": max(n_val) or None, "test_error": n_test}
        summaries[g] = {
            m: summarize(list(_values(reps, m).values()), n_images[m])
            for m in METRICS
            if _values(reps, m)
        }
    lacking = [g for g in groups if CHOOSE_ON not in summaries[g]]
    if lacking:
        raise CompareError(
            f"no validation error logged for {_label(keys, lacking[0])} (data.val_size=0, or "
            "train.rng=toolbox): the best setting is chosen on validation error"
        )
    best = min(summaries, key=lambda g: summaries[g][CHOOSE_ON].mean)
    versus = [_versus(g, groups[best], groups[g], predictions) for g in groups if g != best]
    tested = [v for v in versus if v.test is not None]
    for v, pt, pw in zip(
        tested,
        stats.holm([v.test.p_t for v in tested]),
        stats.holm([v.test.p_wilcoxon for v in tested]),
        strict=True,
    ):
        v.p_t_holm, v.p_w_holm = pt, pw
    same = [v.setting for v in tested if v.p_t_holm >= stats.ALPHA]
    smallest = min(tested, key=lambda v: abs(v.test.mean), default=None)
    variance, notes = {}, {}
    for g, reps in groups.items():
        try:
            split = _two_way(reps)
        except stats.TooFew as exc:
            notes[g] = str(exc)
            continue
        if split:
            variance[g] = split
    return Analysis(
        keys, groups, summaries, best, versus, [best, *same], smallest, variance, notes, n_test
    )


def _versus(
    setting: tuple,
    best: dict[Replicate, Run],
    other: dict[Replicate, Run],
    predictions: dict[str, tuple[np.ndarray, np.ndarray] | None],
) -> Versus:
    b, o = _values(best, PAIRED_ON), _values(other, PAIRED_ON)
    shared = sorted(set(b) & set(o))
    v = Versus(setting, shared, sorted(set(b) - set(o)), sorted(set(o) - set(b)))
    v.diffs = [o[r] - b[r] for r in shared]
    try:
        v.test = stats.paired([o[r] for r in shared], [b[r] for r in shared])
    except stats.TooFew as exc:
        v.why_not = str(exc)
    if v.test is not None:
        try:
            v.seeds = stats.seeds_for_power(v.test.mean, v.test.sd)
        except stats.TooFew as exc:
            v.seeds_why_not = str(exc)
    for rep in shared:
        pb, po = predictions.get(best[rep].info.run_id), predictions.get(other[rep].info.run_id)
        if pb is None or po is None:
            v.mcnemar[rep] = "no predictions logged"
        elif len(pb[0]) != len(po[0]) or not np.array_equal(pb[0], po[0]):
            v.mcnemar[rep] = "different test sets"
        else:
            only_best, only_this = stats.discordant(pb[0], pb[1], po[1])
            v.mcnemar[rep] = (only_best, only_this, stats.mcnemar_exact(only_best, only_this))
    return v


def _two_way(reps: dict[Replicate, Run]) -> dict[str, stats.TwoWay]:
    """Init x order decomposition per metric, for a crossed design; {} when the replicates are
    not crossed (one order per init, as in a plain `seed` sweep)."""
    inits, orders = sorted({r[0] for r in reps}), sorted({r[1] for r in reps})
    if len(inits) < 2 or len(orders) < 2 or len(reps) <= max(len(inits), len(orders)):
        return {}
    out = {}
    for m in METRICS:
        values = _values(reps, m)
        if not values:
            continue
        table = np.full((len(inits), len(orders)), np.nan)  # (init, order)
        for (i, o), value in values.items():
            table[inits.index(i), orders.index(o)] = value
        missing = int(np.isnan(table).sum())
        if missing:
            raise stats.TooFew(
                f"{len(inits)} init x {len(orders)} order seeds with {missing} combination(s) "
                "missing: a two-way decomposition needs every combination"
            )
        out[m] = stats.two_way(table)
    return out


# --------------------------------------------------------------------------- the command


def compare(client: MlflowClient, experiment: str, sweep: str, out_dir: Path) -> str:
    """Write the report (and its figures) to out_dir, log them to the parent run; return it."""
    parent, children = find_sweep(client, experiment, sweep)
    done = [r for r in children if r.info.status == "FINISHED"]
    failed = [r for r in children if r.info.status != "FINISHED"]
    if not done:
        raise CompareError(f"sweep {sweep!r}: none of its {len(children)} runs finished")
    keys = varied_params(done) or ["train.lr"]
    groups = group(done, keys)
    a = analyse(groups, keys, {r.info.run_id: load_predictions(client, r) for r in done})
    out_dir.mkdir(parents=True, exist_ok=True)
    written = ["report.md", "errors.png", "curves.png"]
    _errors_figure(out_dir / "errors.png", a)
    _curves_figure(out_dir / "curves.png", client, keys, groups)
    if any(v.test for v in a.versus):
        _paired_figure(out_dir / "paired.png", a)
        written.append("paired.png")
    if a.variance:
        _seeds_figure(out_dir / "seeds.png", a)
        written.append("seeds.png")
    text = report(sweep, parent, children, done, failed, a, written)
    atomic_write_bytes(out_dir / "report.md", text.encode())
    numbers = to_json(sweep, parent, a)
    atomic_write_bytes(out_dir / "comparison.json", (json.dumps(numbers, indent=1) + "\n").encode())
    for name in [*written, "comparison.json"]:
        client.log_artifact(parent.info.run_id, str(out_dir / name), "comparison")
    _log_headline(client, parent.info.run_id, a)
    return text


def load_predictions(client: MlflowClient, run: Run) -> tuple[np.ndarray, np.ndarray] | None:
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
        "best_setting": _label(a.keys, a.best),
        "indistinguishable": "; ".join(_label(a.keys, g) for g in a.indistinguishable),
        "seeds_needed": _seeds_line(a),
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
            "seeds_needed": _seeds_line(a),
            "variance": [
                {"setting": setting(g), "metric": m, **vars(tw), "shares": list(tw.shares)}
                for g, split in a.variance.items()
                for m, tw in split.items()
            ],
        }
    )


# --------------------------------------------------------------------------- the report text


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def _p(p: float | None) -> str:
    if p is None:
        return "—"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _rate(s: RateSummary) -> str:
    if s.low is None:
        return f"{_pct(s.mean)} (n=1: no interval)"
    return f"{_pct(s.mean)} [{_pct(s.low)}, {_pct(s.high)}] (sd {_pct(s.sd)}, n={s.n})"


def _label(keys: list[str], g: tuple) -> str:
    return ", ".join(
        f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in zip(keys, g, strict=True)
    )


def _cells(g: tuple) -> list[str]:
    return [f"{v:g}" if isinstance(v, float) else str(v) for v in g]


def _replicates_line(reps: list[Replicate]) -> str:
    """`seeds [0, 1, 2]`, or for separate init and order seeds `init seeds [...] x order seeds
    [...] (n combinations)`."""
    if all(i == o for i, o in reps):
        return f"seeds {[i for i, _ in reps]}"
    inits, orders = sorted({i for i, _ in reps}), sorted({o for _, o in reps})
    return f"init seeds {inits} x order seeds {orders} ({len(reps)} combinations)"


def _seeds_line(a: Analysis) -> str:
    if not a.versus:
        return "one setting: no difference between settings to resolve"
    v = a.smallest
    if v is None:
        return "no setting shares 2 or more seeds with the best: no spread to plan from"
    where = f"{_label(a.keys, v.setting)} against the best, {100 * v.test.mean:+.2f} points"
    if v.seeds is None:
        return f"the smallest difference shown ({where}): {v.seeds_why_not}"
    return (
        f"{v.seeds} seeds to resolve the smallest difference shown ({where}, sd of the paired "
        f"differences {100 * v.test.sd:.2f}) with 80% power in a two-sided paired t-test at 5% "
        f"(this sweep: {v.test.n})"
    )


def report(sweep, parent, children, done, failed, a: Analysis, figures: list[str]) -> str:
    keys = a.keys
    reps = sorted({rep for g in a.groups.values() for rep in g})
    lines = [
        f"# Sweep `{sweep}`",
        "",
        f"MLflow parent run `{parent.info.run_id}` (experiment id {parent.info.experiment_id}); "
        f"{len(done)} of {len(children)} runs finished; {_replicates_line(reps)}.",
        "",
        f"Command: `{parent.data.tags.get('command', '?')}`",
        "",
        "## Settings",
        "",
        "Error in percent over seeds: mean [95% interval] (standard deviation, number of seeds). "
        "The interval is Student's t over seeds on the logit scale, back-transformed: it stays "
        "within [0, 100] and is for the typical error (the back-transformed mean logit), which "
        "sits below the mean when one seed is far off.",
        "",
        f"| {' | '.join(keys)} | validation error | test error |",
        f"|{'---|' * (len(keys) + 2)}",
    ]
    for g, s in a.summaries.items():
        mark = " **(best)**" if g == a.best else ""
        row = [_rate(s[m]) if m in s else "—" for m in METRICS]
        lines.append(f"| {' | '.join(_cells(g))}{mark} | {' | '.join(row)} |")
    best = a.summaries[a.best]
    lines += [
        "",
        f"Best setting, chosen on mean validation error: **{_label(keys, a.best)}**: validation "
        f"{_rate(best['val_error'])}, test "
        f"{_rate(best['test_error']) if 'test_error' in best else '—'}.",
        "",
        *_paired_section(a),
        *_mcnemar_section(a),
        *_variance_section(a),
        "## Figures",
        "",
        "![error against the swept setting, 95% logit-t intervals](errors.png)",
        "",
        "![validation error per epoch, mean over seeds](curves.png)",
        "",
    ]
    if "seeds.png" in figures:
        lines += ["![test error per init seed and order seed](seeds.png)", ""]
    if failed:
        lines += ["## Runs that did not finish", ""]
        lines += [
            f"- `{r.data.tags.get('overrides', '?')}`: {r.info.status} (run `{r.info.run_id}`)"
            for r in failed
        ]
        lines.append("")
    return "\n".join(lines)


def _paired_section(a: Analysis) -> list[str]:
    keys = a.keys
    lines = ["## Against the best, paired by seed", ""]
    if not a.versus:
        return [*lines, "One setting: nothing to compare it with.", ""]
    lines += [
        "Test error of each setting minus the best's, in percentage points, over the seeds both "
        "ran (the same initial weights and sample order): mean [95% t interval], standard "
        "deviation of the differences; two-sided p-values of the paired t-test and of the exact "
        "Wilcoxon signed-rank test, each also Holm-adjusted across the settings compared; the "
        "seeds a paired t-test needs for 80% power at 5% at this difference and spread. On test "
        "error because the best was chosen on validation error, which would favour it.",
        "",
        f"| {' | '.join(keys)} | seeds | difference | sd | t-test p | Holm | Wilcoxon p | Holm | "
        "seeds for 80% power |",
        f"|{'---|' * (len(keys) + 8)}",
    ]
    for v in a.versus:
        t = v.test
        if t is None:
            cells = [str(len(v.shared)), f"no test: {v.why_not}", *["—"] * 6]
        else:
            cells = [
                str(t.n),
                f"{100 * t.mean:+.2f} [{100 * t.low:+.2f}, {100 * t.high:+.2f}]",
                f"{100 * t.sd:.2f}",
                _p(t.p_t),
                _p(v.p_t_holm),
                _p(t.p_wilcoxon),
                _p(v.p_w_holm),
                str(v.seeds) if v.seeds is not None else f"— ({v.seeds_why_not})",
            ]
        lines.append(f"| {' | '.join(_cells(v.setting))} | {' | '.join(cells)} |")
    lines.append("")
    for v in a.versus:
        for reps, whose in ((v.only_best, "the best"), (v.only_this, _label(keys, v.setting))):
            if reps:
                ran = ", ".join(replicate_label(r) for r in reps)
                lines.append(
                    f"- {_label(keys, v.setting)}: {ran} finished for {whose} only: left out of "
                    "this pair's comparison."
                )
    if lines[-1] != "":
        lines.append("")
    same = ", ".join(_label(keys, g) for g in a.indistinguishable)
    untested = [v for v in a.versus if v.test is None]
    lines += [
        f"Not distinguishable from the best at 5% (Holm-adjusted paired t-test): **{same}**"
        + (
            f"; not tested: {', '.join(_label(keys, v.setting) for v in untested)}"
            if untested
            else ""
        )
        + ".",
        "",
    ]
    small = [v.test.n for v in a.versus if v.test is not None and v.test.n <= 5]
    if small:
        n = min(small)
        lines += [
            f"With {n} pairs the exact Wilcoxon test cannot go below p = {2 / 2**n:.4f} "
            "(every pair the same way): it can only support the t-test here.",
            "",
        ]
    lines += [f"Seeds needed: {_seeds_line(a)}.", ""]
    if any(v.test for v in a.versus):
        lines += ["![paired differences against the best](paired.png)", ""]
    return lines


def _mcnemar_section(a: Analysis) -> list[str]:
    if not any(v.shared for v in a.versus):
        return []
    reps = sorted({r for v in a.versus for r in v.shared})
    lines = [
        "### Per seed: McNemar's test on the test images",
        "",
        "For each seed, the two runs' predictions on the same "
        + (f"{a.n_test:,} " if a.n_test else "")
        + "test images: b:c = images only the best gets right : images only the other setting "
        "gets right, and the exact two-sided McNemar p (binomial), not adjusted. It asks whether "
        "these two trained networks differ on this test set; whether the settings differ across "
        "seeds is the paired test above.",
        "",
        f"| {' | '.join(a.keys)} | {' | '.join(replicate_label(r) for r in reps)} |",
        f"|{'---|' * (len(a.keys) + len(reps))}",
    ]
    for v in a.versus:
        cells = []
        for rep in reps:
            m = v.mcnemar.get(rep, "no pair")
            cells.append(f"{m[0]}:{m[1]} ({_p(m[2])})" if isinstance(m, tuple) else m)
        lines.append(f"| {' | '.join(_cells(v.setting))} | {' | '.join(cells)} |")
    return [*lines, ""]


def _variance_section(a: Analysis) -> list[str]:
    if not a.variance and not a.variance_notes:
        return []
    lines = [
        "## Where the spread comes from",
        "",
        "Replicates that cross initialisation seeds with order seeds (one run per pair): a "
        "two-way analysis of variance without replication, with variance components by the "
        "method of moments (negative estimates set to 0), as shares of the variance of one "
        "run. Training is deterministic, so what the two seeds' main effects leave is their "
        "interaction (which initialisation meets which order). F-tests of each main effect "
        "against the interaction.",
        "",
    ]
    for g, note in a.variance_notes.items():
        lines += [f"- {_label(a.keys, g)}: no decomposition: {note}.", ""]
    if a.variance:
        lines += [
            f"| {' | '.join(a.keys)} | error | init | order | interaction | sd of one run "
            "| p (init) | p (order) |",
            f"|{'---|' * (len(a.keys) + 7)}",
        ]
        for g, split in a.variance.items():
            for m, tw in split.items():
                shares = [f"{100 * s:.0f}%" if math.isfinite(s) else "—" for s in tw.shares]
                sd = math.sqrt(tw.var_rows + tw.var_cols + tw.var_resid)
                lines.append(
                    f"| {' | '.join(_cells(g))} | {m.replace('_error', '')} | "
                    f"{' | '.join(shares)} | {100 * sd:.2f} | {_p(tw.p_rows)} | {_p(tw.p_cols)} |"
                )
        lines.append("")
    return lines


# --------------------------------------------------------------------------- the figures


def _positions(a: Analysis, settings: list[tuple]) -> tuple[list, bool]:
    numeric = len(a.keys) == 1 and all(isinstance(g[0], float) for g in a.groups)
    return ([g[0] for g in settings] if numeric else list(range(len(settings)))), numeric


def _errors_figure(path: Path, a: Analysis) -> None:
    """Mean error per setting with its 95% logit-t interval (within [0, 100])."""
    fig, ax = plt.subplots(figsize=(6, 4))
    xs = list(a.summaries)
    pos, numeric = _positions(a, xs)
    shift = 1.04 if numeric and min(pos) > 0 else 0.08  # side by side: val left, test right
    for i, (metric, marker) in enumerate(zip(METRICS, ("o", "s"), strict=True)):
        have = [(p, a.summaries[g].get(metric)) for p, g in zip(pos, xs, strict=True)]
        have = [(p, s) for p, s in have if s is not None]
        at = [p * shift**i if shift > 1 else p + shift * i for p, _ in have]
        (line,) = ax.plot(at, [100 * s.mean for _, s in have], marker=marker, ls="-", lw=1)
        for x, (_, s) in zip(at, have, strict=True):
            if s.low is not None:
                ax.vlines(x, 100 * s.low, 100 * s.high, color=line.get_color(), lw=1.5)
        line.set_label(metric.replace("_", " "))
    if numeric and min(pos) > 0:
        ax.set_xscale("log")
    if not numeric:
        ax.set_xticks(pos, [_label(a.keys, g) for g in xs], rotation=30, ha="right", fontsize=7)
    ax.set_ylim(0, min(100, ax.get_ylim()[1]))
    ax.set(xlabel=a.keys[0] if numeric else "setting", ylabel="error (%): mean, 95% interval")
    ax.legend()
    save(fig, path)


def _paired_figure(path: Path, a: Analysis) -> None:
    """One row per setting: test error minus the best's, mean and 95% t interval (points), and
    each seed's difference."""
    rows = [v for v in a.versus if v.test is not None]
    fig, ax = plt.subplots(figsize=(6, 1.2 + 0.45 * len(rows)))
    for y, v in enumerate(rows):
        t = v.test
        ax.plot([100 * t.low, 100 * t.high], [y, y], color="C0", lw=2)
        ax.plot(100 * t.mean, y, "o", color="C0", label="mean, 95% t interval" if y == 0 else None)
        ax.plot(
            100 * np.array(v.diffs),
            np.full(len(v.diffs), y + 0.18),
            "|",
            color="grey",
            ms=7,
            label="one seed" if y == 0 else None,
        )
        ax.annotate(
            f"Holm p {_p(v.p_t_holm)}",
            (100 * t.high, y),
            xytext=(4, 0),
            textcoords="offset points",
            va="center",
            fontsize=7,
        )
    ax.axvline(0, color="grey", lw=1, ls="--")
    ax.set_yticks(range(len(rows)), [_label(a.keys, v.setting) for v in rows], fontsize=8)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.margins(x=0.2)
    ax.legend(fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False)
    ax.set(xlabel=f"test error minus {_label(a.keys, a.best)}'s, paired by seed (points)")
    save(fig, path)


def _seeds_figure(path: Path, a: Analysis) -> None:
    """Test error per (init seed, order seed), one panel per crossed setting."""
    settings = [g for g in a.variance if PAIRED_ON in a.variance[g]]
    fig, axes = plt.subplots(1, len(settings), figsize=(4.2 * len(settings), 3.8), squeeze=False)
    for ax, g in zip(axes[0], settings, strict=True):
        values = _values(a.groups[g], PAIRED_ON)
        inits, orders = sorted({r[0] for r in values}), sorted({r[1] for r in values})
        table = np.array([[100 * values[(i, o)] for o in orders] for i in inits])  # (init, order)
        im = ax.imshow(table, cmap="viridis")
        for (i, j), v in np.ndenumerate(table):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="white")
        ax.set_xticks(range(len(orders)), orders)
        ax.set_yticks(range(len(inits)), inits)
        ax.set(xlabel="order seed", ylabel="init seed", title=_label(a.keys, g) or "all runs")
        fig.colorbar(im, ax=ax, fraction=0.046, label="test error (%)")
    save(fig, path)


def _curves_figure(path: Path, client: MlflowClient, keys: list[str], groups: dict) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for g, reps in groups.items():
        curves = []
        for r in reps.values():
            hist = sorted(
                client.get_metric_history(r.info.run_id, "val_error"), key=lambda m: m.step
            )
            curves.append([m.value for m in hist])
        n = min(len(c) for c in curves)
        if n == 0:
            continue
        mean = 100 * np.mean([c[:n] for c in curves], axis=0)
        ax.plot(range(1, n + 1), mean, marker="o", label=_label(keys, g))
    ax.set(xlabel="epoch", ylabel="validation error (%), mean over seeds")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize=8)
    save(fig, path)
