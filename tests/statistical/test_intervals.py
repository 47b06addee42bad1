"""Rate intervals: coverage by simulation, agreement with scipy, one-sided bounds, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest

from nnassay.schemas.common import Interval, Measurement, Verdict
from nnassay.schemas.goals import Criterion
from nnassay.tasks.pipeline.interpret import decide
from nnassay.tasks.stats.intervals import (
    lower_bounds,
    proportion_interval,
    upper_bounds,
    zero_failure_samples,
)
from nnassay.tasks.stats.sample_size import samples_needed

RATES = [0.02, 0.1, 0.5, 0.9]


def coverage(method: str, p: float, n: int, reps: int, seed: int) -> float:
    counts = np.random.default_rng(seed).binomial(n, p, reps)
    cache = {k: proportion_interval(int(k), n, 0.95, method) for k in np.unique(counts)}
    return float(np.mean([cache[k].low <= p <= cache[k].high for k in counts]))


@pytest.mark.parametrize("p", RATES)
def test_clopper_pearson_covers_at_least_nominal(p: float) -> None:
    assert coverage("clopper-pearson", p, 60, 4000, seed=1) >= 0.94  # exact: >= 95% up to MC error


@pytest.mark.parametrize("p", RATES)
def test_wilson_covers_close_to_nominal(p: float) -> None:
    assert coverage("wilson", p, 60, 4000, seed=2) >= 0.90


def test_wilson_averages_near_nominal_and_is_shorter() -> None:
    grid = np.linspace(0.05, 0.95, 19)
    mean = np.mean([coverage("wilson", float(p), 80, 1500, seed=i) for i, p in enumerate(grid)])
    assert 0.935 <= mean <= 0.97
    cp, wi = proportion_interval(30, 80), proportion_interval(30, 80, method="wilson")
    assert wi.high - wi.low < cp.high - cp.low


def test_matches_scipy_exact_and_edges() -> None:
    ci = proportion_interval(7, 40, 0.9)
    ref = binomtest(7, 40).proportion_ci(0.9, method="exact")
    assert (ci.low, ci.high) == pytest.approx((ref.low, ref.high))
    assert proportion_interval(0, 10).low == 0.0 and proportion_interval(10, 10).high == 1.0
    assert (proportion_interval(0, 0).low, proportion_interval(0, 0).high) == (0.0, 1.0)


def test_one_sided_bounds_match_two_sided_at_double_alpha() -> None:
    k, n = np.array([0, 3, 17, 40]), 40
    two = [proportion_interval(int(v), n, 0.90) for v in k]
    assert upper_bounds(k, n, 0.95) == pytest.approx([c.high for c in two])
    assert lower_bounds(k, n, 0.95) == pytest.approx([c.low for c in two])
    assert float(upper_bounds(0, 3000, 0.95)) == pytest.approx(1 - 0.05 ** (1 / 3000))
    assert float(lower_bounds(5, 5, 0.95)) == pytest.approx(0.05 ** (1 / 5))


def test_sample_counts() -> None:
    assert zero_failure_samples(1e-3, 0.95) == 2995  # rule of three, exact form
    assert samples_needed(Criterion(comparator="<=", threshold=1e-3, confidence=0.95)) == 3688  # two-sided
    needed = samples_needed(Criterion(comparator=">=", threshold=0.9), expected_rate=0.95)
    assert needed is not None and proportion_interval(round(0.95 * needed), needed).low > 0.9


def test_samples_needed_follows_the_interval_method() -> None:
    exact = samples_needed(Criterion(comparator=">=", threshold=0.5), expected_rate=0.6)
    wilson = samples_needed(Criterion(comparator=">=", threshold=0.5, interval="wilson"), expected_rate=0.6)
    assert exact is not None and wilson is not None and wilson < exact  # Wilson is shorter here
    assert proportion_interval(round(0.6 * wilson), wilson, 0.95, "wilson").low > 0.5
    assert proportion_interval(round(0.6 * wilson), wilson, 0.95, "clopper-pearson").low <= 0.5
    # an inconclusive verdict on a bootstrap interval plans its extra samples with the exact interval
    boot = Interval(low=0.45, high=0.72, confidence=0.95, method="bootstrap BCa (1000 resamples)")
    verdict, _, more = decide(
        Measurement(value=0.6, interval=boot, n=50, is_rate=True), Criterion(comparator=">=", threshold=0.5)
    )
    assert verdict == Verdict.INCONCLUSIVE and more == exact - 50


@pytest.mark.parametrize("confidence", [0.0, 1.0, -0.5, 1.5])
def test_bad_confidence_rejected(confidence: float) -> None:
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        proportion_interval(1, 10, confidence)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        upper_bounds(1, 10, confidence)


def test_bad_method_and_counts_rejected() -> None:
    with pytest.raises(ValueError, match="expected one of"):
        proportion_interval(1, 10, 0.95, "wald")
    with pytest.raises(ValueError, match=r"\[0, n=10\]"):
        proportion_interval(11, 10)
