"""Small, pure-Python statistics for comparing evaluation runs (no numpy/scipy at run time).

Every comparison answers one question: is ``current - baseline`` worse than ``-margin``? It returns
the estimate, the one-sided ``1 - alpha`` bounds (together the two-sided ``1 - 2 alpha`` interval)
and the one-sided p-value of ``H0: difference >= -margin``, so that ``p < alpha`` exactly when the
upper bound is below ``-margin``. Differences are "higher is better": callers negate for the other
direction.

* unpaired pass rates: Newcombe's hybrid score interval (from two Wilson intervals);
* unpaired means: Welch's t interval, from aggregates (n, sum, sum of squares);
* paired pass/fail: the exact McNemar test, conditional on the discordant pairs;
* paired scores: a seeded paired bootstrap of the mean difference, over the distinct differences.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from statistics import NormalDist
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

_NORMAL = NormalDist()
_EPS = 1e-15
_TINY = 1e-300


# -------------------------------------------------------------------------------------------------
# Distributions
# -------------------------------------------------------------------------------------------------


def norm_cdf(x: float) -> float:
    return _NORMAL.cdf(x)


def norm_ppf(q: float) -> float:
    return _NORMAL.inv_cdf(q)


def _stirling_tail(x: float) -> float:
    """``lgamma(x) - ((x - 1/2) ln x - x + ln(2 pi)/2)`` for large x (error below 1e-20 for x > 100)."""
    x2 = x * x
    return (1.0 / 12.0 - (1.0 / 360.0 - 1.0 / (1260.0 * x2)) / x2) / x


def _log_beta(a: float, b: float) -> float:
    """``ln B(a, b)``, without the cancellation of three big lgamma values when a or b is large."""
    big, small = max(a, b), min(a, b)
    if big < 100.0:
        return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    # lgamma(big) - lgamma(big + small) by Stirling's series, written with log1p
    diff = (
        -(big - 0.5) * math.log1p(small / big)
        - small * math.log(big + small)
        + small
        + _stirling_tail(big)
        - _stirling_tail(big + small)
    )
    return math.lgamma(small) + diff


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz evaluation)."""
    max_iter = 200 + int(20 * math.sqrt(a + b))
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, max_iter + 1):
        m2 = 2 * m
        for num in (
            m * (b - m) * x / ((qam + m2) * (a + m2)),
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
        ):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + num / c
            if abs(c) < _TINY:
                c = _TINY
            step = d * c
            h *= step
        if abs(step - 1.0) < _EPS:
            return h
    raise ArithmeticError(f"incomplete beta did not converge for a={a}, b={b}, x={x}")


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function ``I_x(a, b)``."""
    if a <= 0 or b <= 0:
        raise ValueError(f"betainc needs a > 0 and b > 0, got a={a}, b={b}")
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = a * math.log(x) + b * math.log1p(-x) - _log_beta(a, b)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1.0 - x) / b


def _bisect(f: Callable[[float], float], lo: float, hi: float, iterations: int = 200) -> float:
    """A root of increasing ``f`` in ``[lo, hi]`` (``f(lo) <= 0 <= f(hi)``)."""
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if f(mid) < 0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def beta_ppf(q: float, a: float, b: float) -> float:
    """The ``q`` quantile of Beta(a, b)."""
    if q <= 0.0:
        return 0.0
    if q >= 1.0:
        return 1.0
    return _bisect(lambda x: betainc(a, b, x) - q, 0.0, 1.0)


def binom_sf(k: int, n: int, p: float) -> float:
    """``P(X >= k)`` for X ~ Binomial(n, p)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    return betainc(k, n - k + 1, p)


def binom_cdf(k: int, n: int, p: float) -> float:
    """``P(X <= k)`` for X ~ Binomial(n, p)."""
    return 1.0 - binom_sf(k + 1, n, p)


