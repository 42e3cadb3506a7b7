"""A sweep's runs as settings x replicates, and what its report says about them.

A run's *setting* is every parameter that varies across the sweep's finished runs except its
seeds (for the usual sweep: the learning rate); its *replicate* is its pair of seeds,
(initialisation, sample order): `seed` for both unless `train.init_seed` / `train.order_seed`
say otherwise. Two runs with the same replicate start from the same weights and see the images
in the same order, and every run is tested on the same images, so settings are compared paired:
seed by seed, and within a seed image by image. `analyse` applies `pipeline.reports.stats`:
- per setting, validation and test error over replicates: mean, sd and a 95% interval within
  [0, 1] (`stats.rate_interval`);
- the best setting, on mean validation error (test error never chooses);
- every other setting against the best on test error (the best was chosen on validation
  error, which would favour it), over the replicates both ran: `stats.paired`, Holm across
  settings, the settings not distinguishable from the best at 5%, seeds for 80% power;
- per shared replicate, McNemar's exact test on the two runs' test predictions;
- for replicates that cross init seeds with order seeds, `stats.two_way` per metric.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
from mlflow.entities import Run

from pipeline.config import RESUME_KEYS
from pipeline.reports import stats

METRICS = ("val_error", "test_error")
CHOOSE_ON, PAIRED_ON = "val_error", "test_error"
SEED_KEYS = ("seed", "train.init_seed", "train.order_seed")  # replicates, not settings
Replicate = tuple[int, int]  # (init seed, order seed)
Predictions = tuple[np.ndarray, np.ndarray]  # (actual (N,), predicted (N,)) of a run


class CompareError(LookupError):
    """The sweep cannot be compared (unknown name, no runs); the message says why."""


def varied_params(runs: list[Run]) -> list[str]:
    """Params whose value differs across runs, seeds excluded (the grouping keys), and the keys
    that only say how a run resumed (`config.RESUME_KEYS`)."""
    keys = sorted(set().union(*(r.data.params for r in runs)) - set(RESUME_KEYS))
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


def label(keys: list[str], g: tuple) -> str:
    """`train.lr=0.3`: a setting by its keys."""
    return ", ".join(
        f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in zip(keys, g, strict=True)
    )


@dataclass(frozen=True)
class RateSummary:
    """An error rate over replicates; low/high: the 95% logit-t interval (None when n = 1)."""

    n: int
    mean: float
    sd: float
    low: float | None
    high: float | None


def summarize(values: list[float], n_images: int | None) -> RateSummary:
    """Mean, sd and interval of error rates measured on n_images images each."""
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
    """What `analyse` found: settings are tuples of the values of `keys`."""

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


def metric_values(reps: dict[Replicate, Run], metric: str) -> dict[Replicate, float]:
    """A metric's final value per replicate, for the runs that logged it."""
    return {rep: r.data.metrics[metric] for rep, r in reps.items() if metric in r.data.metrics}


def analyse(
    groups: dict[tuple, dict[Replicate, Run]],
    keys: list[str],
    predictions: dict[str, Predictions | None],
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
            m: summarize(list(metric_values(reps, m).values()), n_images[m])
            for m in METRICS
            if metric_values(reps, m)
        }
    lacking = [g for g in groups if CHOOSE_ON not in summaries[g]]
    if lacking:
        raise CompareError(
            f"no validation error logged for {label(keys, lacking[0])} (data.val_size=0, or "
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
    predictions: dict[str, Predictions | None],
) -> Versus:
    b, o = metric_values(best, PAIRED_ON), metric_values(other, PAIRED_ON)
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
        values = metric_values(reps, m)
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
