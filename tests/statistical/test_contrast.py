"""Paired and unpaired comparisons of rates: known answers and coverage."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest, fisher_exact

from nnassay.tasks.stats.contrast import compare_paired, compare_rates


def paired(both: int, only_a: int, only_b: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    a = np.r_[np.ones(both + only_a, bool), np.zeros(only_b + neither, bool)]
    b = np.r_[np.ones(both, bool), np.zeros(only_a, bool), np.ones(only_b, bool), np.zeros(neither, bool)]
    return a, b


@pytest.mark.parametrize(
    "table, p",
    [((50, 10, 3, 37), 0.09228515625), ((20, 0, 6, 4), 0.03125), ((30, 5, 5, 10), 1.0), ((10, 0, 0, 5), 1.0)],
)
def test_mcnemar_exact_known_p_values(table: tuple[int, int, int, int], p: float) -> None:
    result = compare_paired(*paired(*table))
    assert result.p_value == pytest.approx(p)
    if table[1] + table[2]:
        assert result.p_value == pytest.approx(binomtest(table[1], table[1] + table[2], 0.5).pvalue)
    assert result.discordant == (table[1], table[2]) and result.test == "mcnemar-exact"
    n = sum(table)
    assert result.difference == pytest.approx((table[2] - table[1]) / n)
    assert result.significant == (p < 0.05)
    assert result.interval.low <= result.difference <= result.interval.high


def test_newcombe_unpaired_published_example() -> None:
    # Newcombe (1998), Stat. Med. 17:873, example (a): 56/70 vs 48/80, method 10: 0.0524 to 0.3339
    result = compare_rates(48, 80, 56, 70)
    assert result.difference == pytest.approx(0.2)
    assert (result.interval.low, result.interval.high) == pytest.approx((0.0524, 0.3339), abs=1e-4)
    assert result.p_value == pytest.approx(fisher_exact([[48, 32], [56, 14]]).pvalue)
    assert result.significant


def test_paired_interval_covers_by_simulation() -> None:
    rng = np.random.default_rng(7)
    hits, reps, n = 0, 600, 60
    probs = np.array([0.55, 0.15, 0.05, 0.25])  # both, only a, only b, neither
    truth = probs[2] - probs[1]
    for _ in range(reps):
        cells = rng.multinomial(n, probs)
        ci = compare_paired(*paired(*cells)).interval
        hits += ci.low <= truth <= ci.high
    assert hits / reps >= 0.92


def test_unpaired_interval_covers_by_simulation() -> None:
    rng = np.random.default_rng(8)
    k1, k2 = rng.binomial(50, 0.7, 600), rng.binomial(70, 0.6, 600)
    intervals = [compare_rates(int(a), 50, int(b), 70).interval for a, b in zip(k1, k2, strict=True)]
    hits = sum(ci.low <= -0.1 <= ci.high for ci in intervals)
    assert hits / 600 >= 0.93


def test_bad_input_rejected() -> None:
    with pytest.raises(ValueError, match="one length"):
        compare_paired(np.ones(3, bool), np.ones(4, bool))
    with pytest.raises(ValueError, match="k2=5, n2=4"):
        compare_rates(1, 10, 5, 4)
    with pytest.raises(ValueError, match="strictly between"):
        compare_rates(1, 10, 2, 10, confidence=1.0)
    assert compare_rates(0, 10, 0, 10).interval.low <= 0.0 <= compare_rates(0, 10, 0, 10).interval.high
