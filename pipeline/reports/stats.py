"""Statistics for comparing a sweep's settings across seeds: pure functions of numbers.

Runs of one sweep that share a seed share their initial weights and sample order (and every
run is evaluated on the same test images), so settings are compared *paired*: seed by seed,
and, within one seed, image by image. What is here, each checked against SciPy or a
hand-worked example in tests/test_stats.py:
- `rate_interval`: an interval for an error rate over seeds that stays within [0, 1]
  (Student's t on the logit scale, back-transformed);
- `paired`: mean paired difference with its t interval, the paired t-test and the exact
  Wilcoxon signed-rank test (`wilcoxon_exact`);
- `holm`: Holm's step-down adjustment of p-values across settings;
- `mcnemar_exact`: McNemar's test of two classifiers on the same images (exact binomial);
- `seeds_for_power`: seeds that a paired t-test needs to resolve a difference;
- `two_way`: the share of variance from each of two crossed seed sources (init x order).
Every test is two-sided. Too little data (one seed, no pair) raises `TooFew`, with a message
that says what is missing, rather than returning a number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.special
import scipy.stats

LEVEL = 0.95  # confidence level of every interval
ALPHA = 0.05  # significance level of every test
UNKNOWN_N_CLIP = 1e-6  # rates clipped to [c, 1 - c] for the logit when the image count is unknown


class TooFew(ValueError):
    """Too few values for the statistic; the message says what is missing."""


def mean_sd(values: np.ndarray) -> tuple[int, float, float]:
    """(n, mean, sample standard deviation (n - 1); nan for n = 1) of values (n,)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise TooFew("no values")
    sd = float(np.std(x, ddof=1)) if x.size > 1 else math.nan
    return x.size, float(np.mean(x)), sd


