"""gip_airflow.stats against scipy/statsmodels (dev dependencies only): 1e-9 on closed forms."""

from __future__ import annotations

import math
import random

import pytest
from scipy import stats as sps
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import confint_proportions_2indep, proportion_confint

from gip_airflow import stats

REL = 1e-9


def close(a: float, b: float, rel: float = REL, abs_: float = 1e-12) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=abs_)


@pytest.mark.parametrize(
    ("a", "b", "x"),
    [(0.5, 0.5, 0.3), (2, 3, 0.4), (10, 1, 0.95), (0.5, 500, 0.001), (300, 200, 0.61), (5000, 4000, 0.556)],
)
def test_betainc(a, b, x):
    assert close(stats.betainc(a, b, x), sps.beta.cdf(x, a, b))


@pytest.mark.parametrize(
    ("k", "n", "p"), [(0, 10, 0.5), (3, 10, 0.5), (37, 80, 0.5), (12, 40, 0.71), (480, 1000, 0.5)]
)
def test_binomial_tails(k, n, p):
    assert close(stats.binom_sf(k, n, p), sps.binom.sf(k - 1, n, p))
    assert close(stats.binom_cdf(k, n, p), sps.binom.cdf(k, n, p))


@pytest.mark.parametrize("df", [1, 2.5, 7, 30, 412.7, 1e5])
@pytest.mark.parametrize("t", [-3.1, -0.4, 0.0, 1.2, 5.0])
def test_t_distribution(df, t):
    assert close(stats.t_cdf(t, df), sps.t.cdf(t, df))


@pytest.mark.parametrize("df", [1, 3.3, 29, 1000, 1e6])
@pytest.mark.parametrize("q", [0.9, 0.95, 0.975, 0.999, 0.05])
def test_t_quantile(df, q):
    assert close(stats.t_ppf(q, df), sps.t.ppf(q, df))


@pytest.mark.parametrize(("k", "n"), [(0, 20), (7, 20), (20, 20), (183, 200), (912, 1000)])
@pytest.mark.parametrize("alpha", [0.05, 0.01])
def test_wilson_and_clopper_pearson(k, n, alpha):
    z = stats.norm_ppf(1 - alpha / 2)
    lo, hi = stats.wilson_interval(k, n, z)
    ref_lo, ref_hi = proportion_confint(k, n, alpha=alpha, method="wilson")
    assert close(lo, ref_lo) and close(hi, ref_hi)
    # one-sided 1 - alpha/2 bounds == the two-sided 1 - alpha exact interval
    lo, hi = stats.clopper_pearson(k, n, alpha / 2)
    ref_lo, ref_hi = proportion_confint(k, n, alpha=alpha, method="beta")
    assert close(lo, ref_lo) and close(hi, ref_hi)


@pytest.mark.parametrize(
    ("x1", "n1", "x2", "n2"), [(56, 70, 48, 80), (9, 10, 3, 10), (270, 300, 1995, 2100), (0, 15, 4, 15)]
)
def test_newcombe(x1, n1, x2, n2):
    ci = confint_proportions_2indep(x1, n1, x2, n2, method="newcomb", compare="diff", alpha=0.1)
    cmp = stats.compare_proportions(x1, n1, x2, n2, alpha=0.05)
    assert close(cmp.low, ci[0]) and close(cmp.high, ci[1])
    assert close(cmp.estimate, x1 / n1 - x2 / n2)


@pytest.mark.parametrize("margin", [0.0, 0.02])
def test_newcombe_p_value_agrees_with_bound(margin):
    # the p-value inverts the bound: at alpha = p the upper bound sits exactly on -margin
    cmp = stats.compare_proportions(250, 300, 1890, 2100, alpha=0.05, margin=margin)
    at_p = stats.compare_proportions(250, 300, 1890, 2100, alpha=cmp.p_value, margin=margin)
    assert close(at_p.high, -margin, rel=1e-9, abs_=1e-9)
    assert (cmp.p_value < 0.05) == (cmp.high < -margin)


@pytest.mark.parametrize(("b", "c"), [(0, 0), (3, 9), (12, 4), (40, 61), (250, 300)])
def test_mcnemar_exact(b, c):
    ref = mcnemar([[100, b], [c, 100]], exact=True).pvalue
    assert close(stats.mcnemar_exact_p(b, c), ref)
    if b + c:
        assert close(stats.mcnemar_exact_p(b, c, "greater"), sps.binomtest(c, b + c, 0.5, "greater").pvalue)
        assert close(stats.mcnemar_exact_p(b, c, "less"), sps.binomtest(c, b + c, 0.5, "less").pvalue)


