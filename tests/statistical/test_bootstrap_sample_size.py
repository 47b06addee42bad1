"""Bootstrap intervals and sample-size planning."""

from __future__ import annotations

import numpy as np
import pytest

from nnassay.schemas.common import Comparator
from nnassay.schemas.goals import Criterion
from nnassay.tasks.stats.bootstrap import bootstrap_interval
from nnassay.tasks.stats.intervals import proportion_interval
from nnassay.tasks.stats.sample_size import can_ever_decide, samples_needed


def test_bootstrap_mean_covers_and_is_reproducible() -> None:
    hits = 0
    for rep in range(60):
        values = np.random.default_rng(rep).exponential(2.0, 80)
        ci = bootstrap_interval(values, np.mean, 0.9, np.random.default_rng(rep), n_resamples=500)
        hits += ci.low <= 2.0 <= ci.high
    assert hits >= 47  # ~90% nominal; a wide margin keeps the test stable
    values = np.random.default_rng(0).normal(size=50)
    first = bootstrap_interval(values, np.median, 0.95, np.random.default_rng(3))
    assert first == bootstrap_interval(values, np.median, 0.95, np.random.default_rng(3))
    assert first.low <= float(np.median(values)) <= first.high


def test_bootstrap_degenerate_and_bad_input() -> None:
    constant = bootstrap_interval(np.full(20, 0.3), np.mean, 0.95, np.random.default_rng(0))
    assert constant.low == constant.high == pytest.approx(0.3) and "constant" in constant.method
    single = bootstrap_interval(np.array([1.5]), np.mean, 0.95, np.random.default_rng(0))
    assert single.low == single.high == 1.5
    rare = bootstrap_interval(np.r_[np.zeros(99), 1.0], np.mean, 0.95, np.random.default_rng(0))
    assert rare.low <= 0.01 <= rare.high
    with pytest.raises(ValueError, match="at least one value"):
        bootstrap_interval(np.array([]), np.mean, 0.95, np.random.default_rng(0))
    with pytest.raises(ValueError, match="finite"):
        bootstrap_interval(np.array([1.0, np.nan]), np.mean, 0.95, np.random.default_rng(0))
    with pytest.raises(ValueError, match="strictly between"):
        bootstrap_interval(np.arange(5.0), np.mean, 1.0, np.random.default_rng(0))


def test_bootstrap_resamples_whole_rows_of_2d_values() -> None:
    """Regression: 2-D values (paired columns) reach the statistic as whole rows, not single columns."""
    rng = np.random.default_rng(11)
    pairs = np.stack([rng.random(60), (rng.random(60) < 0.8).astype(float)], axis=1)
    seen: list[tuple[int, ...]] = []

    def ratio(rows: np.ndarray) -> float:
        seen.append(rows.shape)
        return float(rows[:, 0].mean() / rows[:, 1].mean())

    ci = bootstrap_interval(pairs, ratio, 0.95, np.random.default_rng(2), n_resamples=300)
    point = pairs[:, 0].mean() / pairs[:, 1].mean()
    assert all(len(shape) == 2 and shape[1] == 2 for shape in seen)
    assert ci.low < point < ci.high and ci.high - ci.low > 0.05
    assert ci == bootstrap_interval(pairs, ratio, 0.95, np.random.default_rng(2), n_resamples=300)
    # A 1-D column gives the same interval whether passed alone or as the only column of a 2-D array.
    column = pairs[:, :1]
    one_d = bootstrap_interval(column[:, 0], np.mean, 0.9, np.random.default_rng(4), n_resamples=400)
    two_d = bootstrap_interval(
        column, lambda r: float(r.mean()), 0.9, np.random.default_rng(4), n_resamples=400
    )
    assert one_d.low == pytest.approx(two_d.low) and one_d.high == pytest.approx(two_d.high)


def test_zero_failure_plan_matches_verdict_rule() -> None:
    rare = Criterion(comparator=Comparator.LE, threshold=1e-3, confidence=0.95)
    n = samples_needed(rare)
    assert n == 3688  # two-sided 95% (the verdict's interval); one-sided would be 2,995
    assert proportion_interval(0, n).high <= 1e-3 < proportion_interval(0, n - 1).high


def test_expected_rate_plan_decides() -> None:
    goal = Criterion(comparator=Comparator.GE, threshold=0.9, confidence=0.95)
    n = samples_needed(goal, 0.95)
    assert n is not None and proportion_interval(round(0.95 * n), n).low >= 0.9
    assert proportion_interval(round(0.95 * (n // 2)), n // 2).low < 0.9
    assert samples_needed(goal, 0.9) is None  # on the threshold: never decided
    assert samples_needed(Criterion(comparator=Comparator.GE, threshold=1.0)) is None
    assert samples_needed(Criterion(comparator=Comparator.LE, threshold=3.0)) is None  # not a rate
    wilson = Criterion(comparator=Comparator.LE, threshold=1e-3, interval="wilson")
    assert samples_needed(wilson) == 3838  # Wilson at 0 failures: z^2 (1 - t) / t, wider than exact here


def test_can_ever_decide() -> None:
    rare = Criterion(comparator=Comparator.LE, threshold=1e-3)
    ok, why = can_ever_decide(1000, rare)
    assert not ok and "pass is impossible" in why and "0 failures in all 1000" in why and "3688" in why
    assert can_ever_decide(5000, rare)[0]
    ok, why = can_ever_decide(100, Criterion(comparator=Comparator.GE, threshold=0.01))
    assert not ok and "fail is impossible" in why
    assert can_ever_decide(200, Criterion(comparator=Comparator.GE, threshold=0.9))[0]
    assert not can_ever_decide(0, rare)[0]
