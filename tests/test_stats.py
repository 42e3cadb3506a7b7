"""The sweep comparison's statistics (pipeline.reports.stats) against SciPy and hand-worked
examples: paired t, exact Wilcoxon, Holm, McNemar, power, intervals within [0, 1], the two-way
decomposition, and clear refusals when there are too few seeds."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.stats

from pipeline.reports import stats


def test_paired_t_hand_worked():
    # d = a - b = [2, 3, 1]: mean 2, sd 1, t = 2 / (1 / sqrt 3) = 2 sqrt 3 on 2 df. For 2 df the
    # t distribution's cdf is 1/2 + t / (2 sqrt(2 + t^2)), so p = 1 - t / sqrt(2 + t^2).
    p = stats.paired([3.0, 5.0, 4.0], [1.0, 2.0, 3.0])
    t = 2 * math.sqrt(3)
    assert (p.n, p.mean, p.sd) == (3, 2.0, 1.0)
    assert p.t == pytest.approx(t)
    assert p.p_t == pytest.approx(1 - t / math.sqrt(2 + t * t))  # 0.0742
    half = 4.302653 * 1 / math.sqrt(3)  # t(0.975, 2) from a printed table
    assert (p.low, p.high) == (pytest.approx(2 - half), pytest.approx(2 + half))


@pytest.mark.parametrize("n", [2, 3, 5, 9])
def test_paired_t_equals_scipy(n):
    rng = np.random.default_rng(n)
    a, b = rng.normal(size=n), rng.normal(0.4, 1.0, size=n)
    p = stats.paired(a, b)
    ref = scipy.stats.ttest_rel(a, b)
    assert p.t == pytest.approx(ref.statistic) and p.p_t == pytest.approx(ref.pvalue)
    ci = ref.confidence_interval(0.95)
    assert (p.low, p.high) == (pytest.approx(ci.low), pytest.approx(ci.high))


def test_wilcoxon_exact_on_five_pairs_hand_worked():
    # Ranks 1..5; of the 32 equally likely sign patterns, W+ >= 10 in 10 (sums of subsets of
    # {1..5}: 10 three ways, 11 and 12 two each, 13, 14, 15 one each): p = 2 * 10 / 32.
    assert stats.wilcoxon_exact(np.array([1.0, 2.0, 3.0, 4.0, -5.0])) == (10.0, 0.625)
    # All five the same way: only 2 of 32 patterns are as extreme; 5 pairs never reach p < 0.05.
    assert stats.wilcoxon_exact(np.array([0.1, 0.2, 0.3, 0.4, 0.5])) == (15.0, 0.0625)
    assert stats.wilcoxon_exact(np.zeros(5)) == (0.0, 1.0)  # no nonzero difference


@pytest.mark.parametrize("n", [3, 5, 8, 15])
def test_wilcoxon_exact_equals_scipy_without_ties(n):
    d = np.random.default_rng(n).normal(0.5, 1.0, size=n)
    w_plus, p = stats.wilcoxon_exact(d)
    ref = scipy.stats.wilcoxon(d, method="exact")
    assert p == pytest.approx(ref.pvalue)
    assert min(w_plus, n * (n + 1) / 2 - w_plus) == ref.statistic


def test_wilcoxon_exact_with_ties_and_zeros_enumerates_every_sign():
    d = np.array([0.5, -0.5, 1.0, 2.0, -2.0, 2.0, 0.0])  # tied |d|, one zero (dropped)
    w_plus, p = stats.wilcoxon_exact(d)
    ranks = stats.signed_ranks(d)  # [1.5, 1.5, 3, 5, 5, 5]
    signs = np.array(list(itertools.product([0, 1], repeat=ranks.size)))  # all 64 patterns
    null = signs @ ranks
    assert w_plus == 14.5
    assert p == pytest.approx(2 * min(np.mean(null <= w_plus), np.mean(null >= w_plus)))
    ref = scipy.stats.wilcoxon(d, method=scipy.stats.PermutationMethod())  # exact: 64 < 9999
    assert p == pytest.approx(ref.pvalue)


def test_holm_on_known_p_values():
    # Sorted: 0.005 x 4 = 0.02; 0.01 x 3 = 0.03; 0.03 x 2 = 0.06; 0.04 x 1 -> max(0.06, 0.04).
    got = stats.holm([0.01, 0.04, 0.03, 0.005])
    assert got == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, 0.9]) == [1.0, 1.0] and stats.holm([]) == []


def test_mcnemar_on_a_two_by_two_table():
    #            b right  b wrong
    # a right       90        1
    # a wrong        6        3
    actual = np.zeros(100, dtype=np.int64)
    pred_a = np.array([0] * 90 + [0] * 1 + [1] * 6 + [1] * 3)
    pred_b = np.array([0] * 90 + [2] * 1 + [0] * 6 + [2] * 3)
    assert stats.discordant(actual, pred_a, pred_b) == (1, 6)
    # 7 discordant images, split 1 : 6; p = 2 P(X <= 1), X ~ Bin(7, 1/2) = 2 (1 + 7) / 128.
    assert stats.mcnemar_exact(1, 6) == pytest.approx(0.125)
    assert stats.mcnemar_exact(1, 6) == pytest.approx(scipy.stats.binomtest(1, 7).pvalue)
    assert stats.mcnemar_exact(0, 0) == 1.0 and stats.mcnemar_exact(5, 5) == 1.0


def test_seeds_for_power_matches_published_tables():
    # Two-sided one-sample / paired t-test, alpha 0.05, power 0.8 (Cohen's tables; G*Power):
    # effect size d = 1 needs 10 pairs, d = 0.5 needs 34.
    assert stats.seeds_for_power(1.0, 1.0) == 10
    assert stats.seeds_for_power(-0.25, 0.5) == 34  # the sign does not matter
    assert stats.paired_t_power(10, 1.0, 1.0) == pytest.approx(0.8031, abs=1e-4)
    assert stats.paired_t_power(9, 1.0, 1.0) < 0.8
    assert stats.seeds_for_power(1.0, 0.0) == 2


@pytest.mark.parametrize(
    ("effect", "sd"), [(0.0, 1.0), (1.0, math.nan), (1e-6, 1.0)], ids=["none", "one-pair", "tiny"]
)
def test_seeds_for_power_refuses_what_no_seed_count_settles(effect, sd):
    with pytest.raises(stats.TooFew):
        stats.seeds_for_power(effect, sd, most=1000)


@pytest.mark.parametrize(
    "rates",
    [
        [0.0, 0.0, 0.0],
        [1.0, 1.0, 1.0],
        [0.0, 1.0],
        [0.0, 0.001],
        [0.999, 1.0, 0.98],
        [0.57, 0.05],
        [0.286, 0.047, 0.066],  # lr 3 of the old 3-seed sweep: 13.3 ± 33 under a plain t
    ],
)
@pytest.mark.parametrize("n_images", [20, 10_000, None])
def test_rate_interval_stays_within_0_and_1(rates, n_images):
    low, high = stats.rate_interval(np.array(rates), n_images=n_images)
    assert 0.0 <= low <= high <= 1.0


def test_rate_interval_is_a_t_interval_of_the_logits():
    rates = [0.1, 0.2, 0.3]
    z = [math.log(r / (1 - r)) for r in rates]
    mean, sd = sum(z) / 3, math.sqrt(sum((v - sum(z) / 3) ** 2 for v in z) / 2)
    half = 4.302653 * sd / math.sqrt(3)
    low, high = stats.rate_interval(np.array(rates), n_images=100)
    assert low == pytest.approx(1 / (1 + math.exp(-(mean - half))), rel=1e-6)
    assert high == pytest.approx(1 / (1 + math.exp(-(mean + half))), rel=1e-6)
    # A rate of 0 is moved half an image inward: 0.5 / 20 on 20 images.
    assert stats.rate_interval(np.zeros(4), n_images=20) == (pytest.approx(0.025),) * 2


def test_too_few_values_give_a_message_not_a_number():
    with pytest.raises(stats.TooFew, match="one value"):
        stats.rate_interval(np.array([0.1]), n_images=100)
    with pytest.raises(stats.TooFew, match="1 pair"):
        stats.paired([0.1], [0.2])
    with pytest.raises(stats.TooFew, match="no values"):
        stats.mean_sd([])


def test_two_way_hand_worked():
    # [[1, 2], [3, 6]]: mean 3; row means 1.5, 4.5 -> SS_rows = 2 (1.5^2 + 1.5^2) = 9; column
    # means 2, 4 -> SS_cols = 2 (1 + 1) = 4; SS_total = 4 + 1 + 0 + 9 = 14 -> SS_resid = 1.
    tw = stats.two_way(np.array([[1.0, 2.0], [3.0, 6.0]]))
    assert (tw.mean, tw.ss_rows, tw.ss_cols, tw.ss_resid) == (3.0, 9.0, 4.0, 1.0)
    assert tw.df == (1, 1, 1)
    # Components: (9 - 1) / 2 = 4, (4 - 1) / 2 = 1.5, 1; shares of 6.5.
    assert (tw.var_rows, tw.var_cols, tw.var_resid) == (4.0, 1.5, 1.0)
    assert tw.shares == pytest.approx((4 / 6.5, 1.5 / 6.5, 1 / 6.5))
    # F(1, 1): P(F > f) = 1 - (2 / pi) atan(sqrt f).
    assert tw.p_rows == pytest.approx(1 - 2 / math.pi * math.atan(3))
    assert tw.p_cols == pytest.approx(1 - 2 / math.pi * math.atan(2))


def test_two_way_equals_nested_least_squares_fits():
    # Oracle: sums of squares as drops in the residual sum of squares of dummy-variable
    # regressions (rows + columns, columns only, rows only), F-tests from them.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 3)) + 2.0 * np.arange(4)[:, None]  # a strong row effect
    a, b = x.shape
    rows, cols = np.eye(a)[np.repeat(np.arange(a), b)], np.eye(b)[np.tile(np.arange(b), a)]
    y = x.ravel()

    def rss(design: np.ndarray) -> float:
        fit = np.linalg.lstsq(design, y, rcond=None)[0]
        return float(np.sum((y - design @ fit) ** 2))

    full = rss(np.hstack([rows, cols]))
    tw = stats.two_way(x)
    assert tw.ss_resid == pytest.approx(full)
    assert tw.ss_rows == pytest.approx(rss(cols) - full)
    assert tw.ss_cols == pytest.approx(rss(rows) - full)
    f_rows = (tw.ss_rows / (a - 1)) / (full / ((a - 1) * (b - 1)))
    assert tw.p_rows == pytest.approx(scipy.stats.f.sf(f_rows, a - 1, (a - 1) * (b - 1)))
    assert tw.p_rows < 0.001 and tw.var_cols == 0.0 and tw.shares[0] > 0.85
    additive = np.add.outer([0.0, 1.0, 2.0], [0.0, 0.5])  # no interaction at all
    assert stats.two_way(additive).ss_resid == pytest.approx(0.0, abs=1e-12)


def test_two_way_refuses_an_incomplete_table():
    with pytest.raises(stats.TooFew, match="every combination"):
        stats.two_way(np.array([[1.0, np.nan], [2.0, 3.0]]))
    with pytest.raises(stats.TooFew, match="2 or more"):
        stats.two_way(np.array([[1.0, 2.0]]))