def test_paired_pass_is_exact_mcnemar_and_consistent():
    # gained=5, lost=15 out of 300: one-sided exact McNemar
    cmp = stats.compare_paired_pass(250, 15, 5, 30, alpha=0.05)
    assert close(cmp.p_value, sps.binomtest(15, 20, 0.5, "greater").pvalue)
    assert cmp.estimate == pytest.approx(-10 / 300)
    ci = sps.binomtest(15, 20).proportion_ci(confidence_level=0.90, method="exact")
    assert close(cmp.high, 20 / 300 * (1 - 2 * ci.low))
    assert close(cmp.low, 20 / 300 * (1 - 2 * ci.high))
    assert (cmp.p_value < 0.05) == (cmp.high < 0)
    # with a margin of 2 points: theta0 = (1 + 0.02 * 300 / 20) / 2 = 0.65
    cmp = stats.compare_paired_pass(250, 15, 5, 30, alpha=0.05, margin=0.02)
    assert close(cmp.p_value, sps.binomtest(15, 20, 0.65, "greater").pvalue)
    assert (cmp.p_value < 0.05) == (cmp.high < -0.02)


def test_welch_from_aggregates():
    rng = random.Random(3)
    a = [rng.gauss(0.70, 0.2) for _ in range(140)]
    b = [rng.gauss(0.74, 0.3) for _ in range(900)]
    for margin in (0.0, 0.05):
        cmp = stats.compare_means(stats.Moments.of(a), stats.Moments.of(b), alpha=0.05, margin=margin)
        ref = sps.ttest_ind([x + margin for x in a], b, equal_var=False, alternative="less")
        assert close(cmp.p_value, ref.pvalue)
        ci = sps.ttest_ind(a, b, equal_var=False).confidence_interval(0.90)
        assert close(cmp.low, ci.low) and close(cmp.high, ci.high)
        assert close(cmp.estimate, sum(a) / len(a) - sum(b) / len(b))


@pytest.mark.parametrize(
    ("n", "p"), [(5000, 0.37), (20, 0.3), (1_000_000, 3e-6), (300, 0.9), (1_000_000, 0.02)]
)
def test_binomial_variate_matches_the_binomial(n, p):
    rng = random.Random(11)
    draws = 4000
    xs = [stats.binomial_variate(n, p, rng) for _ in range(draws)]
    mean = sum(xs) / draws
    var = sum((x - mean) ** 2 for x in xs) / (draws - 1)
    assert abs(mean - n * p) < 4 * math.sqrt(n * p * (1 - p) / draws)
    assert var == pytest.approx(n * p * (1 - p), rel=0.1)
    # goodness of fit against the exact distribution in bins of the quantiles (merged where tied)
    edges = sorted({sps.binom.ppf(q, n, p) for q in (0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875)})
    observed = [0] * (len(edges) + 1)
    for x in xs:
        observed[sum(x > e for e in edges)] += 1
    probs = []
    prev = 0.0
    for e in [*edges, n]:
        cdf = sps.binom.cdf(e, n, p)
        probs.append(cdf - prev)
        prev = cdf
    chi2 = sum((o - draws * q) ** 2 / (draws * q) for o, q in zip(observed, probs, strict=True))
    assert sps.chi2.sf(chi2, len(edges)) > 0.001


def test_paired_bootstrap_within_its_own_error():
    rng = random.Random(5)
    diffs = [rng.choice([-1, -1, 0, 0, 0, 0, 1, -2, 0.5]) for _ in range(400)]
    counts: dict[float, int] = {}
    for d in diffs:
        counts[d] = counts.get(d, 0) + 1
    cmp = stats.compare_paired_means(counts, alpha=0.05, resamples=4000, seed=1)
    assert cmp.estimate == pytest.approx(sum(diffs) / len(diffs))
    ref = sps.bootstrap(
        (diffs,),
        lambda x, axis: x.mean(axis=axis),
        n_resamples=20000,
        confidence_level=0.90,
        method="percentile",
        random_state=2,
    ).confidence_interval
    # Monte Carlo error of a 5 % quantile of 4000 resamples: ~ sqrt(q(1-q)/B)/f(x) ~ 0.35 se
    se = math.sqrt(sum((d - cmp.estimate) ** 2 for d in diffs) / (len(diffs) - 1) / len(diffs))
    assert abs(cmp.low - ref.low) < 0.35 * se
    assert abs(cmp.high - ref.high) < 0.35 * se
    # seeded: the same verdict on a rerun
    assert stats.compare_paired_means(counts, alpha=0.05, resamples=4000, seed=1) == cmp
