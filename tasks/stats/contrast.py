"""Contrastive measures (ISO/IEC TR 24029-1 5.3.2): is a change between two rates real?

Paired outcomes (the same samples, e.g. clean vs perturbed, or two model versions on one test
set): McNemar's exact test and Newcombe's hybrid-score interval for the difference of paired
proportions. Independent samples (two assessments on different data): Fisher's exact test and
Newcombe's hybrid-score interval for the difference of two proportions. The difference is always
*second minus first* (b - a; rate 2 - rate 1), so a regression of accuracy is negative.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import Field
from scipy.stats import binomtest, fisher_exact

from nnassay.schemas.common import Confidence, Interval, Record
from nnassay.tasks.stats.intervals import check_confidence, proportion_interval


class Contrast(Record):
    """The difference between two rates, its interval and a test of 'no difference'."""

    difference: float = Field(description="Second rate minus first rate (b - a).")
    interval: Interval = Field(description="Two-sided confidence interval of the difference.")
    p_value: float = Field(ge=0.0, le=1.0, description="Two-sided p-value of the test of no difference.")
    test: str = Field(description="Test that gave the p-value, e.g. 'mcnemar-exact'.")
    significant: bool = Field(description="True when p_value < 1 - confidence.")
    confidence: Confidence = Field(description="Confidence level of the interval and the test.")
    rate_a: float = Field(description="First rate.")
    rate_b: float = Field(description="Second rate.")
    n_a: int = Field(ge=0, description="Samples behind the first rate.")
    n_b: int = Field(ge=0, description="Samples behind the second rate.")
    discordant: tuple[int, int] | None = Field(
        default=None,
        description="Paired only: (a right & b wrong, a wrong & b right), the pairs McNemar tests.",
    )


def _wilson(successes: int, n: int, confidence: float) -> tuple[float, float]:
    ci = proportion_interval(successes, n, confidence, "wilson")
    return ci.low, ci.high


def compare_paired(a_correct: np.ndarray, b_correct: np.ndarray, confidence: float = 0.95) -> Contrast:
    """Paired comparison of two success indicators on the same samples.

    Test: McNemar's exact test, i.e. a two-sided binomial test with p = 1/2 on the discordant pairs
    (``scipy.stats.binomtest``); p = 1 when there are none. Interval: Newcombe (1998, Stat. Med. 17,
    2635, method 10), a hybrid score interval built from the Wilson intervals of both rates and the
    phi correlation of the pairs; it stays inside [-1, 1] and covers close to the nominal level.

    Args:
        a_correct: per-sample success of the first condition (bool, e.g. clean prediction correct).
        b_correct: per-sample success of the second condition on the same samples, same order.
        confidence: two-sided level in (0, 1); the test is significant when p < 1 - confidence.
    """
    check_confidence(confidence)
    a, b = np.asarray(a_correct, dtype=bool).ravel(), np.asarray(b_correct, dtype=bool).ravel()
    if a.shape != b.shape or a.size == 0:
        raise ValueError(
            f"paired outcomes need two non-empty arrays of one length, got {a.size} and {b.size}"
        )
    n = a.size
    both, only_a = int(np.sum(a & b)), int(np.sum(a & ~b))
    only_b, neither = int(np.sum(~a & b)), int(np.sum(~a & ~b))
    p_value = 1.0 if only_a + only_b == 0 else float(binomtest(only_a, only_a + only_b, 0.5).pvalue)
    pa, pb = (both + only_a) / n, (both + only_b) / n
    la, ua = _wilson(both + only_a, n, confidence)
    lb, ub = _wilson(both + only_b, n, confidence)
    phi = _phi(both, only_b, only_a, neither)
    diff = pb - pa
    down = math.sqrt(max((pb - lb) ** 2 - 2 * phi * (pb - lb) * (ua - pa) + (ua - pa) ** 2, 0.0))
    up = math.sqrt(max((ub - pb) ** 2 - 2 * phi * (ub - pb) * (pa - la) + (pa - la) ** 2, 0.0))
    interval = Interval(
        low=max(diff - down, -1.0),
        high=min(diff + up, 1.0),
        confidence=confidence,
        method="newcombe-paired-hybrid-score",
    )
    return Contrast(
        difference=diff,
        interval=interval,
        p_value=min(p_value, 1.0),
        test="mcnemar-exact",
        significant=p_value < 1 - confidence,
        confidence=confidence,
        rate_a=pa,
        rate_b=pb,
        n_a=n,
        n_b=n,
        discordant=(only_a, only_b),
    )


def _phi(both: int, only_b: int, only_a: int, neither: int) -> float:
    """Phi coefficient of the 2x2 table of (b success, a success); 0 when a margin is empty."""
    denom = (both + only_b) * (only_a + neither) * (both + only_a) * (only_b + neither)
    return 0.0 if denom == 0 else (both * neither - only_a * only_b) / math.sqrt(denom)


def compare_rates(k1: int, n1: int, k2: int, n2: int, confidence: float = 0.95) -> Contrast:
    """Comparison of two independent rates k1/n1 and k2/n2 (different samples).

    Test: Fisher's exact test, two-sided (``scipy.stats.fisher_exact``; conservative). Interval:
    Newcombe's hybrid score interval (1998, Stat. Med. 17, 873, method 10) from the two Wilson
    intervals; the difference is k2/n2 - k1/n1.
    """
    check_confidence(confidence)
    for k, n, side in ((k1, n1, "1"), (k2, n2, "2")):
        if n <= 0 or not 0 <= k <= n:
            raise ValueError(f"rate {side} needs n > 0 and 0 <= k <= n, got k{side}={k}, n{side}={n}")
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = _wilson(k1, n1, confidence)
    l2, u2 = _wilson(k2, n2, confidence)
    diff = p2 - p1
    low = diff - math.sqrt((p2 - l2) ** 2 + (u1 - p1) ** 2)
    high = diff + math.sqrt((u2 - p2) ** 2 + (p1 - l1) ** 2)
    p_value = float(fisher_exact([[k1, n1 - k1], [k2, n2 - k2]]).pvalue)
    interval = Interval(
        low=max(low, -1.0), high=min(high, 1.0), confidence=confidence, method="newcombe-hybrid-score"
    )
    return Contrast(
        difference=diff,
        interval=interval,
        p_value=min(p_value, 1.0),
        test="fisher-exact",
        significant=p_value < 1 - confidence,
        confidence=confidence,
        rate_a=p1,
        rate_b=p2,
        n_a=n1,
        n_b=n2,
    )