def t_cdf(t: float, df: float) -> float:
    """Student's t distribution function."""
    if math.isinf(df):
        return norm_cdf(t)
    x = df / (df + t * t)
    tail = 0.5 * betainc(0.5 * df, 0.5, x)
    return 1.0 - tail if t > 0 else tail


def t_ppf(q: float, df: float) -> float:
    """The ``q`` quantile of Student's t distribution."""
    if math.isinf(df):
        return norm_ppf(q)
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {q}")
    z = norm_ppf(q)
    lo, hi = min(z, 0.0) - 1.0, max(z, 0.0) + 1.0
    while t_cdf(lo, df) > q:
        lo *= 2.0
    while t_cdf(hi, df) < q:
        hi *= 2.0
    return _bisect(lambda t: t_cdf(t, df) - q, lo, hi)


# -------------------------------------------------------------------------------------------------
# Intervals
# -------------------------------------------------------------------------------------------------


def wilson_interval(successes: int, n: int, z: float) -> tuple[float, float]:
    """Wilson's score interval for a proportion, ``z`` standard errors wide on each side."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe_interval(x1: int, n1: int, x2: int, n2: int, z: float) -> tuple[float, float, float]:
    """Newcombe's hybrid score interval for ``p1 - p2``: ``(estimate, low, high)``."""
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = wilson_interval(x1, n1, z)
    l2, u2 = wilson_interval(x2, n2, z)
    d = p1 - p2
    return d, d - math.hypot(p1 - l1, u2 - p2), d + math.hypot(u1 - p1, p2 - l2)


def clopper_pearson(k: int, n: int, alpha: float) -> tuple[float, float]:
    """One-sided ``1 - alpha`` exact bounds for a binomial proportion (two-sided ``1 - 2 alpha``)."""
    low = 0.0 if k == 0 else beta_ppf(alpha, k, n - k + 1)
    high = 1.0 if k == n else beta_ppf(1 - alpha, k + 1, n - k)
    return low, high


def mcnemar_exact_p(b: int, c: int, alternative: str = "two-sided") -> float:
    """Exact McNemar p-value from the discordant counts ``b`` and ``c`` (binomial, p = 1/2).

    ``alternative="greater"``: evidence that ``c`` outnumbers ``b``; ``"less"`` the opposite.
    """
    n = b + c
    if alternative == "greater":
        return binom_sf(c, n, 0.5)
    if alternative == "less":
        return binom_cdf(c, n, 0.5)
    if alternative != "two-sided":
        raise ValueError(f"alternative must be two-sided, greater or less, got {alternative!r}")
    return min(1.0, 2.0 * binom_cdf(min(b, c), n, 0.5))


# -------------------------------------------------------------------------------------------------
# Comparisons
# -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """``current - baseline``: estimate, one-sided ``1 - alpha`` bounds, p of ``H0: diff >= -margin``."""

    method: str
    estimate: float
    low: float
    high: float
    p_value: float


def _invert_bound(bound: Callable[[float], float], target: float) -> float:
    """The z at which an upper bound (increasing in z) reaches ``target``; p = 1 - Phi(z)."""
    z_max = 38.0
    if bound(z_max) < target:
        return z_max
    return _bisect(lambda z: bound(z) - target, 0.0, z_max)


def compare_proportions(
    x_current: int, n_current: int, x_baseline: int, n_baseline: int, *, alpha: float, margin: float = 0.0
) -> Comparison:
    """Unpaired pass rates: Newcombe interval; the p-value inverts it (consistent with the bounds)."""
    if min(n_current, n_baseline) <= 0:
        raise ValueError("both samples need at least one item")
    z = norm_ppf(1 - alpha)
    d, low, high = newcombe_interval(x_current, n_current, x_baseline, n_baseline, z)
    threshold = -margin
    if d < threshold:  # p < 1/2: the z at which the upper bound comes down to the threshold
        z_star = _invert_bound(
            lambda zz: newcombe_interval(x_current, n_current, x_baseline, n_baseline, zz)[2], threshold
        )
        p = 1.0 - norm_cdf(z_star)
    elif d > threshold:  # p > 1/2: mirror with the lower bound
        z_star = _invert_bound(
            lambda zz: -newcombe_interval(x_current, n_current, x_baseline, n_baseline, zz)[1], -threshold
        )
        p = norm_cdf(z_star)
    else:
        p = 0.5
    return Comparison("newcombe", d, low, high, p)