def t_interval(values: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """Student's t interval for the mean of values (n,), n >= 2: mean ± t(n-1) sd / sqrt(n)."""
    n, mean, sd = mean_sd(values)
    if n < 2:
        raise TooFew("one value: no spread to build an interval from (need 2 or more)")
    half = float(scipy.stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return mean - half, mean + half


def rate_interval(
    rates: np.ndarray, *, n_images: int | None, level: float = LEVEL
) -> tuple[float, float]:
    """An interval for an error rate over seeds, within [0, 1]: a t interval on the logit scale,
    back-transformed.

    Inputs: rates (n,) in [0, 1], one per seed, n >= 2; n_images: how many images each rate was
    measured on (a rate of 0 or 1 is moved half an image inward, 0.5 / n_images, so that its
    logit is finite; None: UNKNOWN_N_CLIP). Returns (low, high), 0 <= low <= high <= 1.
    The interval is for the typical error, expit(mean of logit(rate)); with skewed seeds it sits
    below the arithmetic mean, which it need not contain.
    """
    x = np.asarray(rates, dtype=np.float64)
    if np.any((x < 0) | (x > 1)):
        raise ValueError(f"rates must lie in [0, 1], got {x.tolist()}")
    clip = 0.5 / n_images if n_images else UNKNOWN_N_CLIP
    low, high = t_interval(scipy.special.logit(np.clip(x, clip, 1 - clip)), level)
    return float(scipy.special.expit(low)), float(scipy.special.expit(high))


@dataclass(frozen=True)
class Paired:
    """A paired comparison of two settings over the seeds both ran: differences d = a - b."""

    n: int
    mean: float  # mean of d
    sd: float  # sample standard deviation of d
    low: float  # 95% t interval for the mean difference
    high: float
    t: float  # paired t statistic, mean / (sd / sqrt(n)); ±inf when sd = 0 and mean != 0
    p_t: float  # two-sided
    w_plus: float  # Wilcoxon's W+: the sum of the ranks of |d| over the positive d (zeros dropped)
    p_wilcoxon: float  # exact, two-sided


def paired(a: np.ndarray, b: np.ndarray, level: float = LEVEL) -> Paired:
    """Paired t-test and exact Wilcoxon signed-rank test of a (n,) against b (n,), pair by pair.

    The t-test: t = mean(d) / (sd(d) / sqrt(n)) with n - 1 degrees of freedom, d = a - b.
    Raises TooFew for fewer than 2 pairs.
    """
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if d.size < 2:
        raise TooFew(f"{d.size} pair(s): a paired test needs 2 or more seeds run by both")
    n, mean, sd = mean_sd(d)
    low, high = t_interval(d, level)
    if sd > 0:
        t = mean / (sd / math.sqrt(n))
        p_t = float(2 * scipy.stats.t.sf(abs(t), n - 1))
    else:  # every pair differs by the same amount: no spread to test against
        t = math.copysign(math.inf, mean) if mean else 0.0
        p_t = 1.0 if mean == 0 else 0.0
    w_plus, p_w = wilcoxon_exact(d)
    return Paired(n, mean, sd, low, high, t, p_t, w_plus, p_w)


def signed_ranks(d: np.ndarray) -> np.ndarray:
    """The ranks of |d| among the nonzero d (n,), ties given their mean rank; zeros dropped."""
    d = np.asarray(d, dtype=np.float64)
    return scipy.stats.rankdata(np.abs(d[d != 0]))


def wilcoxon_exact(d: np.ndarray) -> tuple[float, float]:
    """Wilcoxon's signed-rank test of differences d (n,): (W+, exact two-sided p).

    Zero differences are dropped (Wilcoxon's own rule); tied |d| share their mean rank. The
    null distribution of W+ is exact for any n: each nonzero d is equally likely + or -, so W+
    is a sum of independent rank-or-zero terms, convolved one rank at a time (in half-ranks, to
    stay on integers when ties give ranks like 2.5). p = min(1, 2 min(P(W+ <= w), P(W+ >= w))).
    With n pairs and no zeros, the smallest p possible is 2 / 2**n (0.0625 for 5 pairs).
    """
    d = np.asarray(d, dtype=np.float64)
    ranks = signed_ranks(d)
    if ranks.size == 0:
        return 0.0, 1.0  # every pair equal: nothing speaks for either side
    w_plus = float(ranks[d[d != 0] > 0].sum())
    halves = np.rint(2 * ranks).astype(np.int64)  # 2 x rank: integers, even with ties
    dist = np.zeros(int(halves.sum()) + 1)  # dist[s] = P(2 W+ = s)
    dist[0] = 1.0
    for h in halves:
        dist = 0.5 * (dist + np.concatenate([np.zeros(h), dist[:-h]]))
    s = round(2 * w_plus)
    p = 2 * min(dist[: s + 1].sum(), dist[s:].sum())
    return w_plus, float(min(1.0, p))


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input's order.

    Sorted ascending, p_(i) (i = 1..m) becomes max over j <= i of min(1, (m - j + 1) p_(j)).
    Rejecting where the adjusted p < alpha controls the family-wise error rate at alpha.
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def discordant(actual: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray) -> tuple[int, int]:
    """McNemar's off-diagonal counts for two classifiers on the same images (N,):
    (images only a gets right, images only b gets right)."""
    right_a = np.asarray(pred_a) == np.asarray(actual)
    right_b = np.asarray(pred_b) == np.asarray(actual)
    return int(np.sum(right_a & ~right_b)), int(np.sum(~right_a & right_b))


def mcnemar_exact(b: int, c: int) -> float:
    """McNemar's exact test: two-sided p of b images only one classifier gets right against c
    only the other gets right. Under the null each of the b + c discordant images goes either
    way with probability 1/2: p = min(1, 2 P(X <= min(b, c))), X ~ Binomial(b + c, 1/2)."""
    if b + c == 0:
        return 1.0  # the two classifiers agree on every image's correctness
    return float(min(1.0, 2 * scipy.stats.binom.cdf(min(b, c), b + c, 0.5)))


def paired_t_power(n: int, effect: float, sd: float, alpha: float = ALPHA) -> float:
    """Power of a two-sided paired t-test at level alpha with n pairs, for a true mean
    difference `effect` and a standard deviation `sd` of the differences (noncentral t)."""
    df = n - 1
    crit = scipy.stats.t.ppf(1 - alpha / 2, df)
    shift = abs(effect) / sd * math.sqrt(n)  # the noncentrality
    return float(scipy.stats.nct.sf(crit, df, shift) + scipy.stats.nct.cdf(-crit, df, shift))


def seeds_for_power(
    effect: float, sd: float, *, alpha: float = ALPHA, power: float = 0.8, most: int = 100_000
) -> int:
    """The fewest seeds (pairs, >= 2) at which a two-sided paired t-test at level alpha detects
    a mean difference `effect` with probability `power`, when the differences spread with
    standard deviation `sd` (`paired_t_power`). Raises TooFew when the effect is 0, or sd is
    unknown (nan: one pair), or more than `most` seeds would be needed."""
    if not math.isfinite(sd):
        raise TooFew("the spread of the paired differences is unknown (one pair)")
    if effect == 0:
        raise TooFew("no difference observed: no number of seeds resolves it")
    if sd == 0:
        return 2  # every pair differs by the same amount
    start = 2
    while start <= most:  # blocks of growing size: small answers stay cheap
        ns = np.arange(start, min(most, 8 * start) + 1)
        df = ns - 1
        crit = scipy.stats.t.ppf(1 - alpha / 2, df)
        shift = abs(effect) / sd * np.sqrt(ns)
        got = scipy.stats.nct.sf(crit, df, shift) + scipy.stats.nct.cdf(-crit, df, shift)
        enough = np.flatnonzero(got >= power)
        if enough.size:
            return int(ns[enough[0]])
        start = int(ns[-1]) + 1
    raise TooFew(f"more than {most} seeds")


@dataclass(frozen=True)
class TwoWay:
    """Two-way decomposition of a complete a x b table, one value per cell (rows: one seed
    source, e.g. the initialisation; columns: the other, e.g. the sample order)."""

    mean: float
    ss_rows: float  # b * sum_i (row mean_i - mean)^2
    ss_cols: float  # a * sum_j (column mean_j - mean)^2
    ss_resid: float  # what is left: the rows x columns interaction
    df: tuple[int, int, int]  # (a - 1, b - 1, (a - 1)(b - 1))
    p_rows: float  # F-test of the row effect against the residual
    p_cols: float
    var_rows: float  # variance components (method of moments, negative estimates set to 0)
    var_cols: float
    var_resid: float

    @property
    def shares(self) -> tuple[float, float, float]:
        """Each component's share of the variance of one run (rows, columns, interaction)."""
        total = self.var_rows + self.var_cols + self.var_resid
        if total == 0:
            return (math.nan, math.nan, math.nan)
        return (self.var_rows / total, self.var_cols / total, self.var_resid / total)


def two_way(table: np.ndarray) -> TwoWay:
    """Two-way ANOVA without replication of table (a, b), a, b >= 2, and its random-effects
    variance components.

    Sums of squares: SS_rows + SS_cols + SS_resid = SS_total = sum (x_ij - mean)^2. Mean
    squares MS = SS / df; under random effects E[MS_rows] = var_resid + b var_rows, E[MS_cols]
    = var_resid + a var_cols, E[MS_resid] = var_resid, solved for the components. With one
    deterministic run per cell the residual is the interaction itself: which init meets which
    order (nothing else varies between two runs with the same pair of seeds).
    """
    x = np.asarray(table, dtype=np.float64)  # (a, b)
    if x.ndim != 2 or min(x.shape) < 2:
        raise TooFew(f"a two-way decomposition needs 2 or more seeds of each kind, got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise TooFew("a two-way decomposition needs every combination of the two seeds")
    a, b = x.shape
    mean = float(x.mean())
    rows, cols = x.mean(axis=1), x.mean(axis=0)
    ss_rows = float(b * np.sum((rows - mean) ** 2))
    ss_cols = float(a * np.sum((cols - mean) ** 2))
    ss_resid = float(np.sum((x - rows[:, None] - cols[None, :] + mean) ** 2))
    df = (a - 1, b - 1, (a - 1) * (b - 1))
    ms_rows, ms_cols, ms_resid = ss_rows / df[0], ss_cols / df[1], ss_resid / df[2]

    def f_p(ms: float, df_effect: int) -> float:
        if ms_resid == 0:
            return 0.0 if ms > 0 else 1.0
        return float(scipy.stats.f.sf(ms / ms_resid, df_effect, df[2]))

    return TwoWay(
        mean,
        ss_rows,
        ss_cols,
        ss_resid,
        df,
        f_p(ms_rows, df[0]),
        f_p(ms_cols, df[1]),
        max(0.0, (ms_rows - ms_resid) / b),
        max(0.0, (ms_cols - ms_resid) / a),
        ms_resid,
    )
