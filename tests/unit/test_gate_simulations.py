"""False alarms and power of the gate's decision rule, on seeded in-process simulated windows.

The rule is the operator's: per metric a one-sided test at alpha / (number of metrics) (Bonferroni),
a window fails when any metric regresses. Windows are generated here, not by the emulator: 500 gates
take seconds.
"""

from __future__ import annotations

import random

import pytest

from gip_airflow import stats

ALPHA = 0.05


def simulate_window(
    rng: random.Random, n: int, pass_rate: float, mean: float
) -> tuple[int, int, stats.Moments]:
    """(items, passed, moments of the passed items' scores): a judge that passes and scores noisily."""
    passed = 0
    scores = []
    for _ in range(n):
        if rng.random() < pass_rate:
            passed += 1
            scores.append(min(2.0, max(0.0, round(rng.gauss(mean, 0.6)))))  # a 0/1/2 category index
    return n, passed, stats.Moments.of(scores)


def pooled(windows: list[tuple[int, int, stats.Moments]]) -> tuple[int, int, stats.Moments]:
    n = sum(w[0] for w in windows)
    x = sum(w[1] for w in windows)
    m = stats.Moments(
        sum(w[2].n for w in windows), sum(w[2].total for w in windows), sum(w[2].total_sq for w in windows)
    )
    return n, x, m


def gate_fails(current, baseline, *, metrics=("pass_rate", "mean_score"), alpha=ALPHA) -> bool:
    a = alpha / len(metrics)
    failed = False
    if "pass_rate" in metrics:
        failed |= (
            stats.compare_proportions(current[1], current[0], baseline[1], baseline[0], alpha=a).high < 0
        )
    if "mean_score" in metrics:
        failed |= stats.compare_means(current[2], baseline[2], alpha=a).high < 0
    return failed


def test_false_alarms_over_500_unchanged_windows():
    rng = random.Random(20260301)
    windows = [simulate_window(rng, rng.randint(150, 400), 0.9, 1.2) for _ in range(507)]
    alarms = sum(gate_fails(windows[i], pooled(windows[i - 7 : i])) for i in range(7, 507))
    alarms_pass_rate = sum(
        gate_fails(windows[i], pooled(windows[i - 7 : i]), metrics=("pass_rate",)) for i in range(7, 507)
    )
    print(
        f"\nfalse alarms over 500 unchanged windows: both metrics {alarms / 500:.1%}, pass rate only {alarms_pass_rate / 500:.1%} (alpha {ALPHA:.0%})"
    )
    assert alarms / 500 <= ALPHA + 0.01
    assert alarms_pass_rate / 500 <= ALPHA + 0.01


@pytest.mark.parametrize(("base_rate", "required"), [(0.95, 0.80), (0.90, None), (0.80, None)])
def test_power_five_point_drop_over_300_items(base_rate, required):
    """Today's 300 items, 5 points worse than the trailing 7 windows of 300."""
    rng = random.Random(7)
    sims = 400
    caught = 0
    for _ in range(sims):
        baseline = pooled([simulate_window(rng, 300, base_rate, 1.2) for _ in range(7)])
        current = simulate_window(rng, 300, base_rate - 0.05, 1.2)
        caught += gate_fails(current, baseline, metrics=("pass_rate",))
    power = caught / sims
    print(f"\npower, pass rate {base_rate:.0%} -> {base_rate - 0.05:.0%}, 300 vs 2100 items: {power:.1%}")
    if required is not None:
        assert power >= required


def test_paired_vs_unpaired_power_same_items():
    """Model B fails a few of the items model A passes (items differ in difficulty); both figures."""
    rng = random.Random(11)
    sims, n = 300, 300
    paired_hits = unpaired_hits = 0
    for _ in range(sims):
        both = lost = gained = neither = 0
        for _ in range(n):
            difficulty = rng.betavariate(2, 1)  # most items easy, some hard
            u = rng.random()
            a = u < difficulty
            b = u < difficulty - 0.05  # B is 5 points worse on the same items
            both += a and b
            lost += a and not b
            gained += b and not a
            neither += not (a or b)
        paired_hits += stats.compare_paired_pass(both, lost, gained, neither, alpha=ALPHA).high < 0
        unpaired_hits += stats.compare_proportions(both + gained, n, both + lost, n, alpha=ALPHA).high < 0
    print(
        f"\nB 5 points worse on the same 300 items: caught paired (exact McNemar) {paired_hits / sims:.0%}, unpaired (Newcombe) {unpaired_hits / sims:.0%}"
    )
    assert paired_hits / sims >= 0.95
    assert unpaired_hits / sims <= 0.6


def test_paired_bootstrap_false_alarms_and_seed():
    rng = random.Random(3)
    alarms = 0
    runs = 200
    for _ in range(runs):
        diffs: dict[float, int] = {}
        for _ in range(300):
            d = float(rng.choice((0, 0, 0, 1, -1, 2, -2)))
            diffs[d] = diffs.get(d, 0) + 1
        alarms += (
            stats.compare_paired_means(diffs, alpha=ALPHA, resamples=500, seed=rng.randrange(10**6)).high < 0
        )
    print(f"\npaired bootstrap false alarms over {runs} unchanged pairs of runs: {alarms / runs:.1%}")
    assert alarms / runs <= ALPHA + 0.03  # 200 runs: a wider Monte Carlo margin