@dataclass(frozen=True)
class Moments:
    """A sample summarised by count, sum and sum of squares (what SQL aggregates give)."""

    n: int
    total: float
    total_sq: float

    @property
    def mean(self) -> float:
        return self.total / self.n

    @property
    def variance(self) -> float:
        """Unbiased sample variance (0 for fewer than two values)."""
        if self.n < 2:
            return 0.0
        return max(0.0, (self.total_sq - self.total * self.total / self.n) / (self.n - 1))

    @classmethod
    def of(cls, values: Iterable[float]) -> Moments:
        n, s, ss = 0, 0.0, 0.0
        for v in values:
            n += 1
            s += v
            ss += v * v
        return cls(n, s, ss)


def compare_means(current: Moments, baseline: Moments, *, alpha: float, margin: float = 0.0) -> Comparison:
    """Unpaired means: Welch's t interval with Welch-Satterthwaite degrees of freedom."""
    if min(current.n, baseline.n) < 2:
        raise ValueError("Welch's interval needs at least two values on each side")
    v1, v2 = current.variance / current.n, baseline.variance / baseline.n
    d = current.mean - baseline.mean
    se = math.sqrt(v1 + v2)
    if se == 0.0:  # no spread at all: the difference is known exactly
        p = 0.0 if d < -margin else 1.0 if d > -margin else 0.5
        return Comparison("welch", d, d, d, p)
    df = (v1 + v2) ** 2 / (v1 * v1 / (current.n - 1) + v2 * v2 / (baseline.n - 1))
    half = t_ppf(1 - alpha, df) * se
    p = t_cdf((d + margin) / se, df)
    return Comparison("welch", d, d - half, d + half, p)


def compare_paired_pass(
    both: int, lost: int, gained: int, neither: int, *, alpha: float, margin: float = 0.0
) -> Comparison:
    """Paired pass/fail: exact McNemar, conditional on the ``lost + gained`` discordant pairs.

    ``lost``: items the baseline passed and the current run failed; ``gained`` the opposite. Given the
    discordant count m, the difference is ``(m / n) (1 - 2 theta)`` with ``theta = lost / m``; the test
    of ``theta <= (1 + margin n / m) / 2`` is exact binomial (McNemar's for margin 0) and the bounds
    come from the Clopper-Pearson bounds of theta, so both always agree.
    """
    n = both + lost + gained + neither
    if n <= 0:
        raise ValueError("no paired items")
    m = lost + gained
    d = (gained - lost) / n
    if m == 0:
        return Comparison("mcnemar-exact", 0.0, 0.0, 0.0, 0.0 if -margin > 0.0 else 1.0)
    theta0 = (1.0 + margin * n / m) / 2.0
    p = 0.0 if theta0 <= 0.0 else 1.0 if theta0 >= 1.0 else binom_sf(lost, m, theta0)
    theta_low, theta_high = clopper_pearson(lost, m, alpha)
    scale = m / n
    return Comparison("mcnemar-exact", d, scale * (1 - 2 * theta_high), scale * (1 - 2 * theta_low), p)


def binomial_variate(n: int, p: float, rng: random.Random) -> int:
    """An exact Binomial(n, p) draw: inversion for small ``n p``, else Hormann's BTRS rejection."""
    if n <= 0 or p <= 0.0:
        return 0
    if p >= 1.0:
        return n
    if p > 0.5:
        return n - binomial_variate(n, 1.0 - p, rng)
    q = 1.0 - p
    if n * p < 10.0:  # inversion: walk the probabilities up from 0
        s, r = p / q, q**n
        a = (n + 1) * s
        u = rng.random()
        k = 0
        while u > r and k < n:
            u -= r
            k += 1
            r *= a / k - s
        return k
    spq = math.sqrt(n * p * q)
    b = 1.15 + 2.53 * spq
    a = -0.0873 + 0.0248 * b + 0.01 * p
    c = n * p + 0.5
    v_r = 0.92 - 4.2 / b
    alpha = (2.83 + 5.1 / b) * spq
    lpq = math.log(p / q)
    m = math.floor((n + 1) * p)
    h = math.lgamma(m + 1) + math.lgamma(n - m + 1)
    while True:
        u = rng.random() - 0.5
        v = rng.random()
        us = 0.5 - abs(u)
        k = math.floor((2.0 * a / us + b) * u + c)
        if k < 0 or k > n:
            continue
        if us >= 0.07 and v <= v_r:
            return k
        v = math.log(v * alpha / (a / (us * us) + b))
        if v <= h - math.lgamma(k + 1) - math.lgamma(n - k + 1) + (k - m) * lpq:
            return k


def _binned(counts: Mapping[float, int], max_values: int) -> list[tuple[float, int]]:
    """Distinct values with counts; more than ``max_values`` are merged into equal-width bins,
    each carried by its own mean (so the overall mean is unchanged)."""
    items = sorted((float(v), int(c)) for v, c in counts.items() if c > 0)
    if len(items) <= max_values:
        return items
    lo, hi = items[0][0], items[-1][0]
    width = (hi - lo) / max_values
    bins: dict[int, list[float]] = {}
    for v, c in items:
        i = min(max_values - 1, int((v - lo) / width))
        acc = bins.setdefault(i, [0.0, 0.0])
        acc[0] += v * c
        acc[1] += c
    return [(s / c, int(c)) for s, c in (bins[i] for i in sorted(bins))]


def compare_paired_means(
    differences: Mapping[float, int],
    *,
    alpha: float,
    margin: float = 0.0,
    resamples: int = 2000,
    seed: int = 0,
    max_values: int = 256,
) -> Comparison:
    """Paired scores: percentile bootstrap of the mean of ``current - baseline`` per item, seeded.

    ``differences`` maps each distinct paired difference to how many items have it; a resample is a
    multinomial draw of those counts, so the cost depends on the distinct values, not on the items.
    p-value: ``(1 + #{resampled means >= -margin}) / (1 + resamples)``.
    """
    values = _binned(differences, max_values)
    n = sum(c for _, c in values)
    if n <= 0:
        raise ValueError("no paired items")
    mean = sum(v * c for v, c in values) / n
    rng = random.Random(seed)
    order = sorted(values, key=lambda vc: -vc[1])  # big categories first: the remainder shrinks fast
    means = []
    for _ in range(resamples):
        left, weight, total = n, 1.0, 0.0
        for i, (v, c) in enumerate(order):
            if i == len(order) - 1:
                k = left
            else:
                k = binomial_variate(left, min(1.0, c / n / weight), rng) if left else 0
                weight -= c / n
            total += v * k
            left -= k
            if left == 0:
                break
        means.append(total / n)
    means.sort()
    low, high = _quantile(means, alpha), _quantile(means, 1 - alpha)
    p = (1 + sum(m >= -margin for m in means)) / (1 + resamples)
    return Comparison("paired-bootstrap", mean, low, high, min(1.0, p))


def _quantile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default) of already sorted values."""
    pos = q * (len(sorted_values) - 1)
    i = math.floor(pos)
    j = min(i + 1, len(sorted_values) - 1)
    return sorted_values[i] + (pos - i) * (sorted_values[j] - sorted_values[i])
